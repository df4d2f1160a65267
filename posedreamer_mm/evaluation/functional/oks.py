"""Object keypoint similarity (OKS) exactly as COCO defines it, vectorised over samples and people.

:func:`keypoint_oks` reproduces ``pycocotools.cocoeval.COCOeval.computeOks`` number for number (tested to 1e-6 in
``tests/evaluation/test_oks.py``): per-keypoint falloffs ``(2 sigma_k)^2``, normalisation by the ground-truth
object's area (plus ``np.spacing(1)``), only ground-truth keypoints with visibility ``> 0`` counted, and, for a
ground truth without any labelled keypoint, the distance from each predicted keypoint to the ground truth box
enlarged to three times its size (COCO's ignore region). Predicted visibilities are ignored, as in COCO.

Convention in this project (docs/scoring.md): to score how well a generated image follows its label, the **2D pose
estimator's detection on the image is the ground-truth side** (its confident keypoints are the labelled ones, its
box gives the area) and **the label's projected SMPL-X COCO-17 joints are the prediction**, as the reference
method does. :func:`detection_as_ground_truth` turns a detection into that ground truth.
"""
from __future__ import annotations

import numpy as np

#: COCO-17 per-keypoint OKS sigmas (``pycocotools`` ``Params.kpt_oks_sigmas``), in COCO-17 order
#: (``posedreamer_mm.body.joint_maps.COCO17_NAMES``).
COCO17_SIGMAS = np.array([.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87, .89, .89],
                         np.float64) / 10.0


def keypoint_oks(gt_keypoints: np.ndarray, gt_areas: np.ndarray, dt_keypoints: np.ndarray,
                 gt_bboxes: np.ndarray | None = None, sigmas: np.ndarray = COCO17_SIGMAS) -> np.ndarray:
    """OKS between every prediction and every ground truth, batched over any leading axes.

    Args:
        gt_keypoints: ``(..., G, K, 3)`` ground-truth ``x, y`` (pixels) and visibility (``> 0`` = labelled).
        gt_areas: ``(..., G)`` ground-truth object areas, square pixels.
        dt_keypoints: ``(..., D, K, 2)`` or ``(..., D, K, 3)`` predicted ``x, y`` pixels (a third column is
            ignored, as COCO ignores predicted visibilities).
        gt_bboxes: ``(..., G, 4)`` ground-truth boxes ``x, y, w, h`` (pixels); used only for ground truths with no
            labelled keypoint. ``None`` is allowed when every ground truth has at least one.
        sigmas: ``(K,)`` per-keypoint sigmas (COCO-17 by default).

    Returns:
        ``(..., D, G)`` float64 OKS in ``[0, 1]``: row = prediction, column = ground truth, the layout of
        ``computeOks`` (which also sorts predictions by score and keeps the top ``maxDets``; callers pass them in
        the order they want).
    """
    gt = np.asarray(gt_keypoints, np.float64)
    dt = np.asarray(dt_keypoints, np.float64)[..., :2]
    areas = np.asarray(gt_areas, np.float64)
    sigmas = np.asarray(sigmas, np.float64)
    k = sigmas.shape[0]
    if gt.shape[-2:] != (k, 3) or dt.shape[-2] != k:
        raise ValueError(f'expected gt (..., G, {k}, 3) and dt (..., D, {k}, 2|3) keypoints, got {gt.shape} and '
                         f'{np.shape(dt_keypoints)}')
    if areas.shape != gt.shape[:-2]:
        raise ValueError(f'gt_areas must have shape {gt.shape[:-2]} (one per ground truth), got {areas.shape}')
    variances = (sigmas * 2) ** 2
    labelled = gt[..., 2] > 0                                          # (..., G, K)
    num_labelled = labelled.sum(-1)                                    # (..., G)
    # (..., D, G, K) displacements, prediction minus ground truth.
    dx = dt[..., :, None, :, 0] - gt[..., None, :, :, 0]
    dy = dt[..., :, None, :, 1] - gt[..., None, :, :, 1]
    if (num_labelled == 0).any():
        if gt_bboxes is None:
            raise ValueError('a ground truth has no labelled keypoint: gt_bboxes is needed for its ignore region')
        bb = np.asarray(gt_bboxes, np.float64)[..., None, :, None, :]   # (..., 1, G, 1, 4)
        x0, x1 = bb[..., 0] - bb[..., 2], bb[..., 0] + bb[..., 2] * 2
        y0, y1 = bb[..., 1] - bb[..., 3], bb[..., 1] + bb[..., 3] * 2
        xd, yd = dt[..., :, None, :, 0], dt[..., :, None, :, 1]
        box_dx = np.maximum(0, x0 - xd) + np.maximum(0, xd - x1)
        box_dy = np.maximum(0, y0 - yd) + np.maximum(0, yd - y1)
        none = (num_labelled == 0)[..., None, :, None]
        dx = np.where(none, box_dx, dx)
        dy = np.where(none, box_dy, dy)
    e = (dx ** 2 + dy ** 2) / variances / (areas[..., None, :, None] + np.spacing(1)) / 2
    # Labelled keypoints count; a ground truth without any counts all K (COCO's k1 == 0 branch).
    counted = np.where((num_labelled == 0)[..., None], True, labelled)[..., None, :, :]
    return (np.exp(-e) * counted).sum(-1) / counted.sum(-1)


