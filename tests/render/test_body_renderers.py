"""Control renderers on the generated SMPL-X stand-in in several poses."""
import cv2
import numpy as np
import pytest

from posedreamer_mm.render import (
    DepthRenderer,
    NormalRenderer,
    PNCCRenderer,
    ShadedRenderer,
    SkeletonRenderer,
    canonical_pncc_colors,
    pncc_colors,
)
from posedreamer_mm.render.skeleton import openpose18
from posedreamer_mm.testing.reference_rasterizer import reference_rasterize

from .openpose_annotator import ANNOTATOR_COLORS, LIMB_NECK_NOSE, disc_centroid

L_WRIST, R_WRIST, L_ANKLE, R_ANKLE, HEAD, PELVIS = 20, 21, 7, 8, 15, 0  # SMPL-X joint indices
#: SMPL-X joints (smplx.joint_names) of OpenPose-18, in OpenPose order; the neck is the shoulders' midpoint.
OP18_FROM_SMPLX = (55, None, 17, 19, 21, 16, 18, 20, 2, 5, 8, 1, 4, 7, 56, 57, 58, 59)
OP18_FACE = (0, 14, 15, 16, 17)
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


def _expected_openpose18_uv(joints, focal, princpt):
    """OpenPose-18 pixels from SMPL-X joints, written out here (no package projection or joint map).

    The neck is the projection of the 3D shoulders' midpoint, as the renderer draws it.
    """
    j = np.asarray(joints, np.float64)
    pts = np.array([(j[16] + j[17]) / 2 if k is None else j[k] for k in OP18_FROM_SMPLX])
    return np.stack([focal[0] * pts[:, 0] / pts[:, 2] + princpt[0], focal[1] * pts[:, 1] / pts[:, 2] + princpt[1]], 1)


@pytest.mark.parametrize('i', [0, 1, 2])
def test_skeleton_joints_at_projected_positions(body, i):
    v, j, f = body['vertices'][i], body['joints'][i], body['faces']
    # Every joint drawn (face points included even where the head hides them: that rule has its own test).
    res = SkeletonRenderer(size=512, face_occlusion_m=None).render(v, f, joints=j, **CAM)
    kp = openpose18(j)
    from posedreamer_mm.render.base import project
    uv = project(kp, res['focal'], res['princpt'])
    np.testing.assert_allclose(res['keypoints_openpose18'][:, :2], uv, atol=1e-6)
    np.testing.assert_allclose(res['keypoints_openpose18'][:, :2], _expected_openpose18_uv(j, res['focal'],
                                                                                          res['princpt']), atol=1e-4)
    img = res['image']
    checked = centred = 0
    for k in range(18):
        later = [m for m in range(k + 1, 18)]
        if later and np.linalg.norm(uv[later] - uv[k], axis=1).min() < 10:
            continue  # covered by a later joint's circle
        u, w = np.round(uv[k]).astype(int)
        assert tuple(img[w, u]) == ANNOTATOR_COLORS[k], k
        checked += 1
        others = np.delete(np.arange(18), k)
        if np.linalg.norm(uv[others] - uv[k], axis=1).min() >= 10:
            # An isolated disc (no other disc touches it) is centred on the joint's pixel: a joint drawn a
            # pixel or two off its point fails here.
            np.testing.assert_allclose(disc_centroid(img, ANNOTATOR_COLORS[k]), np.round(uv[k]), atol=0.5)
            centred += 1
    assert checked >= 10
    assert centred >= 5


def test_skeleton_front_view_right_shoulder_on_image_left(body):
    v, j, f = body['vertices'][0], body['joints'][0], body['faces']
    res = SkeletonRenderer(size=512).render(v, f, joints=j, **CAM)
    r_sho, l_sho = disc_centroid(res['image'], (255, 170, 0)), disc_centroid(res['image'], (85, 255, 0))
    assert r_sho[0] < 256 - 20 < 256 + 20 < l_sho[0]  # OpenPose 2 (right shoulder) on the image's left


