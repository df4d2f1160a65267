"""What ``tools/filter.py`` calls: scoring and filter stages over an existing generated dataset, without regenerating.

Reads the dataset with :class:`~posedreamer_mm.generation.reader.GeneratedDataReader`, runs each sample through
the stages (the same registered transforms the generator runs inline, with the same
:class:`~posedreamer_mm.generation.steps.StepRunner`; in ``num_workers`` processes of the package's one
:class:`~posedreamer_mm.utils.pool.SpawnPool`) and writes to ``out_dir``:

- ``scores.jsonl``: one line per sample: ``id``, ``index``, ``kept``, ``stage`` and ``drop_reason`` (where it was
  dropped), ``scores``, the label ``match`` and the scorer's ``detections``; unreadable samples with ``error``;
- ``manifest_filtered.jsonl``: the kept samples (``id``, ``index``, ``image`` relative to the dataset root);
- ``summary.json``: counts per stage and reason, failures, control accuracy (mean OKS, OKS error, fraction kept);
- ``report.png``: kept/rejected per stage, OKS histogram, contact sheets (``posedreamer_mm/visualization/report.py``).

The dataset itself is only read: nothing in it is changed or deleted. Every file is written atomically: a run
killed mid-way leaves the previous outputs (or none) and a temporary file the next run removes. A worker process
that dies (the OOM killer's SIGKILL) stops the run within seconds with an error naming its rows; nothing is
written then (docs/scoring.md, "Failure behaviour").
"""
from __future__ import annotations

import collections
import json
import math
import os
import os.path as osp
import time

import numpy as np
from tqdm import tqdm

from posedreamer_mm.datasets.transforms.filters import FilterByOKS
from posedreamer_mm.evaluation.functional.oks import control_accuracy
from posedreamer_mm.generation.steps import StepRunner, build_step
from posedreamer_mm.registry import TRANSFORMS
from posedreamer_mm.scoring.base import PoseDetections
from posedreamer_mm.utils.fileio import atomic_write, atomic_write_text, remove_stale_temporaries
from posedreamer_mm.utils.pool import SpawnPool
from posedreamer_mm.visualization.report import labelled_tile, save_filter_report

#: Offline default: the bundled mediapipe scorer and the reference thresholds (person count needs a multi-person
#: scorer: configure ``MMPoseScorer`` with a detector for it).
DEFAULT_STAGES = [
    dict(type='ScorePose', scorer=dict(type='MediaPipeScorer')),
    dict(type='FilterByOKS', thr=0.85),
    dict(type='FilterByHeadPose'),
    dict(type='FilterByImageQuality'),
]


