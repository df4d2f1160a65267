"""DPOControlHook under attack: two ranks saving checkpoints, a TR-DPO resume, a resume onto pairs another run
wrote, a refresh that fails after its round on one rank. Each test failed on the code before its fix."""
import json
import os
import uuid
from datetime import timedelta

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


# --- two ranks: the LoRA export at a checkpoint ------------------------------------------------------------------
def _checkpoint_worker(rank, port, parts, val_root, out):
    """Both ranks train 2 iterations with a held-out validation (a gather) and a checkpoint at every iteration.

    mmengine calls ``before_save_checkpoint`` on rank 0 only (``Runner.save_checkpoint`` is ``master_only``): a
    collective there would pair with rank 1's next one (the validation's gather) and leave the ranks waiting.
    """
    import torch.distributed as dist

    from posedreamer_mm.utils import register_all_modules
    torch.set_num_threads(1)
    register_all_modules()
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=2, timeout=timedelta(seconds=20))
    result = dict(error=None)
    try:
        runner = _runner(os.path.join(out, 'work'), parts, [hook_cfg(val_root, interval=1, sheet_rows=0)],
                         max_iters=2, ckpt=1, name='two_ranks')
        runner.train()
        result['iter'] = runner.iter
    except Exception as err:
        result['error'] = f'{type(err).__name__}: {err}'
    finally:
        with open(os.path.join(out, f'rank{rank}.json'), 'w') as f:
            json.dump(result, f)
        dist.destroy_process_group()


def test_two_ranks_save_checkpoints_with_the_lora_export(tmp_path, parts, val_root):
    from .test_control_eval_dist import run_two
    ranks = run_two(parts, val_root, tmp_path, worker=_checkpoint_worker)
    assert ranks == [dict(error=None, iter=2)] * 2
    for step in (1, 2):
        assert (tmp_path / 'work' / 'dpo_lora' / f'iter_{step}' / 'pytorch_lora_weights.safetensors').is_file()
        ckpt = torch.load(tmp_path / 'work' / f'iter_{step}.pth', map_location='cpu', weights_only=False)
        assert ckpt['meta']['dpo_lora'] == f'dpo_lora/iter_{step}'
