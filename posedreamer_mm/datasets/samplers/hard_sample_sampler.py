"""``HardSampleSampler``: draws training indices with probabilities from per-sample difficulty under a curriculum.

The curriculum (one ``curriculum=dict(...)``, docs/mining.md) mixes the uniform draw with a
difficulty-focused one. At progress ``t`` (the epoch, or the iteration at which a chunk of the infinite stream
starts) the probability of dataset index ``i`` of ``N`` is::

    m(t) = max_mix * clip((t - begin) / (end - begin), 0, 1)          (0 up to ``begin``, ``max_mix`` from ``end``)
    q_i  = w_i ** power / sum_j w_j ** power                             (w_i: difficulty of index i, >= 0)
    p_i  = (1 - m(t)) / N + m(t) * q_i

so every sample keeps at least ``(1 - max_mix) / N``. While ``m(t) == 0`` (or no difficulty is known) the draw
is mmengine's ``DefaultSampler`` shuffle exactly (``torch.randperm`` seeded with ``seed + epoch``, or
``seed + chunk`` in the infinite mode); afterwards ``size`` indices are drawn with replacement from ``p`` by a
generator seeded the same way.

Difficulty lives per *sample of a leaf dataset* (a "slot": the leaves of ``ConcatDataset`` / mmpose
``CombinedDataset`` / ``RepeatDataset`` trees, concatenated in order); a row-stochastic matrix maps slots to the
top-level indices (:func:`dataset_index_map`): the identity for a plain dataset or ``ConcatDataset``, the
probabilities of mmpose ``CombinedDataset``'s randomised resampling under ``sample_ratio_factor``. A slot without
a difficulty (none measured yet, not in the file) counts as ``default_difficulty`` (default: the mean of the known
ones, so it is neither favoured nor starved); with no difficulty known at all, ``q`` is uniform.

Everything a draw depends on (seed, epoch, difficulty table) is identical on every rank (the difficulty hook
gathers before it updates), so every rank computes the same global draw and keeps the positions
``rank::world_size`` of it, as ``DefaultSampler`` does.
"""
from __future__ import annotations

import json
import logging
import math
import os
import os.path as osp
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from mmengine.dataset import RepeatDataset
from mmengine.dist import get_dist_info, sync_random_seed
from mmengine.logging import print_log
from scipy import sparse
from torch.utils.data import ConcatDataset, Sampler

from posedreamer_mm.registry import DATA_SAMPLERS

#: ``curriculum`` keys and their defaults (``by`` defaults to ``'epoch'``, or ``'iter'`` with ``infinite=True``).
CURRICULUM_DEFAULTS = dict(by=None, begin=0, end=1, max_mix=0.5, power=1.0)


def _combined_dataset_class():
    try:
        from mmpose.datasets import CombinedDataset
    except ImportError:  # pragma: no cover - mmpose is a dependency; kept optional for the sampler alone
        return None
    return CombinedDataset


def _resample_matrix(num_out: int, num_in: int) -> sparse.csr_matrix:
    """``(num_out, num_in)`` probabilities of mmpose ``CombinedDataset``'s resampling of one sub-dataset.

    Its local index for position ``g`` is ``round(gap * g + u * gap - 0.5)``, ``u ~ U[0, 1)``, ``gap = (num_in -
    1e-4) / num_out``, i.e. ``floor(t)`` for ``t`` uniform on ``[gap * g, gap * (g + 1))``: local ``l`` has the
    probability ``|[l, l + 1) & [gap g, gap (g + 1))| / gap``.
    """
    gap = (num_in - 1e-4) / num_out
    a = gap * np.arange(num_out, dtype=np.float64)
    b = a + gap
    first = np.floor(a).astype(np.int64)
    rows, cols, vals = [], [], []
    for j in range(int(math.ceil(gap)) + 2):
        col = first + j
        weight = np.minimum(b, col + 1) - np.maximum(a, col)
        keep = (weight > 0) & (col < num_in)
        rows.append(np.nonzero(keep)[0])
        cols.append(col[keep])
        vals.append(weight[keep] / gap)
    rows, cols, vals = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
    return sparse.csr_matrix((vals, (rows, cols)), shape=(num_out, num_in))


