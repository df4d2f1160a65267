"""DPOControlHook in a real mmengine Runner training DiffusionDPO (tiny SD1.5 ControlNet policy) on in-memory pairs:
base figures equal the plain policy's, the relative reduction is computed from the logged errors, the contact
sheet has the base column, and every checkpoint gets its LoRA in diffusers format."""
import hashlib
import json
import shutil
import uuid

import cv2
import numpy as np
import pytest
import torch
from mmengine.hooks import Hook
from mmengine.runner import Runner
from safetensors.torch import load_file

from posedreamer_mm.apis.control_eval import evaluate_control
from posedreamer_mm.apis.dpo_pairs import make_pairs
from posedreamer_mm.body.sample import BodySample
from posedreamer_mm.generation.reader import GeneratedDataReader
from posedreamer_mm.generation.writer import ShardedDatasetWriter
from posedreamer_mm.registry import HOOKS, MODELS, SCORERS
from posedreamer_mm.scoring.base import BasePoseScorer, PoseDetections

from .control_fixtures import (
    SIDE,
    RecordingScorer,
    label_keypoints,
    trainer_cfg,
    write_control_dataset,
    write_tiny_parts,
)


@pytest.fixture(scope='module')
def parts(tmp_path_factory):
    torch.set_num_threads(1)
    return write_tiny_parts(tmp_path_factory.mktemp('tiny_sd_dpo'))


@pytest.fixture(scope='module')
def val_root(tmp_path_factory):
    return write_control_dataset(tmp_path_factory.mktemp('dpo_val') / 'data', num=4)


class InMemoryPairs(torch.utils.data.Dataset):
    """Packed DPO pairs as DPOPairDataset's pipeline gives them (uint8 images and controls)."""

    def __init__(self, n=4, seed=0):
        gen = torch.Generator().manual_seed(seed)

        def img():
            return torch.randint(0, 256, (3, SIDE, SIDE), generator=gen, dtype=torch.uint8)

        self.items = [dict(inputs=dict(image_w=img(), image_l=img(), control=img()),
                           data_samples=dict(prompt=f'a person {i}', sample_id=f'pair_{i}')) for i in range(n)]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def dpo_cfg(parts):
    return dict(type='DiffusionDPO', policy=trainer_cfg(parts, noise_seed=0), lora=dict(r=4, lora_alpha=4),
                loss=dict(beta=5000.0))


def hook_cfg(val_root, **kw):
    return {**dict(type='DPOControlHook', data_root=str(val_root), control_types=['pncc'],
                   scorer=dict(type='TestOnlyRecordingScorer', miss_every=0), num_samples=3, interval=2,
                   backend=dict(num_inference_steps=2, guidance_scale=1.0), sheet_rows=2, tile=32), **kw}


def run(tmp_path, parts, hooks, max_iters=4):
    runner = Runner(
        model=dpo_cfg(parts), work_dir=str(tmp_path),
        train_dataloader=dict(dataset=InMemoryPairs(), sampler=dict(type='DefaultSampler', shuffle=False),
                              batch_size=2, num_workers=0, collate_fn=dict(type='pseudo_collate')),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=5e-2)),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False),
                           logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=hooks, randomness=dict(seed=7),
        visualizer=dict(type='Visualizer', vis_backends=[dict(type='LocalVisBackend')],
                        name=f'vis_dpo_{uuid.uuid4().hex}'),
        experiment_name=f'dpo_{uuid.uuid4().hex}', default_scope='posedreamer_mm')
    runner.train()
    return runner


