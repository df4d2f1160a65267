"""Pure drawing/conversion functions and the renderers on meshes built here (no body model)."""
import numpy as np
import pytest

from posedreamer_mm.registry import RENDERERS
from posedreamer_mm.render import (
    DepthRenderer,
    NormalRenderer,
    PNCCRenderer,
    ShadedRenderer,
    SkeletonRenderer,
    depth_to_control,
    draw_bodypose,
    lambert,
    normal_to_control,
    pncc_colors,
)
from posedreamer_mm.testing.reference_rasterizer import quad, uv_sphere

from .openpose_annotator import (
    ANNOTATOR_COLORS,
    LIMB_NECK_RSHOULDER,
    LIMB_RHIP_RKNEE,
    controlnet_aux_draw_bodypose,
    disc_centroid,
)

NAMES = ('PNCCRenderer', 'SkeletonRenderer', 'DepthRenderer', 'NormalRenderer', 'ShadedRenderer')


def test_names_registered_and_not_upstream():
    # (No class of these names exists in mmengine/mmcv/mmpose/mmdet/mmpretrain sources either, checked by grep.)
    for name in NAMES:
        assert RENDERERS.get(name) is not None
    upstream = []
    from mmengine import registry as mme
    upstream += [r for r in vars(mme).values() if isinstance(r, mme.Registry)]
    from mmpose import registry as mmp
    upstream += [r for r in vars(mmp).values() if isinstance(r, mme.Registry)]
    try:
        from mmdet import registry as mmd
        upstream += [r for r in vars(mmd).values() if isinstance(r, mme.Registry)]
    except ImportError:
        pass
    clashes = [(r.name, n) for r in upstream for n in NAMES if n in r.module_dict]
    assert not clashes


def test_build_from_config():
    r = RENDERERS.build(dict(type='PNCCRenderer', colors=np.zeros((4, 3)), size=256))
    assert isinstance(r, PNCCRenderer) and r.size == 256
    assert isinstance(RENDERERS.build(dict(type='SkeletonRenderer', size=512)), SkeletonRenderer)
    with pytest.raises(ValueError):
        PNCCRenderer()


def _keypoints():
    # A front-facing stick figure in a 256x256 image (OpenPose-18 order), joints well apart.
    return np.array([[128, 40], [128, 70], [100, 72], [80, 110], [70, 150], [156, 72], [176, 110], [186, 150],
                     [110, 140], [105, 190], [100, 240], [146, 140], [151, 190], [156, 240], [120, 32],
                     [136, 32], [110, 38], [146, 38]], np.float64)


def test_draw_bodypose_colours():
    kp = _keypoints() + 0.3  # fractional positions round to the nearest pixel centre
    canvas = draw_bodypose(np.zeros((256, 256, 3), np.uint8), kp)
    for k, (u, v) in enumerate(kp):
        assert tuple(canvas[round(v), round(u)]) == ANNOTATOR_COLORS[k], k
        # The whole disc of joint k is centred on the pixel containing the point (none of these overlap).
        np.testing.assert_allclose(disc_centroid(canvas, ANNOTATOR_COLORS[k]), np.round([u, v]), atol=0.5)
    # Limb 9 (r_hip -> r_knee, annotator limbSeq [9, 10]) at its midpoint: 0.6 of its colour.
    mid = (kp[8] + kp[9]) / 2
    assert tuple(canvas[round(mid[1]), round(mid[0])]) == LIMB_RHIP_RKNEE == (0, 153, 51)
    mid = (kp[1] + kp[2]) / 2  # neck -> right shoulder
    assert tuple(canvas[round(mid[1]), round(mid[0])]) == LIMB_NECK_RSHOULDER == (153, 0, 0)
    assert tuple(canvas[round(kp[2, 1]), round(kp[2, 0])]) == (255, 170, 0)  # right shoulder joint
    assert set(np.unique(canvas.reshape(-1, 3), axis=0)[:, 0]) <= {0, 255, 170, 85, 153, 102, 51}


