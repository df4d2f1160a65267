"""The fallback mmcv.ops against reference implementations written from the ops' definitions."""
import numpy as np
import pytest
import torch

from posedreamer_mm.utils import mmcv_ops_fallback as ops


def _iou(a, b, offset=0):
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1 + offset) * max(0.0, y2 - y1 + offset)
    area = lambda r: (r[2] - r[0] + offset) * (r[3] - r[1] + offset)  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def reference_nms(boxes, scores, thr, offset=0):
    """Greedy NMS, straight from its definition."""
    order = list(np.argsort(-scores, kind='stable'))
    keep = []
    while order:
        i = order.pop(0)
        keep.append(i)
        order = [j for j in order if _iou(boxes[i], boxes[j], offset) <= thr]
    return np.array(keep, dtype=np.int64)


def _random_boxes(n, seed):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 50, size=(n, 2))
    wh = rng.uniform(5, 30, size=(n, 2))
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    # Distinct scores: ties would make the kept order implementation-defined.
    scores = rng.permutation(n).astype(np.float32) / n + 0.01
    return boxes, scores


@pytest.mark.parametrize('thr', [0.3, 0.5, 0.7])
@pytest.mark.parametrize('offset', [0, 1])
def test_nms_matches_greedy_reference(thr, offset):
    boxes, scores = _random_boxes(60, seed=int(thr * 10) + offset)
    dets, keep = ops.nms(torch.from_numpy(boxes), torch.from_numpy(scores), thr, offset=offset)
    ref = reference_nms(boxes, scores, thr, offset)
    np.testing.assert_array_equal(keep.numpy(), ref)
    np.testing.assert_allclose(dets[:, :4].numpy(), boxes[ref])
    np.testing.assert_allclose(dets[:, 4].numpy(), scores[ref])


def test_nms_numpy_input_score_threshold_and_max_num():
    boxes, scores = _random_boxes(40, seed=3)
    dets, keep = ops.nms(boxes, scores, 0.5, score_threshold=0.5, max_num=3)
    assert isinstance(keep, np.ndarray)
    valid = np.where(scores > 0.5)[0]
    ref = valid[reference_nms(boxes[valid], scores[valid], 0.5)][:3]
    np.testing.assert_array_equal(keep, ref)


def test_batched_nms_never_suppresses_across_classes():
    boxes, scores = _random_boxes(50, seed=7)
    idxs = np.random.default_rng(1).integers(0, 3, size=50)
    dets, keep = ops.batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(idxs),
                                 dict(type='nms', iou_threshold=0.4))
    ref = []
    for c in range(3):
        members = np.where(idxs == c)[0]
        ref += list(members[reference_nms(boxes[members], scores[members], 0.4)])
    ref = np.array(sorted(ref, key=lambda i: -scores[i]))
    np.testing.assert_array_equal(keep.numpy(), ref)
    np.testing.assert_allclose(dets[:, 4].numpy(), scores[ref])
    # Class-agnostic is plain NMS; max_num truncates by score.
    _, keep_ag = ops.batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(idxs),
                                 dict(iou_threshold=0.4, max_num=5), class_agnostic=True)
    np.testing.assert_array_equal(keep_ag.numpy(), reference_nms(boxes, scores, 0.4)[:5])


def reference_roi_align(feat, roi, out, scale, ratio):
    """RoIAlign (aligned=True, average), from its definition: bilinear samples on a regular grid per bin."""
    c, h, w = feat.shape
    x1, y1, x2, y2 = [v * scale - 0.5 for v in roi]
    bin_w, bin_h = (x2 - x1) / out, (y2 - y1) / out
    result = np.zeros((c, out, out))

    def bilinear(y, x):
        if y < -1 or y > h or x < -1 or x > w:
            return np.zeros(c)
        y, x = min(max(y, 0), h - 1), min(max(x, 0), w - 1)
        y0, x0 = int(np.floor(y)), int(np.floor(x))
        y1_, x1_ = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
        ly, lx = y - y0, x - x0
        return (feat[:, y0, x0] * (1 - ly) * (1 - lx) + feat[:, y0, x1_] * (1 - ly) * lx
                + feat[:, y1_, x0] * ly * (1 - lx) + feat[:, y1_, x1_] * ly * lx)

    for i in range(out):
        for j in range(out):
            acc = np.zeros(c)
            for a in range(ratio):
                for b in range(ratio):
                    y = y1 + i * bin_h + (a + 0.5) * bin_h / ratio
                    x = x1 + j * bin_w + (b + 0.5) * bin_w / ratio
                    acc += bilinear(y, x)
            result[:, i, j] = acc / ratio**2
    return result


def test_roi_align_matches_reference():
    rng = np.random.default_rng(0)
    feat = rng.normal(size=(1, 3, 16, 20)).astype(np.float32)
    rois = np.array([[0, 4.0, 6.0, 30.0, 25.0], [0, 0.0, 0.0, 39.0, 31.0]], dtype=np.float32)
    layer = ops.RoIAlign(output_size=4, spatial_scale=0.5, sampling_ratio=2)
    got = layer(torch.from_numpy(feat), torch.from_numpy(rois)).numpy()
    for k, roi in enumerate(rois):
        ref = reference_roi_align(feat[0].astype(np.float64), roi[1:], 4, 0.5, 2)
        np.testing.assert_allclose(got[k], ref, atol=1e-5)


def test_point_sample_matches_bilinear_reference():
    rng = np.random.default_rng(1)
    feat = torch.from_numpy(rng.normal(size=(1, 2, 8, 8)).astype(np.float32))
    pts = torch.tensor([[[0.5, 0.5], [0.25, 0.75], [0.0625, 0.0625]]])  # [0, 1] image coordinates
    got = ops.point_sample(feat, pts)
    for p in range(3):
        # align_corners=False: pixel centres at (i + 0.5) / size.
        x = pts[0, p, 0].item() * 8 - 0.5
        y = pts[0, p, 1].item() * 8 - 0.5
        x0, y0 = int(np.floor(x)), int(np.floor(y))
        lx, ly = x - x0, y - y0
        f = feat[0].numpy()
        ref = (f[:, y0, x0] * (1 - lx) * (1 - ly) + f[:, y0, x0 + 1] * lx * (1 - ly)
               + f[:, y0 + 1, x0] * (1 - lx) * ly + f[:, y0 + 1, x0 + 1] * lx * ly)
        np.testing.assert_allclose(got[0, :, p].numpy(), ref, atol=1e-6)
