"""Random access to a generated dataset (format: docs/dataset_format.md; contract: docs/conventions.md).

::

    reader = GeneratedDataReader('outputs/demo')
    len(reader), reader.ids[:3], reader.index_of('procedural_...')
    sample = reader.sample(0)          # BodySample, crop-frame camera: the labels of reader.load_image(0)
    img = reader.load_image(0)         # (H, W, 3) uint8 RGB
    reader.meta(0)                     # id, seed, prompt, backend, scores, ...
    reader.verify()                    # every checksum of shard.json, rows and ids (also tools/verify_dataset.py)

Only committed shards are visible: a shard still being written (or left by a killed run) lives in a temporary
directory the reader never lists, and a shard folder without its ``shard.json`` (an interrupted copy) is skipped
with a warning. Labels are memory-mapped from each shard's uncompressed ``labels.npz``, so ``sample(i)`` reads one
row, not the shard; a reader pickles without its maps (DataLoader workers reopen them).

Rows of ``meta.jsonl`` and of ``labels.npz`` must line up: the reader checks that each line's ``row`` is its
position when it opens the dataset, and that a shard's label ids equal its metadata ids the first time it maps
that shard's labels, so an image is never paired with another sample's labels. Every parse error names the file.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import os
import os.path as osp
import struct
import warnings
import zipfile
from collections.abc import Callable

import cv2
import numpy as np

from posedreamer_mm.body.sample import BodySample
from posedreamer_mm.utils.fileio import file_sha256, safe_join

from .writer import LABELS, META, SHARD_INFO, SHARDS_DIR, read_manifest, shard_name

_LOCAL_HEADER = struct.Struct('<4s5H3I2H')  # zip local file header: signature ... name length, extra length


def memmap_npz(path: str) -> dict[str, np.ndarray]:
    """Read-only memory maps of every array in an uncompressed ``.npz`` (what ``np.savez`` writes).

    Raises:
        ValueError: naming the file when it is compressed, holds object arrays or is not an npz.
    """
    out = {}
    try:
        with zipfile.ZipFile(path) as zf, open(path, 'rb') as fh:
            for info in zf.infolist():
                if info.compress_type != zipfile.ZIP_STORED:
                    raise ValueError(f'{path}: member {info.filename} is compressed; labels.npz must be written '
                                     'with np.savez (stored)')
                fh.seek(info.header_offset)
                fields = _LOCAL_HEADER.unpack(fh.read(_LOCAL_HEADER.size))
                fh.seek(info.header_offset + _LOCAL_HEADER.size + fields[-2] + fields[-1])
                version = np.lib.format.read_magic(fh)
                shape, fortran, dtype = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                         else np.lib.format.read_array_header_2_0)(fh)
                if dtype.hasobject:
                    raise ValueError(f'{path}: member {info.filename} is an object array (refused: no pickles)')
                key = info.filename[:-4] if info.filename.endswith('.npy') else info.filename
                if int(np.prod(shape)) == 0:
                    out[key] = np.zeros(shape, dtype)
                else:
                    out[key] = np.memmap(path, dtype=dtype, mode='r', offset=fh.tell(), shape=shape,
                                         order='F' if fortran else 'C')
    except (zipfile.BadZipFile, struct.error, OSError) as err:
        raise ValueError(f'{path} is not a readable labels.npz ({type(err).__name__}: {err})') from err
    return out


class DatasetIntegrityError(ValueError):
    """A shard's files disagree with each other or with their checksums; the message names the file."""


def read_meta(path: str) -> list[tuple[str, dict]]:
    """``(line, record)`` for every line of a ``meta.jsonl``, checked: valid JSON objects with an ``id``, and
    ``row`` equal to the line's position.

    Raises:
        DatasetIntegrityError: naming the file, the line and, for rows out of line, the first mismatching id.
    """
    try:
        with open(path, encoding='utf-8') as f:
            lines = [line for line in f.read().splitlines() if line]
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetIntegrityError(f'cannot read {path}: {err}') from err
    out = []
    for r, line in enumerate(lines):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as err:
            raise DatasetIntegrityError(
                f'{path}, line {r + 1}: not valid JSON ({err.msg} at column {err.colno}); the file is truncated or '
                'damaged (tools/verify_dataset.py checks every shard; delete the shard folder and re-run the same '
                'generate command to regenerate it)') from None
        if not isinstance(rec, dict) or not isinstance(rec.get('id'), str):
            raise DatasetIntegrityError(f'{path}, line {r + 1}: expected a JSON object with a string "id", got '
                                        f'{line[:80]!r}')
        if rec.get('row', r) != r:
            raise DatasetIntegrityError(
                f'{path}, line {r + 1}: id {rec["id"]!r} says row {rec["row"]}, expected row {r}: a line is missing or '
                f'out of order, so its rows no longer line up with {LABELS} (the first mismatching id is '
                f'{rec["id"]!r})')
        out.append((line, rec))
    return out


