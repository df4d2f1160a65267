"""body/flip.py: the mirror and roll of SMPL-X bodies, checked against body-model forwards.

The mirror is exact only for a left/right-symmetric body model. The stand-in's template and skinning weights are
mirror-symmetric (asserted below), but it has measured asymmetries: its pelvis sits 3.1 mm off the mirror plane
(copied from the real SMPL-X), the ear keypoint vertices ``smplx.vertex_ids`` picks (6 and 616) are not mirror
twins (16.7 mm), and its 51 face landmarks are not placed symmetrically (COCO-17 does not use them). The test
keeps the pelvis offset (the translation formula must absorb it exactly) and symmetrises everything else in a
copy of the stand-in: the other joint regressor rows, the shape and expression directions, and the right ear
vertex (swapped with the left ear's mirror twin). With that the flipped body must equal the mirrored body to
float precision.
"""
import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree
from smplx.vertex_ids import vertex_ids

from posedreamer_mm.body.body_model import SMPLXBodyModel
from posedreamer_mm.body.camera import project_points
from posedreamer_mm.body.flip import (
    PelvisRegressor,
    coco17_flip_indices,
    flip_joints_3d,
    flip_points_2d,
    flip_smplx,
    roll_image_affine,
    roll_smplx_root,
)
from posedreamer_mm.body.joint_maps import COCO17_NAMES, smplx_flip_permutation, smplx_to_coco17
from posedreamer_mm.testing.hmr_fixtures import fixture_bodies

MIRROR = np.array([-1.0, 1.0, 1.0])


def _mirror_map(vt: np.ndarray) -> np.ndarray:
    dist, sigma = cKDTree(vt).query(vt * MIRROR)
    assert dist.max() < 1e-6, 'stand-in template is not mirror-symmetric'
    return sigma


@pytest.fixture(scope='module')
def sym_model_dir(standin_model_dir, tmp_path_factory):
    """A copy of the stand-in made left/right symmetric except for its pelvis offset (see the module doc)."""
    data = dict(np.load(standin_model_dir / 'SMPLX_NEUTRAL.npz'))
    vt = data['v_template'].astype(np.float64)
    sigma = _mirror_map(vt)
    perm = smplx_flip_permutation(127)[:55]
    weights = data['weights']
    assert np.abs(weights[sigma][:, perm] - weights).max() < 1e-6  # skinning already symmetric
    ids = vertex_ids['smplx']
    ear_gap = np.linalg.norm(vt[ids['lear']] * MIRROR - vt[ids['rear']])
    assert 0.01 < ear_gap < 0.03, f'stand-in ear asymmetry changed ({ear_gap * 1000:.1f} mm): update this test'
    # Swap the right-ear keypoint vertex with the true mirror twin of the left one (a point-set permutation:
    # the template stays symmetric, only two vertices trade places in the mesh).
    twin, rear = sigma[ids['lear']], ids['rear']
    for key in ('v_template', 'weights', 'shapedirs'):
        data[key][[twin, rear]] = data[key][[rear, twin]]
    vt = data['v_template'].astype(np.float64)
    sigma = _mirror_map(vt)
    assert sigma[ids['lear']] == rear
    reg = data['J_regressor'].astype(np.float64)
    pelvis_x = (reg @ vt)[0, 0]
    assert abs(pelvis_x - 0.0031) < 1e-4
    sym_reg = (reg + reg[perm][:, sigma]) / 2
    sym_reg[0] = reg[0]  # keep the off-plane pelvis
    dirs = data['shapedirs'].astype(np.float64)
    sym_dirs = (dirs + dirs[sigma] * MIRROR[None, :, None]) / 2
    data.update(v_template=vt.astype(np.float32), J_regressor=sym_reg.astype(np.float32),
                shapedirs=sym_dirs.astype(np.float32))
    out = tmp_path_factory.mktemp('sym_standin')
    np.savez(out / 'SMPLX_NEUTRAL.npz', **data)
    return out


def _forward(model, params: dict) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        out = model(**{k: torch.as_tensor(np.asarray(v))[None] for k, v in params.items()})
    return out.vertices[0].numpy().astype(np.float64), out.joints[0].numpy().astype(np.float64)


def test_flip_is_an_involution():
    bodies = fixture_bodies(3, seed=1)
    for i in range(3):
        params = {k: v[i] for k, v in bodies.items()}
        twice = flip_smplx(flip_smplx(params))
        for key in params:
            np.testing.assert_allclose(twice[key], params[key], atol=1e-5, err_msg=key)
    idx = coco17_flip_indices()
    assert (idx[idx] == np.arange(17)).all()
    assert all(COCO17_NAMES[idx[k]] == n.replace('left', 'X').replace('right', 'left').replace('X', 'right')
               for k, n in enumerate(COCO17_NAMES))