def test_hook_logs_base_and_current_figures_sheet_and_loras(tmp_path, parts, val_root):
    RecordingScorer.calls.clear()
    runner = run(tmp_path, parts, [hook_cfg(val_root)])
    hook = next(h for h in runner.hooks if type(h).__name__ == 'DPOControlHook')
    model = runner.model

    # the base figures are the plain policy's (no adapter at all), same rows, prompts and seeds
    plain = MODELS.build(trainer_cfg(parts, noise_seed=0)).eval()
    scorer = SCORERS.build(dict(type='TestOnlyRecordingScorer', miss_every=0))
    want = evaluate_control(plain.build_pipeline(), hook.held_out, scorer, control_types=['pncc'],
                            backend=dict(num_inference_steps=2, guidance_scale=1.0))
    for got, ref in zip(hook.base_result.images, want.images):
        np.testing.assert_array_equal(got, ref)
    np.testing.assert_allclose(hook.base_result.oks, want.oks)
    # ... and the trained LoRA changed the images (same seeds)
    assert max(np.abs(a.astype(int) - b.astype(int)).max()
               for a, b in zip(hook.last_result.images, hook.base_result.images)) > 0

    recs = [json.loads(line) for line in open(next(tmp_path.glob('*/vis_data/scalars.json')))]
    base = [r for r in recs if 'dpo_val/base_oks_error' in r and r['step'] == 0]
    assert len(base) == 1 and base[0]['dpo_val/base_oks_error'] == pytest.approx(want.oks_error)
    val = {r['step']: r for r in recs if 'dpo_val/oks_error' in r}
    assert sorted(val) == [2, 4]
    for r in val.values():
        b, e = r['dpo_val/base_oks_error'], r['dpo_val/oks_error']
        assert r['dpo_val/oks_error_reduction'] == pytest.approx((b - e) / b)
        assert r['dpo_val/mean_oks'] == pytest.approx(1 - e)
        assert 0.0 <= r['dpo_val/implicit_acc'] <= 1.0
    assert val[4]['dpo_val/implicit_acc'] == pytest.approx(model.last_metrics['implicit_acc'])
    assert val[4]['dpo_val/oks_error'] == pytest.approx(hook.last_result.oks_error)
    # the training log has the model's DPO figures per iteration
    train = [r for r in recs if 'implicit_acc' in r and 'reward_margin' in r]
    assert len(train) == 4 and all('ref_mse' in r and 'err_w_diff' in r for r in train)

    sheet = cv2.imread(str(next(tmp_path.glob('*/vis_data/vis_image/dpo_val_contact_sheet_4.png'))))
    assert sheet is not None and sheet.shape[1] == 4 * 32  # base | generated | generated + label | pncc

    for step in (2, 4):
        lora = tmp_path / 'dpo_lora' / f'iter_{step}' / 'pytorch_lora_weights.safetensors'
        assert lora.is_file()
        ckpt = torch.load(tmp_path / f'iter_{step}.pth', map_location='cpu', weights_only=False)
        assert ckpt['meta']['dpo_lora'] == f'dpo_lora/iter_{step}'
        assert all(k.startswith('lora_layers.') for k in ckpt['state_dict'])
    saved = load_file(tmp_path / 'dpo_lora' / 'iter_4' / 'pytorch_lora_weights.safetensors')
    live = model.lora_state_dicts()['unet']
    assert len(saved) == len(live)
    for k, v in live.items():
        torch.testing.assert_close(saved[f'unet.{k}'], v, rtol=0, atol=0)


def test_a_model_without_reference_is_named(tmp_path, parts, val_root):
    runner = Runner(
        model=trainer_cfg(parts), work_dir=str(tmp_path),
        train_dataloader=dict(dataset=InMemoryPairs(), sampler=dict(type='DefaultSampler', shuffle=False),
                              batch_size=2, num_workers=0, collate_fn=dict(type='pseudo_collate')),
        train_cfg=dict(by_epoch=False, max_iters=1), optim_wrapper=dict(optimizer=dict(type='AdamW', lr=1e-3)),
        custom_hooks=[hook_cfg(val_root)], default_scope='posedreamer_mm')
    with pytest.raises(TypeError, match='no reference'):
        runner.train()


