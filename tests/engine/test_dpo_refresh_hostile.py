"""DPOControlHook under attack: two ranks saving checkpoints, a TR-DPO resume, a resume onto pairs another run
wrote, a refresh that fails after its round on one rank. Each test failed on the code before its fix."""
import json
import os
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import torch
from mmengine.runner import Runner

from .control_fixtures import write_control_dataset, write_tiny_parts
from .test_dpo_control_hook import InMemoryPairs, dpo_cfg, hook_cfg


@pytest.fixture(scope='module')
def parts(tmp_path_factory):
    torch.set_num_threads(1)
    return write_tiny_parts(tmp_path_factory.mktemp('tiny_sd_hostile'))


@pytest.fixture(scope='module')
def val_root(tmp_path_factory):
    return write_control_dataset(tmp_path_factory.mktemp('hostile_val') / 'data', num=4)


def _runner(work_dir, parts, hooks, max_iters, ckpt, model=None, resume=None, name=None):
    return Runner(
        model=model or dpo_cfg(parts), work_dir=str(work_dir),
        train_dataloader=dict(dataset=InMemoryPairs(), sampler=dict(type='DefaultSampler', shuffle=False),
                              batch_size=1, num_workers=0, collate_fn=dict(type='pseudo_collate')),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=5e-2)),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=ckpt, by_epoch=False),
                           logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=hooks, randomness=dict(seed=7), resume=resume is not None, load_from=resume,
        visualizer=dict(type='Visualizer', vis_backends=[dict(type='LocalVisBackend')],
                        name=f'vis_hostile_{uuid.uuid4().hex}'),
        experiment_name=name or f'hostile_{uuid.uuid4().hex}', default_scope='posedreamer_mm')


# --- two ranks: the LoRA export at a checkpoint, a refresh that fails after its round on one rank ----------------
def _two_rank_worker(rank, port, parts, val_root, out):
    """Three runs on both ranks. 1: 2 iterations, a checkpoint at each, a held-out validation (a gather) at 2.
    mmengine calls ``before_save_checkpoint`` on rank 0 only (``Runner.save_checkpoint`` is ``master_only``): a
    collective there pairs with rank 1's next one and leaves the ranks waiting. 2: refresh rounds at 2 (then a
    checkpoint) and 4, whose dataloader rebuild fails on rank 1 only (as on a rank whose view of a shared file
    system lags). 3: a resume from that checkpoint whose rebuild on the round-2 pairs fails on rank 1 only."""
    import torch.distributed as dist

    from posedreamer_mm.utils import register_all_modules

    from .test_dpo_control_hook import run_refresh, write_offline_pairs
    torch.set_num_threads(1)
    register_all_modules()
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=2, timeout=timedelta(seconds=60))
    result = dict(error=None, refresh_error=None, resume_error=None)
    try:
        try:
            runner = _runner(os.path.join(out, 'work'), parts, [hook_cfg(val_root, interval=2, sheet_rows=0)],
                             max_iters=2, ckpt=1, name='two_ranks')
            runner.train()
            result['iter'] = runner.iter
        except Exception as err:
            result['error'] = f'{type(err).__name__}: {err}'
        if rank == 0:
            write_offline_pairs(Path(out) / 'offline')
        dist.barrier()
        build, failing = Runner.build_dataloader, ['iter_4']

        def failing_build(dataloader, *args, **kwargs):
            if rank == 1 and any(f'dpo_refresh/{name}' in str(dataloader['dataset']) for name in failing):
                raise OSError('stale file handle (simulated)')
            return build(dataloader, *args, **kwargs)

        Runner.build_dataloader = staticmethod(failing_build)
        work, offline, small = Path(out) / 'refresh', Path(out) / 'offline', dict(num_controls=2, candidates=2)
        try:
            try:
                run_refresh(work, parts, val_root, offline, small, max_iters=5, ckpt=2)
            except Exception as err:
                result['refresh_error'] = f'{type(err).__name__}: {err}'
            failing.append('iter_2')
            try:
                run_refresh(work, parts, val_root, offline, small, max_iters=5, resume=str(work / 'iter_2.pth'))
            except Exception as err:
                result['resume_error'] = f'{type(err).__name__}: {err}'
        finally:
            Runner.build_dataloader = staticmethod(build)
    finally:
        with open(os.path.join(out, f'rank{rank}.json'), 'w') as f:
            json.dump(result, f)
        dist.destroy_process_group()


