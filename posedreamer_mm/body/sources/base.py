"""Shared machinery of pose sources: random access, skip accounting, stable ids and seeds, camera placement.

Frames used here: *canonical* is SMPL-X's own (y up, the body faces +z, x is the body's left); *camera* is
OpenCV (x right, y down, z forward), metres.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
import logging
import os
import os.path as osp
import pickle
import zipfile
from collections.abc import Iterator, Sequence

import numpy as np
from mmengine.logging import print_log

from ..sample import BodySample, validate_sample_id

#: Approximate rest-pose pelvis of the neutral SMPL-X model at zero betas (canonical frame, metres). The pelvis
#: of a posed body lands at ``transl + pelvis_rest`` whatever ``global_orient`` is; betas move it by ~1-2 cm.
SMPLX_NEUTRAL_PELVIS_REST = (0.0031, -0.3512, 0.0121)


class NoValidSamplesError(ValueError):
    """Raised when a source finds files but none of them (or no file at all) is usable."""


#: What reading or validating one bad data file raises (truncated zip, bad JSON or pickle, missing key, wrong
#: shape). Sources skip and count a file on these only, so a programming error (TypeError, AttributeError, ...)
#: surfaces instead of being reported as a bad file.
BAD_FILE_ERRORS: tuple[type[BaseException], ...] = (
    OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, json.JSONDecodeError)


@dataclasses.dataclass
class CameraSpec:
    """A virtual pinhole camera for sources without one, looking straight at the pelvis.

    Attributes:
        focal: Focal length in pixels (one value for fx = fy, or (fx, fy)). 890 px at 1024x1024 is the
            PoseDreamer reference (about 60 degrees field of view).
        img_size: (W, H) pixels.
        princpt: (cx, cy) pixels; ``None`` = image centre.
        distance: Pelvis depth in front of the camera, metres.
        offset: (x, y) pelvis offset from the optical axis in the camera frame, metres.
        pelvis_rest: Rest-pose pelvis used to turn a pelvis position into ``transl`` (see
            :data:`SMPLX_NEUTRAL_PELVIS_REST`).
    """
    focal: float | Sequence[float] = 890.0
    img_size: Sequence[int] = (1024, 1024)
    princpt: Sequence[float] | None = None
    distance: float = 3.0
    offset: Sequence[float] = (0.0, 0.0)
    pelvis_rest: Sequence[float] = SMPLX_NEUTRAL_PELVIS_REST

    @classmethod
    def build(cls, cfg: CameraSpec | dict | None) -> CameraSpec:
        if isinstance(cfg, CameraSpec):
            return cfg
        return cls(**(cfg or {}))

    def focal_xy(self) -> np.ndarray:
        return np.broadcast_to(np.asarray(self.focal, np.float32), (2,)).copy()

    def princpt_xy(self) -> np.ndarray:
        if self.princpt is None:
            return np.asarray(self.img_size, np.float32) / 2
        return np.asarray(self.princpt, np.float32)

    def transl(self, distance: float | None = None, offset: Sequence[float] | None = None) -> np.ndarray:
        """SMPL-X ``transl`` (camera frame, metres) that puts the pelvis at ``(offset_x, offset_y, distance)``."""
        ox, oy = self.offset if offset is None else offset
        pelvis = np.array([ox, oy, self.distance if distance is None else distance], np.float64)
        return (pelvis - np.asarray(self.pelvis_rest, np.float64)).astype(np.float32)

    def apply(self, sample: BodySample) -> BodySample:
        """Sets ``sample``'s camera (focal, princpt, img_size) and pelvis placement in place; returns it."""
        sample.focal, sample.princpt = self.focal_xy(), self.princpt_xy()
        sample.img_size = np.asarray(self.img_size, np.int64)
        sample.transl = self.transl()
        return sample


def stable_digest(text: str, length: int = 10) -> str:
    """Hex digest of ``text`` that is the same on every machine, run and rank (unlike ``hash()``)."""
    return hashlib.sha1(text.encode('utf-8')).hexdigest()[:length]


def stable_seed(*parts: object) -> int:
    """64-bit seed from ``parts`` (e.g. a base seed and a sample id), independent of process and order."""
    text = '\x1f'.join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode('utf-8')).digest()[:8], 'little')


def make_id(source: str, key: str, index: int | None = None) -> str:
    """Stable, filename-safe sample id: ``<source>_<digest of file key>[_<index:06d>]``.

    Args:
        source: Source tag ('amass', 'bedlam', ...).
        key: The file's key (path relative to the data root, or its basename), see :func:`list_source_files`.
        index: Frame or row index inside the file (>= 0).

    Raises:
        ValueError: the result breaks the id rule (``sample.SAMPLE_ID_PATTERN``), e.g. a source tag with ``/``.
    """
    if index is not None and int(index) < 0:
        raise ValueError(f'make_id: index must be >= 0, got {index}')
    base = f'{source}_{stable_digest(key)}'
    return validate_sample_id(base if index is None else f'{base}_{int(index):06d}')


