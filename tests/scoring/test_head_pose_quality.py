"""Head-facing cue and image-quality measures against their formulas."""
import numpy as np
import pytest
from scipy import ndimage

from posedreamer_mm.scoring.head_pose import KeypointHeadPose, facing_score, label_facing
from posedreamer_mm.scoring.quality import exposure_stats, laplacian_sharpness


def test_facing_score_formula():
    xy = np.zeros((17, 2))
    xy[:, 1] = np.linspace(0, 100, 17)                      # person height 100 px
    xy[3, 0], xy[4, 0] = 60, 40                              # left ear right of the right ear: faces the camera
    xy[1, 0], xy[2, 0] = 47, 53                              # ...but the eyes in back order (a painted face)
    xy[5, 0], xy[6, 0] = 10, 90                              # shoulders: ignored while a face pair is present
    seen = np.zeros(17)
    seen[[0, 1, 2]] = [1.0, 0.5, 0.0]
    present = np.zeros(17, bool)
    present[[1, 2, 3, 4, 5, 6]] = True
    scale = 0.02 * np.ptp(xy[present, 1])
    order = np.mean([-6 / (6 + scale), 20 / (20 + scale)])
    expect = 0.3 * (2 * 0.5 - 1) + 0.7 * order
    assert facing_score(xy, seen, present) == pytest.approx(expect, abs=1e-6)
    # Without a face pair, the shoulders stand in.
    present[[1, 2, 3, 4]] = False
    scale = 0.02 * np.ptp(xy[present, 1])
    assert facing_score(xy, seen, present) == pytest.approx(0.7 * -80 / (80 + scale), abs=1e-6)
    assert facing_score(xy, np.zeros(17), np.zeros(17, bool)) == pytest.approx(-0.3)   # nothing seen
    # The label: visibility 2 = seen; occluded (1) counts for the order only.
    lab = np.concatenate([xy, np.full((17, 1), 1.0)], 1)
    scale = 0.02 * 100
    order = np.mean([-6 / (6 + scale), 20 / (20 + scale)])
    assert label_facing(lab) == pytest.approx(0.3 * -1 + 0.7 * order, abs=1e-6)
    with pytest.raises(ValueError, match='face_weight'):
        KeypointHeadPose(face_weight=2)


def test_laplacian_sharpness_formula():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (512, 300, 3), np.uint8)      # longer side already 512: no resize
    grey = np.round(img @ np.array([0.299, 0.587, 0.114])).astype(np.float64)
    kernel = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], np.float64)
    ref = ndimage.convolve(grey, kernel, mode='mirror').var()
    assert laplacian_sharpness(img) == pytest.approx(ref, rel=2e-3)
    flat = np.full((64, 64, 3), 90, np.uint8)
    assert laplacian_sharpness(flat) == 0.0
    # A region too small to measure falls back to the whole image; a box measures inside it.
    assert laplacian_sharpness(img, region=[0, 0, 3, 3]) == laplacian_sharpness(img)
    assert laplacian_sharpness(np.pad(flat, ((0, 64), (0, 0), (0, 0))), region=[0, 0, 64, 64]) == 0.0


def test_exposure_stats():
    img = np.zeros((10, 10, 3), np.uint8)
    img[:5] = 255
    out = exposure_stats(img)
    assert out == pytest.approx(dict(brightness=0.5, dark_fraction=0.5, bright_fraction=0.5))
    with pytest.raises(ValueError, match='uint8 RGB'):
        exposure_stats(img[..., 0])


def test_sharpness_region_is_x1_y1_x2_y2_with_different_extents():
    """A wide flat box (x 10..190, y 40..80) of texture in a flat 300 x 200 image: the region measures exactly that
    crop; reading it as (y1, x1, y2, x2) would measure rows 10..190 of columns 40..80 instead."""
    img = np.full((300, 200, 3), 120, np.uint8)
    tex = np.random.default_rng(1).integers(0, 256, (40, 180, 3), np.uint8)
    img[40:80, 10:190] = tex
    region = [10, 40, 190, 80]
    got = laplacian_sharpness(img, region=region)
    assert got == laplacian_sharpness(img[40:80, 10:190].copy())
    assert got != pytest.approx(laplacian_sharpness(img[10:190, 40:80].copy()), rel=0.05)
    # Clipped to the image: a box reaching out on the left measures from column 0.
    assert laplacian_sharpness(img, region=[-30, 40, 190, 80]) == laplacian_sharpness(img[40:80, 0:190].copy())
    # Size threshold: 8 x 8 pixels are measured (a tie counts), 7 wide falls back to the whole image.
    assert laplacian_sharpness(img, region=[10, 40, 18, 48]) == laplacian_sharpness(img[40:48, 10:18].copy())
    assert laplacian_sharpness(img, region=[10, 40, 17, 48]) == laplacian_sharpness(img)


def test_clipped_pixels_dark_and_bright_at_their_thresholds():
    """Grey levels 2 (dark, inclusive), 3, 252 and 253 (bright, inclusive), a quarter each; luma of grey = grey."""
    img = np.zeros((4, 8, 3), np.uint8)
    for col, level in enumerate((2, 3, 252, 253)):
        img[:, 2 * col:2 * col + 2] = level
    out = exposure_stats(img)
    assert out['dark_fraction'] == 0.25 and out['bright_fraction'] == 0.25
    assert out['brightness'] == pytest.approx((2 + 3 + 252 + 253) / 4 / 255)
    # Colour: luma is Rec. 601 (pure red 255 -> 76), so a saturated red is neither dark nor bright.
    red = np.zeros((2, 2, 3), np.uint8)
    red[..., 0] = 255
    assert exposure_stats(red) == pytest.approx(dict(brightness=76 / 255, dark_fraction=0.0, bright_fraction=0.0))


def test_keypoint_head_pose_threshold_is_inclusive():
    """A keypoint scoring exactly keypoint_thr is present for the left/right order; just below it is not."""
    xy = np.zeros((17, 2))
    xy[:, 1] = np.linspace(0, 100, 17)
    xy[3, 0], xy[4, 0] = 60, 40                                   # ears in front order
    scores = np.zeros((1, 17), np.float32)
    scores[0, [3, 4]] = 0.3
    from posedreamer_mm.scoring.base import PoseDetections
    dets = PoseDetections(xy[None], scores, [[0, 0, 100, 100]], [1.0], (100, 100))
    face_only = 0.3 * (2 * 0.0 - 1)                              # nose and eyes unseen; no pair: order 0
    order = 0.7 * 20 / (20 + 0.02 * 6.25)                        # ears 20 px apart, 6.25 px apart in height
    assert KeypointHeadPose(keypoint_thr=0.3).image_facing(None, dets, 0) == pytest.approx(face_only + order, abs=1e-5)
    assert KeypointHeadPose(keypoint_thr=0.30001).image_facing(None, dets, 0) == pytest.approx(face_only, abs=1e-6)