# --- on-line pair refresh ----------------------------------------------------------------------------------------
@SCORERS.register_module(name='TestOnlyPixelScorer')
class PixelScorer(BasePoseScorer):
    """Test scorer whose OKS spreads over candidates: one person at the fixture label of row 0 shifted by
    ``(red of the centre pixel - 128) / 24`` pixels (a candidate's OKS follows that pixel), nobody where its green
    is below 25. Deterministic per image (no call counter), so a resumed run scores alike."""

    name = 'test_pixel'

    def predict_batch(self, images):
        out = []
        for img in images:
            centre = img[img.shape[0] // 2, img.shape[1] // 2].astype(float)
            if centre[1] < 25:
                out.append(PoseDetections.empty((img.shape[1], img.shape[0]), self.name))
                continue
            kp = label_keypoints(0)[:, :2] * img.shape[0] / SIDE + (centre[0] - 128) / 24
            x1, y1 = kp.min(0)
            x2, y2 = kp.max(0)
            out.append(PoseDetections(kp[None], (np.arange(17, dtype=np.float32)[None] + 1) / 17,
                                      np.array([[x1, y1, x2, y2]], np.float32), np.ones(1, np.float32),
                                      (img.shape[1], img.shape[0]), self.name))
        return out


def write_offline_pairs(root, groups=3):
    """The pairs a run starts from: a candidates dataset (2 candidates per group ``orig_<g>``) and a pairs file of
    the reference format (winner candidate 0, loser candidate 1)."""
    rng = np.random.default_rng(1)
    writer = ShardedDatasetWriter(shard_size=8, image_format='png', save_controls=True)
    n = 2 * groups
    writer.prepare_output(str(root), dict(fingerprint='offline-pairs', config={}, num_samples=n))
    builder = writer.open_shard(str(root), 0, n)
    for i in range(n):
        g, j = i // 2, i % 2
        builder.add(i, dict(sample=BodySample(id=f'orig_{g}_c{j:03d}', img_size=np.array([SIDE, SIDE])),
                            img=rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8), seed=i,
                            controls=dict(pncc=rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)),
                            prompt=f'a person {g}', group=f'orig_{g}', candidate=j))
    builder.commit()
    writer.finalize(str(root), n)
    writer.release_output(str(root))
    reader = GeneratedDataReader(str(root))
    lines = []
    for g in range(groups):
        w, lo = reader.meta(2 * g), reader.meta(2 * g + 1)
        lines.append(dict(group=f'orig_{g}', winner=dict(id=w['id'], image=w['image'], oks=0.9),
                          loser=dict(id=lo['id'], image=lo['image'], oks=0.3), controls=w['controls'],
                          prompt=w['prompt'], gap=0.6))
    (root / 'dpo_pairs.jsonl').write_text(''.join(json.dumps(x) + '\n' for x in lines))
    return root


class Recorder(Hook):
    """Per iteration: the pair groups trained on and the loss; the train dataloader's first worker processes."""

    priority = 'VERY_HIGH'

    def __init__(self):
        self.ids, self.loss, self.workers, self.alive_after_refresh = {}, {}, [], None

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.ids[runner.iter] = list(data_batch['data_samples']['sample_id'])
        if not self.workers:
            self.workers = list(getattr(runner.train_loop.dataloader_iterator._iterator, '_workers', []))
        if runner.iter == 2:   # the first iteration after the round at 2
            self.alive_after_refresh = [w.is_alive() for w in self.workers]

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.loss[runner.iter] = float(outputs['loss'].detach())


REFRESH = dict(interval=2, candidates=3, min_gap=0.05, min_winner=0.5, sheet_rows=2)