def dataset_index_map(dataset) -> tuple[list, sparse.csr_matrix]:
    """The leaf datasets of ``dataset`` and the ``(len(dataset), num_slots)`` matrix from slots to its indices.

    Slots are the leaves' samples, leaves concatenated in tree order. Row ``i`` holds the probabilities that
    top-level index ``i`` loads each slot: one 1 for a plain dataset, ``ConcatDataset`` and ``RepeatDataset``;
    the resampling probabilities for mmpose ``CombinedDataset`` with ``sample_ratio_factor``.

    Raises:
        TypeError: A wrapper other than these (anything else with ``datasets``/``dataset``), named.
    """
    combined = _combined_dataset_class()
    if isinstance(dataset, ConcatDataset) or (combined is not None and isinstance(dataset, combined)):
        leaves, blocks = [], []
        resample = combined is not None and isinstance(dataset, combined) and dataset.resample
        for k, child in enumerate(dataset.datasets):
            child_leaves, child_map = dataset_index_map(child)
            if resample:
                child_map = _resample_matrix(dataset._lens[k], child_map.shape[0]) @ child_map
            leaves += child_leaves
            blocks.append(child_map)
        return leaves, sparse.block_diag(blocks, format='csr')
    if isinstance(dataset, RepeatDataset):
        leaves, inner = dataset_index_map(dataset.dataset)
        return leaves, sparse.vstack([inner] * dataset.times, format='csr')
    if hasattr(dataset, 'datasets') or hasattr(dataset, 'dataset'):
        raise TypeError(f'HardSampleSampler: cannot map the indices of {type(dataset).__name__} to its samples; '
                        'supported wrappers: ConcatDataset, mmpose CombinedDataset, RepeatDataset')
    n = len(dataset)
    return [dataset], sparse.identity(n, dtype=np.float64, format='csr')


def leaf_name(leaf, position: int) -> str:
    """The name the model reports for samples of ``leaf`` (``dataset_name``), else ``'#<position>'``."""
    name = getattr(leaf, 'dataset_name', None)
    if name is None and hasattr(leaf, 'metainfo'):
        name = leaf.metainfo.get('dataset_name')
    return str(name) if name is not None else f'#{position}'


def load_difficulty_file(path: str | os.PathLike, key: str = 'difficulty') -> dict[str, float]:
    """``{sample id: difficulty}`` from an ``.npz`` (arrays ``ids`` and ``key``) or a ``.json`` (an object
    ``{id: difficulty}``, or ``{"ids": [...], key: [...]}``); docs/mining.md, "Difficulty file".

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: naming the file: another suffix, a missing array, lengths that differ, a repeated id, or a
            value that is not a finite number >= 0.
    """
    path = os.fspath(path)
    if not osp.isfile(path):
        raise FileNotFoundError(f'HardSampleSampler: difficulty_file {path!r} does not exist')
    expected = (f'an .npz with arrays "ids" and "{key}", or a .json object {{id: difficulty}} or '
                f'{{"ids": [...], "{key}": [...]}}')
    try:
        if path.endswith('.npz'):
            with np.load(path, allow_pickle=False) as f:
                if 'ids' not in f.files or key not in f.files:
                    raise ValueError(f'has arrays {f.files}')
                ids, values = [str(i) for i in f['ids'].tolist()], np.asarray(f[key], np.float64).reshape(-1)
        elif path.endswith('.json'):
            with open(path, encoding='utf-8') as f:
                obj = json.load(f)
            if isinstance(obj, dict) and 'ids' in obj and key in obj:
                ids, values = [str(i) for i in obj['ids']], np.asarray(obj[key], np.float64).reshape(-1)
            elif isinstance(obj, dict):
                ids, values = [str(i) for i in obj], np.asarray(list(obj.values()), np.float64).reshape(-1)
            else:
                raise ValueError(f'holds a {type(obj).__name__}')
        else:
            raise ValueError('has an unknown suffix')
    except (ValueError, TypeError, OSError) as err:
        raise ValueError(f'HardSampleSampler: difficulty_file {path}: {err}; expected {expected}') from err
    if len(ids) != len(values):
        raise ValueError(f'HardSampleSampler: difficulty_file {path}: {len(ids)} ids but {len(values)} values')
    bad = [(i, v) for i, v in zip(ids, values) if not (np.isfinite(v) and v >= 0)]
    if bad:
        raise ValueError(f'HardSampleSampler: difficulty_file {path}: difficulty must be a finite number >= 0 '
                         f'(higher = harder; write a predicted OKS as 1 - OKS), got {bad[:3]}')
    table = dict(zip(ids, values.tolist()))
    if len(table) != len(ids):
        raise ValueError(f'HardSampleSampler: difficulty_file {path} lists {len(ids) - len(table)} id(s) twice')
    return table


