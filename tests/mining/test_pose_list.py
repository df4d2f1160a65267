"""The pose list file and its registered source: the selected records come back exactly."""
import json

import numpy as np
import pytest

from posedreamer_mm.body.sources import NoValidSamplesError, write_pose_list
from posedreamer_mm.registry import POSE_SOURCES

FIELDS = ('betas', 'expression', 'global_orient', 'body_pose', 'left_hand_pose', 'right_hand_pose', 'jaw_pose',
          'leye_pose', 'reye_pose', 'transl', 'focal', 'princpt', 'img_size')


@pytest.fixture()
def pool():
    src = POSE_SOURCES.build(dict(type='AugmentedSource', seed=1, betas_range=2.0, yaw_range=(-180, 180),
                                  source=dict(type='ProceduralPoseSource', num_samples=20, seed=4)))
    return [src[i] for i in range(20)]


def test_the_source_reads_back_exactly_the_selected_records(pool, tmp_path):
    chosen = [pool[i] for i in (17, 3, 11)]
    chosen[1].left_hand_pose[:] = np.random.default_rng(0).normal(size=45)   # non-zero hands survive too
    chosen[2].gender = 'female'
    path = write_pose_list(tmp_path / 'hard.npz', chosen, columns=dict(predicted=np.array([0.2, 0.3, 0.4]),
                                                                      rank=np.arange(3)), info=dict(model='m.txt'))
    src = POSE_SOURCES.build(dict(type='PoseListSource', file=path))
    assert len(src) == 3 and [s.id for s in src] == [c.id for c in chosen]
    for got, want in zip(src, chosen):
        for field in FIELDS:
            assert np.array_equal(getattr(got, field), getattr(want, field)), field
            assert getattr(got, field).dtype == getattr(want, field).dtype, field
        assert (got.gender, got.source) == (want.gender, want.source)
        assert got.meta['augment']['inner_id'] == want.meta['augment']['inner_id']
        # meta arrays come back as lists of the same float32 values (the procedural pose's Euler angles)
        assert np.array_equal(np.asarray(got.meta['euler_deg'], np.float32), want.meta['euler_deg'])
    assert src[0].meta['pose_list'] == dict(file='hard.npz', row=0, predicted=0.2, rank=0)
    assert src.info['model'] == 'm.txt'


def test_camera_and_betas_options(pool, tmp_path):
    path = write_pose_list(tmp_path / 'p.npz', pool[:2])
    src = POSE_SOURCES.build(dict(type='PoseListSource', file=str(path), num_betas=16,
                                  camera=dict(focal=500.0, img_size=(256, 256), distance=4.0)))
    s = src[1]
    assert s.num_betas == 16 and np.array_equal(s.betas[:10], pool[1].betas) and not s.betas[10:].any()
    assert s.focal.tolist() == [500, 500] and s.img_size.tolist() == [256, 256]
    assert np.array_equal(s.body_pose, pool[1].body_pose)


def test_bad_files_are_named(pool, tmp_path):
    with pytest.raises(FileNotFoundError, match='missing.npz'):
        POSE_SOURCES.build(dict(type='PoseListSource', file=str(tmp_path / 'missing.npz')))
    other = tmp_path / 'other.npz'
    np.savez(other, id=np.array(['a']))
    with pytest.raises(NoValidSamplesError, match='other.npz is not a pose list'):
        POSE_SOURCES.build(dict(type='PoseListSource', file=str(other)))
    path = write_pose_list(tmp_path / 'p.npz', pool[:3])
    with np.load(path) as npz:
        data = dict(npz)
    data['body_pose'] = data['body_pose'][:, :60]
    np.savez(tmp_path / 'cut.npz', **data)
    with pytest.raises(NoValidSamplesError, match=r"cut.npz: key 'body_pose' has shape \(3, 60\), expected \(3, 63\)"):
        POSE_SOURCES.build(dict(type='PoseListSource', file=str(tmp_path / 'cut.npz')))
    with pytest.raises(ValueError, match='duplicate id'):
        write_pose_list(tmp_path / 'dup.npz', [pool[0], pool[0]])
    info = json.loads(str(np.load(path)['info_json']))
    assert info['format'] == 'posedreamer_mm.pose_list' and info['version'] == 1


def test_a_generator_round_reads_the_list(pool, tmp_path):
    """The next round is one config change: the list inside AugmentedSource draws new views of each pose."""
    path = write_pose_list(tmp_path / 'p.npz', pool[:4])
    src = POSE_SOURCES.build(dict(type='AugmentedSource', source=dict(type='PoseListSource', file=str(path)),
                                  repeats=2, seed=0, yaw_range=(-180, 180)))
    assert len(src) == 8
    assert src[3].meta['augment']['inner_id'] == pool[1].id
    assert np.array_equal(src[3].body_pose, pool[1].body_pose)