def run_refresh(work_dir, parts, val_root, offline, refresh, max_iters=5, resume=None, num_workers=0, ckpt=3,
                dataset=None):
    recorder = Recorder()
    hook = dict(type='DPOControlHook', data_root=str(val_root), control_types=['pncc'],
                scorer=dict(type='TestOnlyPixelScorer'), num_samples=2, interval=0, after_train=False,
                backend=dict(num_inference_steps=2, guidance_scale=1.0), sheet_rows=0, tile=32, lora_dir=None,
                refresh=dict(REFRESH, controls=str(val_root), **refresh))
    runner = Runner(
        model=dpo_cfg(parts), work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=dataset or dict(type='DPOPairDataset', data_root=str(offline), control_types=['pncc'],
                                    pipeline=[dict(type='LoadDPOPair'), dict(type='PackDPOPair')]),
            sampler=dict(type='InfiniteSampler', shuffle=True), batch_size=1, num_workers=num_workers,
            persistent_workers=num_workers > 0, collate_fn=dict(type='pseudo_collate')),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=5e-2)),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=ckpt, by_epoch=False),
                           logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=[hook, recorder], randomness=dict(seed=7), resume=resume is not None, load_from=resume,
        visualizer=dict(type='Visualizer', vis_backends=[dict(type='LocalVisBackend')],
                        name=f'vis_refresh_{uuid.uuid4().hex}'),
        # a name of its own: mmengine keys its logger by experiment name (a timestamp to the second by default), and
        # a second runner in the same second would write its log into the first runner's file
        experiment_name=f'refresh_{uuid.uuid4().hex}', default_scope='posedreamer_mm')
    runner.train()
    return runner, recorder


def read_jsonl(path):
    return [json.loads(line) for line in open(path) if line.strip()]


def expected_pairs(round_dir, min_gap, min_winner):
    """The rule recomputed from the round's files: rows (meta.jsonl) and scores (filter/scores.jsonl)."""
    scores = {r['id']: r for r in read_jsonl(round_dir / 'filter' / 'scores.jsonl')}
    groups = {}
    for meta in round_dir.glob('shards/*/meta.jsonl'):
        for row in read_jsonl(meta):
            groups.setdefault(row['group'], []).append(row)
    out, reasons = {}, {}
    for g, rows in groups.items():
        rows.sort(key=lambda r: r['candidate'])
        scored = [(scores[r['id']]['scores']['oks'], r['candidate'], r) for r in rows
                  if scores[r['id']]['match']['index'] is not None]
        if len(scored) < 2:
            reasons[g] = 'too_few_scored'
            continue
        best = max(scored, key=lambda t: (t[0], -t[1]))
        worst = min(scored, key=lambda t: (t[0], t[1]))
        if best[0] == worst[0]:
            reasons[g] = 'tie'
        elif best[0] + 1e-9 < min_winner:
            reasons[g] = 'winner_below_min'
        elif best[0] - worst[0] + 1e-9 < min_gap:
            reasons[g] = 'gap_below_min'
        else:
            reasons[g] = 'paired'
            out[g] = (best[2], worst[2])
    return out, reasons, groups, scores


@pytest.fixture(scope='module')
def offline(tmp_path_factory):
    return write_offline_pairs(tmp_path_factory.mktemp('offline') / 'cands')


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory, parts, val_root, offline):
    """5 iterations, refresh rounds at 2 and 4, a checkpoint at 3; two persistent dataloader workers."""
    work = tmp_path_factory.mktemp('refresh_run')
    runner, recorder = run_refresh(work, parts, val_root, offline, {}, num_workers=1)
    return work, runner, recorder