def test_two_ranks_checkpoint_and_fail_a_refresh_together(tmp_path, parts, val_root):
    from .test_control_eval_dist import run_two
    ranks = run_two(parts, val_root, tmp_path, worker=_two_rank_worker)
    assert [(r['error'], r['iter']) for r in ranks] == [(None, 2)] * 2
    for step in (1, 2):
        assert (tmp_path / 'work' / 'dpo_lora' / f'iter_{step}' / 'pytorch_lora_weights.safetensors').is_file()
        ckpt = torch.load(tmp_path / 'work' / f'iter_{step}.pth', map_location='cpu', weights_only=False)
        assert ckpt['meta']['dpo_lora'] == f'dpo_lora/iter_{step}'
    for r in ranks:   # the rebuild failed on rank 1: both ranks stop (before: rank 0 trained on alone)
        assert r['refresh_error'] == ('RuntimeError: DPO pair refresh failed (switching the train dataloader to the '
                                      "round's pairs) on rank 1: OSError: stale file handle (simulated)")
    # the resume's rebuild failed on rank 1: rank 1 raises its error, rank 0 names it (before: rank 0 went on into
    # the base generation's gather alone)
    assert ranks[1]['resume_error'] == 'OSError: stale file handle (simulated)'
    assert ranks[0]['resume_error'] == ("RuntimeError: DPOControlHook: restoring the checkpoint's refreshed pairs "
                                        'failed on rank 1: OSError: stale file handle (simulated)')


# --- TR-DPO: the base of a resumed run ---------------------------------------------------------------------------
def test_a_resumed_tr_dpo_run_keeps_the_base_figures_and_the_reference(tmp_path, parts, val_root):
    """With ``reference_adapter=True`` and TRDPOHook the reference moves; the hook's base figures are the model
    before DPO in every run, a resumed one included (before: the resumed run's "base" was the moved reference),
    and the resumed run ends with the uninterrupted run's reference and LoRA (the reference is checkpointed)."""
    model = dict(dpo_cfg(parts), reference_adapter=True)
    hooks = [hook_cfg(val_root, interval=2, sheet_rows=2), dict(type='TRDPOHook', interval=1, alpha=1.0)]
    full = _runner(tmp_path / 'full', parts, hooks, max_iters=4, ckpt=2, model=model)
    full.train()
    resumed = _runner(tmp_path / 'full', parts, hooks, max_iters=4, ckpt=2, model=model,
                      resume=str(tmp_path / 'full' / 'iter_2.pth'))
    resumed.train()
    a, b = (next(h for h in r.hooks if type(h).__name__ == 'DPOControlHook') for r in (full, resumed))
    # the reference had moved by iteration 2: its images differ from the base's
    assert max(abs(x.astype(int) - y.astype(int)).max() for x, y in zip(a.last_result.images, a.base_result.images))
    torch.testing.assert_close(torch.as_tensor(b.base_result.oks), torch.as_tensor(a.base_result.oks), rtol=0, atol=0)
    for x, y in zip(b.base_result.images, a.base_result.images):
        assert (x == y).all()
    for key, value in full.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, rtol=1e-5, atol=1e-7, msg=key)
    assert any(k.startswith('ref_layers.') for k in full.model.state_dict())


# --- resume onto pairs another run wrote -------------------------------------------------------------------------
@pytest.fixture(scope='module')
def offline(tmp_path_factory):
    from .test_dpo_control_hook import write_offline_pairs
    return write_offline_pairs(tmp_path_factory.mktemp('hostile_offline') / 'cands')


