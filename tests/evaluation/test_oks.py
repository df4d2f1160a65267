"""OKS against ``pycocotools.cocoeval.COCOeval.computeOks`` on the same numbers (to 1e-6)."""
import numpy as np
import pytest
from pycocotools.cocoeval import COCOeval

from posedreamer_mm.evaluation.functional import (
    COCO17_SIGMAS,
    control_accuracy,
    detection_as_ground_truth,
    keypoint_oks,
)


def reference_oks(gt_kpts, gt_areas, gt_boxes, dt_kpts):
    """pycocotools' computeOks on one image: gts (G, 17, 3), dts (D, 17, 3) -> (D, G)."""
    ev = COCOeval(iouType='keypoints')
    ev._gts[1, 1] = [dict(keypoints=g.reshape(-1).tolist(), area=float(a), bbox=b.tolist())
                     for g, a, b in zip(gt_kpts, gt_areas, gt_boxes)]
    # Descending scores keep computeOks' sort (and its maxDets cut of 20) from reordering the predictions.
    ev._dts[1, 1] = [dict(keypoints=d.reshape(-1).tolist(), score=float(len(dt_kpts) - i))
                     for i, d in enumerate(dt_kpts)]
    return np.asarray(ev.computeOks(1, 1))


def random_image(rng, num_gt, num_dt, img=200.0):
    """Random people incl. unlabelled keypoints, all-unlabelled ground truths and points outside the image."""
    gt = np.zeros((num_gt, 17, 3))
    gt[..., :2] = rng.uniform(-0.2 * img, 1.2 * img, (num_gt, 17, 2))      # some outside the image
    gt[..., 2] = rng.choice([0, 1, 2], (num_gt, 17), p=[0.3, 0.2, 0.5])
    if num_gt > 1:
        gt[0, :, 2] = 0                                                     # COCO's k1 == 0 branch
    xy = rng.uniform(0, img, (num_gt, 2))
    boxes = np.concatenate([xy, rng.uniform(1, img / 2, (num_gt, 2))], 1)
    areas = rng.choice([rng.uniform(1, img * img / 4), 0.0]) * np.ones(num_gt) * rng.uniform(0.2, 1, num_gt)
    dt = np.zeros((num_dt, 17, 3))
    # Predictions near a ground truth, plus far-off ones (out of the image and of the 3x ignore box).
    base = gt[rng.integers(0, num_gt, num_dt), :, :2]
    dt[..., :2] = base + rng.normal(0, rng.choice([1.0, 10.0, 300.0]), base.shape)
    dt[..., 2] = rng.uniform(0, 1, (num_dt, 17))
    return gt, areas, boxes, dt


def test_sigmas_are_cocos():
    from pycocotools.cocoeval import Params
    np.testing.assert_array_equal(COCO17_SIGMAS, Params(iouType='keypoints').kpt_oks_sigmas)


def test_matches_pycocotools_on_random_images():
    rng = np.random.default_rng(0)
    for _ in range(200):
        gt, areas, boxes, dt = random_image(rng, rng.integers(1, 5), rng.integers(1, 6))
        ours = keypoint_oks(gt, areas, dt, gt_bboxes=boxes)
        ref = reference_oks(gt, areas, boxes, dt)
        assert ours.shape == ref.shape
        np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-6)


def test_zero_visibility_and_out_of_image_against_pycocotools():
    """Named cases: a ground truth with no labelled keypoint (COCO's 3x-box ignore region), predictions inside,
    partly outside and far outside that region, and keypoints outside a 100x100 image on both sides."""
    gt = np.zeros((3, 17, 3))
    gt[0, :, :2] = 50.0                                    # all unlabelled, box (40, 40, 20, 20)
    gt[1, :, :2] = np.linspace(-30, 130, 17)[:, None]      # labelled, half of it outside the image
    gt[1, :, 2] = 2
    gt[2, :, :2] = 60.0
    gt[2, ::2, 2] = 1                                      # every other keypoint labelled
    boxes = np.array([[40, 40, 20, 20], [-30, -30, 160, 160], [50, 50, 20, 20]], np.float64)
    areas = np.array([400.0, 160.0 * 160.0, 300.0])
    dt = np.stack([np.full((17, 2), 50.0), np.tile([90.0, 50.0], (17, 1)), np.full((17, 2), -500.0),
                   np.linspace(-30, 130, 17)[:, None] * np.ones((1, 2)) + 2.0])
    dt = np.concatenate([dt, np.ones((4, 17, 1))], -1)   # pycocotools reads x, y, v triplets
    ours = keypoint_oks(gt, areas, dt, gt_bboxes=boxes)
    ref = reference_oks(gt, areas, boxes, dt)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-6)
    assert ours[0, 0] == 1.0 and 0 < ours[1, 0] < 1 and ours[2, 0] == 0.0   # inside / partly / far outside


