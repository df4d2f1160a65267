"""Scoring and filter stages as registered mmcv transforms (generation ``stages``, dataset pipelines, tools/filter.py).

``ScorePose`` runs a pose scorer once per sample and matches the label to a detected person; the filters read its
result, so OKS, person count and head pose never re-run the estimator::

    stages = [
        dict(type='ScorePose', scorer=dict(type='MMPoseScorer', ...)),
        dict(type='FilterByPersonCount', max_people=4),
        dict(type='FilterByOKS', thr=0.85),
        dict(type='FilterByHeadPose'),
        dict(type='FilterByImageQuality'),
    ]

In a dataset pipeline (e.g. ``GeneratedHMRDataset``, whose items carry the ``scores`` the generator or
``tools/filter.py`` stored), the pose filters without a ``ScorePose`` before them threshold the stored score
instead (``oks``, ``num_people``, ``head_facing_diff``), so training never re-runs the estimator.

Each filter records what it measured in ``results['scores']`` and, when it drops a sample, sets
``results['drop_reason']`` (a short stable code, listed per class) right before returning ``None``
(docs/conventions.md). Thresholds are inclusive on the keeping side: a value equal to a threshold is kept.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
from mmcv.transforms import BaseTransform

from posedreamer_mm.generation.transforms import drop
from posedreamer_mm.registry import SCORERS, TRANSFORMS
from posedreamer_mm.scoring.base import BasePoseScorer, PoseDetections
from posedreamer_mm.scoring.matching import LabelMatch, match_label
from posedreamer_mm.scoring.quality import exposure_stats, laplacian_sharpness


def _build(cfg):
    """A scorer from its config dict, or an already built object."""
    return SCORERS.build(cfg) if isinstance(cfg, dict) else cfg


def _require(results: dict, key: str, who: str) -> object:
    if key not in results:
        raise KeyError(f'{who} needs results[{key!r}]; present keys: {sorted(results)}')
    return results[key]


def _stored(results: dict, key: str, who: str) -> float:
    """A score stored by an earlier run (``results['scores'][key]``), when no ``ScorePose`` ran in this pipeline."""
    scores = results.get('scores') or {}
    if key not in scores:
        raise KeyError(f"{who} needs results['pose_match'] (put ScorePose first) or a stored scores[{key!r}] "
                       f'(from a generated dataset\'s metadata); scores present: {sorted(scores)}')
    value = float(scores[key])
    if not np.isfinite(value):
        raise ValueError(f'{who}: stored scores[{key!r}] is {value}')
    return value


@TRANSFORMS.register_module()
class ScorePose(BaseTransform):
    """Runs a 2D pose scorer on the image and matches the label to the nearest well-detected person.

    Required Keys:
        - img: ``(H, W, 3)`` uint8 RGB.
        - keypoints_coco17: ``(17, 3)`` the label's keypoints in ``img`` pixels, with visibility.

    Added Keys:
        - pose_detections (:class:`~posedreamer_mm.scoring.base.PoseDetections`): everyone the scorer found. A
          caller that scored images in batches with the same scorer may set it beforehand; detections whose
          ``scorer`` name is this scorer's are then used as is.
        - pose_match (:class:`~posedreamer_mm.scoring.matching.LabelMatch`): the matched person, its OKS, or why
          nothing matched.

    Modified Keys:
        - scores: adds ``oks`` (0 without a match) and ``num_detections``.

    Args:
        scorer: a ``SCORERS`` config (``MMPoseScorer``, ``MediaPipeScorer``) or a built scorer.
        keypoint_thr: a detected keypoint is confident at ``score >= keypoint_thr``.
        min_keypoints: people with fewer confident keypoints are not matched (reference: 4).
    """

    def __init__(self, scorer: dict | BasePoseScorer, keypoint_thr: float = 0.3, min_keypoints: int = 4) -> None:
        self.scorer = _build(scorer)
        self.keypoint_thr, self.min_keypoints = keypoint_thr, min_keypoints

    def transform(self, results: dict) -> dict:
        img = _require(results, 'img', 'ScorePose')
        label = _require(results, 'keypoints_coco17', 'ScorePose')
        dets = results.get('pose_detections')
        if not isinstance(dets, PoseDetections) or dets.scorer != self.scorer.name:
            dets = self.scorer(img)
        results['pose_detections'] = dets
        match = match_label(dets, label, self.keypoint_thr, self.min_keypoints)
        results['pose_match'] = match
        results.setdefault('scores', {}).update(oks=match.oks, num_detections=float(len(dets)))
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(scorer={self.scorer!r}, keypoint_thr={self.keypoint_thr}, '
                f'min_keypoints={self.min_keypoints})')


@TRANSFORMS.register_module()
class FilterByPersonCount(BaseTransform):
    """Drops images showing more (or fewer) people than allowed (reference: more than 4 people).

    A person counts when its box scores ``>= bbox_thr`` and it has ``>= min_keypoints`` keypoints scoring
    ``>= keypoint_thr``. Use a multi-person scorer (``MMPoseScorer``); ``MediaPipeScorer`` finds one person at most.

    Required Keys:
        - pose_detections (from ``ScorePose``), or a stored ``scores['num_people']``

    Modified Keys:
        - scores: adds ``num_people``.
        - drop_reason: ``'too_many_people'`` or ``'too_few_people'`` when dropped.

    Args:
        max_people: keep ``num_people <= max_people``.
        min_people: keep ``num_people >= min_people`` (0: an empty image is left to the OKS filter).
        bbox_thr: minimum box score of a counted person.
        keypoint_thr: keypoint confidence threshold.
        min_keypoints: minimum confident keypoints of a counted person.
    """

    def __init__(self, max_people: int = 4, min_people: int = 0, bbox_thr: float = 0.5, keypoint_thr: float = 0.3,
                 min_keypoints: int = 4) -> None:
        if min_people > max_people:
            raise ValueError(f'min_people ({min_people}) > max_people ({max_people})')
        self.max_people, self.min_people = max_people, min_people
        self.bbox_thr, self.keypoint_thr, self.min_keypoints = bbox_thr, keypoint_thr, min_keypoints

    def transform(self, results: dict) -> dict | None:
        dets: PoseDetections | None = results.get('pose_detections')
        if dets is None:
            n = int(_stored(results, 'num_people', 'FilterByPersonCount'))
        else:
            counted = ((dets.bbox_scores >= self.bbox_thr)
                       & (dets.num_confident(self.keypoint_thr) >= self.min_keypoints))
            n = int(counted.sum())
        results.setdefault('scores', {})['num_people'] = float(n)
        if n > self.max_people:
            return drop(results, 'too_many_people')
        if n < self.min_people:
            return drop(results, 'too_few_people')
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(max_people={self.max_people}, min_people={self.min_people}, '
                f'bbox_thr={self.bbox_thr}, keypoint_thr={self.keypoint_thr}, min_keypoints={self.min_keypoints})')


@TRANSFORMS.register_module()
class FilterByOKS(BaseTransform):
    """Keeps samples whose image follows the label: OKS ``>= thr`` (reference: 0.85).

    OKS is COCO's (``posedreamer_mm/evaluation/functional/oks.py``) with the matched detection as ground truth and
    the label as prediction; no matched person means OKS 0.

    Required Keys:
        - pose_match (from ``ScorePose``), or a stored ``scores['oks']``

    Modified Keys:
        - scores: ``oks``.
        - drop_reason: ``'oks_no_match'`` (no detection with enough confident keypoints) or ``'oks_below_thr'``.

    Args:
        thr: the OKS a sample needs (inclusive).
    """

    def __init__(self, thr: float = 0.85) -> None:
        if not 0 <= thr <= 1:
            raise ValueError(f'OKS threshold must be in [0, 1], got {thr}')
        self.thr = thr

    def transform(self, results: dict) -> dict | None:
        match: LabelMatch | None = results.get('pose_match')
        oks = match.oks if match is not None else _stored(results, 'oks', 'FilterByOKS')
        results.setdefault('scores', {})['oks'] = oks
        if oks >= self.thr:
            return results
        return drop(results, 'oks_no_match' if match is not None and match.index is None else 'oks_below_thr')

    def __repr__(self) -> str:
        return f'{type(self).__name__}(thr={self.thr})'


@TRANSFORMS.register_module()
class FilterByHeadPose(BaseTransform):
    """Drops images whose head faces another way than the label's (a front face drawn on a back-view body).

    Facing is a number in ``[-1, 1]`` (+1 towards the camera, -1 away; ``posedreamer_mm/scoring/head_pose.py``)
    for the label and for the matched person in the image; the sample is dropped when they differ by more than
    ``max_diff``. Samples without a matched person are kept (the OKS filter decides about them).

    Required Keys:
        - img, keypoints_coco17, pose_detections, pose_match (from ``ScorePose``); without them a stored
          ``scores['head_facing_diff']`` is thresholded (and a sample stored without one, i.e. unmatched, kept)

    Modified Keys:
        - scores: ``head_facing_label``; with a match also ``head_facing_image`` and ``head_facing_diff``.
        - drop_reason: ``'head_pose_mismatch'`` when dropped.

    Args:
        head_pose: a ``SCORERS`` config of a head-pose estimator with ``image_facing(img, detections, index)``
            and ``label_facing(keypoints)`` (default: ``KeypointHeadPose``, from the scorer's face keypoints).
        max_diff: keep ``|facing_label - facing_image| <= max_diff``. Front vs back differ by ~2, front vs
            profile by ~0.7-1.
    """

    def __init__(self, head_pose: dict | object | None = None, max_diff: float = 1.0) -> None:
        self.head_pose = _build(head_pose if head_pose is not None else dict(type='KeypointHeadPose'))
        self.max_diff = max_diff

    def transform(self, results: dict) -> dict | None:
        match: LabelMatch | None = results.get('pose_match')
        scores = results.setdefault('scores', {})
        if match is None:
            if 'head_facing_diff' not in scores and 'head_facing_label' not in scores:
                _stored(results, 'head_facing_diff', 'FilterByHeadPose')   # raises: nothing to decide on
            if 'head_facing_diff' in scores and _stored(results, 'head_facing_diff', 'FilterByHeadPose') \
                    > self.max_diff:
                return drop(results, 'head_pose_mismatch')
            return results
        scores['head_facing_label'] = label = self.head_pose.label_facing(
            _require(results, 'keypoints_coco17', 'FilterByHeadPose'))
        if match.index is None:
            return results
        image = self.head_pose.image_facing(_require(results, 'img', 'FilterByHeadPose'),
                                            results['pose_detections'], match.index)
        scores['head_facing_image'], scores['head_facing_diff'] = image, abs(label - image)
        if abs(label - image) > self.max_diff:
            return drop(results, 'head_pose_mismatch')
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(head_pose={self.head_pose!r}, max_diff={self.max_diff})'


@TRANSFORMS.register_module()
class FilterByImageQuality(BaseTransform):
    """Drops blurry, under- or over-exposed images (and, with a configured model, unaesthetic ones).

    Measures are in ``posedreamer_mm/scoring/quality.py``: sharpness = variance of the Laplacian at a 512-pixel
    longer side (grey levels²), brightness = mean luma in ``[0, 1]``, clipped = fraction of black or white pixels.
    A threshold set to ``None`` is not checked.

    Required Keys:
        - img: ``(H, W, 3)`` uint8 RGB.

    Optional Keys:
        - pose_detections, pose_match: with ``sharpness_region='person'`` the matched person's box is measured.

    Modified Keys:
        - scores: ``sharpness``, ``brightness``, ``clipped_fraction`` (and ``aesthetic``).
        - drop_reason: ``'blurry'``, ``'under_exposed'``, ``'over_exposed'``, ``'clipped'`` or ``'low_aesthetic'``.

    Args:
        min_sharpness: keep ``sharpness >= min_sharpness``.
        min_brightness: keep ``brightness >= min_brightness``.
        max_brightness: keep ``brightness <= max_brightness``.
        max_clipped_fraction: keep ``dark + bright fraction <= max_clipped_fraction``.
        sharpness_region: ``'image'`` or ``'person'`` (the matched person's box, the whole image without a match).
        aesthetic: optional aesthetic model: a ``SCORERS`` config or a callable ``(img) -> float``.
        min_aesthetic: keep ``aesthetic >= min_aesthetic`` (needs ``aesthetic``).
    """

    def __init__(self, min_sharpness: float | None = 30.0, min_brightness: float | None = 0.08,
                 max_brightness: float | None = 0.92, max_clipped_fraction: float | None = 0.5,
                 sharpness_region: str = 'image', aesthetic: dict | Callable | None = None,
                 min_aesthetic: float | None = None) -> None:
        if sharpness_region not in ('image', 'person'):
            raise ValueError(f"sharpness_region must be 'image' or 'person', got {sharpness_region!r}")
        if min_aesthetic is not None and aesthetic is None:
            raise ValueError('min_aesthetic needs an aesthetic model (aesthetic=dict(type=...))')
        self.min_sharpness, self.min_brightness, self.max_brightness = min_sharpness, min_brightness, max_brightness
        self.max_clipped_fraction, self.sharpness_region = max_clipped_fraction, sharpness_region
        self.aesthetic = _build(aesthetic) if aesthetic is not None else None
        self.min_aesthetic = min_aesthetic

    def transform(self, results: dict) -> dict | None:
        img = _require(results, 'img', 'FilterByImageQuality')
        region = None
        match = results.get('pose_match')
        if self.sharpness_region == 'person' and match is not None and match.index is not None:
            region = results['pose_detections'].bboxes[match.index]
        sharp = laplacian_sharpness(img, region=region)
        expo = exposure_stats(img)
        clipped = expo['dark_fraction'] + expo['bright_fraction']
        scores = results.setdefault('scores', {})
        scores.update(sharpness=sharp, brightness=expo['brightness'], clipped_fraction=clipped)
        if self.aesthetic is not None:
            scores['aesthetic'] = float(self.aesthetic(img))
        if self.min_sharpness is not None and sharp < self.min_sharpness:
            return drop(results, 'blurry')
        if self.min_brightness is not None and expo['brightness'] < self.min_brightness:
            return drop(results, 'under_exposed')
        if self.max_brightness is not None and expo['brightness'] > self.max_brightness:
            return drop(results, 'over_exposed')
        if self.max_clipped_fraction is not None and clipped > self.max_clipped_fraction:
            return drop(results, 'clipped')
        if self.min_aesthetic is not None and scores['aesthetic'] < self.min_aesthetic:
            return drop(results, 'low_aesthetic')
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(min_sharpness={self.min_sharpness}, min_brightness={self.min_brightness}, '
                f'max_brightness={self.max_brightness}, max_clipped_fraction={self.max_clipped_fraction}, '
                f'sharpness_region={self.sharpness_region!r}, aesthetic={self.aesthetic!r}, '
                f'min_aesthetic={self.min_aesthetic})')
