"""The label-to-detection matching rule and its OKS."""
import numpy as np
import pytest

from posedreamer_mm.evaluation.functional.oks import keypoint_oks
from posedreamer_mm.scoring.base import PoseDetections
from posedreamer_mm.scoring.matching import match_label


def person(offset, n_confident=17, score=0.9):
    kpts = np.stack([np.linspace(0, 40, 17), np.linspace(0, 100, 17)], 1) + offset
    scores = np.where(np.arange(17) < n_confident, score, 0.1)
    return kpts, scores


def detections(*people):
    kpts = np.stack([p[0] for p in people])
    scores = np.stack([p[1] for p in people])
    boxes = np.concatenate([kpts.min(1) - 5, kpts.max(1) + 5], -1)
    return PoseDetections(kpts, scores, boxes, np.ones(len(people)), (400, 300))


def label_at(offset, vis=2):
    kpts, _ = person(offset)
    return np.concatenate([kpts, np.full((17, 1), vis)], 1)


def test_nearest_candidate_and_its_oks():
    dets = detections(person(0), person(200), person(100))
    label = label_at(200)
    label[:, :2] += 3.0                                     # a few pixels off
    m = match_label(dets, label)
    assert m.index == 1 and m.distance == pytest.approx(np.hypot(3, 3), rel=1e-5)
    assert m.reason == '' and m.to_dict() == dict(index=1, oks=m.oks, distance=m.distance, reason='')
    box = dets.bboxes[1]
    gt = np.concatenate([dets.keypoints[1], np.full((17, 1), 2.0)], 1)
    area = (box[2] - box[0]) * (box[3] - box[1])
    expect = keypoint_oks(gt[None], np.array([area]), label[None, :, :2])[0, 0]
    assert m.oks == pytest.approx(expect, abs=1e-6) and 0.5 < m.oks < 1
    assert match_label(dets, label_at(200)).oks == pytest.approx(1.0, abs=1e-6)


def test_min_keypoints_tie_counts_and_no_match_reason():
    # The nearest person has 3 confident keypoints (not a candidate); the far one has exactly 4 (a candidate).
    dets = detections(person(0, n_confident=3), person(150, n_confident=4))
    m = match_label(dets, label_at(0))
    assert m.index == 1 and m.oks < 0.01
    m = match_label(detections(person(0, n_confident=3)), label_at(0))
    assert m.index is None and m.oks == 0.0 and '>= 4 keypoints' in m.reason
    m = match_label(PoseDetections.empty((10, 10)), label_at(0))
    assert m.index is None and m.oks == 0.0 and m.reason == 'no person detected'
    # Keypoint threshold tie: a score equal to keypoint_thr is confident.
    assert match_label(detections(person(0, score=0.3)), label_at(0), keypoint_thr=0.3).index == 0


def test_unconfident_keypoints_do_not_count():
    kpts, scores = person(0, n_confident=10)
    kpts[10:] += 500                                        # wrong but unconfident: ignored by distance and OKS
    m = match_label(detections((kpts, scores)), label_at(0))
    assert m.index == 0 and m.oks == pytest.approx(1.0, abs=1e-6)


def test_bad_label():
    with pytest.raises(ValueError, match='17, 3'):
        match_label(detections(person(0)), np.zeros((16, 3)))
    bad = label_at(0)
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match='NaN'):
        match_label(detections(person(0)), bad)


def test_min_keypoints_zero_never_matches_a_detection_without_confident_keypoints():
    """With min_keypoints=0 a detection with no confident keypoint has no position (0/0): the person lying exactly
    on the label must win, with OKS 1, whatever order the detections come in."""
    for order in ((0, 1), (1, 0)):
        people = [person(50, n_confident=0), person(0)]
        dets = detections(*[people[i] for i in order])
        m = match_label(dets, label_at(0), min_keypoints=0)
        assert m.index == order.index(1) and m.oks == pytest.approx(1.0, abs=1e-9) and m.distance == 0.0
    m = match_label(detections(person(0, n_confident=0)), label_at(0), min_keypoints=0)
    assert m.index is None and m.oks == 0.0 and np.isinf(m.distance) and 'no detection with >= 1' in m.reason


def test_match_distance_averages_only_confident_keypoints():
    """A: its 10 confident keypoints 3 px off the label, the 7 others 500 px off; B: every keypoint 20 px off.
    Masked, A is nearer (mean 3*sqrt(2) over its 10 confident points); unmasked or divided by 17 it would not be."""
    kpts_a, scores_a = person(0, n_confident=10)
    kpts_a = kpts_a + 3.0
    kpts_a[10:] += 500
    m = match_label(detections(person(20), (kpts_a, scores_a)), label_at(0))
    assert m.index == 1 and m.distance == pytest.approx(np.hypot(3, 3), rel=1e-6)
