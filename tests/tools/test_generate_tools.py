"""tools/generate.py, tools/dist_generate.sh and tools/demo.py end to end: SIGKILL + rerun and 2 ranks both
write exactly the dataset of one uninterrupted 1-rank run (ids, labels, image bytes)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from posedreamer_mm.generation import GeneratedDataReader
from posedreamer_mm.testing import free_port
from tests.generation.test_generator import _assert_same, _snapshot

ROOT = Path(__file__).resolve().parents[2]

CONFIG = """
default_scope = 'posedreamer_mm'
custom_imports = dict(imports=['tests.generation.stub_backend_registered'], allow_failed_imports=False)
body_model_dir = {model_dir!r}
out_dir = None
generator = dict(
    type='DatasetGenerator',
    body_model=dict(type='SMPLXBodyModel', model_path=body_model_dir),
    source=dict(type='AugmentedSource', source=dict(type='ProceduralPoseSource', num_samples=50, seed=2), seed=5,
                distance_range=(3.0, 4.0)),
    pipeline=[dict(type='BodyForward'), dict(type='BodyCropCamera', size=64, margin=0.1),
              dict(type='RenderControls', controls=[dict(type='PNCCRenderer')]),
              dict(type='COCO17Visibility', min_visible=0), dict(type='SamplePrompt')],
    backend=dict(type='NoiseTestBackend', batch_size=2, control_type='pncc'),
    writer=dict(shard_size=3, image_format='jpg', jpeg_quality=90),
    num_samples=10, seed=11, num_workers=0)
