"""evaluation/functional/mesh.py against known answers and a direct numpy transcription of SMPLer-X's protocol."""
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from posedreamer_mm.evaluation.functional.mesh import (
    hand_regressors,
    in_image,
    pa_point_error_mm,
    procrustes_align,
    smplx_errors_mm,
)

V = 300


# --- the reference: SMPLer-X common/utils/transforms.py and UBody.evaluate, transcribed per sample -------------
def rigid_transform_3D(A, B):
    n, dim = A.shape
    centroid_A = np.mean(A, axis=0)
    centroid_B = np.mean(B, axis=0)
    H = np.dot(np.transpose(A - centroid_A), B - centroid_B) / n
    U, s, V = np.linalg.svd(H)
    R = np.dot(np.transpose(V), np.transpose(U))
    if np.linalg.det(R) < 0:
        s[-1] = -s[-1]
        V[2] = -V[2]
        R = np.dot(np.transpose(V), np.transpose(U))
    varP = np.var(A, axis=0).sum()
    c = 1 / varP * np.sum(s)
    t = -np.dot(c * R, np.transpose(centroid_A)) + np.transpose(centroid_B)
    return c, R, t


def rigid_align(A, B):
    c, R, t = rigid_transform_3D(A, B)
    return np.transpose(np.dot(c * R, np.transpose(A))) + t


def make_hand_regressor(regressor, tips):
    """SMPLer-X ``SMPLX.make_hand_regressor`` with the fingertip vertex ids as an argument (random meshes here)."""
    eye = np.eye(regressor.shape[1])
    left = np.concatenate((regressor[[20, 37, 38, 39], :], eye[tips[0][0], None], regressor[[25, 26, 27], :],
                           eye[tips[0][1], None], regressor[[28, 29, 30], :], eye[tips[0][2], None],
                           regressor[[34, 35, 36], :], eye[tips[0][3], None], regressor[[31, 32, 33], :],
                           eye[tips[0][4], None]))
    right = np.concatenate((regressor[[21, 52, 53, 54], :], eye[tips[1][0], None], regressor[[40, 41, 42], :],
                            eye[tips[1][1], None], regressor[[43, 44, 45], :], eye[tips[1][2], None],
                            regressor[[49, 50, 51], :], eye[tips[1][3], None], regressor[[46, 47, 48], :],
                            eye[tips[1][4], None]))
    return {'left': left, 'right': right}


def validate_within_img(img_wh, points):
    w, h = img_wh
    return np.logical_and(np.logical_and(0 < points[:, 0], points[:, 0] < w),
                          np.logical_and(0 < points[:, 1], points[:, 1] < h))


def project(points, focal, princpt):
    return points[:, :2] / points[:, 2:] * focal + princpt


