"""``DifficultyHook``: measures per-sample difficulty during HMR training and feeds it to ``HardSampleSampler``.

Every iteration the model's per-sample errors (:meth:`~posedreamer_mm.models.HMREstimator.per_sample_error`: the
pelvis-aligned body MPJPE in mm, keyed by ``(dataset_name, sample_idx)``) are gathered from all ranks
(``mmengine.dist.all_gather_object``), so every rank holds the same pending observations; every ``interval``
iterations (or at the end of each epoch when ``interval`` is None) they are folded into the sampler's table by an
exponential moving average, ``d <- (1 - momentum) * d + momentum * mean(new errors of the sample)`` (a sample seen
for the first time takes its mean). The sampler's state and the pending observations go into every checkpoint,
so a resumed run draws the same indices (docs/mining.md, "The in-training level").
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import os.path as osp

import numpy as np
import torch
from mmengine.dist import all_gather_object, get_dist_info
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.runner import EpochBasedTrainLoop

from posedreamer_mm.datasets.samplers.hard_sample_sampler import HardSampleSampler
from posedreamer_mm.registry import HOOKS

#: Key of the hook's state in a checkpoint.
CHECKPOINT_KEY = 'difficulty_hook'


def _tensors(obj):
    """numpy arrays -> tensors, recursively (checkpoints are loaded with ``weights_only``)."""
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj.copy())
    if isinstance(obj, dict):
        return {k: _tensors(v) for k, v in obj.items()}
    return obj


def _arrays(obj):
    if isinstance(obj, torch.Tensor):
        return obj.numpy()
    if isinstance(obj, dict):
        return {k: _arrays(v) for k, v in obj.items()}
    return obj


def table_digest(table: np.ndarray) -> str:
    """sha1 of a difficulty table's float64 bytes (what the per-rank log compares)."""
    return hashlib.sha1(np.ascontiguousarray(table, np.float64).tobytes()).hexdigest()


