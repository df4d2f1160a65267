"""Which way the head faces, from COCO-17 keypoints: the cue that catches a front face drawn on a back-view body.

A typical ControlNet failure keeps the body's pose but draws a face on the back of the head. The label knows the
head faces away (its nose and eyes are occluded by the head: visibility 1, docs/conventions.md); a 2D pose
estimator on the image sees a nose and two eyes. :func:`facing_score` turns either side into one number in
``[-1, 1]`` (+1 facing the camera, -1 facing away, ~0 profile):

``facing = face_weight * (2 * face_seen - 1) + (1 - face_weight) * order``

- ``order`` in ``(-1, 1)``: the person's left/right order across the image of the face: facing the camera, the
  person's left eye and ear are on the image's right (``x_left > x_right``). The mean over the eye and ear pairs
  present of ``(x_left - x_right) / (|x_left - x_right| + 0.02 * person height)``, a smooth sign; shoulders, then
  hips, stand in when no face pair is present. A face painted on the back of the head puts the eyes in front
  order over a back-view body, which is exactly what this term sees.
- ``face_seen`` in ``[0, 1]``: the mean "seen" weight of nose, left eye and right eye (the detector's confidence;
  for the label 1 where visibility is 2, else 0). Weighted low by default (0.3): mediapipe's BlazePose reports
  face visibility near 1 even on the back of a head (measured on the render backend's back views), whereas
  heatmap estimators lower it.

:class:`KeypointHeadPose` (registered in ``SCORERS``) gives the image's facing from the scorer's face keypoints;
a learned head-pose estimator can take its place behind the same ``image_facing`` method (``FilterByHeadPose``
builds whichever its config names).
"""
from __future__ import annotations

import numpy as np

from posedreamer_mm.registry import SCORERS

from .base import PoseDetections

_FACE = (0, 1, 2)                                        # nose, left eye, right eye
_HEAD_PAIRS = ((1, 2), (3, 4))                            # eyes, ears: (left, right)
_BODY_PAIRS = ((5, 6), (11, 12))                          # shoulders, hips: stand-ins without a face pair


def facing_score(xy: np.ndarray, seen: np.ndarray, present: np.ndarray, face_weight: float = 0.3) -> float:
    """Facing direction in ``[-1, 1]`` of one person (see the module docstring).

    Args:
        xy: ``(17, 2)`` COCO-17 keypoints, image pixels.
        seen: ``(17,)`` in ``[0, 1]``: how surely each keypoint is seen (detector score, or label visibility == 2).
        present: ``(17,)`` bool: whose position can be trusted for the left/right order.
        face_weight: weight of the face term against the order term.

    Returns:
        +1 facing the camera, -1 facing away; 0 when nothing can be told.
    """
    xy, seen, present = np.asarray(xy, np.float64), np.asarray(seen, np.float64), np.asarray(present, bool)
    face_term = 2.0 * float(np.clip(seen[list(_FACE)], 0, 1).mean()) - 1.0
    order = 0.0
    if present.sum() > 1:
        scale = 0.02 * float(np.ptp(xy[present, 1])) + 1e-6
        signs = [(xy[a, 0] - xy[b, 0]) / (abs(xy[a, 0] - xy[b, 0]) + scale)
                 for a, b in _HEAD_PAIRS if present[a] and present[b]]
        if not signs:
            signs = [(xy[a, 0] - xy[b, 0]) / (abs(xy[a, 0] - xy[b, 0]) + scale)
                     for a, b in _BODY_PAIRS if present[a] and present[b]][:1]
        order = float(np.mean(signs)) if signs else 0.0
    return float(face_weight * face_term + (1.0 - face_weight) * order)


def label_facing(label_keypoints: np.ndarray, face_weight: float = 0.3) -> float:
    """Facing of the label's COCO-17 keypoints ``(17, 3)``: seen = visibility 2, present = visibility > 0."""
    label = np.asarray(label_keypoints, np.float64)
    return facing_score(label[:, :2], (label[:, 2] >= 2).astype(np.float64), label[:, 2] > 0, face_weight)


@SCORERS.register_module()
class KeypointHeadPose:
    """Head facing in the image from the pose scorer's face and left/right keypoints (no extra model).

    Args:
        keypoint_thr: a detected keypoint's position counts for the left/right order at ``score >= keypoint_thr``.
        face_weight: see :func:`facing_score`.
    """

    def __init__(self, keypoint_thr: float = 0.3, face_weight: float = 0.3) -> None:
        if not 0 <= face_weight <= 1:
            raise ValueError(f'face_weight must be in [0, 1], got {face_weight}')
        self.keypoint_thr, self.face_weight = keypoint_thr, face_weight

    def image_facing(self, img: np.ndarray, detections: PoseDetections, index: int) -> float:
        """Facing in ``[-1, 1]`` of detected person ``index`` in ``img`` (``img`` unused by this estimator)."""
        scores = detections.keypoint_scores[index]
        return facing_score(detections.keypoints[index], scores, scores >= self.keypoint_thr, self.face_weight)

    def label_facing(self, label_keypoints: np.ndarray) -> float:
        """Facing of the label (same weights as the image side)."""
        return label_facing(label_keypoints, self.face_weight)

    def __repr__(self) -> str:
        return f'{type(self).__name__}(keypoint_thr={self.keypoint_thr}, face_weight={self.face_weight})'
