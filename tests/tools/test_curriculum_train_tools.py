"""tools/train.py and tools/dist_train.sh with HardSampleSampler + DifficultyHook on a tiny HMR config: a SIGKILLed
run resumes onto the uninterrupted run's samples and tables, and two CPU processes hold identical tables."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from posedreamer_mm.engine.hooks.difficulty_hook import table_digest
from posedreamer_mm.testing import free_port
from posedreamer_mm.testing.hmr_fixtures import write_hmr_fixtures
from tests.configs.test_hmr_configs import ROOT, TINY_INPUT, tiny_config

CURRICULUM = ROOT / 'configs' / 'hmr' / 'hmr_vitl_posedreamer_bedlam_curriculum.py'


@pytest.fixture(scope='module')
def tiny_curriculum_config(tmp_path_factory, standin_model_dir) -> Path:
    """The curriculum config at tiny size on 2 x 4 samples: deterministic pipeline (a resumed run must see the
    same crops), no validation, chunks of 8, the curriculum ramping over iterations 2..6, updates every 2
    iterations, checkpoints every 4."""
    root = tmp_path_factory.mktemp('curriculum')
    paths = write_hmr_fixtures(root / 'data', num=4, smplx_model_dir=standin_model_dir)
    paths['mpii_attribute_file'] = None
    cfg = tiny_config(CURRICULUM, paths, standin_model_dir)
    cfg.train_dataloader.dataset.pipeline = [
        dict(type='LoadHMRImage'), dict(type='HMRBBoxCenterScale', padding=1.25),
        dict(type='HMRTopdownAffine', input_size=TINY_INPUT), dict(type='PackHMRInputs')]
    cfg.train_dataloader.sampler.update(chunk_size=8, curriculum=dict(by='iter', begin=2, end=6, max_mix=0.9))
    cfg.custom_hooks = [dict(type='DifficultyHook', interval=2, momentum=0.5, log_tables=True, log_samples=True)]
    cfg.merge_from_dict(dict(
        train_cfg=dict(max_iters=12, val_interval=1000), randomness=dict(seed=0),
        param_scheduler=[dict(type='ConstantLR', factor=1.0, by_epoch=False)],
        default_hooks=dict(logger=dict(interval=1), checkpoint=dict(interval=4, save_best=None, max_keep_ckpts=-1))))
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    cfg.test_dataloader = cfg.test_cfg = cfg.test_evaluator = None
    path = root / 'hmr_tiny_curriculum.py'
    cfg.dump(str(path))
    return path


def _env():
    return {**os.environ, 'PYTHONPATH': str(ROOT), 'OMP_NUM_THREADS': '1'}


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _tables(work_dir: Path, rank: int = 0) -> dict[int, str]:
    return {r['iter']: r['sha1'] for r in _jsonl(work_dir / 'difficulty' / f'rank{rank}.jsonl')}


def _samples(work_dir: Path, rank: int = 0) -> dict[int, list]:
    return {r['iter']: r['samples'] for r in _jsonl(work_dir / 'difficulty' / f'rank{rank}_samples.jsonl')}


def _train(config, work_dir, *extra, check=True):
    res = subprocess.run([sys.executable, str(ROOT / 'tools' / 'train.py'), str(config), '--work-dir', str(work_dir),
                          *extra], capture_output=True, text=True, env=_env(), timeout=400)
    if check:
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


def _train_in_process(config, work_dir):
    """tools/train.py's main() in this process: the uninterrupted reference, without a third interpreter start."""
    import importlib.util
    spec = importlib.util.spec_from_file_location('pdm_train_tool', ROOT / 'tools' / 'train.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the subprocesses (OMP_NUM_THREADS=1): the same float reductions, bit for bit
    try:
        tool.main([str(config), '--work-dir', str(work_dir)])
    finally:
        torch.set_num_threads(threads)


def test_killed_curriculum_run_resumes_onto_the_same_samples_and_tables(tmp_path, tiny_curriculum_config):
    full = tmp_path / 'full'
    _train_in_process(tiny_curriculum_config, full)
    full_samples, full_tables = _samples(full), _tables(full)
    assert sorted(full_samples) == list(range(1, 13)) and sorted(full_tables) == [2, 4, 6, 8, 10, 12]
    # the curriculum took effect: after the ramp the draw is no longer each sample once per chunk of 4 iterations
    late = [tuple(s) for it in range(9, 13) for s in full_samples[it]]
    assert len(set(late)) < 8

    cut = tmp_path / 'cut'
    preempted = tmp_path / 'preempted.py'
    preempted.write_text(f"_base_ = [{str(tiny_curriculum_config)!r}]\n"
                         "custom_imports = dict(imports=['tests.tools.preemption_hook'], allow_failed_imports=False)\n"
                         "custom_hooks = [dict(type='DifficultyHook', interval=2, momentum=0.5, log_tables=True,\n"
                         "                     log_samples=True),\n"
                         "                dict(type='SimulatedPreemptionHook', kill_after_iter=10)]\n")
    res = _train(preempted, cut, check=False)
    assert res.returncode == -9, res.stderr[-2000:]  # SIGKILL: nothing got to clean up
    assert (cut / 'iter_8.pth').exists() and not (cut / 'iter_12.pth').exists()
    _train(tiny_curriculum_config, cut, '--resume')
    resumed_samples, resumed_tables = _samples(cut), _tables(cut)  # both runs' lines, the resumed run's last
    for it in range(9, 13):
        assert resumed_samples[it] == full_samples[it], it
    assert resumed_tables == full_tables
    # the checkpoint holds the table of its iteration
    ckpt = torch.load(cut / 'iter_8.pth', map_location='cpu', weights_only=False)
    assert table_digest(ckpt['difficulty_hook']['sampler']['difficulty'].numpy()) == full_tables[8]


def test_two_processes_hold_identical_tables_and_resume(tmp_path, tiny_curriculum_config):
    env = {**_env(), 'PYTHON': sys.executable}
    wd = tmp_path / 'wd'

    def dist(*extra):
        res = subprocess.run(['bash', str(ROOT / 'tools' / 'dist_train.sh'), str(tiny_curriculum_config), '2',
                              '--work-dir', str(wd), *extra], capture_output=True, text=True,
                             env={**env, 'PORT': str(free_port())}, timeout=400)
        assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
        return res.stdout + res.stderr

    dist('--cfg-options', 'train_cfg.max_iters=4')
    assert (wd / 'iter_4.pth').exists()
    log = dist('--resume', '--cfg-options', 'train_cfg.max_iters=8')
    assert 'resumed' in log and 'Iter(train) [8/8]' in log
    t0, t1 = _tables(wd, 0), _tables(wd, 1)
    assert sorted(t0) == [2, 4, 6, 8] and t0 == t1  # the same table on both ranks at every update
    rank0 = _jsonl(wd / 'difficulty' / 'rank0.jsonl')
    # the first chunk spans all 8 samples, split between the ranks: after 2 iterations both ranks' observations
    # are in both tables (the 4 fixture samples with 3D joints; the others report no error)
    assert rank0[0]['iter'] == 2 and rank0[0]['measured'] == 4
    s0, s1 = _samples(wd, 0), _samples(wd, 1)
    assert sorted(s0) == sorted(s1) == list(range(1, 9))
    # the first chunk (iterations 1-2 per rank, uniform) is one permutation split between the ranks
    first = [tuple(s) for it in (1, 2) for s in s0[it] + s1[it]]
    assert len(first) == 8 and len(set(first)) == 8
