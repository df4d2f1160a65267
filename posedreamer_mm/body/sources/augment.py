"""Shape, orientation and camera augmentation of a pose source (PoseDreamer-style).

Each output sample is drawn from a generator seeded by ``(seed, sample id, repeat)``, so a sample's
augmentation does not depend on iteration order, worker or rank. Body, hand, jaw and eye poses are never
changed; the derived fields (joints, keypoints, bbox) are cleared because they would be stale. The output id is
``<inner id>_a<config>s<seed>r<repeat>`` (``<config>`` a 6-hex digest of the augmentation ranges), so two
seeds, repeats or configurations never share an id.
"""
from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np

from posedreamer_mm.registry import POSE_SOURCES

from ..camera import split_heading, upright_global_orient_np
from ..sample import BodySample, validate_sample_id
from .base import SMPLX_NEUTRAL_PELVIS_REST, BodySource, stable_digest, stable_seed


class BodyAugment:
    """Randomises betas, heading and camera of one :class:`BodySample` (a pure function of sample and seed).

    Every part is optional (``None`` keeps the source's value).

    Args:
        seed: Base seed.
        betas_range: Random betas: the first ``num_random_betas`` uniform in ``[-b, b]``, the rest zero.
        num_random_betas: See ``betas_range``.
        yaw_range: (min, max) degrees of the new heading; 0 faces the camera.
        orient_mode: 'upright' replaces the root rotation by an upright one at the new yaw (the reference);
            'keep_tilt' keeps the source's tilt away from vertical and replaces only its heading.
        distance_range: (min, max) metres of the pelvis depth in front of the camera.
        offset_range: Max absolute (x, y) pelvis offset from the optical axis, metres (uniform).
        focal: Focal length in pixels (fx = fy); 890 px at 1024x1024 is the PoseDreamer reference.
        focal_range: (min, max) pixels, drawn uniformly instead of ``focal``.
        img_size: (W, H) pixels; sets ``princpt`` to the image centre. Needed with ``focal``/``focal_range``.
        pelvis_rest: Rest-pose pelvis used to place the pelvis (betas move it by ~1-2 cm).
    """

    def __init__(self, seed: int = 0, betas_range: float | None = 2.0, num_random_betas: int = 10,
                 yaw_range: Sequence[float] | None = (-180.0, 180.0), orient_mode: str = 'upright',
                 distance_range: Sequence[float] | None = (2.5, 6.0), offset_range: Sequence[float] = (0.2, 0.2),
                 focal: float | None = 890.0, focal_range: Sequence[float] | None = None,
                 img_size: Sequence[int] | None = (1024, 1024),
                 pelvis_rest: Sequence[float] = SMPLX_NEUTRAL_PELVIS_REST):
        if orient_mode not in ('upright', 'keep_tilt'):
            raise ValueError(f"orient_mode must be 'upright' or 'keep_tilt', got {orient_mode!r}")
        if distance_range is not None and (min(distance_range) <= 0 or distance_range[0] > distance_range[1]):
            raise ValueError(f'distance_range must be (min, max) with 0 < min <= max metres, got {distance_range}')
        if (focal is not None or focal_range is not None) and img_size is None:
            raise ValueError('focal/focal_range need img_size (the focal length is in pixels of that image)')
        self.seed, self.betas_range, self.num_random_betas = int(seed), betas_range, int(num_random_betas)
        self.yaw_range, self.orient_mode = yaw_range, orient_mode
        self.distance_range, self.offset_range = distance_range, tuple(offset_range)
        self.focal, self.focal_range, self.img_size = focal, focal_range, img_size
        self.pelvis_rest = np.asarray(pelvis_rest, np.float64)
        config = dict(betas_range=betas_range, num_random_betas=self.num_random_betas, yaw_range=yaw_range,
                      orient_mode=orient_mode, distance_range=distance_range, offset_range=self.offset_range,
                      focal=focal, focal_range=focal_range, img_size=img_size, pelvis_rest=self.pelvis_rest)
        self.config_digest = stable_digest(json.dumps(_canonical(config), sort_keys=True), 6)

    def augmented_id(self, inner_id: str, repeat: int = 0) -> str:
        """``<inner_id>_a<config digest>s<seed>r<repeat>``: the id of an augmented sample (checked by
        ``sample.validate_sample_id``: ``ValueError`` if the inner id is invalid or the result too long)."""
        return validate_sample_id(f'{inner_id}_a{self.config_digest}s{self.seed}r{repeat}')

    def __call__(self, sample: BodySample, repeat: int = 0) -> BodySample:
        """Returns an augmented copy of ``sample`` (``sample`` is not modified) with id :meth:`augmented_id`."""
        out = sample.copy().clear_derived()
        out.id = self.augmented_id(sample.id, repeat)
        rng = np.random.default_rng(stable_seed('augment', self.seed, sample.id, repeat))
        record: dict = dict(seed=self.seed, repeat=repeat, inner_id=sample.id)
        # Draw in a fixed order whatever is enabled, so enabling one part does not reshuffle the others.
        betas_u = rng.uniform(-1.0, 1.0, self.num_random_betas)
        yaw_u, dist_u, focal_u = rng.uniform(size=3)
        off_u = rng.uniform(-1.0, 1.0, 2)
        if self.betas_range is not None:
            n = min(self.num_random_betas, out.num_betas)  # the count stays the data's
            out.betas = np.zeros(out.num_betas, np.float32)
            out.betas[:n] = betas_u[:n] * self.betas_range
        if self.yaw_range is not None:
            yaw = np.deg2rad(self.yaw_range[0] + (self.yaw_range[1] - self.yaw_range[0]) * float(yaw_u))
            tilt = split_heading(out.global_orient)[1] if self.orient_mode == 'keep_tilt' else None
            out.global_orient = upright_global_orient_np(yaw, tilt)
            record['yaw_deg'] = float(np.rad2deg(yaw))
        if self.distance_range is not None:
            lo, hi = self.distance_range
            distance = lo + (hi - lo) * float(dist_u)
            offset = off_u * np.asarray(self.offset_range, np.float64)
            pelvis = np.array([offset[0], offset[1], distance])
            out.transl = (pelvis - self.pelvis_rest).astype(np.float32)
            record['distance_m'] = distance
        if self.focal_range is not None:
            f = self.focal_range[0] + (self.focal_range[1] - self.focal_range[0]) * float(focal_u)
        else:
            f = self.focal
        if f is not None:
            out.focal = np.full(2, f, np.float32)
            out.img_size = np.asarray(self.img_size, np.int64)
            out.princpt = out.img_size.astype(np.float32) / 2
            record['focal_px'] = float(f)
        out.meta['augment'] = record
        return out

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(seed={self.seed}, betas_range={self.betas_range}, '
                f'yaw_range={self.yaw_range}, orient_mode={self.orient_mode!r}, '
                f'distance_range={self.distance_range}, offset_range={self.offset_range}, focal={self.focal}, '
                f'focal_range={self.focal_range}, img_size={self.img_size})')