def test_resume_refuses_the_pairs_of_a_second_run_in_the_same_work_dir(tmp_path, parts, val_root, offline):
    """Run A refreshes at 2 and checkpoints at 3; a second run B (not a resume) into the same work dir remakes
    ``dpo_refresh/iter_2`` with its own seeds. Resuming A from its checkpoint must not train on B's pairs as if A
    had made them (before: it did, silently)."""
    from .test_dpo_control_hook import read_jsonl, run_refresh
    run_refresh(tmp_path, parts, val_root, offline, {}, max_iters=3)
    mine = read_jsonl(tmp_path / 'dpo_refresh' / 'iter_2' / 'dpo_pairs.jsonl')
    os.replace(tmp_path / 'iter_3.pth', tmp_path / 'run_a_iter_3.pth')
    run_refresh(tmp_path, parts, val_root, offline, dict(seed=5), max_iters=3)
    assert read_jsonl(tmp_path / 'dpo_refresh' / 'iter_2' / 'dpo_pairs.jsonl') != mine
    with pytest.raises(ValueError, match=r"pairs file .*dpo_refresh/iter_2/dpo_pairs.jsonl is not the one the "
                                         r"checkpoint trained on \(sha256 \w+, checkpoint's \w+, meta"):
        run_refresh(tmp_path, parts, val_root, offline, {}, max_iters=4, resume=str(tmp_path / 'run_a_iter_3.pth'))


# --- a round on its own: what a failure and a kill leave ---------------------------------------------------------
class BrokenScorer:
    """A scorer that fails on its first image (a corrupt model file, a CUDA error)."""

    name = 'broken'

    def predict_batch(self, images):
        raise KeyError('keypoint head weights (simulated)')


def test_a_failed_round_keeps_its_traceback_and_leaves_nothing(tmp_path, parts, val_root):
    from .test_dpo_control_hook import one_round, tiny_pipeline
    with pytest.raises(RuntimeError, match=r"\(generating and scoring the candidates\) on rank 0: KeyError: "
                                           r"'keypoint head weights \(simulated\)'") as info:
        one_round(tiny_pipeline(parts), val_root, tmp_path / 'iter_2', BrokenScorer())
    # the scorer's own exception, with its traceback, is chained (before: only its message, no traceback)
    assert isinstance(info.value.__cause__, KeyError)
    assert info.value.__cause__.__traceback__ is not None
    assert list(tmp_path.iterdir()) == []


def test_a_round_removes_what_a_kill_between_the_renames_left(tmp_path, parts, val_root):
    """``_publish`` moves an existing ``iter_K`` aside, renames the new one in and deletes the old: a kill between
    the renames leaves the old folder under a temporary name (a round's candidate images); the next attempt at the
    round deletes it (before: it stayed forever)."""
    from .test_dpo_control_hook import one_round, tiny_pipeline
    (tmp_path / '.iter_2.tmp-old-0123abcd' / 'shards').mkdir(parents=True)
    (tmp_path / '.iter_2.tmp-refresh').mkdir()
    (tmp_path / '.iter_20.tmp-refresh').mkdir()   # another round's, being written: not touched
    one_round(tiny_pipeline(parts), val_root, tmp_path / 'iter_2')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['.iter_20.tmp-refresh', 'iter_2']