def list_source_files(data_root: str | None, files: str | Sequence[str] | None, patterns: Sequence[str],
                      exclude: Sequence[str] = ()) -> list[tuple[str, str]]:
    """Lists a source's files as ``(path, key)`` sorted by key.

    The key names the file in ids: the path relative to ``data_root`` when given, else the basename (which must
    then be unique), so ids do not depend on where the data is mounted or on listing order.

    Args:
        data_root: Directory searched recursively for ``patterns`` when ``files`` is ``None``; also the base of
            relative ``files``.
        files: Explicit file(s).
        patterns: Glob patterns on file names (``'*.npz'``).
        exclude: Glob patterns on file names to leave out (documented non-sample files).

    Raises:
        FileNotFoundError: ``data_root`` is not a directory, or an explicit file does not exist.
        ValueError: Neither argument given, or basenames collide without ``data_root``.
    """
    if files is None and data_root is None:
        raise ValueError('give data_root (a directory) or files (a list of paths)')
    if files is None:
        if not osp.isdir(data_root):
            raise FileNotFoundError(f'data_root {data_root!r} is not a directory')
        paths = _walk_files(data_root, patterns)
    else:
        files = [files] if isinstance(files, str) else list(files)
        paths = [f if data_root is None or osp.isabs(f) else osp.join(data_root, f) for f in files]
        missing = [p for p in paths if not osp.isfile(p)]
        if missing:
            raise FileNotFoundError(f'source files not found: {missing[:5]}')
    paths = [p for p in paths if not any(fnmatch.fnmatch(osp.basename(p), pat) for pat in exclude)]
    paths = _unique_files(paths)
    if data_root is not None:
        keyed = [(p, osp.relpath(p, data_root).replace(osp.sep, '/')) for p in paths]
    else:
        keyed = [(p, osp.basename(p)) for p in paths]
        keys = [k for _, k in keyed]
        dups = sorted({k for k in keys if keys.count(k) > 1})
        if dups:
            raise ValueError(f'files share basenames {dups[:5]}; pass data_root so ids can use relative paths')
    return sorted(keyed, key=lambda pk: pk[1])


def _walk_files(data_root: str, patterns: Sequence[str]) -> list[str]:
    """Files under ``data_root`` matching ``patterns``, without following directory symlinks.

    A symlinked directory is an alias (``loop -> .`` would repeat the tree forever, ``copy -> ../data`` would
    list every file twice under other ids), so it is not entered; a WARNING names the ones left out.
    """
    found, links = [], []
    for dirpath, dirnames, filenames in os.walk(data_root, followlinks=False):
        links += [osp.join(dirpath, d) for d in dirnames if osp.islink(osp.join(dirpath, d))]
        dirnames.sort()
        found += [osp.join(dirpath, f) for f in sorted(filenames)
                  if any(fnmatch.fnmatch(f, pat) for pat in patterns) and osp.isfile(osp.join(dirpath, f))]
    if links:
        print_log(f'{len(links)} symlinked director{"y" if len(links) == 1 else "ies"} under {data_root} not '
                  f'followed (aliases would repeat data under other ids): {sorted(links)[:5]}', logger='current',
                  level=logging.WARNING)
    return found


def _unique_files(paths: Sequence[str]) -> list[str]:
    """``paths`` with aliases of one file (symlinks, ``a/../a``) reduced to the first in sorted order; warns."""
    seen: dict[str, str] = {}
    dropped = []
    for p in sorted(paths):
        real = osp.realpath(p)
        if real in seen:
            dropped.append(f'{p} (same file as {seen[real]})')
        else:
            seen[real] = p
    if dropped:
        print_log(f'{len(dropped)} file(s) listed twice under other names were dropped: {dropped[:5]}',
                  logger='current', level=logging.WARNING)
    return list(seen.values())


