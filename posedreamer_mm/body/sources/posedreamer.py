"""PoseDreamer per-sample label files as samples.

One label file per generated image (npz; pickle and JSON are read too), already in the camera frame, with the
keys the PoseDreamer release and this project's writer use.
"""
from __future__ import annotations

import json
import os.path as osp
import pickle
from collections.abc import Sequence

import numpy as np

from posedreamer_mm.registry import POSE_SOURCES

from ..sample import BodySample, validate_sample_id
from .base import BAD_FILE_ERRORS, BodySource, decode_str, describe_error, describe_location, list_source_files, make_id

#: Required keys and shapes (a leading batch axis of size 1 is squeezed first; ``focal`` may be a scalar).
REQUIRED = {'betas': (None,), 'global_orient': (3,), 'body_pose': (63,), 'transl': (3,), 'focal': (2,),
            'princpt': (2,), 'img_shape': (None,)}
#: Optional parameters, zero when absent.
OPTIONAL = {'jaw_pose': (3,), 'leye_pose': (3,), 'reye_pose': (3,), 'left_hand_pose': (45,),
            'right_hand_pose': (45,), 'expression': (10,)}
#: Optional derived fields copied into the record.
DERIVED = {'bbox': (4,), 'joints_3d': (None, 3), 'joints_2d': (None, None), 'keypoints_coco17': (17, 3)}
#: Optional arrays kept in ``meta``.
META_ARRAYS = ('markers_3d', 'markers_2d')
_PATTERNS = ('*.npz', '*.pkl', '*.json')
_EXPECTED = ('PoseDreamer label files ({}) with keys ' + ', '.join(f'{k} {s}' for k, s in REQUIRED.items())
             + '; optional ' + ', '.join(OPTIONAL) + ', ' + ', '.join(DERIVED) + ', ' + ', '.join(META_ARRAYS))


def read_label_file(path: str) -> dict:
    """Reads one label file into a dict (npz without pickles; ``.pkl`` only for trusted, local files)."""
    ext = osp.splitext(path)[1].lower()
    if ext == '.npz':
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    if ext == '.pkl':
        with open(path, 'rb') as f:
            data = pickle.load(f)
    elif ext == '.json':
        with open(path) as f:
            data = json.load(f)
    else:
        raise ValueError(f'unsupported label file extension {ext!r}')
    if not isinstance(data, dict):
        raise ValueError(f'label file holds a {type(data).__name__}, expected a dict')
    return data


def _shaped(data: dict, key: str, shape: tuple[int | None, ...]) -> np.ndarray:
    value = np.asarray(data[key])
    if not np.issubdtype(value.dtype, np.number):
        raise ValueError(f'key {key!r} has non-numeric dtype {value.dtype}')
    if key == 'focal' and value.size == 1:
        value = np.repeat(value.reshape(1), 2)
    while value.ndim > len(shape) and value.shape[0] == 1:
        value = value[0]
    if value.ndim != len(shape) or any(s is not None and s != v for s, v in zip(shape, value.shape)):
        want = tuple('N' if s is None else s for s in shape)
        raise ValueError(f'key {key!r} has shape {value.shape}, expected {want}')
    return value.astype(np.float32)


def parse_label(data: dict, key: str, source: str = 'posedreamer') -> BodySample:
    """Turns one label dict into a validated :class:`BodySample`.

    Args:
        data: The file's content.
        key: The file's key (relative path or basename), used for the id when the file has no ``id``.
        source: Source tag of the record.

    Raises:
        ValueError: A required key is missing or a value has the wrong shape or is not finite.
    """
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise ValueError(f'missing key(s) {missing}')
    params = {k: _shaped(data, k, s) for k, s in {**REQUIRED, **OPTIONAL}.items() if k in data}
    for k, value in params.items():
        if not np.isfinite(value).all():
            raise ValueError(f'key {k!r} contains NaN or inf')
    img_shape = params.pop('img_shape')
    if len(img_shape) < 2:
        raise ValueError(f"key 'img_shape' must be (H, W[, C]), got {img_shape}")
    derived = {k: _shaped(data, k, s) for k, s in DERIVED.items() if k in data and data[k] is not None}
    meta: dict = {'file': key}
    if 'joints_2d' in derived and derived['joints_2d'].shape[1] > 2:
        meta['joints_2d_conf'] = derived['joints_2d'][:, 2].copy()
        derived['joints_2d'] = derived['joints_2d'][:, :2]
    for k in META_ARRAYS:
        if k in data and data[k] is not None:
            meta[k] = np.asarray(data[k], np.float32)
    # An id read from a file becomes a file name downstream: it must pass the id rule, or the file is skipped.
    sample_id = validate_sample_id(decode_str(data['id'])) if 'id' in data else make_id(source, key)
    gender = decode_str(data['gender']) if 'gender' in data else 'neutral'
    return BodySample(id=sample_id, img_size=(int(img_shape[1]), int(img_shape[0])), gender=gender,
                      source=source, meta=meta, **params, **derived).validate()


@POSE_SOURCES.register_module()
class PoseDreamerLabelSource(BodySource):
    """PoseDreamer label files, one sample per file.

    ``global_orient``/``transl`` are camera-frame, ``img_shape`` is (H, W) and becomes ``img_size`` (W, H).
    Every file is parsed once when the source is built (bad ones skipped and counted) and again on access.

    Args:
        label_dir: Directory searched recursively for ``patterns``; ids use paths relative to it unless a file
            stores its own ``id``.
        files: Explicit files instead of a directory search.
        patterns: File-name globs.
    """
    name = 'posedreamer'

    def __init__(self, label_dir: str | None = None, files: str | Sequence[str] | None = None,
                 patterns: Sequence[str] = _PATTERNS):
        super().__init__()
        self._files: list[tuple[str, str]] = []
        seen: dict[str, str] = {}
        for path, key in list_source_files(label_dir, files, patterns):
            try:
                sample = parse_label(read_label_file(path), key, self.name)
            except BAD_FILE_ERRORS + (ImportError,) as err:  # a bad file is skipped and counted, never fatal;
                # ImportError: a .pkl that references a module this environment lacks.
                self.skip(path, describe_error(err))
                continue
            if sample.id in seen:
                self.skip(path, f'duplicate id {sample.id!r} (also in {seen[sample.id]})')
                continue
            seen[sample.id] = path
            self._files.append((path, key))
        self._finish(describe_location(label_dir, files), _EXPECTED.format(', '.join(patterns)))

    def __len__(self) -> int:
        return len(self._files)

    def _get(self, index: int) -> BodySample:
        path, key = self._files[index]
        return parse_label(read_label_file(path), key, self.name)