def test_skeleton_hides_face_points_behind_the_head(body):
    # Front view: nose, eyes and ears are drawn. Back view (yaw 180): the head hides nose and eyes; OpenPose
    # would not detect them, and a face drawn there would read as a person facing the camera.
    front = SkeletonRenderer(size=512).render(body['vertices'][0], body['faces'], joints=body['joints'][0], **CAM)
    assert (front['keypoints_openpose18'][list(OP18_FACE), 2] == 1).all()
    for k in OP18_FACE:
        assert disc_centroid(front['image'], ANNOTATOR_COLORS[k]) is not None, k
    assert body['yaws'][3] == 180.0
    back = SkeletonRenderer(size=512).render(body['vertices'][3], body['faces'], joints=body['joints'][3], **CAM)
    for k in (0, 14, 15):  # nose, right eye, left eye
        assert back['keypoints_openpose18'][k, 2] == 0, k
        assert disc_centroid(back['image'], ANNOTATOR_COLORS[k]) is None, k
    assert disc_centroid(back['image'], LIMB_NECK_NOSE) is None
    # Ears follow the surface: drawn exactly where no surface lies more than 2 cm in front of them.
    full = DepthRenderer(size=512).render(body['vertices'][3], body['faces'], **CAM)
    depth = full['depth']
    # (The renderer rasterises only a window around the face points: the same depths as the whole image.)
    window, (x0, y0) = SkeletonRenderer(size=512)._depth_around(
        body['vertices'][3], body['faces'], full['focal'], full['princpt'], back['keypoints_openpose18'][14:, :2])
    same = depth[y0:y0 + window.shape[0], x0:x0 + window.shape[1]]
    np.testing.assert_array_equal(window > 0, same > 0)
    np.testing.assert_allclose(window, same, atol=1e-3)  # pixel centres on an edge may pick the other triangle
    kp3d = openpose18(body['joints'][3])
    for k in (16, 17):
        u, w = np.round(back['keypoints_openpose18'][k, :2]).astype(int)
        hidden = 0 < depth[w, u] < kp3d[k, 2] - 0.02
        assert back['keypoints_openpose18'][k, 2] == (not hidden)
        assert (disc_centroid(back['image'], ANNOTATOR_COLORS[k]) is None) == hidden
    # The body joints keep their rule: all in the image, all drawn.
    assert back['keypoints_openpose18'][1:14, 2].all()
    # Switched off, the face is drawn wherever it projects (the previous behaviour).
    old = SkeletonRenderer(size=512, face_occlusion_m=None).render(body['vertices'][3], body['faces'],
                                                                    joints=body['joints'][3], **CAM)
    assert old['keypoints_openpose18'][:, 2].all()


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
    v, f = body['vertices'][0], body['faces']
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


def test_pncc_colours_do_not_depend_on_hand_convention_or_cache_order(tmp_path):
    # Two models of one file that read a zero hand pose differently (flat vs mean curl). The canonical body
    # has flat hands for both, whichever fills the cache first; before, the first one's fingers won.
    import torch

    from posedreamer_mm.body.body_model import SMPLXBodyModel
    from posedreamer_mm.body.standin import write_standin_smplx
    from posedreamer_mm.render.pncc import canonical_vertices
    write_standin_smplx(tmp_path)
    curled = SMPLXBodyModel(model_path=tmp_path, num_betas=10, flat_hand_mean=False)
    flat = SMPLXBodyModel(model_path=tmp_path, num_betas=10, flat_hand_mean=True)
    with torch.no_grad():  # the two conventions really differ on this file
        assert (curled().vertices - flat().vertices).abs().max() > 1e-3
    from_curled = canonical_pncc_colors(curled)
    from_flat = canonical_pncc_colors(flat)
    expected = pncc_colors(canonical_vertices(flat))  # zero hand pose with flat_hand_mean=True: flat hands
    np.testing.assert_allclose(from_flat, expected, atol=1e-6)
    np.testing.assert_allclose(from_curled, expected, atol=1e-6)


def test_pncc_cache_of_file_less_models_is_not_fooled_by_a_reused_address(monkeypatch):
    import gc
    import types
    import weakref

    import torch

    from posedreamer_mm.render import pncc
    from posedreamer_mm.testing.reference_rasterizer import uv_sphere

    class Blob(torch.nn.Module):
        """A body model with no file: its vertices are its canonical body whatever the pose."""

        def __init__(self, vertices):
            super().__init__()
            self.register_buffer('v', torch.as_tensor(vertices, dtype=torch.float32))

        def forward(self, **params):
            return types.SimpleNamespace(vertices=self.v[None])

    v, _ = uv_sphere(center=(0, 0, 0), radius=1.0)
    first = Blob(v)
    first_colors = canonical_pncc_colors(first)
    assert canonical_pncc_colors(first) is first_colors  # cached on the object
    # The cache does not keep a model alive.
    ref = weakref.ref(first)
    del first
    gc.collect()
    assert ref() is None
    # CPython reuses a collected object's address, so a new model can have the id of an old one. Make every id
    # collide (deterministically; real reuse depends on the allocator) with a model still alive.
    monkeypatch.setattr(pncc, 'id', lambda obj: 12345, raising=False)
    stretched = v * np.array([3.0, 1.0, 1.0], np.float32)
    stretched[0] = (-10, 0, 0)
    one, two = Blob(v), Blob(stretched)
    np.testing.assert_allclose(canonical_pncc_colors(one), pncc_colors(v), atol=1e-6)
    np.testing.assert_allclose(canonical_pncc_colors(two), pncc_colors(stretched), atol=1e-6)
    assert not np.allclose(canonical_pncc_colors(two), canonical_pncc_colors(one))
