"""tools/train.py, tools/test.py and tools/dist_train.sh end to end on the tiny smoke config."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from posedreamer_mm.testing import free_port, write_tiny_coco

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / 'configs' / 'smoke' / 'td-hm_vit-tiny_1xb4-20it_tinycoco-64x48.py'


@pytest.fixture(scope='module')
def tiny_coco(tmp_path_factory):
    root = tmp_path_factory.mktemp('tiny_coco')
    write_tiny_coco(root, num_images=8)
    return root


def _env():
    return {**os.environ, 'PYTHONPATH': str(ROOT), 'OMP_NUM_THREADS': '1'}


def _train(work_dir, data_root, *extra, check=True, config=CONFIG):
    cmd = [sys.executable, str(ROOT / 'tools' / 'train.py'), str(config), '--work-dir', str(work_dir),
           '--cfg-options', f'data_root={data_root}/', *extra]
    res = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=600)
    if check:
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


def _losses(work_dir) -> dict[int, float]:
    """Training loss per iteration from every run's scalars.json under ``work_dir``."""
    out = {}
    for f in sorted(Path(work_dir).glob('*/vis_data/scalars.json')):
        for line in f.read_text().splitlines():
            rec = json.loads(line)
            if 'loss' in rec:
                out[rec['iter']] = rec['loss']
    return out


def test_killed_run_resumes_to_the_same_final_state(tmp_path, tiny_coco):
    full = tmp_path / 'full'
    _train(full, tiny_coco)
    full_losses = _losses(full)
    assert sorted(full_losses) == list(range(1, 21))
    assert full_losses[20] < full_losses[1]  # it learns

    cut = tmp_path / 'cut'
    # SIGKILL after iteration 12: the last checkpoint on disk is iter_10.
    preempted = tmp_path / 'preempted.py'
    preempted.write_text(f"_base_ = [{str(CONFIG)!r}]\n"
                         "custom_imports = dict(imports=['tests.tools.preemption_hook'], allow_failed_imports=False)\n"
                         "custom_hooks = [dict(type='SimulatedPreemptionHook', kill_after_iter=12)]\n")
    res = _train(cut, tiny_coco, config=preempted, check=False)
    assert res.returncode == -9, res.stderr[-2000:]
    assert (cut / 'iter_10.pth').exists() and not (cut / 'iter_15.pth').exists()
    res = _train(cut, tiny_coco, '--resume')
    assert 'resumed epoch: 0, iter: 10' in res.stdout + res.stderr
    resumed = _losses(cut)
    assert resumed[20] == pytest.approx(full_losses[20], rel=1e-6, abs=1e-9)
    assert resumed[11] == pytest.approx(full_losses[11], rel=1e-6, abs=1e-9)
    assert (cut / 'iter_20.pth').exists()

    # tools/test.py evaluates the final checkpoint with mmpose's CocoMetric and dumps predictions.
    dump = tmp_path / 'preds.pkl'
    res = subprocess.run([sys.executable, str(ROOT / 'tools' / 'test.py'), str(CONFIG), str(cut / 'iter_20.pth'),
                          '--work-dir', str(tmp_path / 'test'), '--dump', str(dump),
                          '--cfg-options', f'data_root={tiny_coco}/'],
                         capture_output=True, text=True, env=_env(), timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert 'coco/AP' in res.stdout + res.stderr
    assert dump.stat().st_size > 0


def test_dist_train_runs_two_cpu_processes(tmp_path, tiny_coco):
    env = {**_env(), 'PYTHON': sys.executable, 'PORT': str(free_port())}  # a fixed port collides with other jobs
    res = subprocess.run(['bash', str(ROOT / 'tools' / 'dist_train.sh'), str(CONFIG), '2', '--work-dir',
                          str(tmp_path / 'wd'), '--cfg-options', f'data_root={tiny_coco}/',
                          'train_cfg.max_iters=6', 'train_cfg.val_interval=6'],
                         capture_output=True, text=True, env=env, timeout=600)
    log = res.stdout + res.stderr
    assert res.returncode == 0, log[-4000:]
    assert 'rank 0/2' in log and 'rank 1/2' in log
    assert (tmp_path / 'wd' / 'iter_5.pth').exists()
    assert 'Iter(train) [6/6]' in log
    assert 'rank 0/2: process group ended' in log  # not left to interpreter exit (gloo may abort there)


def test_bad_paths_fail_with_the_path_named(tmp_path):
    res = subprocess.run([sys.executable, str(ROOT / 'tools' / 'train.py'), str(tmp_path / 'nope.py')],
                         capture_output=True, text=True, env=_env(), timeout=300)
    assert res.returncode != 0 and 'Config file not found' in res.stderr and 'nope.py' in res.stderr
    res = subprocess.run([sys.executable, str(ROOT / 'tools' / 'train.py'), str(CONFIG), '--resume',
                          str(tmp_path / 'missing.pth')], capture_output=True, text=True, env=_env(), timeout=300)
    assert res.returncode != 0 and 'missing.pth' in res.stderr and '--resume checkpoint not found' in res.stderr


def test_slurm_launcher_runs_on_cpu_from_slurm_variables(tmp_path, tiny_coco):
    """What `srun ... tools/train.py --launcher slurm` sees on one task: SLURM_* variables, no torchrun ones."""
    env = {k: v for k, v in _env().items() if k not in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR')}
    env.update(SLURM_PROCID='0', SLURM_NTASKS='1', SLURM_LOCALID='0', MASTER_PORT=str(free_port()))
    res = subprocess.run([sys.executable, str(ROOT / 'tools' / 'train.py'), str(CONFIG), '--launcher', 'slurm',
                          '--work-dir', str(tmp_path / 'wd'), '--cfg-options', f'data_root={tiny_coco}/',
                          'train_cfg.max_iters=2', 'train_cfg.val_interval=2'],
                         capture_output=True, text=True, env=env, timeout=600)
    log = res.stdout + res.stderr
    assert res.returncode == 0, log[-4000:]
    assert 'slurm launch runs CPU processes over gloo (rank 0/1)' in log
    assert 'Iter(train) [2/2]' in log
