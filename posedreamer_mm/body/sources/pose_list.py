"""A pose list: chosen SMPL-X records in one npz (what ``tools/mine_hard.py`` writes), read back as a pose source.

Format (``write_pose_list``; uncompressed ``np.savez``, no pickles), N rows:

================================================ ================ =============================================
key                                              shape            meaning
================================================ ================ =============================================
``id``, ``source``, ``gender``                   (N,) unicode     the pool sample's id, source tag, body model
``betas``                                        (N, B) float32   the pool's betas count
``expression``, ``global_orient``, ``body_pose`` (N, 10/3/63)     camera-frame root, axis-angle
``left_hand_pose``, ``right_hand_pose``          (N, 45)          flat-hand relative
``jaw_pose``, ``leye_pose``, ``reye_pose``       (N, 3)
``transl``, ``focal``, ``princpt``, ``img_size`` (N, 3/2/2/2)     the pool sample's camera placement
``meta_json``                                    (N,) unicode     the pool sample's ``meta`` (arrays as lists)
``column.<name>``                                (N,)             extra per-row values (``predicted``, ``rank``,
                                                                  ``pool_index``)
``info_json``                                    () unicode       ``format``, ``version`` and the writer's record
================================================ ================ =============================================
"""
from __future__ import annotations

import json
import os
import os.path as osp
from collections.abc import Mapping, Sequence

import numpy as np

from posedreamer_mm.registry import POSE_SOURCES

from ..sample import FIELD_SHAPES, BodySample, validate_sample_id
from .base import BodySource, CameraSpec, NoValidSamplesError

POSE_LIST_FORMAT = 'posedreamer_mm.pose_list'
POSE_LIST_VERSION = 1
#: Float fields of a row and their trailing shape (``betas``: any count, one per file).
_FLOAT_FIELDS = {'betas': None, **{k: v for k, v in FIELD_SHAPES.items()}}
_STR_FIELDS = ('id', 'source', 'gender')
_COLUMN = 'column.'


def _json_default(value):
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    raise TypeError(f'{type(value).__name__} is not JSON-serialisable')


def write_pose_list(path: str | os.PathLike, samples: Sequence[BodySample],
                    columns: Mapping[str, np.ndarray] | None = None, info: Mapping | None = None) -> str:
    """Writes ``samples`` (in order) to ``path`` atomically.

    Args:
        path: Output ``.npz``.
        samples: Records sharing one betas count, unique ids.
        columns: Extra ``(N,)`` numeric values stored as ``column.<name>``.
        info: JSON-able record of how the list was made (stored in ``info_json``).

    Raises:
        ValueError: no samples, duplicate ids, mixed betas counts or a column of the wrong length.
    """
    from posedreamer_mm.utils.fileio import atomic_write
    if not samples:
        raise ValueError(f'{path}: a pose list needs at least one sample')
    ids = [s.validate().id for s in samples]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f'{path}: duplicate id {dup!r} in the pose list')
    if len({s.num_betas for s in samples}) != 1:
        raise ValueError(f'{path}: samples have different betas counts {sorted({s.num_betas for s in samples})}')
    data: dict[str, np.ndarray] = {k: np.array([str(getattr(s, k)) for s in samples]) for k in _STR_FIELDS}
    for key in _FLOAT_FIELDS:
        data[key] = np.stack([getattr(s, key) for s in samples]).astype(np.float32)
    data['img_size'] = np.stack([s.img_size for s in samples]).astype(np.int64)
    data['meta_json'] = np.array([json.dumps(s.meta, sort_keys=True, default=_json_default) for s in samples])
    for name, value in (columns or {}).items():
        value = np.asarray(value)
        if value.shape != (len(samples),):
            raise ValueError(f'{path}: column {name!r} has shape {value.shape}, expected ({len(samples)},)')
        data[_COLUMN + name] = value
    data['info_json'] = np.array(json.dumps(dict(format=POSE_LIST_FORMAT, version=POSE_LIST_VERSION,
                                                 **dict(info or {})), default=_json_default))
    with atomic_write(path, 'wb') as f:
        np.savez(f, **data)
    return os.fspath(path)