def check_label_ids(meta_ids: list[str], label_ids, meta_path: str, labels_path: str) -> None:
    """Raises :class:`DatasetIntegrityError` unless ``labels.npz``'s ``id`` column equals the metadata's ids."""
    label_ids = [str(x) for x in np.asarray(label_ids).reshape(-1)]
    for r, (a, b) in enumerate(zip(meta_ids, label_ids)):
        if a != b:
            raise DatasetIntegrityError(f'row {r}: {meta_path} has id {a!r} but {labels_path} has id {b!r} (first '
                                        'mismatching id); the two files do not describe the same samples')
    if len(meta_ids) != len(label_ids):
        longer = max(meta_ids, label_ids, key=len)
        raise DatasetIntegrityError(f'{meta_path} has {len(meta_ids)} rows but {labels_path} has {len(label_ids)}; the '
                                    f'first unmatched id is {longer[min(len(meta_ids), len(label_ids))]!r}')


@dataclasses.dataclass
class ShardCheck:
    """What :func:`verify_shard` found: ``problems`` is empty for a good shard."""

    name: str
    problems: list[str] = dataclasses.field(default_factory=list)
    samples: int = 0
    files: int = 0
    bytes: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def _few(items: list, n: int = 5) -> str:
    return f'{items[:n]}{f" (+{len(items) - n} more)" if len(items) > n else ""}'


def verify_shard(root: str, name: str, manifest: dict | None = None) -> ShardCheck:
    """Checks one committed shard completely: every sha256 in ``shard.json`` (streamed, 1 MiB blocks), no unlisted
    files, counts and index coverage, ``meta.jsonl`` rows, label ids and row counts, image paths, and the
    manifest's record of the shard (when ``manifest`` lists it).

    Returns:
        The result; each problem names its file.
    """
    check = ShardCheck(name)
    folder = osp.join(root, SHARDS_DIR, name)
    info_path = osp.join(folder, SHARD_INFO)
    problems = check.problems
    try:
        with open(info_path) as f:
            info = json.load(f)
        files, written = dict(info['files']), int(info['written'])
        start, stop = info['indices']
        dropped, failed = list(info['dropped']), list(info['failed'])
    except FileNotFoundError:
        problems.append(f'{info_path} is missing: an incomplete shard folder (a re-run regenerates it)')
        return check
    except (OSError, ValueError, KeyError, TypeError) as err:
        problems.append(f'{info_path} is unreadable or incomplete ({type(err).__name__}: {err})')
        return check
    if info.get('shard') != int(name):
        problems.append(f'{info_path} describes shard {info.get("shard")}, but its folder is {name}')
    if manifest is not None:
        size, total = manifest.get('writer', {}).get('shard_size'), manifest.get('num_samples')
        if size is not None and total is not None and [start, stop] != [int(name) * size,
                                                                        min((int(name) + 1) * size, total)]:
            problems.append(f'{info_path}: indices [{start}, {stop}) are not shard {name} of the manifest\'s plan '
                            f'({size} per shard, {total} samples)')
    # Every listed file, hashed; nothing unlisted.
    missing, corrupt = [], []
    for rel, digest in sorted(files.items()):
        try:
            path = safe_join(folder, *rel.split('/'))
        except ValueError as err:
            problems.append(f'{info_path}: listed path {rel!r} is not inside the shard ({err})')
            continue
        if not osp.isfile(path):
            missing.append(rel)
            continue
        check.files += 1
        check.bytes += osp.getsize(path)
        if file_sha256(path) != digest:
            corrupt.append(rel)
    if missing:
        problems.append(f'{folder}: {len(missing)} listed files are missing: {_few(missing)}')
    if corrupt:
        problems.append(f'{folder}: {len(corrupt)} files do not match their sha256 in {SHARD_INFO}: {_few(corrupt)}')
    present = []
    for dirpath, _, names in os.walk(folder):
        rel_dir = osp.relpath(dirpath, folder)
        present += [n if rel_dir == '.' else f'{rel_dir}/{n}'.replace(os.sep, '/') for n in names]
    extra = sorted(set(present) - set(files) - {SHARD_INFO})
    if extra:
        problems.append(f'{folder}: {len(extra)} files are not listed in {SHARD_INFO}: {_few(extra)}')
    # Counts and index coverage.
    meta_path, labels_path = osp.join(folder, META), osp.join(folder, LABELS)
    try:
        records = [rec for _, rec in read_meta(meta_path)]
    except DatasetIntegrityError as err:
        problems.append(str(err))
        return check
    check.samples = len(records)
    if len(records) != written:
        problems.append(f'{meta_path} has {len(records)} rows, {info_path} says {written} were written')
    indices = sorted([int(r.get('index', -1)) for r in records] + [int(d['index']) for d in dropped + failed])
    if indices != list(range(start, stop)):
        problems.append(f'{folder}: written, dropped and failed indices do not cover [{start}, {stop}) once each')
    ids = [r['id'] for r in records]
    for rec in records:
        for rel in [rec.get('image'), *dict(rec.get('controls') or {}).values()]:
            prefix = f'{SHARDS_DIR}/{name}/'
            if not isinstance(rel, str) or not rel.startswith(prefix) or rel[len(prefix):] not in files:
                problems.append(f'{meta_path}: id {rec["id"]!r} points at {rel!r}, which is not a file of this shard')
                break
    # Labels line up with the metadata.
    if written or osp.exists(labels_path):
        try:
            labels = memmap_npz(labels_path)
            check_label_ids(ids, labels.get('id', []), meta_path, labels_path)
            wrong = sorted(k for k, v in labels.items() if v.shape[:1] != (len(ids),))
            if wrong:
                problems.append(f'{labels_path}: arrays {wrong} do not have {len(ids)} rows')
        except (ValueError, OSError) as err:
            problems.append(str(err))
    # The manifest's record of the shard.
    listed = {s.get('name'): s for s in (manifest or {}).get('shards', [])}
    if name in listed:
        entry = listed[name]
        if entry.get('shard_json_sha256') != file_sha256(info_path):
            problems.append(f'{info_path} does not match its sha256 in {osp.join(root, "manifest.json")}')
        if entry.get('written') != written:
            problems.append(f'manifest.json says shard {name} has {entry.get("written")} samples, {SHARD_INFO} '
                            f'says {written}')
    return check


