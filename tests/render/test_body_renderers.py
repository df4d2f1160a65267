"""Control renderers on the generated SMPL-X stand-in in several poses."""
import cv2
import numpy as np
import pytest

from posedreamer_mm.render import (DepthRenderer, NormalRenderer, PNCCRenderer, ShadedRenderer, SkeletonRenderer,
                                   canonical_pncc_colors)
from posedreamer_mm.render.reference import reference_rasterize
from posedreamer_mm.render.skeleton import COLORS, openpose18

L_WRIST, R_WRIST, L_ANKLE, R_ANKLE, HEAD, PELVIS = 20, 21, 7, 8, 15, 0  # SMPL-X joint indices
CAM = dict(focal=(900.0, 900.0), princpt=(128.0, 128.0), img_size=(256, 256))


def _orient(yaw_deg):
    rot = (cv2.Rodrigues(np.array([[0.0], [np.deg2rad(yaw_deg)], [0.0]]))[0]
           @ cv2.Rodrigues(np.array([[np.pi], [0.0], [0.0]]))[0])
    return cv2.Rodrigues(rot)[0].ravel()


@pytest.fixture(scope='module')
def body(standin_model_dir):
    import torch

    from posedreamer_mm.body.body_model import SMPLXBodyModel, canonical_body_pose
    model = SMPLXBodyModel(model_path=standin_model_dir, gender='neutral', num_betas=10)
    a_pose = canonical_body_pose(kind='A').float()
    walk = a_pose.clone()
    walk[0, 0:3] = torch.tensor([-0.5, 0, 0])  # left hip forward
    walk[0, 9:12] = torch.tensor([0.8, 0, 0])  # left knee bent
    yaws = [0.0, 30.0, 90.0, 180.0]
    poses = torch.cat([a_pose, walk, a_pose, walk])
    with torch.no_grad():
        out = model(betas=torch.zeros(4, 10), global_orient=torch.tensor(np.array([_orient(y) for y in yaws]),
                                                                         dtype=torch.float32),
                    body_pose=poses, transl=torch.tensor([[0.0, 0.0, 7.0]] * 4))
    return dict(model=model, vertices=out.vertices.numpy(), joints=out.joints.numpy(), faces=np.asarray(model.faces),
                yaws=yaws)


@pytest.mark.parametrize('i', range(4))
def test_pncc_mask_matches_reference(body, i):
    v, f = body['vertices'][i], body['faces']
    res = PNCCRenderer(body_model=body['model'], size=None).render(v, f, **CAM)
    ref = reference_rasterize(v, f, CAM['focal'], CAM['princpt'], CAM['img_size'],
                              colors=canonical_pncc_colors(body['model']))
    iou = (res['mask'] & ref['mask']).sum() / (res['mask'] | ref['mask']).sum()
    assert iou >= 0.99
    both = res['mask'] & ref['mask']
    # Away from occlusion edges (where a pixel centre on an edge may go either way) depth agrees to 1 mm.
    assert (np.abs(res['depth'][both] - ref['depth'][both]) > 1e-3).mean() < 0.005
    # No blend with the black background anywhere, the silhouette included.
    err = np.abs(res['image'] / 255.0 - ref['color']).max(-1)[both]
    assert np.quantile(err, 0.98) < 0.02
    assert (res['image'][res['mask']].max(-1) > 0).all() and not res['image'][~res['mask']].any()


def test_pncc_colour_map_is_cached_and_normalised(body):
    colors = canonical_pncc_colors(body['model'])
    assert colors.shape == (body['vertices'].shape[1], 3)
    assert np.allclose(colors.min(0), 0) and np.allclose(colors.max(0), 1)
    assert canonical_pncc_colors(body['model']) is colors
    assert PNCCRenderer(body_model=body['model']).colors is colors
    # Built from a config or a path, the same model file hits the same cache entry.
    model_dir = str(body['model'].model_file.parent)
    assert PNCCRenderer(body_model=dict(type='SMPLXBodyModel', model_path=model_dir)).colors is colors
    assert PNCCRenderer(body_model=model_dir).colors is colors