def test_batched_equals_per_image():
    rng = np.random.default_rng(1)
    images = [random_image(rng, 3, 2) for _ in range(16)]
    gt, areas, boxes, dt = (np.stack(x) for x in zip(*images))
    batched = keypoint_oks(gt, areas, dt, gt_bboxes=boxes)
    assert batched.shape == (16, 2, 3)
    for i, (g, a, b, d) in enumerate(images):
        np.testing.assert_allclose(batched[i], reference_oks(g, a, b, d), rtol=0, atol=1e-6)


def test_known_values():
    gt = np.zeros((1, 17, 3))
    gt[0, :, :2] = np.arange(34).reshape(17, 2)
    gt[0, :, 2] = 2
    # Identical keypoints -> 1, whatever the area; predicted visibilities do not matter.
    assert keypoint_oks(gt, np.array([100.0]), gt[:, :, :2])[0, 0] == pytest.approx(1.0)
    # One pixel off on the nose only: exp(-1 / (2 * area * (2 sigma)^2)) averaged with 16 ones.
    dt = gt.copy()
    dt[0, 0, 0] += 1
    expect = (16 + np.exp(-1 / (2 * 100.0 * (2 * COCO17_SIGMAS[0]) ** 2))) / 17
    assert keypoint_oks(gt, np.array([100.0]), dt)[0, 0] == pytest.approx(expect, abs=1e-12)
    # Unlabelled ground-truth keypoints are not counted at all.
    gt2 = gt.copy()
    gt2[0, 0, 2] = 0
    assert keypoint_oks(gt2, np.array([100.0]), dt)[0, 0] == pytest.approx(1.0)


def test_all_unlabelled_needs_boxes():
    gt = np.zeros((1, 17, 3))
    with pytest.raises(ValueError, match='gt_bboxes'):
        keypoint_oks(gt, np.array([10.0]), np.zeros((1, 17, 2)))
    with pytest.raises(ValueError, match='gt_areas'):
        keypoint_oks(gt, np.array([10.0, 2.0]), np.zeros((1, 17, 2)), gt_bboxes=np.zeros((1, 4)))


def test_detection_as_ground_truth():
    kpts = np.arange(34, dtype=float).reshape(17, 2)
    scores = np.linspace(0, 1, 17)
    gt, area, xywh = detection_as_ground_truth(kpts, scores, np.array([10.0, 20.0, 50.0, 100.0]), 0.5)
    np.testing.assert_array_equal(gt[:, 2], np.where(scores >= 0.5, 2, 0))   # a score equal to thr counts
    assert area == pytest.approx(40 * 80)
    np.testing.assert_array_equal(xywh, [10, 20, 40, 80])


def test_bad_shapes_on_either_side_are_named():
    with pytest.raises(ValueError, match=r'expected gt \(\.\.\., G, 17, 3\)'):
        keypoint_oks(np.zeros((1, 17, 2)), np.array([10.0]), np.zeros((1, 17, 2)))   # gt without visibility
    with pytest.raises(ValueError, match=r'dt \(\.\.\., D, 17, 2\|3\)'):
        keypoint_oks(np.ones((1, 17, 3)), np.array([10.0]), np.zeros((1, 16, 2)))    # 16 predicted keypoints


def test_detection_boxes_batched_and_below_one_pixel():
    """(P, K, 2) detections of several people at once; a box thinner than a pixel keeps its true area, an inverted
    box has none."""
    kpts = np.arange(2 * 17 * 2, dtype=float).reshape(2, 17, 2)
    scores = np.full((2, 17), 0.9)
    boxes = np.array([[10.0, 20.0, 10.5, 60.0], [30.0, 40.0, 20.0, 90.0]])
    gt, area, xywh = detection_as_ground_truth(kpts, scores, boxes, 0.5)
    assert gt.shape == (2, 17, 3) and (gt[..., 2] == 2).all()
    np.testing.assert_array_equal(gt[..., :2], kpts)
    np.testing.assert_allclose(area, [0.5 * 40, 0.0])
    np.testing.assert_allclose(xywh, [[10, 20, 0.5, 40], [30, 40, 0, 50]])


def test_control_accuracy():
    out = control_accuracy(np.array([1.0, 0.5, 0.0, 0.9]), np.array([True, False, False, True]))
    assert out == pytest.approx(dict(mean_oks=0.6, oks_error=0.4, frac_kept=0.5, num_samples=4))
    with pytest.raises(ValueError, match='non-finite'):
        control_accuracy(np.array([np.nan]))
    with pytest.raises(ValueError, match='at least one'):
        control_accuracy(np.array([]))
