"""Cameras on known geometry: projection, round trips, boxes, and crops consistent with the image content."""
import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from posedreamer_mm.body import camera as cam
from posedreamer_mm.body.rotations import axis_angle_to_matrix


def test_intrinsics_and_projection_known_values():
    k = cam.intrinsics_matrix(torch.tensor([[100.0, 120.0]]), torch.tensor([[50.0, 60.0]]))
    torch.testing.assert_close(k[0], torch.tensor([[100.0, 0, 50], [0, 120, 60], [0, 0, 1]]))
    pts = torch.tensor([[0.0, 0.0, 3.0], [1.0, -1.0, 2.0]])
    uv = cam.project_points(pts, [100.0, 120.0], [50.0, 60.0])  # lists / numpy accepted
    torch.testing.assert_close(uv, torch.tensor([[50.0, 60.0], [100.0, 0.0]]))


def test_project_unproject_round_trip_batched():
    g = torch.Generator().manual_seed(0)
    pts = torch.randn(4, 50, 3, generator=g, dtype=torch.float64) + torch.tensor([0, 0, 5.0], dtype=torch.float64)
    focal = torch.rand(4, 2, generator=g, dtype=torch.float64) * 500 + 500
    princpt = torch.rand(4, 2, generator=g, dtype=torch.float64) * 512
    uv = cam.project_points(pts, focal, princpt)
    back = cam.unproject_points(uv, pts[..., 2], focal, princpt)
    torch.testing.assert_close(back, pts)


def test_transform_points():
    rot = Rotation.from_euler('z', 90, degrees=True).as_matrix()
    out = cam.transform_points(np.array([[1.0, 0.0, 0.0]]), rot, np.array([0.0, 0.0, 2.0]))
    torch.testing.assert_close(out.double(), torch.tensor([[0.0, 1.0, 2.0]], dtype=torch.float64))


def test_boxes():
    uv = torch.tensor([[10.0, 20.0], [30.0, 80.0], [20.0, 50.0]])
    box = cam.bbox_from_points(uv)
    torch.testing.assert_close(box, torch.tensor([10.0, 20.0, 20.0, 60.0]))
    sq = cam.square_crop_box(box, margin=0.1)
    torch.testing.assert_close(sq, torch.tensor([20 - 33.0, 50 - 33.0, 66.0, 66.0]))


def test_crop_camera_matches_cropped_points():
    g = torch.Generator().manual_seed(1)
    pts = torch.randn(2, 30, 3, generator=g) * 0.5 + torch.tensor([0.0, 0.0, 3.0])
    focal, princpt = torch.tensor([[900.0, 900.0], [700.0, 750.0]]), torch.tensor([[512.0, 500.0], [300.0, 320.0]])
    uv = cam.project_points(pts, focal, princpt)
    box = cam.square_crop_box(cam.bbox_from_points(uv))
    f2, c2 = cam.crop_camera(focal, princpt, box, 256)
    torch.testing.assert_close(cam.project_points(pts, f2, c2), cam.crop_points_2d(uv, box, 256))
    cropped = cam.crop_points_2d(uv, box, (256, 256))
    assert (cropped > 0).all() and (cropped < 256).all()  # keypoints stay inside the 10 %-margin crop


def test_crop_image_pixel_at_keypoint_is_unchanged():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (200, 300, 3), dtype=np.uint8)
    box = np.array([40.0, 30.0, 120.0, 120.0])
    kpts = np.array([[50.0, 40.0], [100.0, 90.0], [159.0, 149.0]])  # integer pixels inside the box
    # Same scale: exact pixel equality at each keypoint.
    crop = cam.crop_image(img, box, 120)
    uv = cam.crop_points_2d(kpts, box, 120).round().long().numpy()
    for (u, v), (x, y) in zip(uv, kpts.astype(int)):
        np.testing.assert_array_equal(crop[v, u], img[y, x])
    # Resized 2x: a linear ramp is reproduced exactly by bilinear sampling, so values match at the mapped points.
    yy, xx = np.mgrid[0:200, 0:300].astype(np.float32)
    ramp = 0.5 * xx + 0.25 * yy
    big = cam.crop_image(ramp, box, 240)
    uv2 = cam.crop_points_2d(kpts, box, 240).numpy()
    for (u, v), (x, y) in zip(uv2, kpts):
        assert big[int(v), int(u)] == pytest.approx(0.5 * x + 0.25 * y, abs=0.05)


def test_crop_outside_is_black():
    img = np.full((100, 100, 3), 200, np.uint8)
    crop = cam.crop_image(img, [-50, -50, 100, 100], 100)
    assert (crop[:45, :45] == 0).all() and (crop[55:, 55:] == 200).all()