@HOOKS.register_module()
class DifficultyHook(Hook):
    """Records per-sample errors of the HMR model and updates the train dataloader's ``HardSampleSampler``.

    Args:
        interval: Update the sampler every ``interval`` iterations; None = at the end of every epoch (epoch-based
            loops only; an iteration-based loop needs an interval).
        momentum: EMA weight of the new observations (1 = keep only the latest).
        log_tables: Also write the whole table to the per-rank log (tests; large for real datasets).
        log_samples: Also write each iteration's samples, ``[dataset_name, sample_idx]`` per sample, to
            ``<work_dir>/difficulty/rank<r>_samples.jsonl`` (tests: the sequence a resumed run trains on).

    Each rank appends one JSON line per update to ``<work_dir>/difficulty/rank<r>.jsonl``: ``iter``, ``epoch``,
    ``version``, ``measured`` (samples with a difficulty), ``sha1`` of the table (and ``table`` with
    ``log_tables``), so it can be checked that every rank holds the same table.

    Raises:
        TypeError: The train dataloader's sampler is not a ``HardSampleSampler``, or the model cannot report
            per-sample errors.
        ValueError: ``interval`` is None in an iteration-based loop; data samples without ``sample_idx``.
    """

    priority = 'NORMAL'  # before CheckpointHook (VERY_LOW): a checkpoint holds this iteration's update

    def __init__(self, interval: int | None = None, momentum: float = 0.5, log_tables: bool = False,
                 log_samples: bool = False) -> None:
        if interval is not None and int(interval) < 1:
            raise ValueError(f'DifficultyHook: interval must be >= 1 or None, got {interval}')
        if not 0.0 < momentum <= 1.0:
            raise ValueError(f'DifficultyHook: momentum must be in (0, 1], got {momentum}')
        self.interval = None if interval is None else int(interval)
        self.momentum = float(momentum)
        self.log_tables, self.log_samples = log_tables, log_samples
        self._slots: list[np.ndarray] = []
        self._values: list[np.ndarray] = []

    # ------------------------------------------------------------------------------------------ helpers
    @staticmethod
    def sampler_of(runner) -> HardSampleSampler:
        loader = runner.train_dataloader
        sampler = getattr(loader, 'sampler', None)
        if not isinstance(sampler, HardSampleSampler):
            sampler = getattr(getattr(loader, 'batch_sampler', None), 'sampler', None)
        if not isinstance(sampler, HardSampleSampler):
            raise TypeError(f'DifficultyHook needs train_dataloader.sampler=dict(type="HardSampleSampler", ...), '
                            f'got {type(getattr(loader, "sampler", None)).__name__}')
        return sampler

    @staticmethod
    def _model(runner):
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        if not hasattr(model, 'record_sample_errors'):
            raise TypeError(f'DifficultyHook: {type(model).__name__} does not report per-sample errors (expected an '
                            'HMREstimator, whose loss keeps sample_errors when record_sample_errors is set)')
        return model

    def pending(self) -> tuple[np.ndarray, np.ndarray]:
        """The gathered observations not yet folded into the table: ``(slots, values)``."""
        if not self._slots:
            return np.zeros(0, np.int64), np.zeros(0, np.float64)
        return np.concatenate(self._slots), np.concatenate(self._values)

    # ------------------------------------------------------------------------------------------ hooks
    def before_train(self, runner) -> None:
        sampler = self.sampler_of(runner)
        self._model(runner).record_sample_errors = True
        if sampler.batch_size is None:
            sampler.batch_size = runner.train_dataloader.batch_size
        if self.interval is None and not isinstance(runner.train_loop, EpochBasedTrainLoop):
            raise ValueError('DifficultyHook: an iteration-based loop needs interval=<iterations between updates> '
                             '(interval=None updates at the end of each epoch)')

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        model = self._model(runner)
        sampler = self.sampler_of(runner)
        errors = getattr(model, 'sample_errors', None)
        model.sample_errors = None
        local = (np.zeros(0, np.int64), np.zeros(0, np.float64))
        if errors is not None:
            if (errors['sample_idx'] < 0).any():
                raise ValueError("DifficultyHook: data samples carry no 'sample_idx' metainfo (PackHMRInputs' "
                                 "meta_keys must include 'sample_idx', as its default does)")
            local = (sampler.slots_of(errors['dataset_name'], errors['sample_idx']),
                     np.asarray(errors['error_mm'], np.float64))
            if self.log_samples:
                self._write(runner, '_samples', dict(iter=runner.iter + 1, samples=[
                    [n, int(i)] for n, i in zip(errors['dataset_name'], errors['sample_idx'])]))
        for slots, values in all_gather_object(local):
            self._slots.append(np.asarray(slots, np.int64))
            self._values.append(np.asarray(values, np.float64))
        sampler.consumed = (runner.iter + 1) * sampler.batch_size if sampler.batch_size else None
        if self.interval is not None and (runner.iter + 1) % self.interval == 0:
            self._update(runner, sampler)

    def after_train_epoch(self, runner) -> None:
        if self.interval is None:
            self._update(runner, self.sampler_of(runner))

    def _update(self, runner, sampler: HardSampleSampler) -> None:
        slots, values = self.pending()
        sampler.update_difficulty(slots, values, self.momentum)
        self._slots, self._values = [], []
        rank, world = get_dist_info()
        table = sampler.difficulty
        record = dict(iter=runner.iter + 1, epoch=runner.epoch, version=sampler.version,
                      measured=int(np.isfinite(table).sum()), sha1=table_digest(table))
        if self.log_tables:
            record['table'] = [None if not np.isfinite(v) else float(v) for v in table]
        self._write(runner, '', record)
        print_log(f'DifficultyHook rank {rank}/{world}: update {sampler.version} at iter {record["iter"]}: '
                  f'{len(slots)} observations, {record["measured"]}/{sampler.num_slots} samples measured, table '
                  f'sha1 {record["sha1"][:12]}', logger='current')

    @staticmethod
    def _write(runner, suffix: str, record: dict) -> None:
        folder = osp.join(runner.work_dir, 'difficulty')
        os.makedirs(folder, exist_ok=True)
        with open(osp.join(folder, f'rank{get_dist_info()[0]}{suffix}.jsonl'), 'a', encoding='utf-8') as f:
            f.write(json.dumps(record) + '\n')

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        slots, values = self.pending()
        checkpoint[CHECKPOINT_KEY] = _tensors(dict(sampler=self.sampler_of(runner).state_dict(),
                                                   pending_slots=slots, pending_values=values))

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if not runner._resume:  # load_from: weights only, the curriculum starts afresh
            return
        if CHECKPOINT_KEY not in checkpoint:
            print_log('DifficultyHook: the checkpoint has no difficulty table (saved without this hook); the '
                      'curriculum starts afresh', logger='current', level=logging.WARNING)
            return
        state = _arrays(checkpoint[CHECKPOINT_KEY])
        self.sampler_of(runner).load_state_dict(state['sampler'])
        self._slots = [np.asarray(state['pending_slots'], np.int64)]
        self._values = [np.asarray(state['pending_values'], np.float64)]


__all__ = ['DifficultyHook', 'table_digest', 'CHECKPOINT_KEY']
