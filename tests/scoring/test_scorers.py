"""Pose scorers: mediapipe on a real photograph, MMPoseScorer built from configs with tiny random weights."""
import pickle

import numpy as np
import pytest
from mmengine.registry import DefaultScope

from posedreamer_mm.apis.checkpoint import CheckpointMismatchError
from posedreamer_mm.registry import SCORERS
from posedreamer_mm.scoring.base import PoseDetections

from .tiny_models import write_tiny_mmpose_models


@pytest.fixture(scope='module')
def mediapipe_scorer():
    pytest.importorskip('mediapipe', reason='the mediapipe extra is not installed (docs/install.md)')
    return SCORERS.build(dict(type='MediaPipeScorer'))


def test_mediapipe_finds_the_astronaut(mediapipe_scorer):
    from skimage.data import astronaut
    img = astronaut()                                   # 512x512 RGB photograph of one person
    det = mediapipe_scorer(img)
    assert len(det) == 1 and det.scorer == 'mediapipe' and det.image_size == (512, 512)
    kpts, scores = det.keypoints[0], det.keypoint_scores[0]
    # Nose and shoulders where they are in the photograph (person's left shoulder on the image's right).
    np.testing.assert_allclose(kpts[0], [223, 128], atol=12)
    np.testing.assert_allclose(kpts[5], [306, 257], atol=15)
    np.testing.assert_allclose(kpts[6], [113, 240], atol=15)
    assert scores[:7].min() > 0.9
    x1, y1, x2, y2 = det.bboxes[0]
    assert x1 < 113 < 306 < x2 and y1 < 128 < y2 <= 512


def test_mediapipe_empty_image_and_bad_input(mediapipe_scorer):
    assert len(mediapipe_scorer(np.full((128, 96, 3), 127, np.uint8))) == 0
    with pytest.raises(ValueError, match='uint8 RGB'):
        mediapipe_scorer(np.zeros((64, 64), np.uint8))
    with pytest.raises(ValueError, match='uint8 RGB'):
        mediapipe_scorer(np.zeros((64, 64, 3), np.float32))
    clone = pickle.loads(pickle.dumps(mediapipe_scorer))   # picklable after use (workers rebuild the graph)
    assert clone._pose is None


def test_mediapipe_refuses_downloading_complexities():
    with pytest.raises(ValueError, match='download'):
        SCORERS.build(dict(type='MediaPipeScorer', model_complexity=2))


@pytest.fixture(scope='module')
def tiny_models(tmp_path_factory):
    return write_tiny_mmpose_models(tmp_path_factory.mktemp('tiny_mmpose'))


def test_mmpose_scorer_end_to_end_matches_openmmlab_inference(tiny_models):
    from mmdet.apis import inference_detector
    from mmpose.apis import inference_topdown
    scorer = SCORERS.build(dict(type='MMPoseScorer', device='cpu', det_score_thr=0.3, max_people=3, batch_size=2,
                                **tiny_models))
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (160, 120, 3), np.uint8), rng.integers(0, 255, (96, 200, 3), np.uint8)]
    out = scorer.predict_batch(images)
    assert len(out) == 2
    det_model, _, pose_model, _ = scorer._models
    for img, det in zip(images, out):
        assert isinstance(det, PoseDetections) and det.scorer == 'mmpose'
        assert 1 <= len(det) <= 3 and det.image_size == (img.shape[1], img.shape[0])
        assert det.keypoints.shape == (len(det), 17, 2) and (det.keypoint_scores <= 1).all()
        bgr = np.ascontiguousarray(img[..., ::-1])
        # Batched across images == mmdet's and mmpose's own one-image inference on the same models.
        with DefaultScope.overwrite_default_scope('mmdet'):
            ref_det = inference_detector(det_model, [bgr])[0].pred_instances
        person = (ref_det.labels == 0) & (ref_det.scores >= 0.3)
        np.testing.assert_allclose(det.bboxes, ref_det.bboxes[person][:3].numpy(), atol=1e-3)
        with DefaultScope.overwrite_default_scope('mmpose'):
            ref_pose = inference_topdown(pose_model, bgr, det.bboxes)
        np.testing.assert_allclose(det.keypoints, np.stack([p.pred_instances.keypoints[0] for p in ref_pose]),
                                   atol=1e-3)
    assert scorer(images[0]).keypoints.shape == out[0].keypoints.shape   # single-image call
    # mmdet/mmpose inference switch the default scope; the scorer restores ours.
    assert DefaultScope.get_current_instance().scope_name == 'posedreamer_mm'

    clone = pickle.loads(pickle.dumps(scorer))
    np.testing.assert_allclose(clone(images[1]).keypoints, out[1].keypoints, atol=1e-4)


