"""``MediaPipeScorer``: an offline 2D pose scorer from the pose model bundled in the mediapipe 0.10.21 wheel.

Optional extra (``requirements/mediapipe.txt``, docs/install.md). ``mediapipe.solutions.pose`` (BlazePose GHUM,
``model_complexity=1``: ``pose_landmark_full.tflite`` and ``pose_detection.tflite`` ship inside the wheel; the other
complexities try to download and fail) finds **one person per image**: the legacy solution API has no
multi-person mode, and the Tasks API's multi-person ``PoseLandmarker`` needs a ``.task`` bundle the wheel does not
ship. Person counting therefore needs ``MMPoseScorer``; ``MediaPipeScorer`` serves OKS and head-pose filtering.

Its 33 landmarks include COCO-17 (:data:`MEDIAPIPE_TO_COCO17`); a landmark's ``visibility`` is the keypoint score.
Mediapipe gives no box: the person box is the extent of all 33 landmarks (face, hands, heels and toes included)
clipped to the image, and its score the mean COCO-17 visibility.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Sequence

import numpy as np

from posedreamer_mm.registry import SCORERS
from posedreamer_mm.utils.pickling import PicklesWithoutLocalState

from .base import BasePoseScorer, PoseDetections, check_rgb_image

#: Index of each COCO-17 keypoint among mediapipe's 33 pose landmarks (``mp.solutions.pose.PoseLandmark``).
MEDIAPIPE_TO_COCO17 = np.array([0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28], np.int64)


@SCORERS.register_module()
class MediaPipeScorer(PicklesWithoutLocalState, BasePoseScorer):
    """Single-person 2D pose scoring with mediapipe's bundled BlazePose model; needs no download.

    Args:
        min_detection_confidence: mediapipe's person-detector threshold.
        model_complexity: 1 (the bundled full model). 0 and 2 need a download and are refused.

    The mediapipe graph is created on first use in each process (forked or spawned workers build their own) and
    is used under a lock, as one graph must not run two images at once.
    """

    name = 'mediapipe'
    _process_local = dict(_pose=None, _pid=None)   # the graph is rebuilt on first use in a copy

    def __init__(self, min_detection_confidence: float = 0.5, model_complexity: int = 1) -> None:
        if model_complexity != 1:
            raise ValueError('MediaPipeScorer: only model_complexity=1 is bundled in mediapipe 0.10.21 '
                             f'(got {model_complexity}; 0 and 2 would download a model)')
        self.min_detection_confidence = min_detection_confidence
        self.model_complexity = model_complexity
        self._pose, self._pid = None, None
        self._lock = threading.Lock()

    def _graph(self):
        if self._pose is None or self._pid != os.getpid():
            try:
                from mediapipe.python.solutions import pose as mp_pose
            except ImportError as err:
                raise ImportError('MediaPipeScorer needs the mediapipe extra: pip install --no-deps '
                                  'mediapipe==0.10.21 plus requirements/mediapipe.txt (docs/install.md)') from err
            self._pose = mp_pose.Pose(static_image_mode=True, model_complexity=self.model_complexity,
                                      min_detection_confidence=self.min_detection_confidence)
            self._pid = os.getpid()
        return self._pose

    def predict_batch(self, images: Sequence[np.ndarray]) -> list[PoseDetections]:
        """Finds at most one person in each RGB image (see :class:`BasePoseScorer`)."""
        out = []
        for img in images:
            img = check_rgb_image(img, 'MediaPipeScorer')
            h, w = img.shape[:2]
            with self._lock:
                result = self._graph().process(np.ascontiguousarray(img))
            if result.pose_landmarks is None:
                out.append(PoseDetections.empty((w, h), self.name))
                continue
            lm = np.array([(p.x * w, p.y * h, p.visibility) for p in result.pose_landmarks.landmark], np.float32)
            coco = lm[MEDIAPIPE_TO_COCO17]
            scores = np.clip(coco[:, 2], 0, 1)
            x1, y1 = np.clip(lm[:, :2].min(0), 0, [w, h])
            x2, y2 = np.clip(lm[:, :2].max(0), 0, [w, h])
            out.append(PoseDetections(coco[None, :, :2], scores[None], [[x1, y1, x2, y2]], [scores.mean()], (w, h),
                                      self.name))
        return out

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(model_complexity={self.model_complexity}, '
                f'min_detection_confidence={self.min_detection_confidence})')