def test_refresh_round_writes_candidates_and_pairs_that_obey_the_rule(uninterrupted, val_root):
    work, runner, _ = uninterrupted
    rounds = sorted(p.name for p in (work / 'dpo_refresh').iterdir())
    assert rounds == ['iter_2', 'iter_4']      # every 2 iterations, none at the last one; no temporary folder left
    seeds = {}
    for name in rounds:
        root = work / 'dpo_refresh' / name
        want, reasons, groups, scores = expected_pairs(root, 0.05, 0.5)
        assert sorted(groups) == ['val_000', 'val_001', 'val_002', 'val_003']   # every training control
        assert all(sorted(r['candidate'] for r in rows) == [0, 1, 2] for rows in groups.values())
        pairs = read_jsonl(root / 'dpo_pairs.jsonl')
        assert {p['group'] for p in pairs} == set(want)
        for p in pairs:
            w, lo = want[p['group']]
            assert (p['winner']['id'], p['loser']['id']) == (w['id'], lo['id'])
            assert p['winner']['seed'] == w['seed'] and p['winner']['image'] == w['image']
            assert p['gap'] == pytest.approx(scores[w['id']]['scores']['oks'] - scores[lo['id']]['scores']['oks'],
                                             abs=2e-6)
            assert (root / p['winner']['image']).is_file() and (root / p['controls']['pncc']).is_file()
        report = json.loads((root / 'dpo_pairs.report.json').read_text())
        by_reason = report['groups_by_reason']
        assert by_reason == {r: sum(v == r for v in reasons.values()) for r in by_reason}
        unmatched = sum(s['match']['index'] is None for s in scores.values())
        assert report['unscored_by_cause']['no_match'] == unmatched
        assert report['refresh']['mean_oks'] == pytest.approx(np.mean([s['scores']['oks'] for s in scores.values()]))
        assert report['pairs'] == str(root / 'dpo_pairs.jsonl')
        # what tools/make_dpo_pairs.py runs remakes the same pairs file from the round's candidates and scores
        make_pairs(str(root), str(root / 'filter' / 'scores.jsonl'), str(work / f'audit_{name}.jsonl'))
        assert read_jsonl(work / f'audit_{name}.jsonl') == pairs
        # the candidates of one control share its control image and prompt; the images differ by seed
        rows = groups['val_000']
        assert len({r['seed'] for r in rows}) == 3 and len({r['prompt'] for r in rows}) == 1
        seeds[name] = {r['id']: r['seed'] for rows in groups.values() for r in rows}
    assert seeds['iter_2'].keys() == seeds['iter_4'].keys()
    assert all(seeds['iter_2'][k] != seeds['iter_4'][k] for k in seeds['iter_2'])   # round-specific seeds
    assert len(set(seeds['iter_2'].values())) == 12
    # logged: the round's counts and its contact sheet
    recs = [json.loads(line) for line in open(next(work.glob('*/vis_data/scalars.json')))]
    logged = {r['step']: r for r in recs if 'dpo_refresh/num_pairs' in r}
    assert sorted(logged) == [2, 4]
    report = json.loads((work / 'dpo_refresh' / 'iter_2' / 'dpo_pairs.report.json').read_text())
    assert logged[2]['dpo_refresh/num_pairs'] == report['num_pairs'] > 0
    assert logged[2]['dpo_refresh/tie'] == report['groups_by_reason']['tie']
    assert logged[2]['dpo_refresh/mean_oks'] == pytest.approx(report['refresh']['mean_oks'])
    sheet = cv2.imread(str(next(work.glob('*/vis_data/vis_image/dpo_refresh_contact_sheet_2.png'))))
    assert sheet.shape[1] == 4 * 32   # 3 candidates + the control