# --- the checkpoint's LoRA in the generation backend -------------------------------------------------------------
def test_the_checkpoint_lora_in_the_backend_gives_the_hook_images(tmp_path, parts, val_root):
    """The LoRA the hook wrote at iteration 4 (rank 4, alpha 16: its scale 4 must travel with it), loaded by
    SD15ControlNetBackend(loras=[...]) from the file alone, regenerates the hook's 'current' held-out images at
    iteration 4 (same rows, prompts, seeds); the backend without it regenerates the hook's base images."""
    from posedreamer_mm.apis.control_eval import evaluate_control
    from posedreamer_mm.registry import BACKENDS
    model = dict(dpo_cfg(parts), lora=dict(r=4, lora_alpha=16))
    runner = _runner(tmp_path, parts, [hook_cfg(val_root, interval=2, sheet_rows=3)], max_iters=4, ckpt=2,
                     model=model)
    runner.train()
    hook = next(h for h in runner.hooks if type(h).__name__ == 'DPOControlHook')
    runner.model.policy.controlnet.save_pretrained(tmp_path / 'controlnet')   # frozen by DPO: the trained one
    ckpt = torch.load(tmp_path / 'iter_4.pth', map_location='cpu', weights_only=False)
    cpu = dict(type='SD15ControlNetBackend', weights=str(parts['sd15']), device='cpu', dtype='float32',
               num_inference_steps=2, guidance_scale=1.0,
               controlnets=dict(weights=str(tmp_path / 'controlnet'), control_type='pncc'))
    lora = BACKENDS.build(dict(cpu, loras=[dict(path=str(tmp_path / ckpt['meta']['dpo_lora']), name='dpo')]))
    got = evaluate_control(lora, hook.held_out, hook.scorer)
    base = evaluate_control(BACKENDS.build(cpu), hook.held_out, hook.scorer)
    for g, want, b, want_b in zip(got.images, hook.last_result.images, base.images, hook.base_result.images):
        assert abs(g.astype(int) - want.astype(int)).max() <= 1   # float32 rounding to uint8
        assert abs(b.astype(int) - want_b.astype(int)).max() <= 1
    assert max(abs(g.astype(int) - b.astype(int)).max() for g, b in zip(got.images, base.images)) > 8


def test_tr_dpo_update_by_hand(parts):
    """``TRDPOHook``: ``ref <- (1 - a) ref + a policy`` on every factor, checked against the hand computation from
    copies taken before; ``a = 1`` copies the policy's factors exactly; ``a = 0`` (no update) is refused."""
    from types import SimpleNamespace

    from posedreamer_mm.engine.hooks.tr_dpo_hook import TRDPOHook
    from posedreamer_mm.registry import MODELS
    model = MODELS.build(dict(dpo_cfg(parts), reference_adapter=True))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in [*model.lora_layers.parameters(), *model.ref_layers.parameters()]:
            p.copy_(torch.randn(p.shape, generator=gen))
    ref0 = {k: m.weight.detach().clone() for k, m in model.ref_layers.items()}
    pol = {k: m.weight.detach().clone() for k, m in model.lora_layers.items()}
    assert ref0.keys() == pol.keys() and {k.rsplit('/', 1)[1] for k in pol} == {'lora_A', 'lora_B'}
    runner = SimpleNamespace(model=model, iter=2)   # iteration 3: updated every 3
    TRDPOHook(interval=3, alpha=0.25).after_train_iter(runner, 2)
    for k, m in model.ref_layers.items():
        torch.testing.assert_close(m.weight, 0.75 * ref0[k] + 0.25 * pol[k], rtol=1e-6, atol=1e-6)
        assert torch.equal(model.lora_layers[k].weight, pol[k])   # the policy is untouched
    runner.iter = 3                                 # iteration 4: no update
    TRDPOHook(interval=3, alpha=1.0).after_train_iter(runner, 3)
    for k, m in model.ref_layers.items():
        torch.testing.assert_close(m.weight, 0.75 * ref0[k] + 0.25 * pol[k], rtol=1e-6, atol=1e-6)
    runner.iter = 5
    TRDPOHook(interval=3, alpha=1.0).after_train_iter(runner, 5)
    assert all(torch.equal(m.weight, pol[k]) for k, m in model.ref_layers.items())
    with pytest.raises(ValueError, match=r'alpha must lie in \(0, 1\], got 0'):
        TRDPOHook(alpha=0)