@pytest.mark.parametrize('size', [(256, 256), (320, 256)])
def test_draw_bodypose_matches_controlnet_aux_pixel_exact(size):
    # Even-integer keypoints: the annotator truncates centres, this code rounds; on even integers (and their
    # integer midpoints) both draw the same pixels, so every pixel must agree.
    w, h = size
    kp = 2 * np.round(_keypoints() / 2)
    ours = draw_bodypose(np.zeros((h, w, 3), np.uint8), kp)
    ref = controlnet_aux_draw_bodypose(np.zeros((h, w, 3), np.uint8), kp / [w, h], [list(range(18))])
    np.testing.assert_array_equal(ours, ref)
    # A missing joint (right wrist) removes its limb in both.
    vis = np.ones(18, bool)
    vis[4] = False
    ours = draw_bodypose(np.zeros((h, w, 3), np.uint8), kp, vis)
    ref = controlnet_aux_draw_bodypose(np.zeros((h, w, 3), np.uint8), kp / [w, h], [[*range(4), -1, *range(5, 18)]])
    np.testing.assert_array_equal(ours, ref)


def test_draw_bodypose_skips_invisible_joints_and_their_limbs():
    kp = _keypoints()
    vis = np.ones(18, bool)
    vis[4] = False  # right wrist: its joint and the r_elbow -> r_wrist limb disappear
    canvas = draw_bodypose(np.zeros((256, 256, 3), np.uint8), kp, vis)
    assert not canvas[150, 70].any()
    mid = (kp[3] + kp[4]) / 2
    assert not canvas[round(mid[1]), round(mid[0])].any()


def test_depth_to_control():
    depth = np.zeros((4, 4))
    depth[1, 1], depth[2, 2], depth[3, 3] = 2.0, 3.0, 4.0
    img = depth_to_control(depth)
    assert img.shape == (4, 4, 3) and (img[..., 0] == img[..., 2]).all()
    assert img[1, 1, 0] == 255 and img[3, 3, 0] == 51 and img[0, 0, 0] == 0
    mid = 0.2 + 0.8 * (1 / 3 - 1 / 4) / (1 / 2 - 1 / 4)
    assert img[2, 2, 0] == round(mid * 255)
    assert depth_to_control(depth, fg_range=(0, 1))[3, 3, 0] == 0


def test_depth_to_control_percentile_clipping():
    # A body 3.0-3.5 m away with one pixel (a hand) at 1 m and one at 10 m.
    depth = np.zeros((10, 12))
    depth[:, :10] = np.linspace(3.0, 3.5, 100).reshape(10, 10)
    depth[0, 10], depth[0, 11] = 1.0, 10.0
    bulk = np.zeros(depth.shape, bool)
    bulk[:, :10] = True
    plain = depth_to_control(depth)[..., 0]
    np.testing.assert_array_equal(plain, depth_to_control(depth, clip_percentiles=None)[..., 0])
    clipped = depth_to_control(depth, clip_percentiles=(2, 98))[..., 0]
    # Min-max: the near hand takes 255 and leaves the body about 30 grey levels; clipped, the body spans nearly
    # the whole range and keeps its order, and the outliers saturate at the ends.
    assert int(plain[bulk].max()) - int(plain[bulk].min()) < 40
    assert int(clipped[bulk].max()) - int(clipped[bulk].min()) > 190
    assert (np.diff(clipped[:, :10].astype(int).ravel()) <= 0).all()
    assert clipped[0, 10] == 255 and clipped[0, 11] == 51 and clipped[0, 10] == plain[0, 10]
    assert clipped[bulk].min() >= 51 and clipped[1, 11] == 0
    r = DepthRenderer(size=None, clip_percentiles=(2, 98))
    assert r.clip_percentiles == (2.0, 98.0) and DepthRenderer().clip_percentiles is None
    with pytest.raises(ValueError):
        DepthRenderer(clip_percentiles=(98, 2))


