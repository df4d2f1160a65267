"""Property-based tests (hypothesis) of the body layer, and conventions checked against independent definitions.

Random ids, meta values, cameras and poses; each property is checked against a formula written here (or a
library with an explicit convention), never against the code's own inverse alone.
"""
import math
import re

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.spatial.transform import Rotation

from posedreamer_mm.body.body_model import SMPLXBodyModel
from posedreamer_mm.body.camera import (
    crop_camera,
    crop_points_2d,
    project_points,
    unproject_points,
    upright_global_orient,
)
from posedreamer_mm.body.joint_maps import SMPLX_JOINT_INDEX
from posedreamer_mm.body.rotations import axis_angle_to_matrix
from posedreamer_mm.body.sample import FIELD_SHAPES, BodySample, sample_file, validate_sample_id
from posedreamer_mm.body.sources.procedural import DEFAULT_JOINT_LIMITS, SMPLX_BODY_JOINTS, euler_to_body_pose

SETTINGS = settings(max_examples=40, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
#: The id rule restated independently of SAMPLE_ID_PATTERN: one path component, safe in every file system.
ID_CHARS = set('abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-')


def id_ok(text: str) -> bool:
    return 1 <= len(text) <= 200 and set(text) <= ID_CHARS and text[0] not in '.-'


@SETTINGS
@given(st.one_of(st.text(max_size=210), st.text(alphabet=sorted(ID_CHARS) + ['/', '\\', '\x00'], max_size=12)))
def test_any_id_is_refused_or_names_one_file_inside_the_root(tmp_path, text):
    if not id_ok(text):
        with pytest.raises(ValueError):
            validate_sample_id(text)
        with pytest.raises(ValueError):
            sample_file(tmp_path, 'labels', text, '.npz')
        return
    assert validate_sample_id(text) == text
    path = sample_file(tmp_path, 'labels', text, '.npz')
    assert path == str(tmp_path.resolve() / 'labels' / f'{text}.npz')


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 53, 2 ** 53) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=8)
arrays = hnp.arrays(st.sampled_from([np.float32, np.float64, np.int8, np.int64, np.uint16, np.bool_, '<U3']),
                    hnp.array_shapes(min_dims=0, max_dims=3, max_side=3))
meta_keys = st.text(alphabet=st.characters(blacklist_categories=('Cs',), blacklist_characters='\x00'), min_size=1,
                    max_size=8)


@SETTINGS
@given(meta=st.dictionaries(meta_keys, json_values | arrays, max_size=4),
       params=st.fixed_dictionaries({name: hnp.arrays(np.float32, shape, elements=st.floats(-5, 5, width=32))
                                     for name, shape in FIELD_SHAPES.items() if name not in ('focal',)}))
def test_any_storable_meta_and_parameters_round_trip_exactly(tmp_path, meta, params):
    sample = BodySample(id='prop', meta=meta, **params)
    path = tmp_path / 'prop.npz'
    sample.save_npz(path)
    back = BodySample.load_npz(path)
    for name, value in params.items():
        assert getattr(back, name).tobytes() == value.tobytes(), name
    assert set(back.meta) == set(meta)
    for key, value in meta.items():
        if isinstance(value, np.ndarray):
            assert back.meta[key].dtype == value.dtype and np.array_equal(back.meta[key], value)
        else:
            assert back.meta[key] == value


@SETTINGS
@given(value=st.sampled_from([np.array([None]), np.array([1, 'a'], dtype=object), object(), {1, 2}, b'bytes',
                              np.zeros(2, [('a', 'f4')])]),
       key=meta_keys)
def test_unstorable_meta_is_refused_before_anything_is_written(tmp_path, value, key):
    path = tmp_path / 'sub' / 'x.npz'
    with pytest.raises(ValueError, match=re.escape(str(path))):
        BodySample(id='x', meta={key: value}).save_npz(path)
    assert not path.exists() and not any(p.is_file() for p in tmp_path.rglob('*'))


cameras = st.tuples(st.floats(50, 5000), st.floats(50, 5000), st.floats(-500, 1500), st.floats(-500, 1500))
points = hnp.arrays(np.float64, (5, 3), elements=st.floats(-2, 2)).map(lambda p: p + [0, 0, 4.0])


@SETTINGS
@given(cam=cameras, pts=points, box=st.tuples(st.floats(-200, 200), st.floats(-200, 200), st.floats(10, 900),
                                              st.floats(10, 900)), out=st.integers(16, 1024))