"""


def _env(**extra):
    env = {**os.environ, 'PYTHONPATH': str(ROOT), 'OMP_NUM_THREADS': '1', **extra}
    return {k: v for k, v in env.items() if k not in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK')}


def _generate(config, out, *extra, env=None, check=True):
    res = subprocess.run([sys.executable, str(ROOT / 'tools' / 'generate.py'), str(config), '--out', str(out),
                          '--no-progress', *extra], capture_output=True, text=True, env=env or _env(), timeout=600)
    if check:
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


@pytest.fixture(scope='module')
def setup(tmp_path_factory, standin_model_dir):
    tmp = tmp_path_factory.mktemp('gen_tools')
    config = tmp / 'gen.py'
    config.write_text(CONFIG.format(model_dir=str(standin_model_dir)))
    _generate(config, tmp / 'reference')
    return config, tmp, _snapshot(str(tmp / 'reference'))


@pytest.mark.timeout(600)
def test_sigkill_then_the_same_command_equals_an_uninterrupted_run(setup):
    config, tmp, reference = setup
    assert len(reference) == 10
    out = tmp / 'killed'
    # Killed after its 3rd backend call (6 samples): shard 0 is committed, shard 1 is half written.
    res = _generate(config, out, env=_env(PDM_TEST_KILL_AFTER_CALLS='3', PDM_TEST_KILL_DELAY_S='1.0'), check=False)
    assert res.returncode == -9, res.stderr[-2000:]
    temporaries = [n for n in os.listdir(out / 'shards') if n.startswith('.')]
    assert temporaries and all(n.startswith('.000001.tmp-') for n in temporaries)
    partial = GeneratedDataReader(out)
    assert partial.ids == list(reference)[:3]  # only the committed shard is visible
    res = _generate(config, out)
    assert 'rank 0/1: 4 shards owned, 1 already complete' in res.stdout + res.stderr
    assert not [n for n in os.listdir(out / 'shards') if n.startswith('.')]
    _assert_same(reference, _snapshot(str(out)))
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['written'] == 10 and summary['status'] == 'complete'


@pytest.mark.timeout(600)
def test_two_cpu_ranks_write_exactly_the_one_rank_dataset(setup):
    config, tmp, reference = setup
    env = _env(PYTHON=sys.executable, PORT=str(free_port()))
    res = subprocess.run(['bash', str(ROOT / 'tools' / 'dist_generate.sh'), str(config), '2', '--out',
                          str(tmp / 'dist'), '--no-progress'], capture_output=True, text=True, env=env, timeout=600)
    log = res.stdout + res.stderr
    assert res.returncode == 0, log[-4000:]
    assert 'pytorch launch: rank 0/2 (gloo)' in log  # rank 1 logs nothing (mmengine logs on rank 0)
    _assert_same(reference, _snapshot(str(tmp / 'dist')))
    summary = json.loads((tmp / 'dist' / 'summary.json').read_text())
    assert summary['world_size'] == 2 and summary['written'] == 10


@pytest.mark.timeout(600)
def test_slurm_launcher_on_cpu(setup):
    """What `srun ... tools/generate.py --launcher slurm` sees on one task: SLURM_* variables only."""
    config, tmp, reference = setup
    env = _env(SLURM_PROCID='0', SLURM_NTASKS='1', SLURM_LOCALID='0', SLURM_NODELIST='localhost',
               MASTER_PORT=str(free_port()))
    env.pop('MASTER_ADDR', None)
    res = _generate(config, tmp / 'slurm', '--launcher', 'slurm', env=env)
    assert 'slurm launch: rank 0/1 (gloo)' in res.stdout + res.stderr
    _assert_same(reference, _snapshot(str(tmp / 'slurm')))


def test_another_seed_into_an_existing_output_is_refused(setup):
    config, tmp, reference = setup
    res = _generate(config, tmp / 'reference', '--cfg-options', 'generator.seed=12', check=False)
    assert res.returncode != 0
    assert 'different config or seed' in res.stderr and "'seed'" in res.stderr
    _assert_same(reference, _snapshot(str(tmp / 'reference')))


@pytest.mark.timeout(600)
def test_demo_writes_a_dataset_and_a_contact_sheet(tmp_path):
    import cv2
    res = subprocess.run([sys.executable, str(ROOT / 'tools' / 'demo.py'), '--out', str(tmp_path / 'demo'),
                          '--num-samples', '3', '--no-progress', '--cfg-options', 'generator.pipeline.1.size=128'],
                         capture_output=True, text=True, timeout=600,
                         env=_env(PDM_STANDIN_DIR=str(tmp_path / 'standin')))
    assert res.returncode == 0, res.stderr[-3000:]
    assert 'STAND-IN' in res.stderr + res.stdout
    reader = GeneratedDataReader(tmp_path / 'demo')
    assert len(reader) == 3 and reader.meta(0)['backend'] == 'render_baseline'
    assert reader.load_image(0).shape == (128, 128, 3)
    sheet = cv2.imread(str(tmp_path / 'demo' / 'contact_sheet.png'))
    assert sheet.shape[0] == 28 + 3 * 192 and sheet.shape[1] == 192 * 5  # image, overlay, 3 controls
    coco = json.loads((tmp_path / 'demo' / 'coco_keypoints.json').read_text())
    assert len(coco['annotations']) == 3


@pytest.mark.timeout(600)
def test_a_worker_killed_by_sigkill_stops_the_run_naming_its_indices_and_the_rerun_completes(setup):
    """issue 16 §3: a spawn worker killed by the OOM killer left the main process waiting forever. Now the run stops
    within seconds with one error naming the worker's source indices and the signal; committed shards stay and the
    same command (without the kill) completes the dataset, equal to an uninterrupted run."""
    config, tmp, reference = setup
    killing = tmp / 'gen_kill.py'
    text = config.read_text().replace(
        "imports=['tests.generation.stub_backend_registered']",
        "imports=['tests.generation.stub_backend_registered', 'tests.generation.stub_steps_registered']")
    text = text.replace("dict(type='BodyForward'),", "dict(type='SigkillWorkerAt'), dict(type='BodyForward'),")
    killing.write_text(text.replace('num_workers=0)', 'num_workers=1, warm_start=False)'))
    out = tmp / 'dead_worker'
    # Chunks of 2 indices: index 7 is in the chunk [6, 7] of shard 2 (shards of 3).
    res = _generate(killing, out, env=_env(PDM_TEST_SIGKILL_INDEX='7'), check=False)
    log = res.stdout + res.stderr
    assert res.returncode not in (0, -9), log[-3000:]  # the tool failed; it was not the one killed
    assert 'killed by SIGKILL while working on source indices [6, 7] (shard 2)' in log, log[-3000:]
    assert log.count('WorkerDiedError') == 1 or 'GenerationError' in log
    manifest = json.loads((out / 'manifest.json').read_text())
    assert manifest['status'] == 'in_progress' and not (out / 'summary.json').exists()
    assert not [n for n in os.listdir(out / 'shards') if n.startswith('.')]  # no temporary left behind
    partial = _snapshot(str(out))
    assert set(partial) <= set(reference)
    _assert_same({k: reference[k] for k in partial}, partial)  # what was committed is right
    _generate(killing, out)  # the same command without the kill resumes
    _assert_same(reference, _snapshot(str(out)))