def reference(mesh_out, mesh_gt, J_regressor, lhand, rhand, face, hand_regressor, camera):
    """SMPLer-X ``UBody.evaluate`` for one sample (plus the pelvis-aligned body MPJPE and wrist-aligned hand MPJPE
    this project also reports), with the image-plane validity of each ground-truth point."""
    focal, princpt, img_wh = camera
    r = {}
    pelvis, neck, lwrist, rwrist = 0, 12, 20, 21
    mesh_valid = validate_within_img(img_wh, project(mesh_gt, focal, princpt))
    mesh_out_align = rigid_align(mesh_out, mesh_gt)
    r['pa_pve'] = np.sqrt(np.sum((mesh_out_align - mesh_gt) ** 2, 1))[mesh_valid].mean() * 1000
    mesh_out_align = mesh_out - np.dot(J_regressor, mesh_out)[pelvis, None, :] \
        + np.dot(J_regressor, mesh_gt)[pelvis, None, :]
    r['pve'] = np.sqrt(np.sum((mesh_out_align - mesh_gt) ** 2, 1))[mesh_valid].mean() * 1000
    hand, pa_hand = [], []
    for ids, w in ((lhand, lwrist), (rhand, rwrist)):
        out, gt, valid = mesh_out[ids], mesh_gt[ids], mesh_valid[ids]
        if sum(valid) != 0:
            pa_hand.append(np.sqrt(np.sum((rigid_align(out, gt) - gt) ** 2, 1))[valid].mean() * 1000)
            al = out - np.dot(J_regressor, mesh_out)[w, None, :] + np.dot(J_regressor, mesh_gt)[w, None, :]
            hand.append(np.sqrt(np.sum((al - gt) ** 2, 1))[valid].mean() * 1000)
    r['pve_hand'] = np.mean(hand) if hand else np.nan
    r['pa_pve_hand'] = np.mean(pa_hand) if pa_hand else np.nan
    out, gt, valid = mesh_out[face], mesh_gt[face], mesh_valid[face]
    if sum(valid) != 0:
        r['pa_pve_face'] = np.sqrt(np.sum((rigid_align(out, gt) - gt) ** 2, 1))[valid].mean() * 1000
        al = out - np.dot(J_regressor, mesh_out)[neck, None, :] + np.dot(J_regressor, mesh_gt)[neck, None, :]
        r['pve_face'] = np.sqrt(np.sum((al - gt) ** 2, 1))[valid].mean() * 1000
    else:
        r['pa_pve_face'] = r['pve_face'] = np.nan
    jo, jg = np.dot(J_regressor, mesh_out), np.dot(J_regressor, mesh_gt)
    bo, bg = jo[:22], jg[:22]
    body_valid = validate_within_img(img_wh, project(bg, focal, princpt))
    r['pa_mpjpe'] = np.sqrt(np.sum((rigid_align(bo, bg) - bg) ** 2, 1))[body_valid].mean() * 1000
    r['mpjpe'] = np.sqrt(np.sum((bo - jo[0] + jg[0] - bg) ** 2, 1))[body_valid].mean() * 1000
    mp, pa = [], []
    for side in ('left', 'right'):
        o, g = np.dot(hand_regressor[side], mesh_out), np.dot(hand_regressor[side], mesh_gt)
        valid = validate_within_img(img_wh, project(g, focal, princpt))
        if sum(valid) != 0:
            mp.append(np.sqrt(np.sum((o - o[0] + g[0] - g) ** 2, 1))[valid].mean() * 1000)
            pa.append(np.sqrt(np.sum((rigid_align(o, g) - g) ** 2, 1))[valid].mean() * 1000)
    r['mpjpe_hand'] = np.mean(mp) if mp else np.nan
    r['pa_mpjpe_hand'] = np.mean(pa) if pa else np.nan
    return r


@pytest.fixture
def setup():
    rng = np.random.default_rng(0)
    reg = rng.uniform(0, 1, (55, V)) * (rng.uniform(0, 1, (55, V)) < 0.05)
    reg /= reg.sum(1, keepdims=True)
    gt = rng.normal(0, 0.3, (4, V, 3)) + [0, 0, 3]
    ids = (np.arange(0, 40), np.arange(40, 80)), np.arange(100, 180)
    return rng, reg, gt, ids


def test_identical_meshes_give_zero(setup):
    _, reg, gt, (hands, face) = setup
    errors = smplx_errors_mm(gt, gt, reg, hands, face)
    assert len(errors) == 10
    for key, value in errors.items():
        np.testing.assert_allclose(value, 0, atol=1e-6, err_msg=key)


def test_rigid_transform_gives_zero_pa_errors(setup):
    _, reg, gt, (hands, face) = setup
    rot = Rotation.from_rotvec([0.3, -1.1, 0.7]).as_matrix()
    pred = 1.3 * gt @ rot.T + [0.2, -0.5, 1.0]
    errors = smplx_errors_mm(pred, gt, reg, hands, face)
    for key in ('pa_pve', 'pa_mpjpe', 'pa_pve_hand', 'pa_mpjpe_hand', 'pa_pve_face'):
        np.testing.assert_allclose(errors[key], 0, atol=1e-6, err_msg=key)
    assert (errors['pve'] > 10).all() and (errors['mpjpe'] > 10).all()


def test_pelvis_offset_is_removed(setup):
    _, reg, gt, (hands, face) = setup
    errors = smplx_errors_mm(gt + [0.4, -0.2, 1.5], gt, reg, hands, face)
    for key, value in errors.items():
        np.testing.assert_allclose(value, 0, atol=1e-6, err_msg=key)