def test_projection_and_crop_cameras_against_the_pinhole_formula(cam, pts, box, out):
    fx, fy, cx, cy = cam
    want = np.stack([fx * pts[:, 0] / pts[:, 2] + cx, fy * pts[:, 1] / pts[:, 2] + cy], 1)
    got = project_points(torch.tensor(pts), torch.tensor([fx, fy], dtype=torch.float64),
                         torch.tensor([cx, cy], dtype=torch.float64)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-6)
    f64 = dict(dtype=torch.float64)
    back = unproject_points(torch.tensor(want), torch.tensor(pts[:, 2]), torch.tensor([fx, fy], **f64),
                            torch.tensor([cx, cy], **f64)).numpy()
    np.testing.assert_allclose(back, pts, rtol=1e-6, atol=1e-6)
    # The crop camera is the affine map u -> (u - x) * out / w applied to the projection (written out here).
    x, y, w, h = box
    focal2, princpt2 = crop_camera(torch.tensor([fx, fy], **f64), torch.tensor([cx, cy], **f64),
                                   torch.tensor(box, **f64), out)
    in_crop = np.stack([(want[:, 0] - x) * out / w, (want[:, 1] - y) * out / h], 1)
    np.testing.assert_allclose(project_points(torch.tensor(pts), focal2, princpt2).numpy(), in_crop, rtol=1e-6,
                               atol=1e-4)
    np.testing.assert_allclose(crop_points_2d(torch.tensor(want), torch.tensor(box, **f64), out).numpy(), in_crop,
                               rtol=1e-6, atol=1e-4)


@SETTINGS
@given(yaw=st.floats(-math.pi + 1e-3, math.pi - 1e-3))
def test_upright_orientation_against_scipy_with_an_explicit_order(yaw):
    want = (Rotation.from_euler('x', 180, degrees=True) * Rotation.from_euler('y', yaw)).as_matrix()
    got = axis_angle_to_matrix(upright_global_orient(yaw, torch.float64)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-9)


def _rx(a):
    c, s = math.cos(a), math.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _ry(a):
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rz(a):
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


@SETTINGS
@given(euler=hnp.arrays(np.float64, (21, 3), elements=st.floats(-89, 89)))
def test_procedural_euler_order_against_hand_written_matrices(euler):
    # The docstring's convention, R = Ry(y) @ Rz(z) @ Rx(x) from (x, y, z) degrees, built from elementary
    # matrices: a wrong order (or extrinsic angles) passes the round trip but fails here.
    got = axis_angle_to_matrix(torch.tensor(euler_to_body_pose(euler).reshape(21, 3), dtype=torch.float64)).numpy()
    for j, (x, y, z) in enumerate(np.deg2rad(euler)):
        np.testing.assert_allclose(got[j], _ry(y) @ _rz(z) @ _rx(x), atol=2e-6)


@pytest.fixture(scope='module')
def neutral(gendered_dir):
    return SMPLXBodyModel(gendered_dir)


def _joints_with(model, joint: str, axis: int, degrees: float) -> np.ndarray:
    euler = np.zeros((21, 3))
    euler[SMPLX_BODY_JOINTS.index(joint), axis] = degrees
    with torch.no_grad():
        return model(body_pose=euler_to_body_pose(euler)[None]).joints[0].numpy()


@pytest.mark.parametrize('joint, axis, sign, child, parent, forward', [
    ('left_knee', 0, +1, 'left_ankle', 'left_knee', False),  # knee flexion +x: the shin swings backwards
    ('right_knee', 0, +1, 'right_ankle', 'right_knee', False),
    ('left_hip', 0, -1, 'left_knee', 'left_hip', True),  # hip flexion -x: the thigh swings forwards
    ('left_elbow', 1, -1, 'left_wrist', 'left_elbow', True),  # left elbow flexion -y: the forearm comes forward
    ('right_elbow', 1, +1, 'right_wrist', 'right_elbow', True),
])
def test_joint_limit_signs_mean_what_the_table_says(neutral, joint, axis, sign, child, parent, forward):
    # The canonical body faces +z: "forwards" is +z. Checked on posed joints, not on the angles.
    lo, hi = DEFAULT_JOINT_LIMITS[joint][axis]
    assert (hi if sign > 0 else -lo) >= 90  # the table allows the motion the sign names
    j = _joints_with(neutral, joint, axis, sign * 60.0)
    dz = j[SMPLX_JOINT_INDEX[child], 2] - j[SMPLX_JOINT_INDEX[parent], 2]
    assert (dz > 0.05) if forward else (dz < -0.05), dz