def test_upright_global_orient():
    r0 = Rotation.from_rotvec(cam.upright_global_orient(0.0).numpy()).as_matrix()
    np.testing.assert_allclose(r0, np.diag([1.0, -1.0, -1.0]), atol=1e-6)  # y up -> y down, faces the camera
    yaw = np.deg2rad(30.0)
    expect = (Rotation.from_euler('x', np.pi) * Rotation.from_euler('y', yaw)).as_matrix()
    got = Rotation.from_rotvec(cam.upright_global_orient(yaw).numpy()).as_matrix()
    np.testing.assert_allclose(got, expect, atol=1e-6)
    batch = cam.upright_global_orient(torch.tensor([0.0, 1.0, -2.0]))
    assert batch.shape == (3, 3)


def test_upright_global_orient_known_axis_angle_and_numpy_twin():
    """The one implementation against scipy's axis-angle itself (not only its matrix: at a half turn the sign
    is a convention, scipy's), the numpy variant bit-equal to the torch one, and the matrix form agreeing."""
    yaws = np.concatenate([np.linspace(-np.pi, np.pi, 721), [-7.0, -4.0, 4.0, 7.0]])
    expect = (Rotation.from_euler('x', np.pi) * Rotation.from_euler('y', yaws[:, None])).as_rotvec()
    torch_aa = cam.upright_global_orient(torch.tensor(yaws), dtype=torch.float64).numpy()
    np.testing.assert_allclose(torch_aa, expect, atol=1e-9)
    np_aa = cam.upright_global_orient_np(yaws)
    assert isinstance(np_aa, np.ndarray) and np_aa.dtype == np.float32 and np_aa.shape == (len(yaws), 3)
    np.testing.assert_array_equal(np_aa, cam.upright_global_orient(yaws).numpy())
    assert cam.upright_global_orient_np(0.3).shape == (3,)
    mats = (Rotation.from_euler('x', np.pi) * Rotation.from_euler('y', yaws[:, None])).as_matrix()
    np.testing.assert_allclose(cam.upright_rotation(yaws).numpy(), mats, atol=1e-12)
    np.testing.assert_allclose(axis_angle_to_matrix(torch.tensor(torch_aa)).numpy(), mats, atol=1e-9)


def test_split_heading_inverts_upright_global_orient():
    rots = Rotation.random(50, random_state=0)
    yaw, tilt = cam.split_heading(rots.as_rotvec())
    assert yaw.shape == (50,) and tilt.shape == (50, 3, 3)
    forward = tilt.numpy()[..., :, 2]  # the tilt carries no heading: forward stays in the canonical y-z plane
    np.testing.assert_allclose(forward[:, 0], 0.0, atol=1e-12)
    assert (forward[:, 2] >= -1e-12).all()
    back = cam.upright_global_orient(yaw, dtype=torch.float64, tilt=tilt).numpy()
    np.testing.assert_allclose(Rotation.from_rotvec(back).as_matrix(), rots.as_matrix(), atol=1e-9)
    # Known answer: Rx(pi) Ry(0.5) Rx(0.4) -> yaw 0.5, tilt Rx(0.4); numpy in, the single-sample shapes out.
    orient = (Rotation.from_euler('x', np.pi) * Rotation.from_euler('y', 0.5) * Rotation.from_euler('x', 0.4))
    yaw, tilt = cam.split_heading(orient.as_rotvec())
    assert yaw.shape == () and float(yaw) == pytest.approx(0.5, abs=1e-12)
    np.testing.assert_allclose(tilt.numpy(), Rotation.from_euler('x', 0.4).as_matrix(), atol=1e-12)


def test_points_behind_the_camera_are_flagged_and_kept_out_of_boxes():
    pts = torch.tensor([[0.1, 0.2, 2.0], [-0.3, 0.1, 4.0], [1.0, 0.0, -1.0], [0.5, 0.5, 0.0],
                        [float('nan'), 0.0, 3.0]])
    front = cam.points_in_front(pts)
    assert front.tolist() == [True, True, False, False, False]
    uv = cam.project_points(pts, [100.0, 100.0], [50.0, 50.0])
    assert uv[2, 0] > 1e9  # the documented clamp: finite, but meaningless, behind the camera
    box = cam.bbox_from_points(uv, valid=front)
    torch.testing.assert_close(box, torch.tensor([50 - 7.5, 50 + 2.5, 12.5, 7.5]))
    assert cam.bbox_from_points(uv).isfinite().all()  # without the mask the clamp would blow up the box ...
    assert cam.bbox_from_points(uv)[2] > 1e9  # ... which is why the mask exists
    batched = cam.bbox_from_points(uv.expand(2, 5, 2), valid=torch.tensor([[True] * 2 + [False] * 3, [False] * 5]))
    torch.testing.assert_close(batched[0], box)
    assert batched[1].isnan().all()  # nothing usable: NaN, not a fake box
    nan_uv = torch.tensor([[10.0, 20.0], [float('nan'), 5.0], [30.0, 80.0]])
    torch.testing.assert_close(cam.bbox_from_points(nan_uv), torch.tensor([10.0, 20.0, 20.0, 60.0]))