def detection_as_ground_truth(keypoints: np.ndarray, keypoint_scores: np.ndarray, bboxes_xyxy: np.ndarray,
                              score_thr: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Turns 2D pose detections into OKS ground truth (the project's convention, see the module docstring).

    Args:
        keypoints: ``(..., K, 2)`` detected keypoints, image pixels.
        keypoint_scores: ``(..., K)`` their confidences.
        bboxes_xyxy: ``(..., 4)`` detected person boxes ``x1, y1, x2, y2``, image pixels.
        score_thr: keypoints scoring ``>= score_thr`` are labelled (visibility 2), the rest unlabelled (0).

    Returns:
        ``(gt_keypoints (..., K, 3), gt_areas (...,), gt_bboxes_xywh (..., 4))``; the area is the box's
        ``w * h`` in square pixels.
    """
    keypoints = np.asarray(keypoints, np.float64)
    vis = np.where(np.asarray(keypoint_scores) >= score_thr, 2.0, 0.0)
    boxes = np.asarray(bboxes_xyxy, np.float64)
    wh = np.clip(boxes[..., 2:] - boxes[..., :2], 0, None)
    xywh = np.concatenate([boxes[..., :2], wh], -1)
    return np.concatenate([keypoints[..., :2], vis[..., None]], -1), wh[..., 0] * wh[..., 1], xywh


def control_accuracy(oks: np.ndarray, kept: np.ndarray | None = None) -> dict[str, float]:
    """Dataset-level control accuracy from per-sample OKS values.

    Args:
        oks: ``(N,)`` per-sample OKS between image and label (0 where no person matched).
        kept: ``(N,)`` bool, which samples the filters kept; ``None`` leaves ``frac_kept`` out.

    Returns:
        ``mean_oks``, ``oks_error`` (``1 - mean_oks``, the quantity DPO reduces) and ``frac_kept`` (fraction in
        ``[0, 1]``), plus ``num_samples``.
    """
    oks = np.asarray(oks, np.float64).reshape(-1)
    if oks.size == 0:
        raise ValueError('control_accuracy needs at least one sample')
    if not np.isfinite(oks).all():
        raise ValueError(f'OKS values must be finite, got {int((~np.isfinite(oks)).sum())} non-finite')
    out = dict(mean_oks=float(oks.mean()), oks_error=float(1.0 - oks.mean()), num_samples=float(oks.size))
    if kept is not None:
        kept = np.asarray(kept, bool).reshape(-1)
        if kept.shape != oks.shape:
            raise ValueError(f'kept must have one flag per sample ({oks.size}), got {kept.size}')
        out['frac_kept'] = float(kept.mean())
    return out
