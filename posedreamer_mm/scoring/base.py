"""The scorer interface: an RGB image in, the people a 2D pose estimator sees in it out.

Every pose scorer (``MMPoseScorer``, ``MediaPipeScorer``, registered in ``SCORERS``) returns one
:class:`PoseDetections` per image: COCO-17 keypoints in image pixels, their confidences, and a person box with its
score. Filter transforms (``posedreamer_mm/datasets/transforms/filters.py``) read these through the ``ScorePose``
transform, which runs the scorer once per sample (docs/scoring.md).
"""
from __future__ import annotations

import dataclasses
from abc import ABCMeta, abstractmethod
from collections.abc import Sequence

import numpy as np


@dataclasses.dataclass
class PoseDetections:
    """The people a pose scorer found in one image (``P`` people, COCO-17 order, image pixels).

    Attributes:
        keypoints: ``(P, 17, 2)`` float32 ``x, y`` pixels of the scored image.
        keypoint_scores: ``(P, 17)`` float32 confidences in ``[0, 1]``.
        bboxes: ``(P, 4)`` float32 person boxes ``x1, y1, x2, y2`` pixels.
        bbox_scores: ``(P,)`` float32 detection confidences in ``[0, 1]``.
        image_size: ``(W, H)`` of the scored image.
        scorer: the scorer's name (recorded with the scores).
    """

    keypoints: np.ndarray
    keypoint_scores: np.ndarray
    bboxes: np.ndarray
    bbox_scores: np.ndarray
    image_size: tuple[int, int]
    scorer: str = ''

    def __post_init__(self) -> None:
        self.keypoints = np.asarray(self.keypoints, np.float32).reshape(-1, 17, 2)
        p = len(self.keypoints)
        self.keypoint_scores = np.asarray(self.keypoint_scores, np.float32).reshape(p, 17)
        self.bboxes = np.asarray(self.bboxes, np.float32).reshape(p, 4)
        self.bbox_scores = np.asarray(self.bbox_scores, np.float32).reshape(p)
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))
        for name in ('keypoints', 'keypoint_scores', 'bboxes', 'bbox_scores'):
            if not np.isfinite(getattr(self, name)).all():
                raise ValueError(f'PoseDetections.{name} from {self.scorer or "a scorer"} holds NaN/inf')

    @classmethod
    def empty(cls, image_size: tuple[int, int], scorer: str = '') -> PoseDetections:
        """No person found."""
        return cls(np.zeros((0, 17, 2)), np.zeros((0, 17)), np.zeros((0, 4)), np.zeros(0), image_size, scorer)

    def __len__(self) -> int:
        return len(self.keypoints)

    def num_confident(self, keypoint_thr: float) -> np.ndarray:
        """``(P,)`` how many keypoints of each person score ``>= keypoint_thr``."""
        return (self.keypoint_scores >= keypoint_thr).sum(-1)

    def to_dict(self) -> dict:
        """JSON-ready lists (for per-sample score files)."""
        return dict(scorer=self.scorer, image_size=list(self.image_size),
                    keypoints=np.round(self.keypoints, 2).tolist(),
                    keypoint_scores=np.round(self.keypoint_scores, 4).tolist(),
                    bboxes=np.round(self.bboxes, 2).tolist(), bbox_scores=np.round(self.bbox_scores, 4).tolist())

    @classmethod
    def from_dict(cls, d: dict) -> PoseDetections:
        """Inverse of :meth:`to_dict` (rounded to its precision)."""
        return cls(np.asarray(d['keypoints'], np.float32).reshape(-1, 17, 2), d['keypoint_scores'], d['bboxes'],
                   d['bbox_scores'], tuple(d['image_size']), d.get('scorer', ''))


def check_rgb_image(img: np.ndarray, who: str) -> np.ndarray:
    """Returns ``img`` if it is an ``(H, W, 3)`` uint8 RGB image, else raises naming the caller and the shape."""
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3 \
            or min(img.shape[:2]) < 1:
        desc = f'{img.dtype} {img.shape}' if isinstance(img, np.ndarray) else type(img).__name__
        raise ValueError(f'{who} expects an (H, W, 3) uint8 RGB image, got {desc}')
    return img


class BasePoseScorer(metaclass=ABCMeta):
    """A 2D pose estimator behind the project's scorer interface.

    Subclasses implement :meth:`predict_batch`; :meth:`__call__` scores one image. Scorers load their weights
    lazily on first use (so building a pipeline, forking workers or pickling the config stays cheap) and say in
    their docstring whether they find one or several people.
    """

    #: Recorded as ``PoseDetections.scorer``.
    name: str = 'pose'

    @abstractmethod
    def predict_batch(self, images: Sequence[np.ndarray]) -> list[PoseDetections]:
        """Scores several images.

        Args:
            images: ``(H, W, 3)`` uint8 **RGB** images (sizes may differ).

        Returns:
            One :class:`PoseDetections` per image, in input order.
        """

    def __call__(self, img: np.ndarray) -> PoseDetections:
        """Scores one ``(H, W, 3)`` uint8 RGB image."""
        return self.predict_batch([img])[0]
