"""One camera/geometry validator for every renderer, and one visibility rule (strict margins, pixel ties)."""
import numpy as np
import pytest

from posedreamer_mm.body.joint_maps import SMPLX_TO_COCO17
from posedreamer_mm.render import DepthRenderer, PNCCRenderer, SkeletonRenderer
from posedreamer_mm.render.geometry import GeometryError, check_render_geometry, validate_camera
from posedreamer_mm.render.rasterizer import MeshRasterizer
from posedreamer_mm.render.visibility import OCCLUSION_MARGINS_M, coco17_keypoints, in_image, occluded, pixel_index
from posedreamer_mm.testing.reference_rasterizer import uv_sphere

VERTS, FACES = uv_sphere(center=(0.0, 0.0, 3.0), radius=0.5, rings=8, segments=12)
CAM = dict(focal=(300.0, 300.0), princpt=(32.0, 32.0), img_size=(64, 64))


@pytest.mark.parametrize('focal, princpt, img_size, what', [
    ((np.nan, 300.0), (32, 32), (64, 64), 'focal'),
    ((0.0, 300.0), (32, 32), (64, 64), 'focal'),
    ((-300.0, 300.0), (32, 32), (64, 64), 'focal'),
    ((np.inf, 300.0), (32, 32), (64, 64), 'focal'),
    ((300.0, 300.0), (np.nan, 32), (64, 64), 'princpt'),
    ((300.0, 300.0), (32, 32), (0, 64), 'img_size'),
    ((300.0, 300.0), (32, 32), (64.5, 64), 'img_size'),
    ((300.0, 300.0), (32, 32), (10 ** 6, 64), 'img_size'),
])
def test_bad_cameras_are_refused_by_the_validator_and_by_every_renderer(focal, princpt, img_size, what):
    with pytest.raises(GeometryError, match=what) as info:
        validate_camera(focal, princpt, img_size)
    assert info.value.reason == 'camera'
    for renderer in (DepthRenderer(size=None), DepthRenderer(size=32)):
        with pytest.raises(GeometryError, match=what):
            renderer(VERTS, FACES, focal, princpt, img_size)
    with pytest.raises(GeometryError, match=what):  # the rasteriser itself validates what it is given
        MeshRasterizer().render(VERTS, FACES, focal, princpt, img_size, outputs=('depth',))


@pytest.mark.parametrize('shift, reason', [(-3.0, 'near_plane'), (-2.8, 'near_plane'), (200.0, 'far_plane')])
def test_bodies_across_the_camera_plane_or_beyond_far_are_refused_not_blank(shift, reason):
    # Before: a body beyond the far plane gave a blank image; one straddling the camera plane a ~1e11 px crop.
    verts = VERTS + np.array([0.0, 0.0, shift], np.float32)
    for renderer in (DepthRenderer(size=32), PNCCRenderer(colors=np.ones_like(VERTS), size=32)):
        with pytest.raises(GeometryError) as info:
            renderer.render(verts, FACES, **CAM)
        assert info.value.reason == reason and 'z=' in str(info.value)


def test_clip_planes_follow_the_body():
    # A body 150 m away renders with far=200 (limits follow the config) and is not cut by a fixed plane.
    far_body = VERTS * np.array([1, 1, 1], np.float32) + np.array([0, 0, 147.0], np.float32)
    out = DepthRenderer(size=32, far=200.0).render(far_body, FACES, **CAM)
    near, far = out['clip_planes']
    assert near < far_body[:, 2].min() and far > far_body[:, 2].max() and far <= 200.0
    assert out['mask'].any()
    geo = check_render_geometry(VERTS, **CAM)
    assert 0.01 <= geo.near < VERTS[:, 2].min() and VERTS[:, 2].max() < geo.far <= 100.0


