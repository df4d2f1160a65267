"""The deprecated control stage (kept for benchmarks/bench_scorers.py): labels agree with the control images;
bad samples are skipped and counted."""
import json

import cv2
import numpy as np
import pytest

from posedreamer_mm.body.camera import project_points
from posedreamer_mm.body.sample import BodySample
from posedreamer_mm.generation.contact_sheet import make_contact_sheet
from posedreamer_mm.generation.control_stage import run_control_stage
from posedreamer_mm.render.visibility import coco17_keypoints
from posedreamer_mm.registry import BODY_MODELS, POSE_SOURCES, RENDERERS


@pytest.fixture(scope='module')
def body_model(standin_model_dir):
    return BODY_MODELS.build(dict(type='SMPLXBodyModel', model_path=str(standin_model_dir)))


def _source(n):
    return POSE_SOURCES.build(dict(type='AugmentedSource',
                                   source=dict(type='ProceduralPoseSource', num_samples=n, seed=1),
                                   seed=3, distance_range=(3.0, 4.0)))


def test_labels_match_controls_and_bad_samples_are_counted(tmp_path, body_model):
    samples = list(_source(4))
    bad_nan = samples[0].copy()
    bad_nan.id = 'bad_nan'
    bad_nan.body_pose = np.full(63, np.nan, np.float32)
    behind = samples[1].copy()
    behind.id = 'bad_behind_camera'
    behind.transl = np.array([0, 0, -3.0], np.float32)
    stream = [samples[0], bad_nan, samples[1], behind, samples[2], samples[3]]
    renderers = {'pncc': RENDERERS.build(dict(type='PNCCRenderer', body_model=body_model, size=128)),
                 'skeleton': RENDERERS.build(dict(type='SkeletonRenderer', size=128))}
    result = run_control_stage(stream, body_model, renderers, tmp_path, batch_size=3, progress=False)
    assert result.written == [s.id for s in samples]  # the good ones, all of them, in order
    assert [i for i, _ in result.skipped] == ['bad_nan', 'bad_behind_camera']
    assert 'in front of the camera' in dict(result.skipped)['bad_behind_camera']
    summary = json.loads((tmp_path / 'summary.json').read_text())
    assert summary['written'] == 4 and summary['skipped'] == 2
    assert len((tmp_path / 'manifest.jsonl').read_text().splitlines()) == 4

    for sid in result.written:
        label = BodySample.load_npz(str(tmp_path / 'labels' / f'{sid}.npz'))
        assert tuple(label.img_size) == (128, 128)
        # joints_2d is the projection of joints_3d with the stored (crop) camera.
        proj = np.asarray(project_points(label.joints_3d[None], label.focal[None], label.princpt[None]))[0]
        np.testing.assert_allclose(label.joints_2d, proj, atol=1e-3)
        pncc = cv2.imread(str(tmp_path / 'controls' / 'pncc' / f'{sid}.png'))
        mask = pncc.sum(-1) > 0
        ys, xs = np.nonzero(mask)
        x, y, w, h = label.bbox
        # The stored bbox is the rendered silhouette's box (within a pixel).
        assert abs(xs.min() - x) <= 1.5 and abs(ys.min() - y) <= 1.5
        assert abs(xs.max() + 1 - (x + w)) <= 1.5 and abs(ys.max() + 1 - (y + h)) <= 1.5
        kp = label.keypoints_coco17
        assert kp.shape == (17, 3)
        # The nose is a surface vertex: where it is flagged visible, the PNCC image has the body there.
        if kp[0, 2] == 2:
            u, v = int(round(kp[0, 0])), int(round(kp[0, 1]))
            assert mask[v - 1:v + 2, u - 1:u + 2].any(), (sid, kp[0], mask[v - 3:v + 4, u - 3:u + 4].astype(int))
        assert (kp[:, 2] > 0).sum() >= 12  # bodies are fully framed by the crop
    sheet = make_contact_sheet(tmp_path, tile=64)
    img = cv2.imread(str(sheet))
    assert img.shape[1] == 64 * 3 and img.shape[0] == 28 + 64 * 4


def test_coco17_visibility_flags():
    joints_3d = np.zeros((127, 3))
    joints_3d[:, 2] = 3.0
    joints_2d = np.full((127, 2), 10.0)
    from posedreamer_mm.body.joint_maps import SMPLX_TO_COCO17
    joints_2d[SMPLX_TO_COCO17[1]] = [50, 10]  # left eye outside a 40x40 image
    joints_2d[SMPLX_TO_COCO17[2]] = [20, 20]
    depth = np.zeros((40, 40))
    depth[20, 20] = 2.5  # a surface 0.5 m in front of the right eye: occluded
    depth[10, 10] = 2.95  # 5 cm in front of the others
    kp = coco17_keypoints(joints_2d, joints_3d, (40, 40), depth)
    assert kp[1, 2] == 0 and kp[2, 2] == 1
    # 5 cm hides a face keypoint (a surface point) but not a joint inside the body.
    assert kp[0, 2] == 1 and kp[3, 2] == 1 and kp[4, 2] == 1
    assert (kp[5:, 2] == 2).all()
    np.testing.assert_array_equal(coco17_keypoints(joints_2d, joints_3d, (40, 40), None)[2], [20, 20, 2])


def test_face_keypoints_of_a_back_view_are_occluded(tmp_path, body_model):
    """Seen from behind, the head hides nose and eyes; from the front they are visible."""
    import torch

    from posedreamer_mm.body.camera import upright_global_orient
    renderer = RENDERERS.build(dict(type='PNCCRenderer', body_model=body_model, size=256))
    front, back = [BodySample(id=f'yaw{y}', global_orient=np.asarray(upright_global_orient(y), np.float32),
                              transl=np.array([0, 0.3, 3.5], np.float32)) for y in (0.0, np.pi)]
    run_control_stage([front, back], body_model, {'pncc': renderer}, tmp_path, progress=False)
    kp_front = BodySample.load_npz(str(tmp_path / 'labels' / 'yaw0.0.npz')).keypoints_coco17
    kp_back = BodySample.load_npz(str(tmp_path / 'labels' / f'yaw{np.pi}.npz')).keypoints_coco17
    assert (kp_front[:3, 2] == 2).all()  # nose, eyes
    assert (kp_back[:3, 2] == 1).all()
    assert (kp_back[5:, 2] >= 1).all()  # the body's joints stay in the image