def dataset_problems(root: str, manifest: dict) -> list[str]:
    """Problems of the dataset as a whole (each shard folder is :func:`verify_shard`'s): shards the manifest lists
    that are gone, and a ``complete`` status with shards of the plan missing."""
    shards_dir = osp.join(root, SHARDS_DIR)
    names = set(n for n in os.listdir(shards_dir) if n.isdigit()) if osp.isdir(shards_dir) else set()
    problems = []
    gone = sorted({s.get('name') for s in manifest.get('shards', [])} - names)
    if gone:
        problems.append(f'{osp.join(root, "manifest.json")} lists shards that are not there: {_few(gone)}')
    if manifest.get('status') == 'complete':
        size, total = manifest.get('writer', {}).get('shard_size'), manifest.get('num_samples')
        if size and total is not None:
            absent = sorted({shard_name(s) for s in range(-(-total // size))} - names - set(gone))
            if absent:
                problems.append(f'{osp.join(root, "manifest.json")} says complete but shards {_few(absent)} of its '
                                'plan are missing')
    return problems


class GeneratedDataReader:
    """Random access to the committed samples of a generated dataset, in shard then row order.

    Args:
        root: The generator's output directory (with ``manifest.json``).
        cache_shards: How many shards' label maps to keep open.
        verify: Check every shard completely before use (:meth:`verify`: every sha256 of ``shard.json``, rows,
            ids); slow for large datasets (it reads every byte), ``tools/verify_dataset.py`` does it in threads.

    Raises:
        posedreamer_mm.generation.writer.OutputConflictError: ``root`` is no generated dataset.
        DatasetIntegrityError: a shard's metadata is unreadable, its rows are out of line, two samples share an
            id, or (``verify=True``) any check fails; the message names the files.
    """

    def __init__(self, root: str | os.PathLike, cache_shards: int = 16, verify: bool = False) -> None:
        self.root = osp.abspath(os.fspath(root))
        self.manifest = read_manifest(self.root)
        self.cache_shards = int(cache_shards)
        shards_dir = osp.join(self.root, SHARDS_DIR)
        names = sorted(n for n in os.listdir(shards_dir) if n.isdigit()) if osp.isdir(shards_dir) else []
        self.shards: list[str] = []
        self._loc: list[tuple[int, int]] = []
        self._meta: list[str] = []
        self.ids: list[str] = []
        self._shard_ids: list[tuple[int, int]] = []  # per shard: its rows [start, stop) in self.ids
        incomplete = []
        for name in names:
            if not osp.isfile(osp.join(shards_dir, name, SHARD_INFO)):
                incomplete.append(name)  # not a committed shard (a committed shard always has its shard.json)
                continue
            rows = read_meta(osp.join(shards_dir, name, META))
            pos = len(self.shards)
            self.shards.append(name)
            self._loc += [(pos, row) for row in range(len(rows))]
            self._shard_ids.append((len(self.ids), len(self.ids) + len(rows)))
            self._meta += [line for line, _ in rows]
            self.ids += [rec['id'] for _, rec in rows]
        if incomplete:
            warnings.warn(f'{shards_dir}: shard folders without {SHARD_INFO} are skipped (incomplete; a re-run of the '
                          f'generate command regenerates them): {_few(incomplete)}', stacklevel=2)
        self._index = {sid: i for i, sid in enumerate(self.ids)}
        if len(self._index) != len(self.ids):
            dup = [s for s, n in collections.Counter(self.ids).items() if n > 1][:5]
            raise DatasetIntegrityError(f'{self.root}: sample ids {dup} occur in more than one row; the dataset is '
                                        'corrupt')
        self._labels: collections.OrderedDict[int, dict[str, np.ndarray]] = collections.OrderedDict()
        if verify:
            bad = [c for c in self.verify() if not c.ok]
            if bad:
                raise DatasetIntegrityError(f'{self.root}: {len(bad)} of {len(self.shards)} shards failed '
                                            f'verification: ' + '; '.join(p for c in bad[:3] for p in c.problems[:2]))

    def verify(self, callback: Callable[[ShardCheck], None] | None = None) -> list[ShardCheck]:
        """Checks every visible shard with :func:`verify_shard` (``callback`` is called after each)."""
        out = []
        for name in self.shards:
            out.append(verify_shard(self.root, name, self.manifest))
            if callback is not None:
                callback(out[-1])
        return out

    def __len__(self) -> int:
        return len(self.ids)

    def index_of(self, sample_id: str) -> int:
        """Row of ``sample_id``; ``KeyError`` naming the id if it is not in the dataset."""
        try:
            return self._index[sample_id]
        except KeyError:
            raise KeyError(f'sample id {sample_id!r} is not in {self.root}') from None

    def _check(self, i: int) -> int:
        if not -len(self) <= i < len(self):
            raise IndexError(f'index {i} out of range for {len(self)} samples in {self.root}')
        return i % len(self)

    def _labels_path(self, pos: int) -> str:
        return osp.join(self.root, SHARDS_DIR, self.shards[pos], LABELS)

    def _shard_labels(self, pos: int) -> dict[str, np.ndarray]:
        labels = self._labels.get(pos)
        if labels is None:
            path = self._labels_path(pos)
            labels = memmap_npz(path)
            start, stop = self._shard_ids[pos]
            check_label_ids(self.ids[start:stop], labels.get('id', []),
                            osp.join(self.root, SHARDS_DIR, self.shards[pos], META), path)
            self._labels[pos] = labels
            while len(self._labels) > self.cache_shards:
                self._labels.popitem(last=False)
        else:
            self._labels.move_to_end(pos)
        return labels

    def sample(self, i: int) -> BodySample:
        """The label of row ``i``: SMPL-X parameters and the crop camera of its image, with derived fields."""
        pos, row = self._loc[self._check(i)]
        labels = self._shard_labels(pos)
        try:
            return BodySample.from_dict({k: np.array(v[row]) for k, v in labels.items()})
        except (ValueError, TypeError, KeyError) as err:
            raise DatasetIntegrityError(f'{self._labels_path(pos)}, row {row}: not a BodySample ({err})') from err

    def meta(self, i: int) -> dict:
        """Row ``i``'s metadata (id, index, seed, prompt, negative_prompt, prompt_attributes, backend,
        control_types, scores, image and control paths relative to the root, row) plus the run's
        ``backend_record`` (steps, guidance, weights...) from the manifest."""
        out = json.loads(self._meta[self._check(i)])
        out['backend_record'] = self.manifest.get('backend_record', {})
        return out

    def image_path(self, i: int) -> str:
        return safe_join(self.root, *json.loads(self._meta[self._check(i)])['image'].split('/'))

    def load_image(self, i: int) -> np.ndarray:
        """Row ``i``'s image, ``(H, W, 3)`` uint8 RGB."""
        path = self.image_path(i)
        img = cv2.imread(path, cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError(f'cannot read image {path} (missing or corrupt)')
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)

    def control_path(self, i: int, control_type: str) -> str:
        """Path of row ``i``'s ``control_type`` image; ``KeyError`` if the dataset did not store it."""
        controls = json.loads(self._meta[self._check(i)])['controls']
        if control_type not in controls:
            raise KeyError(f'sample {self.ids[i]!r} has no stored {control_type!r} control (stored: '
                           f'{sorted(controls)}; the writer had save_controls=False?)')
        return safe_join(self.root, *controls[control_type].split('/'))

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state['_labels'] = collections.OrderedDict()  # maps are per process; reopened lazily
        return state

    def __repr__(self) -> str:
        return f'{type(self).__name__}({self.root!r}, {len(self)} samples in {len(self.shards)} shards)'