def test_equals_numpy_transcription_of_the_protocol(setup):
    rng, reg, gt, (hands, face) = setup
    pred = gt + rng.normal(0, 0.05, gt.shape) + [0.1, 0.0, 0.3]
    pred[2] = pred[2] * [-1, 1, 1]  # a mirrored prediction: the reflection case of the alignment
    tips = ((200, 201, 202, 203, 204), (210, 211, 212, 213, 214))
    # Images that cut the meshes (~half the points outside); sample 3's hands are all outside its image.
    gt[3, hands[0]] += [5.0, 0, 0]
    gt[3, hands[1]] += [5.0, 0, 0]
    focal = np.full((4, 2), 1200.0)
    princpt = np.array([[100.0, 120.0], [180.0, 90.0], [150.0, 150.0], [120.0, 100.0]])
    img_wh = np.full((4, 2), 240.0)
    errors = smplx_errors_mm(pred, gt, reg, hands, face, hand_joint_regressors=hand_regressors(reg, tips),
                             camera=(focal, princpt, img_wh))
    inside = [in_image(gt[b:b + 1], focal[b:b + 1], princpt[b:b + 1], img_wh[b:b + 1]).mean() for b in range(4)]
    assert all(0.2 < f < 0.8 for f in inside), inside  # the masks matter
    assert np.isnan(errors['pve_hand'][3]) and np.isfinite(errors['pve_hand'][:3]).all()
    for b in range(len(gt)):
        ref = reference(pred[b], gt[b], reg, hands[0], hands[1], face, make_hand_regressor(reg, tips),
                        (focal[b], princpt[b], img_wh[b]))
        for key, value in ref.items():
            np.testing.assert_allclose(errors[key][b], value, rtol=1e-9, atol=1e-9, err_msg=f'{key} sample {b}')
    # Without a camera every point counts.
    full = smplx_errors_mm(pred, gt, reg, hands, face)
    assert not np.allclose(full['pve'], errors['pve'])


def test_procrustes_never_reflects():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(2, 50, 3))
    mirrored = a * [-1, 1, 1]
    aligned = procrustes_align(a, mirrored)
    assert (pa_point_error_mm(a, mirrored) > 1).all()  # a reflection is not a rigid motion
    for b in range(2):  # the aligned set is a proper rotation of the input (same orientation)
        da, db = a[b] - a[b].mean(0), aligned[b] - aligned[b].mean(0)
        assert np.linalg.det(da[:3]) * np.linalg.det(db[:3]) > 0


def test_shape_mismatch_is_an_error(setup):
    _, reg, gt, _ = setup
    with pytest.raises(ValueError, match='same body model'):
        smplx_errors_mm(gt[:, :-1], gt, reg)


def test_fingertip_vertices_are_smplx_vertex_ids():
    from smplx.vertex_ids import vertex_ids

    from posedreamer_mm.evaluation.functional.mesh import LEFT_TIP_VERTICES, RIGHT_TIP_VERTICES
    ids = vertex_ids['smplx']
    fingers = ('thumb', 'index', 'middle', 'ring', 'pinky')
    assert LEFT_TIP_VERTICES == tuple(ids['l' + f] for f in fingers)
    assert RIGHT_TIP_VERTICES == tuple(ids['r' + f] for f in fingers)


def test_in_image_excludes_points_behind_the_camera_and_the_border():
    """focal 100, principal point (50, 40), image 100 x 80: u = 100 x / z + 50, v = 100 y / z + 40."""
    cam = (np.array([[100.0, 100.0]]), np.array([[50.0, 40.0]]), np.array([[100.0, 80.0]]))
    points = np.array([[[0.0, 0.0, 2.0],       # the principal point: inside
                        [0.0, 0.0, -2.0],      # behind the camera, would project to the principal point: outside
                        [-0.2, 0.1, -2.0],     # behind, would project inside (u 60, v 35): outside
                        [-1.0, 0.0, 2.0],      # u = 0 exactly: outside (strict, SMPLer-X)
                        [-0.98, 0.0, 2.0],     # u = 1: inside
                        [1.0, 0.0, 2.0],       # u = W exactly: outside
                        [0.0, 0.78, 2.0],      # v = 79 < H: inside
                        [0.0, 0.8, 2.0],       # v = H exactly: outside
                        [0.0, 0.0, 0.0]]])     # on the camera centre: outside
    np.testing.assert_array_equal(in_image(points, *cam)[0], [1, 0, 0, 0, 1, 0, 1, 0, 0])