class BodySource:
    """Base of pose sources: a random-access sequence of :class:`BodySample` with skip accounting.

    Subclasses set :attr:`name`, index their files in ``__init__`` (validating them and calling :meth:`skip` for
    each bad one), and implement ``__len__`` and :meth:`_get`.

    Attributes:
        skipped: ``(file, reason)`` of every skipped file (or group of rows/frames inside a file).
    """
    name = 'source'

    def __init__(self):
        self.skipped: list[tuple[str, str]] = []

    def __len__(self) -> int:
        raise NotImplementedError

    def _get(self, index: int) -> BodySample:
        raise NotImplementedError

    def __getitem__(self, index: int) -> BodySample:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f'{type(self).__name__} index {index} out of range for {n} samples')
        return self._get(index % n)

    def __iter__(self) -> Iterator[BodySample]:
        for i in range(len(self)):
            yield self[i]

    def skip(self, file: str, reason: str) -> None:
        """Records and logs (WARNING) one skipped file or part of a file."""
        self.skipped.append((file, reason))
        print_log(f'{type(self).__name__}: skipped {file}: {reason}', logger='current', level=logging.WARNING)

    def warn(self, message: str) -> None:
        """Logs (WARNING) a problem that does not drop data (e.g. a suspicious configuration)."""
        print_log(f'{type(self).__name__}: {message}', logger='current', level=logging.WARNING)

    def summary(self) -> str:
        """One line: how many samples were loaded and what was skipped."""
        line = f'{type(self).__name__}: {len(self)} samples'
        if not self.skipped:
            return line + ', nothing skipped'
        shown = '; '.join(f'{osp.basename(f)} ({r})' for f, r in self.skipped[:3])
        more = f'; ... {len(self.skipped) - 3} more' if len(self.skipped) > 3 else ''
        return f'{line}, skipped {len(self.skipped)}: {shown}{more}'

    def _finish(self, where: str, expected: str) -> None:
        """Raises if nothing usable was found, else logs the summary (INFO)."""
        if len(self) == 0:
            reasons = '; '.join(f'{f}: {r}' for f, r in self.skipped[:5]) or 'no matching files'
            raise NoValidSamplesError(f'{type(self).__name__}: no valid samples in {where}; expected {expected}. '
                                      f'Skipped {len(self.skipped)}: {reasons}')
        print_log(self.summary(), logger='current', level=logging.INFO)


def check_array(data: dict, key: str, shape: Sequence[int | None]) -> np.ndarray:
    """Returns ``data[key]`` as float32 if it has ``shape`` (``None`` = any size), else raises ``ValueError``."""
    if key not in data:
        raise ValueError(f'missing key {key!r}')
    value = np.asarray(data[key])
    if value.ndim != len(shape) or any(s is not None and s != v for s, v in zip(shape, value.shape)):
        want = tuple('N' if s is None else s for s in shape)
        raise ValueError(f'key {key!r} has shape {value.shape}, expected {want}')
    if not np.issubdtype(value.dtype, np.number):
        raise ValueError(f'key {key!r} has non-numeric dtype {value.dtype}')
    return value.astype(np.float32)


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickles what ``np.save`` writes for an object array of plain values (str, bytes, numbers, lists, nested
    arrays) and refuses every other global, so no code from the file runs."""
    _ALLOWED = {('numpy._core.multiarray', '_reconstruct'), ('numpy.core.multiarray', '_reconstruct'),
                ('numpy._core.multiarray', 'scalar'), ('numpy.core.multiarray', 'scalar'),
                ('numpy', 'ndarray'), ('numpy', 'dtype')}

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f'refusing to load {module}.{name} (only plain numpy object arrays)')
        return super().find_class(module, name)


def read_npz_key(npz: np.lib.npyio.NpzFile, key: str) -> np.ndarray:
    """One array of an npz opened with ``allow_pickle=False``, read lazily (other keys are never touched).

    An object array (what ``np.savez`` makes of a Python string or a ragged list) is decoded by a restricted
    unpickler that only rebuilds numpy arrays of plain values.

    Raises:
        ValueError: ``key`` is missing, or cannot be read (the message names the key).
    """
    if key not in npz.files:
        raise ValueError(f'missing key {key!r}')
    try:
        return npz[key]
    except ValueError as err:
        if 'allow_pickle' not in str(err):
            raise ValueError(f'key {key!r} cannot be read: {err}') from err
    try:
        with npz.zip.open(f'{key}.npy') as fh:
            version = np.lib.format.read_magic(fh)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) \
                else np.lib.format.read_array_header_2_0
            read_header(fh)
            value = _ArrayOnlyUnpickler(fh).load()
    except (pickle.UnpicklingError, EOFError, OSError, ValueError, zipfile.BadZipFile) as err:
        raise ValueError(f'key {key!r} is an object array that cannot be read without running pickled code: '
                         f'{err}') from err
    return np.asarray(value)


def describe_error(err: Exception) -> str:
    """Why a file was skipped: our own ``ValueError`` messages as is, anything else (truncated zip, bad pickle)
    as 'unreadable (<type>: <message>)'."""
    if type(err) is ValueError:
        return str(err)
    return f'unreadable ({type(err).__name__}: {err})'


def describe_location(data_root: str | None, files: str | Sequence[str] | None) -> str:
    """Names where a source looked, for its errors."""
    if files is None:
        return f'directory {data_root!r}'
    files = [files] if isinstance(files, str) else list(files)
    return f'{len(files)} given file(s) {files[:3]}' + (f' under {data_root!r}' if data_root else '')


def decode_str(value: object) -> str:
    """A python string from the str / bytes / 0-d array forms npz files store strings in."""
    if isinstance(value, np.ndarray):
        value = value.item() if value.size == 1 else value.tolist()
    if isinstance(value, bytes):
        value = value.decode()
    return str(value)
