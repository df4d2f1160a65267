"""BodySample: shapes, validation, npz/dict round trips, batching."""
import numpy as np
import pytest
import torch

from posedreamer_mm.body.sample import (
    FIELD_SHAPES,
    FULL_POSE_DIM,
    STACK_KEYS,
    BodySample,
    split_full_pose,
    stack_samples,
)


def make_sample(seed: int = 0, num_betas: int = 10, **kwargs) -> BodySample:
    rng = np.random.default_rng(seed)
    params = {name: rng.normal(0, 0.3, shape) for name, shape in FIELD_SHAPES.items()}
    params.update(focal=np.array([890.0, 891.0]), princpt=np.array([512.0, 500.0]),
                  transl=np.array([0.1, 0.2, 3.0]))
    params.update(kwargs)
    return BodySample(id=f'test_{seed}', betas=rng.normal(0, 1, num_betas), img_size=(1024, 768),
                      source='test', **params)


def assert_same(a: BodySample, b: BodySample):
    assert (a.id, a.gender, a.source) == (b.id, b.gender, b.source)
    for name in ('betas', *FIELD_SHAPES, 'img_size', 'joints_3d', 'joints_2d', 'keypoints_coco17', 'bbox'):
        va, vb = getattr(a, name), getattr(b, name)
        if va is None or vb is None:
            assert va is None and vb is None, name
        else:
            assert va.dtype == vb.dtype, name
            np.testing.assert_array_equal(va, vb, err_msg=name)


def test_defaults_are_float32_and_valid():
    sample = BodySample(id='x').validate()
    assert sample.betas.shape == (10,) and sample.expression.shape == (10,)
    assert sample.body_pose.dtype == np.float32 and sample.img_size.tolist() == [1024, 1024]
    assert sample.gender == 'neutral' and sample.joints_3d is None and sample.meta == {}


def test_lists_are_coerced_to_float32():
    sample = BodySample(id='x', transl=[0, 0, 3], focal=(800, 800), img_size=[640, 480])
    assert sample.transl.dtype == np.float32 and sample.focal.dtype == np.float32
    assert sample.img_size.dtype == np.int64


def test_full_pose_round_trip():
    sample = make_sample()
    full = sample.full_pose()
    assert full.shape == (FULL_POSE_DIM,) == (165,)
    parts = split_full_pose(full)
    for name, value in parts.items():
        np.testing.assert_array_equal(value, getattr(sample, name))
    with pytest.raises(ValueError, match='165'):
        split_full_pose(np.zeros(160))


def test_npz_round_trip(tmp_path):
    sample = make_sample(joints_3d=np.ones((127, 3)), joints_2d=np.ones((127, 2)), bbox=[1, 2, 3, 4],
                         keypoints_coco17=np.zeros((17, 3)))
    sample.gender = 'female'
    sample.meta.update(file='a/b.npz', frame=12, fps=120.0, trans_world=np.arange(3, dtype=np.float32),
                       nested={'yaw_deg': 10.5})
    path = str(tmp_path / 'sub' / 'sample.npz')
    sample.save_npz(path)
    loaded = BodySample.load_npz(path)
    assert_same(sample, loaded)
    assert loaded.meta['file'] == 'a/b.npz' and loaded.meta['frame'] == 12 and loaded.meta['fps'] == 120.0
    assert loaded.meta['nested'] == {'yaw_deg': 10.5}
    np.testing.assert_array_equal(loaded.meta['trans_world'], np.arange(3))
    assert sorted(p.name for p in (tmp_path / 'sub').iterdir()) == ['sample.npz']  # no temp file left


def test_dict_round_trip_is_npz_friendly(tmp_path):
    sample = make_sample(seed=3, num_betas=16)
    data = sample.to_dict()
    assert 'joints_3d' not in data  # None fields are left out
    assert all(isinstance(v, (np.ndarray, str)) for v in data.values())
    assert_same(sample, BodySample.from_dict(data))
    np.savez(tmp_path / 'd.npz', **data)  # accepted as is
    assert BodySample.load_npz(str(tmp_path / 'd.npz')).num_betas == 16
    with pytest.raises(ValueError, match='unknown BodySample key'):
        BodySample.from_dict({**data, 'bogus': 1})


def test_copy_is_deep():
    sample = make_sample()
    sample.meta['arr'] = np.zeros(2)
    other = sample.copy()
    other.body_pose[0] = 5.0
    other.meta['arr'][0] = 1.0
    assert sample.body_pose[0] != 5.0 and sample.meta['arr'][0] == 0.0


@pytest.mark.parametrize('field, value, expected', [
    ('body_pose', np.zeros(62), r"'body_pose' must have shape \(63,\), got \(62,\)"),
    ('left_hand_pose', np.zeros((15, 3)), r"'left_hand_pose' must have shape \(45,\)"),
    ('global_orient', np.zeros(4), r"'global_orient' must have shape \(3,\)"),
    ('expression', np.zeros(50), r"'expression' must have shape \(10,\)"),
    ('transl', np.array([0, np.nan, 3]), r"'transl' contains NaN"),
    ('betas', np.zeros((1, 10)), r"'betas' must have shape \(num_betas,\)"),
    ('focal', np.array([0.0, 800.0]), r"'focal' must be positive"),
    ('img_size', np.array([1024]), r"'img_size' must have shape \(2,\)"),
    ('gender', 'other', r"'gender' must be one of"),
    ('joints_3d', np.zeros((10, 2)), r"'joints_3d' must have shape \('J', 3\)"),
    ('keypoints_coco17', np.zeros((16, 3)), r"'keypoints_coco17' must have shape \(17, 3\)"),
    ('id', '', r"'id' is not a valid sample id"),
    ('id', '../../x', r"'id' is not a valid sample id"),
    ('img_size', np.array([512.5, 512.0]), r"'img_size' must be integers"),
])
def test_validate_names_field(field, value, expected):
    sample = make_sample()
    setattr(sample, field, value)
    with pytest.raises(ValueError, match=expected):
        sample.validate()


def test_stack_for_body_model():
    samples = [make_sample(seed=i) for i in range(4)]
    batch = BodySample.stack(samples)
    assert tuple(batch) == STACK_KEYS
    assert batch['betas'].shape == (4, 10) and batch['body_pose'].shape == (4, 63)
    assert batch['left_hand_pose'].shape == (4, 45) and batch['transl'].shape == (4, 3)
    assert all(v.dtype == torch.float32 for v in batch.values())
    torch.testing.assert_close(batch['jaw_pose'][2], torch.from_numpy(samples[2].jaw_pose))
    assert stack_samples(samples, dtype=torch.float64)['expression'].dtype == torch.float64


def test_stack_rejects_mixed_betas_and_empty():
    with pytest.raises(ValueError, match="'betas'"):
        BodySample.stack([make_sample(num_betas=10), make_sample(num_betas=11)])
    with pytest.raises(ValueError, match='at least one'):
        BodySample.stack([])