def test_mmpose_scorer_det_score_thr_keeps_a_tie(tiny_models):
    """A box scoring exactly det_score_thr is kept (``>=``, as documented); a float32 step above drops it."""
    scorer = SCORERS.build(dict(type='MMPoseScorer', device='cpu', det_score_thr=0.0, max_people=20, **tiny_models))
    img = np.random.default_rng(3).integers(0, 255, (160, 120, 3), np.uint8)
    scores = np.sort(scorer(img).bbox_scores)
    assert len(scores) >= 2 and scores[0] < scores[-1]
    tie = float(scores[0])
    scorer.det_score_thr = tie
    assert len(scorer(img)) == len(scores)
    scorer.det_score_thr = float(np.nextafter(np.float32(tie), np.float32(1)))
    assert len(scorer(img)) == int((scores > tie).sum())


def test_mmpose_scorer_whole_image_without_detector(tiny_models):
    scorer = SCORERS.build(dict(type='MMPoseScorer', device='cpu', pose_config=tiny_models['pose_config'],
                                pose_checkpoint=tiny_models['pose_checkpoint']))
    img = np.random.default_rng(1).integers(0, 255, (64, 48, 3), np.uint8)
    det = scorer(img)
    assert len(det) == 1
    # The crop is the whole image: the keypoints are mmpose's own inference on the box (0, 0, 48, 64) ...
    from mmpose.apis import inference_topdown
    with DefaultScope.overwrite_default_scope('mmpose'):
        ref = inference_topdown(scorer._models[2], np.ascontiguousarray(img[..., ::-1]),
                                np.array([[0, 0, 48, 64]], np.float32))[0].pred_instances.keypoints[0]
    np.testing.assert_allclose(det.keypoints[0], ref, atol=1e-3)
    # ... and the reported person box is the keypoints' extent (the OKS scale), not the image.
    k = det.keypoints[0]
    x0, x1 = np.clip([k[:, 0].min(), k[:, 0].max()], 0, 48)
    y0, y1 = np.clip([k[:, 1].min(), k[:, 1].max()], 0, 64)
    np.testing.assert_allclose(det.bboxes[0], [x0, y0, x1, y1], atol=1e-5)
    assert (x1 - x0) * (y1 - y0) < 48 * 64
    # OKS against a label shifted by 1 px: the COCO formula with the extent's area, by hand.
    from posedreamer_mm.scoring.matching import match_label
    label = np.concatenate([k + 1.0, np.full((17, 1), 2.0)], -1)
    match = match_label(det, label, keypoint_thr=0.0, min_keypoints=1)
    area = (x1 - x0) * (y1 - y0)
    sigmas = np.array([.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87, .89, .89]) / 10
    expected = np.mean(np.exp(-2.0 / (2 * area * (2 * sigmas) ** 2)))
    assert match.oks == pytest.approx(expected, rel=1e-4)


def test_mmpose_keypoint_extent_is_clipped_to_the_image():
    from posedreamer_mm.scoring.mmpose_scorer import _keypoint_extent
    k = np.array([[[-5.0, 10.0]] + [[20.0, 30.0]] * 15 + [[60.0, 70.0]]], np.float32)
    np.testing.assert_array_equal(_keypoint_extent(k, 48, 64), [[0, 10, 48, 64]])


