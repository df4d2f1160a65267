"""DatasetGenerator(candidates_per_sample=N): DPO candidates are rows with distinct, stable seeds and shared controls.

Facts checked against what the source and the seed rule say (``stable_seed(seed, candidate id)``), not against the
generator's own output alone; a killed run resumes onto the uninterrupted run's candidates (real SIGKILL through
tools/generate.py and the test backend's ``PDM_TEST_KILL_AFTER_CALLS``).
"""
import glob
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mmengine.config import Config

from posedreamer_mm.body.sources.base import stable_seed
from posedreamer_mm.generation import GeneratedDataReader
from posedreamer_mm.generation.generator import candidate_id
from posedreamer_mm.registry import GENERATORS
from posedreamer_mm.testing import free_port
from tests.generation.stub_backend import NoiseTestBackend
from tests.generation.test_generator import _assert_same, _generator, _snapshot
from tests.tools.test_generate_tools import CONFIG, ROOT, _env

N = 3


def _rows(root):
    reader = GeneratedDataReader(root)
    return reader, [reader.meta(i) for i in range(len(reader))]


def test_candidates_have_distinct_stable_seeds_and_share_their_pose(tmp_path, standin_model_dir):
    plain = _generator(standin_model_dir, n=2, shard_size=3)
    out = str(tmp_path / 'cand')
    summary = _generator(standin_model_dir, n=4, shard_size=3, candidates_per_sample=N).run(out)
    assert summary['written'] == 4 * N and summary['candidates_per_sample'] == N
    reader, rows = _rows(out)
    pose_ids = [str(plain.source[i].id) for i in range(4)]
    assert [r['id'] for r in rows] == [f'{p}_c{j:03d}' for p in pose_ids for j in range(N)]
    assert [(r['group'], r['candidate']) for r in rows] == [(p, j) for p in pose_ids for j in range(N)]
    assert [r['seed'] for r in rows] == [stable_seed(7, r['id']) for r in rows]   # the documented seed rule
    assert len({r['seed'] for r in rows}) == 4 * N
    for g in range(4):
        group = list(range(g * N, (g + 1) * N))
        labels = [reader.sample(i) for i in group]
        # one pose, one control, one prompt per group; the images differ (their seeds do)
        for i, lab in zip(group[1:], labels[1:]):
            np.testing.assert_array_equal(lab.keypoints_coco17, labels[0].keypoints_coco17)
            assert rows[i]['prompt'] == rows[group[0]]['prompt']
            ctrl = [open(reader.control_path(k, 'pncc'), 'rb').read() for k in (group[0], i)]
            assert ctrl[0] == ctrl[1]
        images = [open(reader.image_path(i), 'rb').read() for i in group]
        assert len(set(images)) == N
        assert labels[0].meta['group'] == pose_ids[g] and labels[2].meta['candidate'] == 2
    # The same pose without candidates: the same label and the pose's own seed (candidates keep the pose's
    # pipeline, only the backend's seed changes).
    plain_out = str(tmp_path / 'plain')
    plain.run(plain_out)
    reader1, rows1 = _rows(plain_out)
    np.testing.assert_array_equal(reader1.sample(1).keypoints_coco17, reader.sample(N).keypoints_coco17)
    assert rows1[1]['prompt'] == rows[N]['prompt'] and rows1[1]['id'] == rows[N]['group']
    # A second run with another shard size reproduces every candidate (ids, seeds, image bytes).
    again = str(tmp_path / 'again')
    _generator(standin_model_dir, n=4, shard_size=5, candidates_per_sample=N).run(again)
    _assert_same(_snapshot(out), _snapshot(again))


def test_candidate_ids_and_bad_counts(standin_model_dir):
    assert candidate_id('amass_ab12_000003', 7) == 'amass_ab12_000003_c007'
    with pytest.raises(ValueError, match='candidates_per_sample must be >= 1'):
        _generator(standin_model_dir, candidates_per_sample=0)


def test_one_candidate_keeps_the_fingerprint_of_a_plain_run(standin_model_dir):
    a = _generator(standin_model_dir, n=3).content_config()
    assert _generator(standin_model_dir, n=3, candidates_per_sample=1).content_config() == a
    assert _generator(standin_model_dir, n=3, candidates_per_sample=2).content_config() == dict(
        a, candidates_per_sample=2)