@POSE_SOURCES.register_module()
class AugmentedSource(BodySource):
    """A source whose samples pass through :class:`BodyAugment`, optionally several times each.

    Sample ``i * repeats + r`` is repeat ``r`` of inner sample ``i``, with id
    ``<inner id>_a<config>s<seed>r<r>`` (:meth:`BodyAugment.augmented_id`; also when ``repeats == 1``).

    Args:
        source: The inner source or its config (``dict(type='AMASSSource', ...)``).
        repeats: Augmented variants per inner sample.
        **augment: :class:`BodyAugment` arguments.
    """
    name = 'augmented'

    def __init__(self, source: BodySource | dict, repeats: int = 1, **augment):
        super().__init__()
        if repeats < 1:
            raise ValueError(f'repeats must be >= 1, got {repeats}')
        self.source = POSE_SOURCES.build(source) if isinstance(source, dict) else source
        self.repeats = int(repeats)
        self.augment = BodyAugment(**augment)
        self.skipped = self.source.skipped  # the inner source's accounting is this source's

    def __len__(self) -> int:
        return len(self.source) * self.repeats

    def _get(self, index: int) -> BodySample:
        inner, repeat = divmod(index, self.repeats)
        return self.augment(self.source[inner], repeat)

    def summary(self) -> str:
        return f'{type(self).__name__}({self.source.summary()}) x{self.repeats}: {len(self)} samples'


def _canonical(value):
    """JSON-able form of a config for its digest: numbers as rounded floats, sequences as lists, so ``[-180, 180]``
    and ``(-180.0, 180.0)`` digest alike."""
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    if value is None or isinstance(value, str | bool):
        return value
    if isinstance(value, np.ndarray | list | tuple):
        return [_canonical(v) for v in value]
    return round(float(value), 9)