def _plain(cfg):
    """Config dicts as plain dicts/lists (picklable for worker processes, JSON-able for the summary)."""
    if isinstance(cfg, dict):
        return {k: _plain(v) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [_plain(v) for v in cfg]
    return cfg


class ChunkScorer:
    """Runs the stages over chunks of dataset rows; one per process (the main one, or each worker).

    Args:
        data_root: the generated dataset.
        stage_cfgs: transform configs.
        batch_size: a leading ``ScorePose``'s scorer scores this many images per call.
    """

    def __init__(self, data_root: str, stage_cfgs: list[dict], batch_size: int = 8) -> None:
        from posedreamer_mm.generation.reader import GeneratedDataReader
        self.reader = GeneratedDataReader(data_root)
        self.pipeline = [build_step(TRANSFORMS, cfg) for cfg in stage_cfgs]
        # Bad label or image content fails the sample (counted); other exceptions are bugs and stop the run.
        self.runner = StepRunner(self.pipeline, catch=(ValueError, FloatingPointError))
        self.names = self.runner.names
        first = self.pipeline[0] if self.pipeline else None
        scorer = getattr(first, 'scorer', None)   # a leading ScorePose: its scorer runs on whole batches
        self.batch_scorer = scorer if scorer is not None and hasattr(scorer, 'predict_batch') else None
        self.batch_size = max(1, int(batch_size))

    def load(self, i: int) -> dict:
        """The results dict of row ``i`` (raises ``ValueError``/``OSError``/``KeyError`` for unreadable rows)."""
        sample = self.reader.sample(i)
        if sample.keypoints_coco17 is None:
            raise ValueError(f'label of {self.reader.ids[i]!r} has no keypoints_coco17')
        return dict(id=self.reader.ids[i], index=i, img=self.reader.load_image(i), sample=sample,
                    keypoints_coco17=np.asarray(sample.keypoints_coco17, np.float32), scores={})

    def __call__(self, indices: range) -> list[dict]:
        """``scores.jsonl`` records of rows ``indices``, in order; unreadable rows get an ``error`` record."""
        records = []
        for start in range(indices.start, indices.stop, self.batch_size):
            chunk, slots = [], []
            for i in range(start, min(indices.stop, start + self.batch_size)):
                try:
                    chunk.append(self.load(i))
                    slots.append(None)
                except (ValueError, OSError, KeyError) as err:   # unreadable sample: skipped and counted
                    slots.append(dict(id=self.reader.ids[i], index=i, kept=False, error=str(err),
                                      error_type=type(err).__name__))
            if self.batch_scorer is not None and chunk:
                try:
                    for res, det in zip(chunk, self.batch_scorer.predict_batch([r['img'] for r in chunk])):
                        res['pose_detections'] = det
                except ValueError:
                    pass  # a bad sample in the batch: ScorePose scores each one alone and the bad one is counted
            results = iter(chunk)
            for slot in slots:
                if slot is not None:
                    records.append(slot)
                    continue
                records.append(self.run_stages(next(results)))
        return records

    def run_stages(self, results: dict) -> dict:
        """One sample through the stages -> its record (``stage``/``drop_reason`` where it was dropped)."""
        outcome = self.runner(results)
        if outcome.status == 'fail':   # bad label/image content: skipped and counted
            return dict(id=results['id'], index=results['index'], kept=False, error=outcome.error,
                        error_type=outcome.reason.rsplit(':', 1)[1])
        results, stage_hit = outcome.results, outcome.step
        record = dict(id=results['id'], index=results['index'], kept=stage_hit is None, stage=stage_hit,
                      drop_reason=outcome.reason,
                      scores={k: round(float(v), 6) for k, v in results.get('scores', {}).items()})
        if results.get('pose_match') is not None:
            record['match'] = results['pose_match'].to_dict()
            if not np.isfinite(record['match']['distance']):
                record['match']['distance'] = None
        if isinstance(results.get('pose_detections'), PoseDetections):
            record['detections'] = results['pose_detections'].to_dict()
        return record


_WORKER: ChunkScorer | None = None


def _worker_init(data_root: str, stage_cfgs: list[dict], batch_size: int, imports: list[str]) -> None:
    global _WORKER
    import importlib

    import torch

    from posedreamer_mm.utils import register_all_modules
    torch.set_num_threads(1)   # one core per worker
    register_all_modules()
    for module in imports:     # the config's custom_imports (stages registered outside the package)
        importlib.import_module(module)
    _WORKER = ChunkScorer(data_root, stage_cfgs, batch_size)


def _worker_run(indices: range) -> list[dict]:
    return _WORKER(indices)


def _count(counts: dict, names: list[str], record: dict) -> None:
    """Adds one record to the per-stage counts (every stage before the dropping one kept it)."""
    upto = names.index(record['stage']) if record['stage'] else len(names)
    for name in names[:upto]:
        counts[name]['entered'] += 1
        counts[name]['kept'] += 1
    if record['stage']:
        counts[record['stage']]['entered'] += 1
        counts[record['stage']]['dropped'][record['drop_reason']] += 1


def run_filter(data_root: str, out_dir: str, stages: list[dict] | None = None, max_samples: int | None = None,
               batch_size: int = 8, report_samples: int = 12, progress: bool = True, num_workers: int = 0,
               custom_imports: list[str] | None = None) -> dict:
    """Scores and filters a generated dataset.

    Args:
        data_root: the generated dataset (``GeneratedDataReader`` root).
        out_dir: where the outputs go (created; may be inside ``data_root``).
        stages: transform configs (default :data:`DEFAULT_STAGES`).
        max_samples: score only the first ``max_samples`` rows.
        batch_size: images scored per call of a leading ``ScorePose``'s scorer.
        report_samples: how many kept and how many rejected samples the contact sheets show.
        progress: show a tqdm bar.
        num_workers: ``0`` scores in this process; ``N`` in ``N`` spawned processes (one scorer each, one torch
            thread each), rows handed out in chunks of ``batch_size`` and written back in row order.
        custom_imports: modules the workers import (the config's ``custom_imports``, for stages registered
            outside the package).

    Raises:
        posedreamer_mm.utils.pool.WorkerDiedError: a worker process died (naming its rows and signal); no
            output file is written or replaced.

    Returns:
        The summary (also written to ``summary.json``).
    """
    stage_cfgs = _plain(list(stages if stages is not None else DEFAULT_STAGES))
    main = ChunkScorer(data_root, stage_cfgs, batch_size)   # builds the stages: config errors surface here
    reader, names = main.reader, main.names
    counts = {n: dict(stage=n, entered=0, kept=0, dropped=collections.Counter()) for n in names}
    n_total = len(reader) if max_samples is None else min(len(reader), int(max_samples))
    chunks = [range(i, min(n_total, i + main.batch_size)) for i in range(0, n_total, main.batch_size)]
    oks_values, kept_flags, failures = [], [], collections.Counter()
    shown = dict(kept=[], rejected=[])
    kept_rows = []
    os.makedirs(out_dir, exist_ok=True)
    removed = remove_stale_temporaries(out_dir)   # left by a killed run (its outputs were never renamed in)
    if removed:
        print(f'[filter] removed {removed} temporary files of an interrupted run in {out_dir}')
    start = time.time()
    bar = tqdm(total=n_total, desc='filter', disable=not progress, unit='img')
    pool = None
    if num_workers > 0 and chunks:
        pool = SpawnPool(num_workers, _worker_run, _worker_init,
                         (data_root, stage_cfgs, main.batch_size, list(custom_imports or [])),
                         describe=lambda rows: f'dataset rows {rows.start}-{rows.stop - 1}', name='filter').start()
        results = pool.imap(chunks, max_in_flight=4 * num_workers)
    else:
        results = map(main, chunks)
    try:
        with atomic_write(osp.join(out_dir, 'scores.jsonl'), 'w') as scores_file:
            for records in results:
                for record in records:
                    scores_file.write(json.dumps(record) + '\n')
                    if 'error' in record:
                        failures[record.pop('error_type')] += 1
                        continue
                    _count(counts, names, record)
                    if 'oks' in record['scores']:
                        oks_values.append(record['scores']['oks'])
                        kept_flags.append(record['kept'])
                    group = shown['kept' if record['kept'] else 'rejected']
                    if len(group) < report_samples:
                        group.append(record)
                    if record['kept']:
                        kept_rows.append(dict(id=record['id'], index=record['index'],
                                              image=reader.meta(record['index'])['image']))
                bar.update(len(records))
    finally:
        bar.close()
        if pool is not None:
            pool.close()
    atomic_write_text(osp.join(out_dir, 'manifest_filtered.jsonl'), ''.join(json.dumps(r) + '\n' for r in kept_rows))
    n_failed = sum(failures.values())
    stage_counts = [dict(c, dropped=dict(c['dropped'])) for c in counts.values()]
    summary = dict(data_root=osp.abspath(data_root), num_samples=n_total, num_scored=n_total - n_failed,
                   num_kept=len(kept_rows), num_failed=n_failed, failures=dict(failures), stages=stage_cfgs,
                   stage_counts=stage_counts, seconds=round(time.time() - start, 2), num_workers=num_workers)
    if oks_values:
        summary['control_accuracy'] = control_accuracy(np.array(oks_values), np.array(kept_flags))
    atomic_write_text(osp.join(out_dir, 'summary.json'), json.dumps(summary, indent=1, default=str))
    oks_thr = next((t.thr for t in main.pipeline if isinstance(t, FilterByOKS)), None)
    title = (f'{osp.basename(osp.abspath(data_root))}: kept {len(kept_rows)} of {n_total - n_failed} scored'
             + (f', {n_failed} unreadable' if n_failed else ''))
    save_filter_report(osp.join(out_dir, 'report.png'), stage_counts, np.array(oks_values),
                       [_tile(main, r) for r in shown['kept']], [_tile(main, r) for r in shown['rejected']],
                       oks_thr=oks_thr, title=title)
    if n_failed:
        print(f'[filter] skipped {n_failed} unreadable samples ({dict(failures)}); see scores.jsonl')
    return summary


def _tile(scorer: ChunkScorer, record: dict) -> np.ndarray:
    """A contact-sheet tile of a scored row: its image with the label skeleton; caption id, OKS, reason."""
    res = scorer.load(record['index'])
    # OKS rounded down, so a value shown as the threshold is never one the filter dropped.
    oks_text = [f"oks {math.floor(record['scores']['oks'] * 1000) / 1000:.3f}"] if 'oks' in record['scores'] else []
    reason = [record['drop_reason']] if not record['kept'] else []
    return labelled_tile(res['img'], res['keypoints_coco17'], (record['id'], ' '.join(oks_text + reason)))