@pytest.fixture(scope='module')
def candidates_config(tmp_path_factory, standin_model_dir):
    """tools/generate.py's test config with 3 candidates for each of 4 poses (shards of 3 rows), and the dataset it
    writes uninterrupted in this process (the same config, the test backend as an object)."""
    tmp = tmp_path_factory.mktemp('cand_tools')
    config = tmp / 'cand.py'
    config.write_text(CONFIG.format(model_dir=str(standin_model_dir)).replace(
        'num_samples=10, seed=11, num_workers=0)', 'num_samples=4, seed=11, num_workers=0, candidates_per_sample=3)'))
    gen_cfg = Config.fromfile(str(config)).generator.to_dict()
    gen_cfg['backend'] = NoiseTestBackend(batch_size=2, control_type='pncc')
    GENERATORS.build(dict(gen_cfg, progress=False)).run(str(tmp / 'reference'))
    reference = _snapshot(str(tmp / 'reference'))
    assert len(reference) == 12
    return config, tmp, reference


@pytest.mark.timeout(300)
def test_sigkilled_candidate_run_resumes_onto_the_same_candidates(candidates_config):
    config, tmp, reference = candidates_config

    def generate(out, **env):
        return subprocess.run([sys.executable, str(ROOT / 'tools' / 'generate.py'), str(config), '--out', str(out),
                               '--no-progress'], capture_output=True, text=True, env=_env(**env), timeout=300)

    # Killed after its 3rd backend call (6 candidates): shards 0 and 1 (3 rows each) are committed at most.
    res = generate(tmp / 'killed', PDM_TEST_KILL_AFTER_CALLS='3', PDM_TEST_KILL_DELAY_S='1.0')
    assert res.returncode == -9, res.stderr[-2000:]
    partial = GeneratedDataReader(str(tmp / 'killed')).ids
    assert 0 < len(partial) < 12 and partial == list(reference)[:len(partial)]
    res = generate(tmp / 'killed')
    assert res.returncode == 0, res.stderr[-3000:]
    _assert_same(reference, _snapshot(str(tmp / 'killed')))
    summary = json.loads((tmp / 'killed' / 'summary.json').read_text())
    assert summary['written'] == 12 and summary['status'] == 'complete'


@pytest.mark.timeout(300)
def test_two_cpu_ranks_write_the_one_rank_candidates(candidates_config):
    config, tmp, reference = candidates_config
    env = _env(PYTHON=sys.executable, PORT=str(free_port()))
    res = subprocess.run(['bash', str(ROOT / 'tools' / 'dist_generate.sh'), str(config), '2', '--out',
                          str(tmp / 'dist'), '--no-progress'], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    _assert_same(reference, _snapshot(str(tmp / 'dist')))   # shards 0, 2 on rank 0; 1, 3 on rank 1
    assert json.loads((tmp / 'dist' / 'summary.json').read_text())['world_size'] == 2

CANDIDATE_CONFIGS = sorted(glob.glob(str(ROOT / 'configs' / 'dpo' / 'candidates' / '*.py')))


@pytest.mark.parametrize('path', CANDIDATE_CONFIGS, ids=lambda p: Path(p).name)
def test_each_candidates_config_builds_and_keeps_a_control_s_candidates_in_one_shard(path, standin_model_dir):
    cfg = Config.fromfile(path)
    gen_cfg = cfg.generator.to_dict()
    gen_cfg['body_model']['model_path'] = str(standin_model_dir)
    gen_cfg['num_samples'] = 2
    if gen_cfg['backend']['type'] != 'RenderBackend':      # weights are read by setup(), never at build
        gen_cfg['backend']['device'] = 'cpu'
    generator = GENERATORS.build(dict(gen_cfg, progress=False))
    n = generator.candidates_per_sample
    assert n >= 2 and generator.writer.shard_size % n == 0 and generator.writer.save_controls
    assert cfg.filter_stages[0]['type'] == 'ScorePose'     # tools/filter.py scores the candidates with the config