def test_mmpose_scorer_bad_paths(tiny_models, tmp_path):
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        SCORERS.build(dict(type='MMPoseScorer', pose_config=tiny_models['pose_config'],
                           pose_checkpoint=str(tmp_path / 'missing.pth')))
    with pytest.raises(ValueError, match='local checkpoint'):
        SCORERS.build(dict(type='MMPoseScorer', pose_config=tiny_models['pose_config'],
                           pose_checkpoint='https://download.openmmlab.com/x.pth'))
    bare = tmp_path / 'bare.py'
    bare.write_text("model = dict(type='TopdownPoseEstimator')\n")
    with pytest.raises(KeyError, match='test_dataloader'):
        SCORERS.build(dict(type='MMPoseScorer', pose_config=str(bare), pose_checkpoint=tiny_models['pose_checkpoint']))
    with pytest.raises(FileNotFoundError, match='nope.py'):
        SCORERS.build(dict(type='MMPoseScorer', pose_config=str(tmp_path / 'nope.py'),
                           pose_checkpoint=tiny_models['pose_checkpoint']))


def test_mmpose_scorer_refuses_corrupt_or_foreign_checkpoints(tiny_models, tmp_path):
    corrupt = tmp_path / 'corrupt.pth'
    corrupt.write_bytes(b'not a checkpoint')
    scorer = SCORERS.build(dict(type='MMPoseScorer', device='cpu', pose_config=tiny_models['pose_config'],
                                pose_checkpoint=str(corrupt)))
    with pytest.raises(RuntimeError, match='corrupt.pth'):
        scorer(np.zeros((64, 48, 3), np.uint8))
    # The detector's checkpoint for the pose model: mmengine would only warn and keep random weights.
    scorer = SCORERS.build(dict(type='MMPoseScorer', device='cpu', pose_config=tiny_models['pose_config'],
                                pose_checkpoint=tiny_models['det_checkpoint']))
    with pytest.raises(CheckpointMismatchError, match=r'det.pth does not fit the pose model of the config: .* '
                                                      r'missing from the checkpoint \(backbone'):
        scorer(np.zeros((64, 48, 3), np.uint8))


def test_mmpose_scorer_refuses_a_checkpoint_with_other_shapes(tiny_models, tmp_path):
    """A COCO-WholeBody (133-keypoint) head's checkpoint with a COCO-17 config: every name is there, the head's
    shapes differ; mmengine's loader keeps the random 17-keypoint head and warns only."""
    import torch
    from mmengine.config import Config
    from mmpose.registry import MODELS
    cfg = Config.fromfile(tiny_models['pose_config'])
    cfg.model.head.out_channels = 133
    with DefaultScope.overwrite_default_scope('mmpose'):
        wholebody = MODELS.build(cfg.model)
    ckpt = tmp_path / 'wholebody.pth'
    torch.save({'state_dict': wholebody.state_dict(), 'meta': {}}, ckpt)
    scorer = SCORERS.build(dict(type='MMPoseScorer', device='cpu', pose_config=tiny_models['pose_config'],
                                pose_checkpoint=str(ckpt)))
    with pytest.raises(CheckpointMismatchError, match=r'wholebody.pth does not fit the pose model of the config: '
                                                      r'2 with another shape \(head.final_layer.weight: checkpoint '
                                                      r'\[133, 32, 1, 1\] vs model \[17, 32, 1, 1\]'):
        scorer(np.zeros((64, 48, 3), np.uint8))


def test_detections_reject_nan_and_round_trip():
    det = PoseDetections(np.ones((1, 17, 2)), np.full((1, 17), .5), [[0, 0, 4, 4]], [0.9], (8, 8), 'x')
    back = PoseDetections.from_dict(det.to_dict())
    np.testing.assert_allclose(back.keypoints, det.keypoints)
    assert back.image_size == (8, 8) and back.scorer == 'x'
    with pytest.raises(ValueError, match='NaN'):
        PoseDetections(np.full((1, 17, 2), np.nan), np.ones((1, 17)), [[0, 0, 1, 1]], [1.0], (8, 8))


@pytest.mark.timeout(60)
def test_mediapipe_scorer_shared_across_threads(mediapipe_scorer):
    from concurrent.futures import ThreadPoolExecutor

    from skimage.data import astronaut
    img = astronaut()
    ref = mediapipe_scorer(img).keypoints
    with ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(lambda _: mediapipe_scorer(img).keypoints, range(8)))
    for out in outs:
        np.testing.assert_allclose(out, ref, atol=1e-3)
