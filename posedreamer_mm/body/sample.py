"""The SMPL-X parameter record shared by every source, writer, dataset and metric.

A :class:`BodySample` is one person's SMPL-X parameters plus the pinhole camera that sees them
(docs/conventions.md, "The sample convention"): ``global_orient`` and ``transl`` are already in the camera frame
(OpenCV: x right, y down, z forward; metres), so a sample needs no extrinsics. Rotations are axis-angle (radians).
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

#: SMPL-X full pose (55 joints x 3 = 165) in smplx's ``full_pose`` order, which AMASS ``poses`` and BEDLAM
#: ``pose_cam`` share: (field name, number of values).
SMPLX_FULL_POSE_LAYOUT: tuple[tuple[str, int], ...] = (
    ('global_orient', 3), ('body_pose', 63), ('jaw_pose', 3), ('leye_pose', 3), ('reye_pose', 3),
    ('left_hand_pose', 45), ('right_hand_pose', 45))
FULL_POSE_DIM = sum(n for _, n in SMPLX_FULL_POSE_LAYOUT)

#: Fixed shapes of the float parameter and camera fields (``betas`` is 1-D of any length: the count stays with
#: the data).
FIELD_SHAPES: dict[str, tuple[int, ...]] = {
    'expression': (10,), **{name: (n,) for name, n in SMPLX_FULL_POSE_LAYOUT}, 'transl': (3,),
    'focal': (2,), 'princpt': (2,)}
#: Keys of :meth:`BodySample.stack`, the SMPL-X forward's keyword arguments.
STACK_KEYS = ('betas', 'global_orient', 'body_pose', 'left_hand_pose', 'right_hand_pose', 'jaw_pose', 'leye_pose',
              'reye_pose', 'expression', 'transl')
#: Optional derived fields (recomputable from the parameters) and their trailing shape; ``None`` = any size.
DERIVED_SHAPES: dict[str, tuple[int | None, ...]] = {
    'joints_3d': (None, 3), 'joints_2d': (None, 2), 'keypoints_coco17': (17, 3), 'bbox': (4,)}
GENDERS = ('neutral', 'male', 'female')
#: What a sample id may contain: it names files (``<id>.npz``, ``<id>.jpg``) and shard members, so it is one
#: path component of ASCII letters, digits, ``.``, ``_``, ``-`` (not starting with ``.`` or ``-``), at most 200
#: characters. Sources build ids with ``sources.base.make_id``, which always satisfies this.
SAMPLE_ID_PATTERN = re.compile(r'[A-Za-z0-9_][A-Za-z0-9._-]{0,199}')
_META_JSON = 'meta_json'
_META_PREFIX = 'meta.'


def split_full_pose(full_pose: np.ndarray) -> dict[str, np.ndarray]:
    """Splits SMPL-X full poses into named parts.

    Args:
        full_pose: ``(..., 165)`` axis-angle in :data:`SMPLX_FULL_POSE_LAYOUT` order.

    Returns:
        ``{'global_orient': (..., 3), 'body_pose': (..., 63), ...}`` (views into ``full_pose``).
    """
    full_pose = np.asarray(full_pose)
    if full_pose.shape[-1] != FULL_POSE_DIM:
        raise ValueError(f'full pose must have {FULL_POSE_DIM} values in its last axis, got {full_pose.shape}')
    out, start = {}, 0
    for name, n in SMPLX_FULL_POSE_LAYOUT:
        out[name] = full_pose[..., start:start + n]
        start += n
    return out


def validate_sample_id(sample_id: Any) -> str:
    """Returns ``sample_id`` as a string if it matches :data:`SAMPLE_ID_PATTERN`.

    Raises:
        ValueError: naming the id and the rule (an id goes into file names: ``../x`` or ``a/b`` must never
            reach a writer).
    """
    text = str(sample_id)
    if SAMPLE_ID_PATTERN.fullmatch(text) is None:
        raise ValueError(f'sample id {text!r} is not a valid id: use 1-200 characters of [A-Za-z0-9._-], '
                         'not starting with "." or "-" (ids become file names)')
    return text


def sample_file(root: str | os.PathLike, subdir: str, sample_id: str, suffix: str) -> str:
    """``<root>/<subdir>/<id><suffix>`` for a writer: the id checked (:func:`validate_sample_id`) and the path
    kept inside ``root`` (``utils.fileio.safe_join``), so no id can name a file elsewhere.

    Args:
        root: Output directory.
        subdir: Folder under it (``'labels'``, ``'controls/pncc'``; '' for ``root`` itself).
        sample_id: The sample's id.
        suffix: File suffix with its dot (``'.npz'``).

    Raises:
        ValueError: an invalid id, or a path that would leave ``root``.
    """
    from posedreamer_mm.utils.fileio import safe_join
    name = validate_sample_id(sample_id) + suffix
    parts = [p for p in subdir.split('/') if p] if subdir else []
    return safe_join(root, *parts, name)


def _float_array(value: Any) -> np.ndarray:
    return np.array(value, dtype=np.float32)


def _zeros(n: int):
    return dataclasses.field(default_factory=lambda: np.zeros(n, np.float32))


@dataclasses.dataclass(eq=False)
class BodySample:
    """One sample's SMPL-X parameters and camera (all float32 numpy arrays).

    Attributes:
        id: Stable identifier (same across runs and ranks), derived from source, file and frame, never from
            the order of a listing.
        betas: ``(num_betas,)`` shape coefficients (10 by default; sources keep their data's count, e.g. AMASS 16,
            BEDLAM 11: build the body model with that ``num_betas``).
        expression: ``(10,)`` expression coefficients.
        global_orient: ``(3,)`` root rotation, camera frame (OpenCV), axis-angle.
        body_pose: ``(63,)`` 21 body joints, axis-angle relative to the parent.
        left_hand_pose: ``(45,)`` 15 joints, full (not PCA) axis-angle, **relative to the flat hand**: SMPL-X with
            ``flat_hand_mean=True``, as BEDLAM and AMASS store them (zero = flat open hand, not the mean curl).
            A body model built with ``flat_hand_mean=False`` would add the mean curl to every record.
        right_hand_pose: ``(45,)``, same convention.
        jaw_pose: ``(3,)``.
        leye_pose: ``(3,)``.
        reye_pose: ``(3,)``.
        transl: ``(3,)`` SMPL-X translation in the camera frame, metres (the pelvis lands at
            ``transl + J_pelvis(betas)``, not at ``transl``).
        focal: ``(2,)`` fx, fy in pixels of the stored image.
        princpt: ``(2,)`` cx, cy in pixels.
        img_size: ``(2,)`` int (W, H) in pixels.
        gender: 'neutral', 'male' or 'female'.
        source: Name of the source that produced the sample ('amass', 'bedlam', ...).
        joints_3d: Optional ``(J, 3)`` camera-frame joints, metres.
        joints_2d: Optional ``(J, 2)`` projected joints, pixels.
        keypoints_coco17: Optional ``(17, 3)`` COCO keypoints (x, y px, visibility).
        bbox: Optional ``(4,)`` (x, y, w, h) pixels of the projected mesh.
        meta: Free-form extras (source file, frame, original translation, ...). numpy arrays or JSON-able values.
    """
    id: str
    betas: np.ndarray = _zeros(10)
    expression: np.ndarray = _zeros(10)
    global_orient: np.ndarray = _zeros(3)
    body_pose: np.ndarray = _zeros(63)
    left_hand_pose: np.ndarray = _zeros(45)
    right_hand_pose: np.ndarray = _zeros(45)
    jaw_pose: np.ndarray = _zeros(3)
    leye_pose: np.ndarray = _zeros(3)
    reye_pose: np.ndarray = _zeros(3)
    transl: np.ndarray = _zeros(3)
    focal: np.ndarray = dataclasses.field(default_factory=lambda: np.full(2, 890.0, np.float32))
    princpt: np.ndarray = dataclasses.field(default_factory=lambda: np.full(2, 512.0, np.float32))
    img_size: np.ndarray = dataclasses.field(default_factory=lambda: np.array([1024, 1024], np.int64))
    gender: str = 'neutral'
    source: str = ''
    joints_3d: np.ndarray | None = None
    joints_2d: np.ndarray | None = None
    keypoints_coco17: np.ndarray | None = None
    bbox: np.ndarray | None = None
    meta: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        self.id = str(self.id)
        for name in ('betas', *FIELD_SHAPES):
            setattr(self, name, _float_array(getattr(self, name)))
        for name in DERIVED_SHAPES:
            if getattr(self, name) is not None:
                setattr(self, name, _float_array(getattr(self, name)))
        size = np.array(self.img_size)
        integral = size.dtype.kind in 'iub' or (size.dtype.kind == 'f' and np.isfinite(size).all()
                                                and (size == np.round(size)).all())
        # A non-integral or non-finite size stays float so validate() names it instead of a silent truncation.
        self.img_size = size.astype(np.int64) if integral else size.astype(np.float64)
        self.gender, self.source = str(self.gender), str(self.source)

    @property
    def num_betas(self) -> int:
        return int(self.betas.shape[0])

    def full_pose(self) -> np.ndarray:
        """Returns the ``(165,)`` SMPL-X full pose in :data:`SMPLX_FULL_POSE_LAYOUT` order."""
        return np.concatenate([getattr(self, name) for name, _ in SMPLX_FULL_POSE_LAYOUT])

    def copy(self) -> BodySample:
        """Deep copy (arrays and meta are not shared)."""
        return copy.deepcopy(self)

    def clear_derived(self) -> BodySample:
        """Drops the derived fields (call after changing parameters or camera); returns ``self``."""
        for name in DERIVED_SHAPES:
            setattr(self, name, None)
        return self

    def validate(self) -> BodySample:
        """Checks shapes, finiteness and camera sanity; returns ``self``.

        Raises:
            ValueError: naming the first bad field, its expected shape and what it got.
        """
        def fail(field: str, problem: str):
            raise ValueError(f'BodySample {self.id!r}: field {field!r} {problem}')

        if SAMPLE_ID_PATTERN.fullmatch(self.id) is None:
            fail('id', 'is not a valid sample id: use 1-200 characters of [A-Za-z0-9._-], not starting with "." or '
                       '"-" (ids become file names)')
        if self.betas.ndim != 1 or self.betas.shape[0] < 1:
            fail('betas', f'must have shape (num_betas,), got {self.betas.shape}')
        for name, shape in FIELD_SHAPES.items():
            value = getattr(self, name)
            if value.shape != shape:
                fail(name, f'must have shape {shape}, got {value.shape}')
        for name in ('betas', *FIELD_SHAPES):
            if not np.isfinite(getattr(self, name)).all():
                fail(name, 'contains NaN or inf')
        if self.img_size.shape != (2,) or (self.img_size <= 0).any():
            fail('img_size', f'must have shape (2,) with positive (W, H), got {self.img_size!r}')
        if self.img_size.dtype.kind not in 'iu' or (self.img_size > 16384).any():
            fail('img_size', f'must be integers of at most 16384 pixels, got {self.img_size!r}')
        if (self.focal <= 0).any():
            fail('focal', f'must be positive pixels, got {self.focal!r}')
        if self.gender not in GENDERS:
            fail('gender', f'must be one of {GENDERS}, got {self.gender!r}')
        for name, shape in DERIVED_SHAPES.items():
            value = getattr(self, name)
            if value is None:
                continue
            if value.ndim != len(shape) or any(s is not None and s != v for s, v in zip(shape, value.shape)):
                want = tuple('J' if s is None else s for s in shape)
                fail(name, f'must have shape {want}, got {value.shape}')
        return self

    # --- serialisation ------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Flat dict of numpy arrays and strings that ``np.savez`` accepts as is.

        Derived fields that are ``None`` are left out. ``meta`` numpy arrays become ``'meta.<key>'`` entries; its
        other (JSON-able) values go into one JSON string under ``'meta_json'``.
        """
        out: dict[str, Any] = {'id': self.id, 'gender': self.gender, 'source': self.source}
        for name in ('betas', *FIELD_SHAPES, 'img_size'):
            out[name] = getattr(self, name).copy()
        for name in DERIVED_SHAPES:
            if getattr(self, name) is not None:
                out[name] = getattr(self, name).copy()
        plain = {}
        for key, value in self.meta.items():
            if not isinstance(key, str):
                raise TypeError(f'meta key {key!r} is a {type(key).__name__}; meta keys must be strings')
            if isinstance(value, np.ndarray):
                if value.dtype.hasobject:
                    raise TypeError(f'meta[{key!r}] is an object array ({value.dtype}), which load_npz cannot read '
                                    'without pickle: store numbers, booleans or strings, or a list of them')
                if value.dtype.kind == 'V':
                    raise TypeError(f'meta[{key!r}] has a raw/structured dtype {value.dtype}; use plain arrays')
                out[_META_PREFIX + key] = value.copy()
            else:
                plain[key] = value
        try:
            out[_META_JSON] = json.dumps(plain, sort_keys=True, default=_json_default, allow_nan=True)
        except (TypeError, ValueError) as err:
            raise TypeError(f'meta {sorted(plain)}: {err}') from err
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BodySample:
        """Inverse of :meth:`to_dict`; also accepts the 0-d string arrays an npz returns."""
        fields = {f.name for f in dataclasses.fields(cls)} - {'meta'}
        kwargs: dict[str, Any] = {}
        meta: dict[str, Any] = {}
        for key, value in data.items():
            if key == _META_JSON:
                meta.update(json.loads(_as_str(value)))
            elif key.startswith(_META_PREFIX):
                meta[key[len(_META_PREFIX):]] = np.asarray(value)
            elif key in ('id', 'gender', 'source'):
                kwargs[key] = _as_str(value)
            elif key in fields:
                kwargs[key] = value
            else:
                raise ValueError(f'unknown BodySample key {key!r}')
        if 'id' not in kwargs:
            raise ValueError("BodySample dict has no 'id'")
        return cls(**kwargs, meta=meta)

    def save_npz(self, path: str | os.PathLike) -> None:
        """Writes :meth:`to_dict` to ``path`` (uncompressed npz) atomically (``utils.fileio.atomic_write``).

        The id must satisfy :data:`SAMPLE_ID_PATTERN`. Everything is checked before the file is opened, and a
        failed write leaves nothing behind (neither ``path`` nor a temporary).

        Raises:
            ValueError: naming ``path`` and the field or meta key that :meth:`load_npz` could not read back
                (an object array, a non-string key, a value JSON cannot hold, an invalid id).
        """
        from posedreamer_mm.utils.fileio import atomic_write
        try:
            validate_sample_id(self.id)
            data = self.to_dict()
        except (TypeError, ValueError) as err:
            raise ValueError(f'cannot save BodySample to {os.fspath(path)}: {err}') from err
        with atomic_write(path, 'wb') as f:
            np.savez(f, **data)

    @classmethod
    def load_npz(cls, path: str | os.PathLike) -> BodySample:
        """Reads a file written by :meth:`save_npz` (no pickles).

        Raises:
            FileNotFoundError: no such file.
            ValueError: naming ``path`` and the problem (truncated file, object array, unknown key, ...).
        """
        try:
            with np.load(path, allow_pickle=False) as data:
                return cls.from_dict({key: data[key] for key in data.files})
        except FileNotFoundError:
            raise
        except Exception as err:  # noqa: BLE001 - zipfile, pickle refusal, JSON, bad fields: one message
            raise ValueError(f'cannot read BodySample file {os.fspath(path)}: {type(err).__name__}: {err}') from err

    # --- batching -----------------------------------------------------------------------------------------------
    @staticmethod
    def stack(samples: Sequence[BodySample], device: torch.device | str | None = None,
              dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        """Batches samples for the SMPL-X forward.

        Args:
            samples: Non-empty; all with the same number of betas.
            device: Target device of the tensors.
            dtype: Floating dtype.

        Returns:
            ``{key: (B, D) tensor}`` for :data:`STACK_KEYS` (``betas`` ``(B, num_betas)``, ``body_pose``
            ``(B, 63)``, ...), ready for ``smplx.SMPLX(...)(**batch)``.
        """
        if not samples:
            raise ValueError('stack() needs at least one sample')
        counts = {s.num_betas for s in samples}
        if len(counts) != 1:
            raise ValueError(f"field 'betas': samples have different numbers of betas {sorted(counts)}; "
                             'pad or truncate them to one count before stacking')
        return {key: torch.as_tensor(np.stack([getattr(s, key) for s in samples]), dtype=dtype, device=device)
                for key in STACK_KEYS}


def stack_samples(samples: Sequence[BodySample], **kwargs) -> dict[str, torch.Tensor]:
    """Function form of :meth:`BodySample.stack`."""
    return BodySample.stack(samples, **kwargs)


def _as_str(value: Any) -> str:
    if isinstance(value, np.ndarray):
        value = value.item()
    if isinstance(value, bytes):
        value = value.decode()
    return str(value)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray | np.generic) and not np.asarray(value).dtype.hasobject:
        return value.tolist()
    raise TypeError(f'meta value of type {type(value).__name__} is not JSON-serialisable')