def test_train_dataloader_switches_to_the_refreshed_pairs(uninterrupted, offline):
    work, runner, recorder = uninterrupted
    groups = {name: {p['group'] for p in read_jsonl(work / 'dpo_refresh' / name / 'dpo_pairs.jsonl')}
              for name in ('iter_2', 'iter_4')}
    for it, ids in recorder.ids.items():
        want = {'orig_0', 'orig_1', 'orig_2'} if it < 2 else groups['iter_2'] if it < 4 else groups['iter_4']
        assert set(ids) <= want, (it, ids)
    loader = runner.train_dataloader
    assert len(loader.dataset) == len(groups['iter_4']) and loader.sampler.size == len(groups['iter_4'])
    assert loader.dataset.data_root == str(work / 'dpo_refresh' / 'iter_4')
    # persistent workers of the replaced dataloaders (and their copies of the old pairs) are gone
    assert recorder.workers and recorder.alive_after_refresh == [False] * len(recorder.workers)
    ckpt = torch.load(work / 'iter_3.pth', map_location='cpu', weights_only=False)
    pairs_file = work / 'dpo_refresh' / 'iter_2' / 'dpo_pairs.jsonl'
    assert ckpt['meta']['dpo_refresh'] == dict(iter=2, data_root='dpo_refresh/iter_2', ann_file='dpo_pairs.jsonl',
                                               mode='replace', num_pairs=len(groups['iter_2']),
                                               sha256=hashlib.sha256(pairs_file.read_bytes()).hexdigest())


def test_resume_after_a_refresh_trains_on_the_same_pairs(tmp_path, uninterrupted, parts, val_root, offline):
    work, _, full = uninterrupted
    moved = tmp_path / 'moved'
    shutil.copytree(work, moved)   # the refresh folder is found relative to the (moved) work dir
    _, resumed = run_refresh(moved, parts, val_root, offline, {}, resume=str(moved / 'iter_3.pth'))
    assert sorted(resumed.ids) == [3, 4]
    for it in (3, 4):
        assert resumed.ids[it] == full.ids[it]
        assert resumed.loss[it] == pytest.approx(full.loss[it], rel=1e-6)
    # the round at 4 was redone from the same weights: the same pairs
    assert read_jsonl(moved / 'dpo_refresh' / 'iter_4' / 'dpo_pairs.jsonl') == \
        read_jsonl(work / 'dpo_refresh' / 'iter_4' / 'dpo_pairs.jsonl')
    # a resume that cannot train on the same pairs stops before the first iteration, naming why
    lost = tmp_path / 'lost'
    shutil.copytree(work, lost, ignore=shutil.ignore_patterns('dpo_refresh'))
    with pytest.raises(FileNotFoundError, match=r"file .*lost/dpo_refresh/iter_2/dpo_pairs.jsonl .*meta\['dpo_refresh"):
        run_refresh(lost, parts, val_root, offline, {}, resume=str(lost / 'iter_3.pth'))
    with pytest.raises(ValueError, match="refresh.mode 'replace', this config says 'mix'"):
        run_refresh(moved, parts, val_root, offline, dict(mode='mix'), resume=str(moved / 'iter_3.pth'))


def test_a_round_without_pairs_keeps_the_pairs_in_use(tmp_path, parts, val_root, offline):
    # a pair needs a winner of OKS 1 and a loser of OKS 0: none here
    runner, recorder = run_refresh(tmp_path, parts, val_root, offline, dict(min_winner=1.0, min_gap=1.0), max_iters=3)
    report = json.loads((tmp_path / 'dpo_refresh' / 'iter_2' / 'dpo_pairs.report.json').read_text())
    assert report['num_pairs'] == 0 and (tmp_path / 'dpo_refresh' / 'iter_2' / 'dpo_pairs.jsonl').read_text() == ''
    assert sum(n for reason, n in report['groups_by_reason'].items() if reason != 'paired') == 4
    assert all(set(ids) <= {'orig_0', 'orig_1', 'orig_2'} for ids in recorder.ids.values()) and 2 in recorder.ids
    assert runner.train_dataloader.dataset.data_root == str(offline)
    log = next(tmp_path.glob('*/*.log')).read_text()
    assert 'DPO pair refresh at iteration 2 made no pair' in log and 'training keeps the configured pairs' in log
    ckpt = torch.load(tmp_path / 'iter_3.pth', map_location='cpu', weights_only=False)
    assert 'dpo_refresh' not in ckpt['meta']


