"""Which detected person is the label's, and the OKS between them (the reference method's rule).

Among the detections with at least ``min_keypoints`` (and at least one) keypoints scoring ``>= keypoint_thr``, the
label's person is the one whose confident keypoints lie nearest (mean pixel distance) to the label's projected
COCO-17 joints.
No candidate means OKS 0, with the reason recorded. The OKS then takes the matched detection as ground truth and
the label as prediction (``posedreamer_mm/evaluation/functional/oks.py``).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from posedreamer_mm.evaluation.functional.oks import detection_as_ground_truth, keypoint_oks

from .base import PoseDetections


@dataclasses.dataclass
class LabelMatch:
    """The outcome of matching a label to detections.

    Attributes:
        index: the matched detection's index, ``None`` when nothing matched.
        oks: OKS between the matched detection (ground truth) and the label (prediction); 0 without a match.
        distance: mean pixel distance between the match's confident keypoints and the label's joints (inf if none).
        reason: why nothing matched (empty when matched).
    """

    index: int | None
    oks: float
    distance: float
    reason: str = ''

    def to_dict(self) -> dict:
        return dict(index=self.index, oks=self.oks, distance=self.distance, reason=self.reason)


def match_label(detections: PoseDetections, label_keypoints: np.ndarray, keypoint_thr: float = 0.3,
                min_keypoints: int = 4) -> LabelMatch:
    """Matches the label to the nearest well-detected person and computes their OKS.

    Args:
        detections: what the scorer found in the image.
        label_keypoints: ``(17, 3)`` the label's COCO-17 joints in the same image's pixels (x, y, visibility);
            every joint's position counts for the distance, visible or not (the label knows where hidden joints are).
        keypoint_thr: a detected keypoint is confident at ``score >= keypoint_thr`` (a tie counts).
        min_keypoints: candidates need at least this many confident keypoints (a tie counts); at least one is
            always needed (``0`` acts as ``1``).

    Returns:
        The :class:`LabelMatch`.
    """
    label = np.asarray(label_keypoints, np.float64)
    if label.shape != (17, 3) or not np.isfinite(label).all():
        raise ValueError(f'label keypoints must be a finite (17, 3) array, got {label.shape} '
                         f'{"with NaN/inf" if label.shape == (17, 3) else ""}')
    if len(detections) == 0:
        return LabelMatch(None, 0.0, float('inf'), 'no person detected')
    confident = detections.keypoint_scores >= keypoint_thr                        # (P, 17)
    # A person without any confident keypoint has no position to compare (its mean distance would be 0/0 = NaN,
    # which argmin picks first): one confident keypoint is the least any candidate has, whatever min_keypoints.
    needed = max(int(min_keypoints), 1)
    candidates = np.flatnonzero(confident.sum(-1) >= needed)
    if candidates.size == 0:
        return LabelMatch(None, 0.0, float('inf'),
                          f'no detection with >= {needed} keypoints scoring >= {keypoint_thr}')
    dist = np.linalg.norm(detections.keypoints[candidates] - label[None, :, :2], axis=-1)   # (C, 17)
    mean_dist = (dist * confident[candidates]).sum(-1) / confident[candidates].sum(-1)
    best = int(candidates[int(np.argmin(mean_dist))])
    gt, area, box = detection_as_ground_truth(detections.keypoints[best], detections.keypoint_scores[best],
                                              detections.bboxes[best], keypoint_thr)
    oks = keypoint_oks(gt[None], np.asarray([area]), label[None, :, :2], gt_bboxes=box[None])[0, 0]
    return LabelMatch(best, float(oks), float(mean_dist.min()))
