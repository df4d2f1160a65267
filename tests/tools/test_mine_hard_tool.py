"""tools/mine_hard.py end to end: a render-backend dataset scored by the offline scorer -> regressor -> hardest poses
of a pool -> a pose list that the next round's generation config reads."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from posedreamer_mm.registry import GENERATORS, POSE_SOURCES

ROOT = Path(__file__).resolve().parents[2]
POOL = "pool_source = dict(type='ProceduralPoseSource', num_samples={n}, seed=9, num_betas={betas})\n"
FAST = ['--lgb-options', 'min_data_in_leaf=3', 'num_threads=1', '--no-progress']


def load_tool():
    spec = importlib.util.spec_from_file_location('mine_hard_tool', ROOT / 'tools' / 'mine_hard.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope='module')
def scored(tmp_path_factory, standin_model_dir):
    """30 render-backend images (15 poses x 2 views) scored by MediaPipeScorer through the filter API."""
    pytest.importorskip('mediapipe')
    from posedreamer_mm.apis.filter import run_filter
    root = tmp_path_factory.mktemp('mine') / 'data'
    pipeline = [dict(type='BodyForward'), dict(type='BodyCropCamera', size=96, margin=0.1),
                dict(type='RenderControls', controls=[dict(type='PNCCRenderer')]),
                dict(type='COCO17Visibility', min_visible=0),
                dict(type='SamplePrompt', prompts=dict(type='PromptSampler', preset='generic'))]
    source = dict(type='AugmentedSource', repeats=2, seed=3, distance_range=(2.5, 4.0), yaw_range=(-180, 180),
                  source=dict(type='ProceduralPoseSource', num_samples=15, seed=1))
    GENERATORS.build(dict(type='DatasetGenerator', body_model=dict(type='SMPLXBodyModel',
                                                                   model_path=str(standin_model_dir)),
                          source=source, pipeline=pipeline, backend=dict(type='RenderBackend', batch_size=8),
                          writer=dict(shard_size=16, image_format='png', save_controls=False), num_samples=30,
                          seed=0, progress=False)).run(str(root))
    run_filter(str(root), str(root / 'filter'), stages=[dict(type='ScorePose', scorer=dict(type='MediaPipeScorer'))],
               progress=False)
    return root


def _jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_train_select_and_the_next_round_reads_the_list(scored, tmp_path, standin_model_dir):
    from posedreamer_mm.apis.generate import build_generator
    from posedreamer_mm.apis.launch import load_config
    from posedreamer_mm.generation.reader import GeneratedDataReader
    pool_cfg = tmp_path / 'pool.py'
    pool_cfg.write_text(POOL.format(n=120, betas=10))
    out = tmp_path / 'round1'
    summary = load_tool().main([str(scored), '--out', str(out), '--pool', str(pool_cfg), '--num', '6',
                                '--min-distance-deg', '0', '--valid-fraction', '0.2', '--predict', str(scored), *FAST])
    # Training rows and held-out targets are the filter's OKS, read from its scores.jsonl independently here.
    oks = {r['id']: r['scores']['oks'] for r in _jsonl(scored / 'filter' / 'scores.jsonl')}
    assert summary['training']['rows'] == len(oks) == 30 and summary['training']['target'] == 'oks'
    held = _jsonl(out / 'heldout.jsonl')
    assert len(held) == summary['training']['n_test'] == 6
    assert all(h['measured'] == pytest.approx(oks[h['id']]) for h in held)
    # Views of one pose never straddle the split: each held-out pose has both of its views held out.
    reader = GeneratedDataReader(str(scored))
    inner = {sid: reader.sample(i).meta['augment']['inner_id'] for i, sid in enumerate(reader.ids)}
    held_ids = {h['id'] for h in held}
    assert all(sum(inner[s] == inner[h] for s in held_ids) == 2 for h in held_ids)
    assert (out / 'heldout.png').stat().st_size > 5000
    assert (out / 'difficulty_model.txt').read_text().startswith('tree')
    # Without the guard the pose list is exactly the 6 lowest predicted OKS of the pool, hardest first.
    preds = _jsonl(out / 'pool_predictions.jsonl')
    assert len(preds) == 120
    lowest = [p['id'] for p in sorted(preds, key=lambda p: p['predicted'])[:6]]
    src = POSE_SOURCES.build(dict(type='PoseListSource', file=str(out / 'hard_poses.npz')))
    assert [s.id for s in src] == lowest
    pool = POSE_SOURCES.build(dict(type='ProceduralPoseSource', num_samples=120, seed=9))
    for s in src:
        want = pool[s.meta['pose_list']['pool_index']]
        assert s.id == want.id and np.array_equal(s.body_pose, want.body_pose)
    # The curriculum sampler's initial difficulty for an HMR run on the scored data: 1 - predicted OKS per id.
    from posedreamer_mm.mining import DifficultyRegressor
    model = DifficultyRegressor.load(out / 'difficulty_model.txt')
    diff = np.load(out / 'difficulty_data.npz')
    assert diff['ids'].tolist() == reader.ids and summary['difficulty_files'] == [str(out / 'difficulty_data.npz')]
    labels_pred = model.predict([reader.sample(i) for i in range(len(reader))])
    np.testing.assert_array_equal(diff['predicted'], labels_pred)
    np.testing.assert_allclose(diff['difficulty'], np.clip(1 - labels_pred, 0, 1))
    try:
        from posedreamer_mm.datasets.samplers.hard_sample_sampler import load_difficulty_file
    except ImportError:
        load_difficulty_file = None
    if load_difficulty_file is not None:
        assert load_difficulty_file(str(out / 'difficulty_data.npz')) == dict(zip(reader.ids,
                                                                                  diff['difficulty'].tolist()))
    # The next round: the generation config with the list, one override; its labels carry the listed poses.
    cfg = load_config(str(ROOT / 'configs' / 'generation' / 'render_hard-poses_generic-512.py'),
                      {'hard_pose_list': str(out / 'hard_poses.npz'), 'body_model_dir': str(standin_model_dir),
                       'crop_size': 64})
    build_generator(cfg, num_samples=4, num_workers=0, progress=False).run(str(tmp_path / 'round2'))
    labels = GeneratedDataReader(str(tmp_path / 'round2'))
    assert len(labels) == 4
    for i in range(4):                                           # repeats=2: sample i shows listed pose i // 2
        assert np.array_equal(labels.sample(i).body_pose, src[i // 2].body_pose)


def test_guard_and_error_target(scored, tmp_path):
    pool_cfg = tmp_path / 'pool.py'
    pool_cfg.write_text(POOL.format(n=60, betas=10))
    errors = {r['id']: 100 * (1 - r['scores']['oks']) for r in _jsonl(scored / 'filter' / 'scores.jsonl')}
    (tmp_path / 'err.json').write_text(json.dumps(errors))
    summary = load_tool().main([str(scored), '--out', str(tmp_path / 'o'), '--errors', str(tmp_path / 'err.json'),
                                '--pool', str(pool_cfg), '--num', '5', '--min-distance-deg', '60',
                                '--valid-fraction', '0.2', *FAST])
    assert summary['training']['target'] == 'error'
    src = POSE_SOURCES.build(dict(type='PoseListSource', file=str(tmp_path / 'o' / 'hard_poses.npz')))
    from posedreamer_mm.mining import joint_rotations, pose_distance_deg
    rots = joint_rotations(np.stack([s.body_pose for s in src]))
    dist = pose_distance_deg(rots[:, None], rots[None])
    assert (dist[~np.eye(len(src), dtype=bool)] >= 60).all()      # every pair at least the guard apart
    sel = summary['selection']
    assert sel['scanned'] == sel['selected'] + sel['rejected_near_duplicates']
    preds = {p['id']: p['predicted'] for p in _jsonl(tmp_path / 'o' / 'pool_predictions.jsonl')}
    assert preds[src[0].id] == max(preds.values())               # error target: the highest error first


def test_a_model_on_a_pool_of_another_layout_ends_with_one_error_line(scored, tmp_path):
    """A real process: a pool with 16 betas for a model trained on 10 is refused with one line naming the model."""
    load_tool().main([str(scored), '--out', str(tmp_path / 'm'), '--valid-fraction', '0.2', *FAST])
    pool_cfg = tmp_path / 'pool16.py'
    pool_cfg.write_text(POOL.format(n=20, betas=16))
    env = {**os.environ, 'PYTHONPATH': str(ROOT), 'OMP_NUM_THREADS': '1'}
    env.pop('PDM_TRACEBACK', None)
    res = subprocess.run([sys.executable, str(ROOT / 'tools' / 'mine_hard.py'), '--model',
                          str(tmp_path / 'm' / 'difficulty_model.txt'), '--out', str(tmp_path / 'x'), '--pool',
                          str(pool_cfg), '--no-progress'], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 1, res.stderr[-2000:]
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith('error: FeatureSpecMismatchError: model ') and 'difficulty_model.txt' in last
    assert 'betas: the model has 10, the data 16' in last and 'Traceback' not in res.stderr
    assert not (tmp_path / 'x' / 'hard_poses.npz').exists()


def test_missing_or_too_few_targets_are_named(scored, tmp_path):
    from posedreamer_mm.apis.mine import read_scored_dataset
    from posedreamer_mm.mining import MiningError, MiningFileNotFoundError
    with pytest.raises(MiningFileNotFoundError, match='nope.jsonl not found'):
        read_scored_dataset(str(scored), scores=str(tmp_path / 'nope.jsonl'))
    ids = [r['id'] for r in _jsonl(scored / 'filter' / 'scores.jsonl')]
    few = tmp_path / 'few.jsonl'
    few.write_text(''.join(json.dumps(dict(id=i, pve=1.0)) + '\n' for i in ids[:4])
                   + json.dumps(dict(id='not_in_data', pve=2.0)) + '\n')
    with pytest.raises(MiningError, match=r"4 rows have a target in .*few.jsonl, at least 10 are needed \(skipped: "
                                          r"\{'no target for the id': 26, 'target id not in the dataset': 1\}"):
        read_scored_dataset(str(scored), errors=str(few), error_key='pve', progress=False)
    with pytest.raises(MiningError, match=r"few.jsonl: the line of id .* has no 'error'"):
        read_scored_dataset(str(scored), errors=str(few), progress=False)
    bad = tmp_path / 'bad.jsonl'
    bad.write_text('{"id": "a", "scores": {"oks": 0.5}}\n{"id": \n')
    with pytest.raises(MiningError, match=r'bad.jsonl, line 2: not valid JSON'):
        read_scored_dataset(str(scored), scores=str(bad))