def test_a_candidates_dataset_gives_one_control_per_group(uninterrupted, val_root):
    from posedreamer_mm.apis.control_eval import load_held_out
    from posedreamer_mm.apis.dpo_refresh import load_controls
    work = uninterrupted[0]
    plain = load_held_out(str(val_root), 4, ['pncc'])
    grouped = load_controls(str(work / 'dpo_refresh' / 'iter_2'), ['pncc'])   # 12 rows, 3 per control
    assert [c.sample_id for c in grouped] == [c.sample_id for c in plain] == ['val_000', 'val_001', 'val_002',
                                                                             'val_003']
    for g, p in zip(grouped, plain):
        np.testing.assert_array_equal(g.controls['pncc'], p.controls['pncc'])
        np.testing.assert_allclose(g.keypoints, p.keypoints)
        assert g.prompt == p.prompt
    assert [c.sample_id for c in load_controls(str(work / 'dpo_refresh' / 'iter_2'), ['pncc'], num_controls=2)] == \
        ['val_000', 'val_002']   # evenly spaced groups
    with pytest.raises(ValueError, match=r"row 0 \(id 'val_000_c000'\): .*depth"):
        load_controls(str(work / 'dpo_refresh' / 'iter_2'), ['depth'])


def test_mix_mode_trains_on_the_original_and_the_refreshed_pairs(tmp_path, parts, val_root, offline):
    runner, recorder = run_refresh(tmp_path, parts, val_root, offline, dict(mode='mix'), max_iters=4, ckpt=10)
    pairs = read_jsonl(tmp_path / 'dpo_refresh' / 'iter_2' / 'dpo_pairs.jsonl')
    dataset = runner.train_dataloader.dataset
    assert len(dataset) == 3 + len(pairs) and runner.train_dataloader.sampler.size == len(dataset)
    assert [dataset[i]['data_samples']['sample_id'] for i in range(len(dataset))] == \
        ['orig_0', 'orig_1', 'orig_2'] + [p['group'] for p in pairs]
    assert set(recorder.ids[2] + recorder.ids[3]) <= {'orig_0', 'orig_1', 'orig_2'} | {p['group'] for p in pairs}
    assert not (tmp_path / 'dpo_refresh' / 'iter_4').exists()   # no round at the last iteration


def test_refresh_settings_errors_name_the_key(tmp_path, val_root):
    def build(**refresh):
        return HOOKS.build(dict(type='DPOControlHook', data_root=str(val_root), control_types=['pncc'],
                                scorer=dict(type='TestOnlyPixelScorer'), refresh=refresh))

    with pytest.raises(ValueError, match=r"refresh has unknown keys \['candidate'\]"):
        build(interval=2, controls=str(val_root), candidate=3)
    with pytest.raises(ValueError, match='refresh.controls is required'):
        build(interval=2)
    with pytest.raises(ValueError, match='refresh.candidates must be an integer >= 2'):
        build(interval=2, controls=str(val_root), candidates=1)
    with pytest.raises(ValueError, match=r'refresh.min_winner must be a number in \[0, 1\] \(an OKS\), got 1.5'):
        build(interval=2, controls=str(val_root), min_winner=1.5)   # at build, not at the first round
    with pytest.raises(ValueError, match=r'refresh.min_gap must be a number in \[0, 1\] \(an OKS\), got -0.1'):
        build(interval=2, controls=str(val_root), min_gap=-0.1)
    with pytest.raises(ValueError, match="refresh.mode must be one of \\['replace', 'mix'\\]"):
        build(interval=2, controls=str(val_root), mode='append')
    hook = build(interval=2, controls=str(tmp_path / 'nowhere'))
    with pytest.raises(FileNotFoundError, match='refresh.controls .*nowhere.* is not a directory'):
        hook.setup()


def test_refresh_needs_a_pairs_dataset_config(tmp_path, parts, val_root, offline):
    with pytest.raises(TypeError, match='train_dataloader.dataset must be a DPOPairDataset config'):
        run_refresh(tmp_path, parts, val_root, offline, {}, max_iters=1, dataset=InMemoryPairs())