def test_normal_to_control_convention():
    normals = np.array([[[0, 0, -1], [-1, 0, 0], [0, -1, 0], [1, 0, 0]]], np.float32)
    img = normal_to_control(normals, np.ones((1, 4), bool))
    assert tuple(img[0, 0]) == (128, 128, 255)  # facing the camera: blue
    assert tuple(img[0, 1]) == (255, 128, 128)  # facing image-left: red
    assert tuple(img[0, 2]) == (128, 255, 128)  # facing up: green
    assert tuple(img[0, 3]) == (0, 128, 128)
    assert tuple(normal_to_control(normals, np.zeros((1, 4), bool))[0, 0]) == (0, 0, 0)


def test_lambert_range():
    n = np.array([[[0, 0, -1.0], [0, 0, 1.0]]])
    img = lambert(n, np.array([[True, True]]), albedo=(1, 1, 1), light_dir=(0, 0, -1), ambient=0.25)
    assert tuple(img[0, 0]) == (255, 255, 255) and tuple(img[0, 1]) == (64, 64, 64)


def test_pncc_colors_normalised():
    v, _ = uv_sphere(center=(1, 2, 3), radius=2.0)
    c = pncc_colors(v)
    assert np.allclose(c.min(0), 0) and np.allclose(c.max(0), 1)


CAM = dict(focal=(400.0, 400.0), princpt=(80.0, 60.0), img_size=(160, 120))


def test_mesh_renderers_at_input_camera():
    near_v, near_f = quad(center=(0.0, 0.0, 2.0), size=(0.3, 0.3))
    far_v, far_f = quad(center=(0.1, 0.05, 3.0), size=(0.8, 0.6))
    v = np.concatenate([near_v, far_v])
    f = np.concatenate([near_f, far_f + 4])
    depth = DepthRenderer(size=None).render(v, f, **CAM)
    assert depth['control_type'] == 'depth' and depth['image'].shape == (120, 160, 3)
    assert depth['image'][60, 80, 0] == 255 and depth['depth'][60, 80] == pytest.approx(2.0, abs=1e-3)
    assert depth['image'][:, :, 0][depth['mask']].min() == 51 and depth['image'][0, 0, 0] == 0
    normal = NormalRenderer(size=None)(v, f, **CAM)
    assert tuple(normal[60, 80]) == (128, 128, 255) and tuple(normal[0, 0]) == (0, 0, 0)
    shaded = ShadedRenderer(size=None)(v, f, **CAM)
    assert shaded[60, 80].min() > 100 and tuple(shaded[0, 0]) == (0, 0, 0)
    colors = np.tile([1.0, 0.0, 0.0], (8, 1))
    pncc = PNCCRenderer(colors=colors, size=None).render(v, f, **CAM)
    assert tuple(pncc['image'][60, 80]) == (255, 0, 0) and pncc['mask'].sum() == depth['mask'].sum()


def test_crop_renders_body_square_with_margin():
    v, f = uv_sphere(center=(0.6, -0.2, 4.0), radius=0.3)
    big = dict(focal=(1200.0, 1200.0), princpt=(960.0, 540.0), img_size=(1920, 1080))
    res = PNCCRenderer(colors=np.ones((len(v), 3)), size=128, margin=0.1).render(v, f, **big)
    assert res['image'].shape == (128, 128, 3) and tuple(res['img_size']) == (128, 128)
    rows, cols = np.nonzero(res['mask'])
    # The body fills the crop up to the margin, centred; nothing touches the border.
    assert rows.min() > 2 and cols.min() > 2 and rows.max() < 125 and cols.max() < 125
    assert abs((rows.min() + rows.max()) / 2 - 63.5) < 2 and abs((cols.min() + cols.max()) / 2 - 63.5) < 2
    x, y, w, h = res['bbox']
    assert abs(x - cols.min()) <= 1.5 and abs(x + w - cols.max()) <= 1.5
    assert abs(y - rows.min()) <= 1.5 and abs(y + h - rows.max()) <= 1.5
    assert res['crop_box'] is not None and res['crop_box'][2] == pytest.approx(res['crop_box'][3])