def read_pose_list(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict]:
    """The arrays and the ``info`` of a pose list, checked.

    Raises:
        FileNotFoundError: no such file.
        ValueError: naming ``path`` and the key: not a pose list, a missing key, a wrong shape, NaN/inf.
    """
    path = os.fspath(path)
    if not osp.isfile(path):
        raise FileNotFoundError(f'pose list {path} not found')
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError) as err:
        raise ValueError(f'{path} is not a readable pose list npz ({type(err).__name__}: {err})') from err
    try:
        info = json.loads(str(data['info_json']))
    except (KeyError, json.JSONDecodeError):
        info = None
    if not isinstance(info, dict) or info.get('format') != POSE_LIST_FORMAT:
        raise ValueError(f'{path} is not a pose list (no info_json with format {POSE_LIST_FORMAT!r}; '
                         'tools/mine_hard.py writes them)')
    n = len(data.get('id', ()))
    for key, shape in (*((k, None) for k in _STR_FIELDS), *_FLOAT_FIELDS.items(), ('img_size', (2,)),
                       ('meta_json', None)):
        if key not in data:
            raise ValueError(f'{path}: missing key {key!r}')
        value = data[key]
        want = (n, *(shape or ())) if key != 'betas' else (n, value.shape[-1] if value.ndim == 2 else -1)
        if value.shape != want:
            raise ValueError(f'{path}: key {key!r} has shape {value.shape}, expected {want}')
        if value.dtype.kind == 'f' and not np.isfinite(value).all():
            raise ValueError(f'{path}: key {key!r} contains NaN or inf')
    return data, info


@POSE_SOURCES.register_module()
class PoseListSource(BodySource):
    """The rows of a pose list (``tools/mine_hard.py``'s ``hard_poses.npz``), in file order.

    Each sample is the pool sample as it was selected: same id, SMPL-X parameters, gender and camera placement;
    ``meta`` is the pool sample's plus ``pose_list`` (``file``, ``row`` and the file's extra columns, e.g. the
    predicted OKS). Wrap it in ``AugmentedSource`` to draw new views, shapes or cameras (docs/mining.md).

    Args:
        file: The ``.npz``.
        camera: :class:`CameraSpec` or its kwargs to place every body again; ``None`` keeps the stored camera.
        num_betas: Truncate or zero-pad the betas; ``None`` keeps the file's count.

    Raises:
        FileNotFoundError: no such file.
        NoValidSamplesError: the file is not a readable pose list (naming the file, the key and the problem), or
            has no rows.
    """
    name = 'pose_list'

    def __init__(self, file: str, camera: CameraSpec | dict | None = None, num_betas: int | None = None):
        super().__init__()
        try:
            self._data, self.info = read_pose_list(file)
            ids = [validate_sample_id(i) for i in self._data['id'].tolist()]
        except ValueError as err:
            raise NoValidSamplesError(f'PoseListSource: {err}') from err
        if len(set(ids)) != len(ids):
            raise NoValidSamplesError(f'PoseListSource: {file} holds duplicate ids')
        if num_betas is not None and num_betas < 1:
            raise ValueError(f'num_betas must be >= 1 or None, got {num_betas}')
        self.file, self.num_betas = os.fspath(file), num_betas
        self.camera = None if camera is None else CameraSpec.build(camera)
        self._columns = [k for k in self._data if k.startswith(_COLUMN)]
        self._finish(f'file {self.file!r}', 'a pose list written by tools/mine_hard.py')

    def __len__(self) -> int:
        return len(self._data['id'])

    def _get(self, index: int) -> BodySample:
        d = self._data
        meta = json.loads(str(d['meta_json'][index]))
        meta['pose_list'] = dict(file=osp.basename(self.file), row=index,
                                 **{k[len(_COLUMN):]: d[k][index].item() for k in self._columns})
        betas = d['betas'][index]
        if self.num_betas is not None:
            betas = np.pad(betas[:self.num_betas], (0, max(0, self.num_betas - len(betas))))
        sample = BodySample(id=str(d['id'][index]), source=str(d['source'][index]), gender=str(d['gender'][index]),
                            betas=betas, img_size=d['img_size'][index], meta=meta,
                            **{k: d[k][index] for k in _FLOAT_FIELDS if k != 'betas'})
        return sample if self.camera is None else self.camera.apply(sample)