def test_a_resume_without_its_pairs_stops_before_generating_the_base(tmp_path, parts, val_root, offline, monkeypatch):
    """The checkpoint's refreshed pairs are gone: the resume stops naming the file before it generates and scores
    the held-out set with the base model (minutes at full size; before: after it)."""
    from .test_dpo_control_hook import PixelScorer, run_refresh
    run_refresh(tmp_path, parts, val_root, offline, {}, max_iters=3)
    os.rename(tmp_path / 'dpo_refresh', tmp_path / 'elsewhere')
    scored, score = [], PixelScorer.predict_batch
    monkeypatch.setattr(PixelScorer, 'predict_batch', lambda self, images: scored.append(len(images)) or
                        score(self, images))
    with pytest.raises(FileNotFoundError, match=r'dpo_refresh/iter_2/dpo_pairs.jsonl'):
        run_refresh(tmp_path, parts, val_root, offline, {}, max_iters=4, resume=str(tmp_path / 'iter_3.pth'))
    assert scored == []


def test_resume_of_a_run_without_rounds_into_a_refresh_config(tmp_path, parts, val_root, offline):
    """A checkpoint without ``meta['dpo_refresh']`` (no round made pairs, as a run without refresh) resumed with
    refresh on and other settings (2 candidates, a round every 2): the resumed run replays the configured pairs
    in the uninterrupted order, then its first round (2 candidates per control) switches the data."""
    from .test_dpo_control_hook import read_jsonl, run_refresh
    _, first = run_refresh(tmp_path, parts, val_root, offline, dict(interval=100), max_iters=4)
    ckpt = torch.load(tmp_path / 'iter_3.pth', map_location='cpu', weights_only=False)
    assert 'dpo_refresh' not in ckpt['meta']
    _, resumed = run_refresh(tmp_path, parts, val_root, offline, dict(interval=2, candidates=2), max_iters=6,
                             resume=str(tmp_path / 'iter_3.pth'))
    assert sorted(resumed.ids) == [3, 4, 5] and resumed.ids[3] == first.ids[3]
    pairs = read_jsonl(tmp_path / 'dpo_refresh' / 'iter_4' / 'dpo_pairs.jsonl')
    assert pairs and set(resumed.ids[4] + resumed.ids[5]) <= {p['group'] for p in pairs}
    report = json.loads((tmp_path / 'dpo_refresh' / 'iter_4' / 'dpo_pairs.report.json').read_text())
    assert report['refresh']['candidates_per_control'] == 2 and report['refresh']['iter'] == 4


def test_a_round_does_not_delete_a_live_run_writing_it_and_takes_over_a_killed_one(tmp_path, parts, val_root):
    """A second run in the same work dir reaches round 2 while the first still writes it: the round's temporary
    folder holds the first run's live lock; the second run stops naming it (before: it deleted the folder under the
    live writer). Once that run is SIGKILLed, its lock is stale and the next attempt replaces the folder."""
    import signal
    import subprocess
    import sys

    from .test_dpo_control_hook import one_round, tiny_pipeline
    live = tmp_path / '.iter_2.tmp-refresh'
    live.mkdir()
    (live / 'shard_being_written').write_text('x')
    holder = subprocess.Popen(
        [sys.executable, '-c', 'import sys, time\nfrom posedreamer_mm.utils import output_lock\n'
         f'output_lock.acquire({str(live)!r})\nprint("held", flush=True)\ntime.sleep(120)'],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == 'held'
        with pytest.raises(RuntimeError, match=r'\(preparing .*\.iter_2\.tmp-refresh\) on rank 0: .*another live run '
                                               r'writes the round .*iter_2.*pid ' + str(holder.pid)):
            one_round(tiny_pipeline(parts), val_root, tmp_path / 'iter_2')
        assert (live / 'shard_being_written').is_file()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    one_round(tiny_pipeline(parts), val_root, tmp_path / 'iter_2')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['iter_2']