def test_front_view_upright_not_mirrored_left_right_colours(body):
    v, j, f = body['vertices'][0], body['joints'][0], body['faces']
    res = PNCCRenderer(body_model=body['model'], size=256).render(v, f, joints=j, **CAM)
    uv = res['joints_2d']
    assert uv[L_WRIST, 0] > uv[R_WRIST, 0] + 20  # the person's left hand on the image's right
    assert uv[HEAD, 1] < uv[PELVIS, 1] - 40  # head at the top
    colors = canonical_pncc_colors(body['model'])
    # PNCC red grows towards the body's left: the left foot is redder than the right one, in the image too.
    img = res['image'].astype(int)
    for a, b in [(L_ANKLE, R_ANKLE), (L_WRIST, R_WRIST)]:
        pa, pb = np.round(uv[[a, b]]).astype(int)
        assert img[pa[1], pa[0], 0] > img[pb[1], pb[0], 0] + 50
    assert colors[:, 0].std() > 0.1


def test_projected_visible_vertex_has_its_colour(body):
    v, f = body['vertices'][1], body['faces']
    r = PNCCRenderer(body_model=body['model'], size=512)
    res = r.render(v, f, **CAM)
    from posedreamer_mm.render.base import project
    uv = project(v, res['focal'], res['princpt'])
    px = np.round(uv).astype(int)
    inner = cv2.erode(res['mask'].astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    ok = inner[px[:, 1], px[:, 0]] & (np.abs(res['depth'][px[:, 1], px[:, 0]] - v[:, 2]) < 0.005)
    assert ok.sum() > 1000
    err = np.abs(res['image'][px[ok, 1], px[ok, 0]] / 255.0 - r.colors[ok]).max(-1)
    # Half a pixel of colour gradient; a few vertices in folds (crotch, armpits) show a touching surface.
    assert np.quantile(err, 0.95) < 0.02 and np.quantile(err, 0.99) < 0.05


@pytest.mark.parametrize('i', [0, 1, 2])
def test_skeleton_joints_at_projected_positions(body, i):
    v, j, f = body['vertices'][i], body['joints'][i], body['faces']
    res = SkeletonRenderer(size=512).render(v, f, joints=j, **CAM)
    kp = openpose18(j)
    from posedreamer_mm.render.base import project
    uv = project(kp, res['focal'], res['princpt'])
    np.testing.assert_allclose(res['keypoints_openpose18'][:, :2], uv, atol=1e-6)
    img = res['image']
    checked = 0
    for k in range(18):
        later = [m for m in range(k + 1, 18)]
        if later and np.linalg.norm(uv[later] - uv[k], axis=1).min() < 10:
            continue  # covered by a later joint's circle
        u, w = np.round(uv[k]).astype(int)
        assert tuple(img[w, u]) == COLORS[k], k
        checked += 1
    assert checked >= 10


def test_crop_labels_consistent(body):
    v, j, f = body['vertices'][1], body['joints'][1], body['faces']
    big = dict(focal=(1500.0, 1500.0), princpt=(960.0, 540.0), img_size=(1920, 1080))
    res = DepthRenderer(size=384, margin=0.1).render(v, f, joints=j, **big)
    assert res['image'].shape == (384, 384, 3) and tuple(res['img_size']) == (384, 384)
    rows, cols = np.nonzero(res['mask'])
    x, y, w, h = res['bbox']
    assert abs(cols.min() - x) <= 1.5 and abs(cols.max() - (x + w)) <= 1.5
    assert abs(rows.min() - y) <= 1.5 and abs(rows.max() - (y + h)) <= 1.5
    assert max(w, h) == pytest.approx(384 / 1.1, rel=0.02)  # square side = max(w, h) * (1 + margin)
    # The crop camera is the same pinhole scaled and shifted: joints_2d map from the full image linearly.
    from posedreamer_mm.render.base import project
    full = project(j, big['focal'], big['princpt'])
    s = res['focal'][0] / big['focal'][0]
    np.testing.assert_allclose(res['joints_2d'], (full - full.mean(0)) * s + res['joints_2d'].mean(0), atol=1e-3)


def test_other_controls_on_body(body):
    v, j, f = body['vertices'][0], body['joints'][0], body['faces']
    depth = DepthRenderer(size=256).render(v, f, **CAM)
    m = depth['mask']
    assert depth['image'][..., 0][m].max() == 255 and depth['image'][..., 0][m].min() == 51
    assert not depth['image'][~m].any()
    assert 6.5 < depth['depth'][m].min() < depth['depth'][m].max() < 7.5
    normal = NormalRenderer(size=256).render(v, f, **CAM)
    assert (normal['mask'] == m).all()
    assert np.median(normal['image'][m][:, 2]) > 200  # a front view is mostly blue (facing the camera)
    shaded = ShadedRenderer(size=256)(v, f, **CAM)
    assert (shaded[m].max(-1) > 0).all() and not shaded[~m].any()
