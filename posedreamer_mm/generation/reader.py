"""Random access to a generated dataset (format: docs/dataset_format.md; contract: docs/conventions.md).

::

    reader = GeneratedDataReader('outputs/demo')
    len(reader), reader.ids[:3], reader.index_of('procedural_...')
    sample = reader.sample(0)          # BodySample, crop-frame camera: the labels of reader.load_image(0)
    img = reader.load_image(0)         # (H, W, 3) uint8 RGB
    reader.meta(0)                     # id, seed, prompt, backend, scores, ...

Only committed shards are visible: a shard still being written (or left by a killed run) lives in a temporary
directory the reader never lists. Labels are memory-mapped from each shard's uncompressed ``labels.npz``, so
``sample(i)`` reads one row, not the shard; a reader pickles without its maps (DataLoader workers reopen them).
"""
from __future__ import annotations

import collections
import json
import os
import os.path as osp
import struct
import zipfile

import cv2
import numpy as np

from posedreamer_mm.body.sample import BodySample
from posedreamer_mm.utils.fileio import safe_join
from .writer import LABELS, META, SHARD_INFO, SHARDS_DIR, read_manifest

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


class GeneratedDataReader:
    """Random access to the committed samples of a generated dataset, in shard then row order.

    Args:
        root: The generator's output directory (with ``manifest.json``).
        cache_shards: How many shards' label maps to keep open.

    Raises:
        posedreamer_mm.generation.writer.OutputConflictError: ``root`` is no generated dataset.
        ValueError: a shard's metadata is unreadable or two samples share an id (the message names the files).
    """

    def __init__(self, root: str | os.PathLike, cache_shards: int = 16) -> None:
        self.root = osp.abspath(os.fspath(root))
        self.manifest = read_manifest(self.root)
        self.cache_shards = int(cache_shards)
        shards_dir = osp.join(self.root, SHARDS_DIR)
        names = sorted(n for n in os.listdir(shards_dir) if n.isdigit()) if osp.isdir(shards_dir) else []
        self.shards: list[str] = []
        self._loc: list[tuple[int, int]] = []
        self._meta: list[str] = []
        for name in names:
            if not osp.isfile(osp.join(shards_dir, name, SHARD_INFO)):
                continue  # not a committed shard (a committed shard always has its shard.json)
            meta_path = osp.join(shards_dir, name, META)
            try:
                with open(meta_path) as f:
                    lines = [line for line in f.read().splitlines() if line]
            except OSError as err:
                raise ValueError(f'cannot read {meta_path}: {err}') from err
            pos = len(self.shards)
            self.shards.append(name)
            self._loc += [(pos, row) for row in range(len(lines))]
            self._meta += lines
        self.ids: list[str] = [json.loads(line)['id'] for line in self._meta]
        self._index = {sid: i for i, sid in enumerate(self.ids)}
        if len(self._index) != len(self.ids):
            dup = [s for s, n in collections.Counter(self.ids).items() if n > 1][:5]
            raise ValueError(f'{self.root}: sample ids {dup} occur in more than one row; the dataset is corrupt')
        self._labels: collections.OrderedDict[int, dict[str, np.ndarray]] = collections.OrderedDict()

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

    def _shard_labels(self, pos: int) -> dict[str, np.ndarray]:
        labels = self._labels.get(pos)
        if labels is None:
            labels = memmap_npz(osp.join(self.root, SHARDS_DIR, self.shards[pos], LABELS))
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
        return BodySample.from_dict({k: np.array(v[row]) for k, v in labels.items()})

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