# --- a round on its own: distributed, atomic ---------------------------------------------------------------------
ROUND = dict(REFRESH, controls_per_shard=1)   # 4 shards of one control: both ranks write some


def one_round(pipeline, val_root, root, scorer=None):
    from posedreamer_mm.apis.dpo_refresh import load_controls, refresh_round, refresh_settings
    s = refresh_settings(dict(ROUND, controls=str(val_root)))
    return refresh_round(pipeline, load_controls(s['controls'], ['pncc']), scorer or PixelScorer(), str(root), 2, s,
                         control_types=['pncc'], backend=dict(num_inference_steps=2, guidance_scale=1.0))


def tiny_pipeline(parts):
    return MODELS.build(trainer_cfg(parts, noise_seed=0)).eval().build_pipeline()


class FailingOnRank1(PixelScorer):
    def predict_batch(self, images):
        import torch.distributed as dist
        if dist.is_initialized() and dist.get_rank() == 1:
            raise RuntimeError('scorer crashed (simulated)')
        return super().predict_batch(images)


def _round_worker(rank, port, parts, val_root, out):
    import os

    import torch.distributed as dist

    from posedreamer_mm.utils import register_all_modules
    torch.set_num_threads(1)
    register_all_modules()
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=2)
    try:
        pipeline = tiny_pipeline(parts)
        report = one_round(pipeline, val_root, os.path.join(out, 'two', 'iter_2'))
        result = dict(num_pairs=report['num_pairs'])
        try:
            one_round(pipeline, val_root, os.path.join(out, 'failed', 'iter_2'), FailingOnRank1())
        except RuntimeError as err:
            result['error'] = str(err)
        with open(os.path.join(out, f'rank{rank}.json'), 'w') as f:
            json.dump(result, f)
    finally:
        dist.destroy_process_group()


def test_two_ranks_write_the_single_process_round_and_fail_together(tmp_path, parts, val_root):
    from .test_control_eval_dist import run_two
    ranks = run_two(parts, val_root, tmp_path, worker=_round_worker)
    single = one_round(tiny_pipeline(parts), val_root, tmp_path / 'one' / 'iter_2')
    assert ranks[0]['num_pairs'] == ranks[1]['num_pairs'] == single['num_pairs'] > 0   # every rank: rank 0's report
    two, one = tmp_path / 'two' / 'iter_2', tmp_path / 'one' / 'iter_2'
    assert read_jsonl(two / 'dpo_pairs.jsonl') == read_jsonl(one / 'dpo_pairs.jsonl')
    assert read_jsonl(two / 'filter' / 'scores.jsonl') == read_jsonl(one / 'filter' / 'scores.jsonl')
    assert sorted(p.name for p in (two / 'shards').iterdir()) == ['000000', '000001', '000002', '000003']
    for r in ranks:   # a failure on rank 1 is raised on both ranks; nothing of the round is left
        assert 'DPO pair refresh failed (generating and scoring the candidates) on rank 1: RuntimeError: scorer ' \
               'crashed (simulated)' in r['error']
    assert list((tmp_path / 'failed').iterdir()) == []


def test_a_round_replaces_a_stale_temporary_folder_and_publishes_whole(tmp_path, parts, val_root):
    stale = tmp_path / '.iter_2.tmp-refresh'
    (stale / 'shards' / '000000').mkdir(parents=True)   # left by a killed round
    (stale / 'junk.txt').write_text('x')
    report = one_round(tiny_pipeline(parts), val_root, tmp_path / 'iter_2')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['iter_2']
    assert GeneratedDataReader(str(tmp_path / 'iter_2')).manifest['status'] == 'complete'
    assert len(read_jsonl(tmp_path / 'iter_2' / 'dpo_pairs.jsonl')) == report['num_pairs']