def _sample_id(leaf, idx: int) -> str | None:
    try:
        return str(leaf.get_data_info(idx)['id'])
    except (ValueError, KeyError, AttributeError, TypeError):
        return None


def leaf_sample_ids(leaf, position: int = 0) -> list[str | None]:
    """The sample id of every index of ``leaf`` (``None``: no id, or a label the dataset refuses).

    A dataset that lists its ids without building its items says so with a ``sample_ids()`` method
    (:class:`~posedreamer_mm.datasets.generated.GeneratedHMRDataset` reads them from its index); otherwise each
    item's ``get_data_info(i)['id']`` is read, which decodes every label of a lazy dataset.

    Raises:
        ValueError: ``sample_ids()`` returned another number of ids than the dataset has items.
    """
    listed = getattr(leaf, 'sample_ids', None)
    if not callable(listed):
        return [_sample_id(leaf, i) for i in range(len(leaf))]
    ids = list(listed())
    if len(ids) != len(leaf):
        raise ValueError(f'HardSampleSampler: sample_ids() of {leaf_name(leaf, position)} lists {len(ids)} ids for '
                         f'{len(leaf)} items')
    return [None if sid is None else str(sid) for sid in ids]


@DATA_SAMPLERS.register_module()
class HardSampleSampler(Sampler):
    """Curriculum sampler over per-sample difficulty (module docstring: the formula and the mapping).

    Epoch mode (``infinite=False``): each epoch draws ``total_size`` indices at its start (``len(dataset)``, rounded
    up to the world size when ``round_up``); rank ``r`` iterates positions ``r::world_size``. Iteration mode
    (``infinite=True``, mmengine ``InfiniteSampler`` semantics): an endless stream of chunks of ``chunk_size``
    global positions (default ``len(dataset)`` rounded up to the world size), chunk ``k`` drawn lazily when its first
    position is requested, seeded with ``seed + k``, with the weights at that moment.

    Args:
        dataset: The training dataset (a plain dataset, ``ConcatDataset``, mmpose ``CombinedDataset``,
            ``RepeatDataset``).
        shuffle: While the curriculum is uniform: permute (True) or keep the order (False), as ``DefaultSampler``.
        seed: Seed shared by all ranks; default ``sync_random_seed()``.
        round_up: Epoch mode: pad the draw to a multiple of the world size (``DefaultSampler``'s meaning).
        infinite: Iteration mode (for ``IterBasedTrainLoop``), else epoch mode.
        chunk_size: Iteration mode: global positions per chunk (rounded up to the world size).
        curriculum: ``dict(by='epoch'|'iter', begin=0, end=1, max_mix=0.5, power=1.0)`` (missing keys default to
            these; ``by`` defaults to ``'iter'`` in iteration mode, which needs ``batch_size``).
        difficulty_file: Initial difficulty, ``{sample id: difficulty}`` (:func:`load_difficulty_file`); default
            none (every slot unknown: uniform until the hook measures some).
        difficulty_key: The array of ``difficulty_file`` to read (higher = harder).
        default_difficulty: Difficulty of slots without one; default the mean of the known ones.
        batch_size: Samples per rank per iteration, to place chunks on the ``by='iter'`` schedule (the difficulty
            hook sets it from the train dataloader when left None).

    Raises:
        ValueError: An unknown ``curriculum`` key, ``max_mix`` outside [0, 1], ``power`` < 0, ``end`` < ``begin``,
            ``by='epoch'`` in iteration mode, or a bad ``difficulty_file`` (named).
    """

    def __init__(self, dataset, shuffle: bool = True, seed: int | None = None, round_up: bool = True,
                 infinite: bool = False, chunk_size: int | None = None, curriculum: dict | None = None,
                 difficulty_file: str | None = None, difficulty_key: str = 'difficulty',
                 default_difficulty: float | None = None, batch_size: int | None = None) -> None:
        self.rank, self.world_size = get_dist_info()
        self.dataset = dataset
        self.shuffle, self.round_up, self.infinite = shuffle, round_up, infinite
        self.seed = sync_random_seed() if seed is None else int(seed)
        self.epoch = 0
        self.batch_size = batch_size
        self.default_difficulty = default_difficulty
        self.curriculum = self._check_curriculum(curriculum)
        self.leaves, self.index_map = dataset_index_map(dataset)
        self.leaf_names = [leaf_name(leaf, k) for k, leaf in enumerate(self.leaves)]
        self.leaf_sizes = [len(leaf) for leaf in self.leaves]
        self.leaf_offsets = np.concatenate([[0], np.cumsum(self.leaf_sizes)]).astype(np.int64)
        self.num_slots = int(self.leaf_offsets[-1])
        #: Difficulty per slot (NaN: unknown), identical on every rank.
        self.difficulty = np.full(self.num_slots, np.nan)
        #: Number of difficulty updates applied (each hook update and the file count one).
        self.version = 0
        n = len(dataset)
        if round_up:
            self.num_samples = math.ceil(n / self.world_size)
            self.total_size = self.num_samples * self.world_size
        else:
            self.num_samples = math.ceil((n - self.rank) / self.world_size)
            self.total_size = n
        size = n if chunk_size is None else int(chunk_size)
        self.chunk_size = math.ceil(size / self.world_size) * self.world_size
        #: Per-rank positions already trained (set by the hook), so the chunks holding the rest are kept.
        self.consumed: int | None = None
        self._epoch_draw: tuple[int, np.ndarray] | None = None
        self._chunks: dict[int, np.ndarray] = {}
        self._restored_from = 0
        if difficulty_file is not None:
            self.set_difficulty_from_ids(load_difficulty_file(difficulty_file, difficulty_key), str(difficulty_file))

    def _check_curriculum(self, curriculum: dict | None) -> dict:
        cfg = dict(CURRICULUM_DEFAULTS, **(curriculum or {}))
        unknown = set(cfg) - set(CURRICULUM_DEFAULTS)
        if unknown:
            raise ValueError(f'HardSampleSampler: unknown curriculum key(s) {sorted(unknown)}; expected some of '
                             f'{sorted(CURRICULUM_DEFAULTS)}')
        cfg['by'] = cfg['by'] or ('iter' if self.infinite else 'epoch')
        if cfg['by'] not in ('epoch', 'iter'):
            raise ValueError(f"HardSampleSampler: curriculum by={cfg['by']!r}; expected 'epoch' or 'iter'")
        if self.infinite and cfg['by'] == 'epoch':
            raise ValueError("HardSampleSampler: infinite=True (iteration-based loop) needs curriculum by='iter'")
        if not 0.0 <= cfg['max_mix'] <= 1.0 or cfg['power'] < 0 or cfg['end'] < cfg['begin']:
            raise ValueError(f'HardSampleSampler: curriculum {cfg}: expected 0 <= max_mix <= 1, power >= 0, '
                             'begin <= end')
        return cfg

    # ------------------------------------------------------------------------------------------ difficulty
    def slots_of(self, names: Sequence[str], sample_idx: Sequence[int]) -> np.ndarray:
        """Slots of samples reported as ``(dataset_name, index in that dataset)``.

        Raises:
            ValueError: A name that is no leaf's or shared by two leaves, or an index out of its leaf's range.
        """
        lookup: dict[str, int] = {}
        for k, name in enumerate(self.leaf_names):
            lookup[name] = -1 if name in lookup else k
        leaf = np.array([lookup.get(str(n), -2) for n in names], np.int64)
        if (leaf < 0).any():
            bad = sorted({str(n) for n, k in zip(names, leaf) if k < 0})
            raise ValueError(f'HardSampleSampler: reported dataset name(s) {bad} are not exactly one leaf dataset of '
                             f'the training set (leaves: {self.leaf_names}); give every dataset a unique dataset_name')
        idx = np.asarray(sample_idx, np.int64).reshape(-1)
        sizes = np.asarray(self.leaf_sizes, np.int64)[leaf]
        if ((idx < 0) | (idx >= sizes)).any():
            raise ValueError(f'HardSampleSampler: reported sample index out of range: {idx.tolist()[:10]} '
                             f'(sizes {sizes.tolist()[:10]})')
        return self.leaf_offsets[leaf] + idx

    def set_difficulty_from_ids(self, table: dict[str, float], source: str = 'table') -> int:
        """Sets the slots whose sample id is in ``table``; returns how many ids matched. The ids are each leaf's
        (:func:`leaf_sample_ids`: ``sample_ids()`` where the dataset lists them, else ``get_data_info(i)['id']``,
        ``data_info['id']``, docs/conventions.md), looked up in one pass over the slots."""
        ids = [sid for k, leaf in enumerate(self.leaves) for sid in leaf_sample_ids(leaf, k)]
        slots = np.fromiter((i for i, sid in enumerate(ids) if sid in table), np.int64)
        found = {ids[i] for i in slots}
        self.difficulty[slots] = np.fromiter((table[ids[i]] for i in slots), np.float64, len(slots))
        if not found:
            raise ValueError(f'HardSampleSampler: no sample id of {source} is in the training set ({self.num_slots} '
                             'samples); was it written for another dataset?')
        missing = self.num_slots - int(np.isfinite(self.difficulty).sum())
        if missing or len(found) < len(table):
            print_log(f'HardSampleSampler: {source}: {missing} of {self.num_slots} samples have no difficulty (they '
                      f'count as the default); {len(table) - len(found)} id(s) of the file are not in the training '
                      'set', logger='current', level=logging.WARNING)
        self.version += 1
        return len(found)

    def update_difficulty(self, slots: np.ndarray, values: np.ndarray, momentum: float) -> None:
        """EMA update: ``d <- (1 - momentum) * d + momentum * mean(values of the slot)``; an unknown slot takes the
        mean. Non-finite values are ignored. The mean is taken in a canonical order (by slot, then value), so any
        order of the same observations gives bit-identical tables."""
        slots, values = np.asarray(slots, np.int64).reshape(-1), np.asarray(values, np.float64).reshape(-1)
        ok = np.isfinite(values)
        slots, values = slots[ok], values[ok]
        if len(slots):
            order = np.lexsort((values, slots))
            slots, values = slots[order], values[order]
            uniq, start = np.unique(slots, return_index=True)
            mean = np.add.reduceat(values, start) / np.diff(np.append(start, len(values)))
            old = self.difficulty[uniq]
            self.difficulty[uniq] = np.where(np.isnan(old), mean, (1.0 - momentum) * old + momentum * mean)
        self.version += 1

    def mix_at(self, progress: float) -> float:
        """``m(t)``: the weight of the difficulty-focused draw at ``progress`` (module docstring)."""
        c = self.curriculum
        if progress <= c['begin']:
            return 0.0
        ramp = 1.0 if c['end'] <= c['begin'] else min(1.0, (progress - c['begin']) / (c['end'] - c['begin']))
        return float(c['max_mix'] * ramp)

    def index_difficulty(self) -> np.ndarray | None:
        """``(len(dataset),)`` difficulty ``w`` of each index (slots mapped, unknown = default), or None when no
        difficulty is known."""
        known = np.isfinite(self.difficulty)
        default = self.default_difficulty
        if default is None:
            if not known.any():
                return None
            default = float(self.difficulty[known].mean())
        return self.index_map @ np.where(known, self.difficulty, default)

    def focus(self) -> np.ndarray | None:
        """``q``: the difficulty-focused distribution over indices, or None without any known difficulty."""
        w = self.index_difficulty()
        if w is None:
            return None
        w = np.clip(w, 0.0, None) ** self.curriculum['power']
        total = w.sum()
        return w / total if total > 0 and np.isfinite(total) else None

    def probabilities(self, progress: float) -> np.ndarray:
        """``(len(dataset),)`` draw probabilities ``p`` at ``progress`` (module docstring)."""
        n = len(self.dataset)
        m, q = self.mix_at(progress), self.focus()
        if q is None or m == 0:
            return np.full(n, 1.0 / n)
        return (1.0 - m) / n + m * q

    # ------------------------------------------------------------------------------------------ draws
    def _draw(self, key: int, size: int, progress: float) -> np.ndarray:
        """The global draw of ``size`` positions for epoch or chunk ``key`` (same on every rank)."""
        n = len(self.dataset)
        if self.mix_at(progress) == 0.0 or self.focus() is None:
            g = torch.Generator()
            g.manual_seed(self.seed + key)
            perm = torch.randperm(n, generator=g).numpy() if self.shuffle else np.arange(n)
            return np.resize(perm, size).astype(np.int64)
        rng = np.random.default_rng(self.seed + key)
        p = self.probabilities(progress)
        return rng.choice(n, size=size, p=p / p.sum()).astype(np.int64)

    def epoch_draw(self) -> np.ndarray:
        """This epoch's global draw (``total_size`` indices); cached, so a resumed epoch repeats it."""
        if self._epoch_draw is None or self._epoch_draw[0] != self.epoch:
            self._epoch_draw = (self.epoch, self._draw(self.epoch, self.total_size, self.epoch))
        return self._epoch_draw[1]

    def _chunk_progress(self, k: int) -> float:
        if self.curriculum['by'] == 'epoch':
            return float(self.epoch)
        start = k * (self.chunk_size // self.world_size)
        if start == 0:
            return 0.0
        if not self.batch_size:
            raise ValueError("HardSampleSampler: curriculum by='iter' needs batch_size (set it in the sampler dict, "
                             'or add the DifficultyHook, which copies the train dataloader batch_size)')
        return float(start // self.batch_size)

    def chunk(self, k: int) -> np.ndarray | None:
        """Global draw of chunk ``k`` of the infinite stream (None: before the restored chunks, never trained)."""
        if k in self._chunks:
            return self._chunks[k]
        if k < self._restored_from:
            return None
        draw = self._draw(k, self.chunk_size, self._chunk_progress(k))
        per_rank = self.chunk_size // self.world_size
        keep_from = k - 1 if self.consumed is None else min(k, self.consumed // per_rank)
        self._chunks = {j: v for j, v in self._chunks.items() if j >= keep_from}
        self._chunks[k] = draw
        return draw

    def _infinite_indices(self) -> Iterator[int]:
        per_rank = self.chunk_size // self.world_size
        n = len(self.dataset)
        pos = 0
        while True:
            k, off = divmod(pos, per_rank)
            draw = self.chunk(k)
            yield pos % n if draw is None else int(draw[self.rank + off * self.world_size])
            pos += 1

    def __iter__(self) -> Iterator[int]:
        if self.infinite:
            return self._infinite_indices()
        return iter(self.epoch_draw()[self.rank:self.total_size:self.world_size].tolist())

    def __len__(self) -> int:
        return len(self.dataset) if self.infinite else self.num_samples

    def set_epoch(self, epoch: int) -> None:
        """Sets the epoch: the seed offset and the ``by='epoch'`` progress of the next draw."""
        self.epoch = int(epoch)

    # ------------------------------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """What a resumed run needs for the identical index sequence: seed, epoch, the difficulty table, and the
        draws not yet (fully) trained (this epoch's draw; the kept chunks of the infinite stream)."""
        return dict(seed=self.seed, epoch=self.epoch, num_slots=self.num_slots, leaf_names=list(self.leaf_names),
                    difficulty=self.difficulty.copy(), version=self.version, world_size=self.world_size,
                    chunk_size=self.chunk_size, total_size=self.total_size,
                    epoch_draw=None if self._epoch_draw is None else
                    dict(epoch=self._epoch_draw[0], indices=self._epoch_draw[1].copy()),
                    chunks={int(k): v.copy() for k, v in self._chunks.items()})

    def load_state_dict(self, state: dict) -> None:
        """Restores :meth:`state_dict`; ``ValueError`` when it was saved for a training set of another size.
        Saved draws are dropped (WARNING) when the world size or chunk size changed."""
        if int(state['num_slots']) != self.num_slots:
            raise ValueError(f"HardSampleSampler: the checkpoint's difficulty table has {state['num_slots']} samples "
                             f"(datasets {state.get('leaf_names')}), this training set {self.num_slots} "
                             f'({self.leaf_names}); resume with the same datasets')
        self.seed, self.epoch = int(state['seed']), int(state['epoch'])
        self.difficulty = np.asarray(state['difficulty'], np.float64).copy()
        self.version = int(state.get('version', 0))
        same = (int(state['world_size']) == self.world_size and int(state['chunk_size']) == self.chunk_size
                and int(state['total_size']) == self.total_size)
        if not same:
            print_log(f"HardSampleSampler: saved with world size {state['world_size']} (chunk {state['chunk_size']}), "
                      f'now {self.world_size} ({self.chunk_size}): the draws start afresh from the restored table',
                      logger='current', level=logging.WARNING)
        ep = state.get('epoch_draw')
        self._epoch_draw = (int(ep['epoch']), np.asarray(ep['indices'], np.int64)) if ep and same else None
        chunks = (state.get('chunks') or {}) if same else {}
        self._chunks = {int(k): np.asarray(v, np.int64) for k, v in chunks.items()}
        self._restored_from = min(self._chunks) if self._chunks else 0


__all__ = ['HardSampleSampler', 'dataset_index_map', 'load_difficulty_file', 'CURRICULUM_DEFAULTS']