def test_nan_vertices_and_out_of_view_bodies_are_refused():
    bad = VERTS.copy()
    bad[3, 1] = np.nan
    with pytest.raises(GeometryError, match='NaN') as info:
        DepthRenderer(size=32).render(bad, FACES, **CAM)
    assert info.value.reason == 'vertices'
    aside = VERTS + np.array([10.0, 0.0, 0.0], np.float32)  # entirely left of the 64 px image
    with pytest.raises(GeometryError) as info:
        DepthRenderer(size=None).render(aside, FACES, **CAM)
    assert info.value.reason == 'out_of_view'
    DepthRenderer(size=32).render(aside, FACES, **CAM)  # a crop follows the body: fine
    with pytest.raises(ValueError, match='faces index'):
        DepthRenderer(size=32).render(VERTS, FACES + len(VERTS), **CAM)


def test_pixel_ties_go_to_the_pixel_whose_half_open_cell_holds_them():
    # Pixel i covers [i - 0.5, i + 0.5): 0.5 -> 1 and 2.5 -> 3 (np.round would give 0 and 2).
    np.testing.assert_array_equal(pixel_index(np.array([[0.5, 2.5], [-0.5, 1.4999]])), [[1, 3], [0, 1]])
    pts = np.array([[0.0, 0.0, 1.0]] * 3)
    assert in_image(pts, np.array([[63.49, 0.0], [63.5, 0.0], [-0.5, 0.0]]), (64, 64)).tolist() == [True, False,
                                                                                                  True]


def test_occlusion_margin_is_strict():
    # Exactly representable numbers: the surface is exactly the margin in front of the point -> not occluded.
    depth = np.full((4, 4), 2.25)
    uv = np.array([[1.0, 1.0]] * 3)
    pts = np.array([[0.0, 0.0, 2.5], [0.0, 0.0, 2.5 + 2 ** -20], [0.0, 0.0, 2.25]])
    assert occluded(pts, uv, depth, 0.25).tolist() == [False, True, False]
    assert occluded(pts, uv, depth, np.inf).tolist() == [False, False, False]


def test_coco17_flags_follow_the_same_rule():
    joints_3d = np.zeros((127, 3))
    joints_3d[:, 2] = 2.5
    joints_2d = np.full((127, 2), 5.0)
    depth = np.zeros((8, 8))
    depth[5, 5] = 2.25  # exactly the (binary-exact) margin in front: a tie, visible
    margins = np.where(np.arange(17) < 5, 0.25, 0.5)
    kp = coco17_keypoints(joints_2d, joints_3d, (8, 8), depth, margins)
    assert kp[:, 2].tolist() == [2.0] * 17
    depth[5, 5] = 2.125  # beyond the face margin, within the joints'
    assert coco17_keypoints(joints_2d, joints_3d, (8, 8), depth, margins)[:, 2].tolist() == [1.0] * 5 + [2.0] * 12
    assert OCCLUSION_MARGINS_M[0] == 0.02 and OCCLUSION_MARGINS_M[5] == 0.15
    depth[5, 5] = 2.0  # 0.5 m in front: occludes face points (2 cm) and joints (15 cm)
    assert coco17_keypoints(joints_2d, joints_3d, (8, 8), depth)[:, 2].tolist() == [1.0] * 17
    joints_3d[SMPLX_TO_COCO17[0], 2] = -1.0  # behind the camera: outside
    assert coco17_keypoints(joints_2d, joints_3d, (8, 8), None)[0, 2] == 0.0
    with pytest.raises(ValueError, match='J >= 127'):
        coco17_keypoints(joints_2d[:20], joints_3d[:20], (8, 8), None)


def test_skeleton_hides_points_with_the_shared_rule():
    # OpenPose-18 points given directly: the nose sits inside the sphere, 0.5 m behind its front surface.
    joints = np.tile(np.array([0.0, 0.0, 3.0]), (18, 1)) + np.linspace(-0.2, 0.2, 18)[:, None] * [1, 1, 0]
    out = SkeletonRenderer(size=None).render(VERTS, FACES, joints=joints, **CAM)
    vis = out['keypoints_openpose18'][:, 2]
    assert vis[0] == 0 and vis[14:].sum() == 0  # face points hidden by the body
    assert vis[1:14].all()  # body joints are never occlusion-tested