def test_flipped_body_is_the_mirrored_body(sym_model_dir):
    model = SMPLXBodyModel(sym_model_dir)
    sigma = _mirror_map(model.smplx.v_template.double().numpy())
    pelvis = PelvisRegressor(model)
    bodies = fixture_bodies(3, seed=2)
    for i in range(3):
        params = {k: v[i] for k, v in bodies.items()}
        verts, joints = _forward(model, params)
        fverts, fjoints = _forward(model, flip_smplx(params, pelvis(params['betas'])))
        np.testing.assert_allclose(fverts, (verts * MIRROR)[sigma], atol=2e-5)
        # Joints 1..75 (skeleton and vertex-picked keypoints); the pelvis joint itself is the kept off-plane
        # point and the 51 face landmarks sit on faces picked without symmetry, so both are excluded.
        np.testing.assert_allclose(fjoints[1:76], flip_joints_3d(joints)[1:76], atol=2e-5)
        # Without the exact pelvis: the neutral default differs only in the pelvis x's betas dependence.
        _, approx = _forward(model, flip_smplx(params))
        assert np.abs(approx - fjoints).max() < 2e-3


def test_flipped_keypoints_equal_projection_of_flipped_body(sym_model_dir):
    """The image-space flip (x -> W - 1 - x, princpt mirrored, COCO pairs swapped) equals projecting the
    flipped SMPL-X body with the flipped camera."""
    model = SMPLXBodyModel(sym_model_dir)
    pelvis = PelvisRegressor(model)
    width, focal, princpt = 200, np.array([220.0, 230.0]), np.array([93.0, 81.0])
    bodies = fixture_bodies(3, seed=3)
    for i in range(3):
        params = {k: v[i] for k, v in bodies.items()}
        _, joints = _forward(model, params)
        kpts = project_points(smplx_to_coco17(joints), focal, princpt).double().numpy()
        flipped_kpts = flip_points_2d(kpts, width, coco17_flip_indices())
        _, fjoints = _forward(model, flip_smplx(params, pelvis(params['betas'])))
        fprincpt = np.array([width - 1 - princpt[0], princpt[1]])
        projected = project_points(smplx_to_coco17(fjoints), focal, fprincpt).double().numpy()
        np.testing.assert_allclose(flipped_kpts, projected, atol=1e-3)


def test_roll_matches_rotated_image(standin_model_dir):
    model = SMPLXBodyModel(standin_model_dir)
    pelvis = PelvisRegressor(model)
    focal, princpt = np.array([220.0, 240.0]), np.array([101.0, 77.0])
    params = {k: v[0] for k, v in fixture_bodies(1, seed=4).items()}
    _, joints = _forward(model, params)
    angle = 0.4
    rolled = dict(params)
    rolled['global_orient'], rolled['transl'] = roll_smplx_root(params['global_orient'], params['transl'], angle,
                                                                pelvis(params['betas']))
    _, rjoints = _forward(model, rolled)
    uv = project_points(joints, focal, princpt).double().numpy()
    ruv = project_points(rjoints, focal, princpt).double().numpy()
    aff = roll_image_affine(angle, focal, princpt)
    np.testing.assert_allclose(uv @ aff[:, :2].T + aff[:, 2], ruv, atol=1e-3)


def test_flip_points_2d_by_hand_and_leaves_its_input_alone():
    """x -> W - 1 - x (pixel centres at integers); with no index only x changes, with COCO's index left and right
    points swap; the caller's array (a dataset's cached label) is never written."""
    points = np.array([[0.0, 5.0, 2.0], [9.0, 6.0, 1.0], [3.5, 7.0, 0.0]], np.float32)
    keep = points.copy()
    np.testing.assert_array_equal(flip_points_2d(points, 10), [[9.0, 5.0, 2.0], [0.0, 6.0, 1.0], [5.5, 7.0, 0.0]])
    np.testing.assert_array_equal(points, keep)
    coco = np.stack([np.arange(17, dtype=np.float32), np.zeros(17, np.float32), np.ones(17, np.float32)], -1)
    out = flip_points_2d(coco, 100, coco17_flip_indices())
    names = list(COCO17_NAMES)
    assert out[names.index('left_wrist'), 0] == 99 - names.index('right_wrist')
    assert out[names.index('nose'), 0] == 99 - names.index('nose')
    np.testing.assert_array_equal(coco[:, 0], np.arange(17))


def test_flip_joints_3d_uses_a_given_index():
    """Any joint set with its own left/right index (COCO-17 points in 3D here), not only SMPL-X's."""
    pts = np.stack([np.arange(17, dtype=np.float32), np.ones(17, np.float32), np.full(17, 3.0, np.float32)], -1)
    out = flip_joints_3d(pts, coco17_flip_indices())
    names = list(COCO17_NAMES)
    np.testing.assert_array_equal(out[names.index('left_ankle')], [-names.index('right_ankle'), 1.0, 3.0])
    np.testing.assert_array_equal(out[names.index('nose')], [-0.0, 1.0, 3.0])
