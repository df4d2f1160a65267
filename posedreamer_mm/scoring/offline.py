"""Runs scoring and filter stages over an existing generated dataset, without regenerating (``tools/filter.py``).

Reads the dataset with :class:`~posedreamer_mm.generation.reader.GeneratedDataReader`, runs each sample through
the stages (the same registered transforms the generator runs inline) and writes to ``out_dir``:

- ``scores.jsonl``: one line per sample: ``id``, ``index``, ``kept``, ``stage`` and ``drop_reason`` (where it was
  dropped), ``scores``, the label ``match`` and the scorer's ``detections``; unreadable samples with ``error``;
- ``manifest_filtered.jsonl``: the kept samples (``id``, ``index``, ``image`` relative to the dataset root);
- ``summary.json``: counts per stage and reason, failures, control accuracy (mean OKS, OKS error, fraction kept);
- ``report.png``: kept/rejected per stage, OKS histogram, contact sheets (``posedreamer_mm/visualization/report.py``).

The dataset itself is only read: nothing in it is changed or deleted. Every file is written atomically: a run
killed mid-way leaves the previous outputs (or none) and a temporary file the next run removes.
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

from posedreamer_mm.evaluation.functional.oks import control_accuracy
from posedreamer_mm.registry import TRANSFORMS
from posedreamer_mm.utils.fileio import atomic_write, atomic_write_text, remove_stale_temporaries
from posedreamer_mm.visualization.report import labelled_tile, save_filter_report
from .base import PoseDetections

#: Offline default: the bundled mediapipe scorer and the reference thresholds (person count needs a multi-person
#: scorer: configure ``MMPoseScorer`` with a detector for it).
DEFAULT_STAGES = [
    dict(type='ScorePose', scorer=dict(type='MediaPipeScorer')),
    dict(type='FilterByOKS', thr=0.85),
    dict(type='FilterByHeadPose'),
    dict(type='FilterByImageQuality'),
]


def _stage_name(stage, seen: collections.Counter) -> str:
    name = type(stage).__name__
    seen[name] += 1
    return name if seen[name] == 1 else f'{name}#{seen[name]}'


def _batched_scorer(stages: list):
    """The scorer of a leading ``ScorePose`` (scored in batches before the pipeline), else ``None``."""
    first = stages[0] if stages else None
    scorer = getattr(first, 'scorer', None)
    return scorer if scorer is not None and hasattr(scorer, 'predict_batch') else None


def run_filter(data_root: str, out_dir: str, stages: list[dict] | None = None, max_samples: int | None = None,
               batch_size: int = 8, report_samples: int = 12, progress: bool = True) -> dict:
    """Scores and filters a generated dataset.

    Args:
        data_root: the generated dataset (``GeneratedDataReader`` root).
        out_dir: where the outputs go (created; may be inside ``data_root``).
        stages: transform configs (default :data:`DEFAULT_STAGES`).
        max_samples: score only the first ``max_samples`` rows.
        batch_size: images scored per call of a leading ``ScorePose``'s scorer.
        report_samples: how many kept and how many rejected samples the contact sheets show.
        progress: show a tqdm bar.

    Returns:
        The summary (also written to ``summary.json``).
    """
    from posedreamer_mm.generation.reader import GeneratedDataReader
    reader = GeneratedDataReader(data_root)
    stage_cfgs = list(stages if stages is not None else DEFAULT_STAGES)
    pipeline = [TRANSFORMS.build(cfg) for cfg in stage_cfgs]
    seen = collections.Counter()
    names = [_stage_name(t, seen) for t in pipeline]
    counts = {n: dict(stage=n, entered=0, kept=0, dropped=collections.Counter()) for n in names}
    scorer = _batched_scorer(pipeline)
    n_total = len(reader) if max_samples is None else min(len(reader), int(max_samples))
    oks_values, kept_flags, failures = [], [], collections.Counter()
    kept_tiles, rejected_tiles, kept_rows = [], [], []
    os.makedirs(out_dir, exist_ok=True)
    removed = remove_stale_temporaries(out_dir)   # left by a killed run (its outputs were never renamed in)
    if removed:
        print(f'[filter] removed {removed} temporary files of an interrupted run in {out_dir}')
    start = time.time()
    bar = tqdm(total=n_total, desc='filter', disable=not progress, unit='img')
    with atomic_write(osp.join(out_dir, 'scores.jsonl'), 'w') as scores_file:
        for chunk_start in range(0, n_total, batch_size):
            chunk = []
            for i in range(chunk_start, min(n_total, chunk_start + batch_size)):
                sid = reader.ids[i]
                try:
                    sample = reader.sample(i)
                    if sample.keypoints_coco17 is None:
                        raise ValueError(f'label of {sid!r} has no keypoints_coco17')
                    chunk.append(dict(id=sid, index=i, img=reader.load_image(i), sample=sample,
                                      keypoints_coco17=np.asarray(sample.keypoints_coco17, np.float32),
                                      scores={}))
                except (ValueError, OSError, KeyError) as err:   # unreadable sample: skipped and counted
                    failures[type(err).__name__] += 1
                    scores_file.write(json.dumps(dict(id=sid, index=i, kept=False, error=str(err))) + '\n')
            if scorer is not None and chunk:
                try:
                    for res, det in zip(chunk, scorer.predict_batch([r['img'] for r in chunk])):
                        res['pose_detections'] = det
                except ValueError:
                    pass  # a bad sample in the batch: ScorePose scores each one alone and the bad one is counted
            for res in chunk:
                try:
                    record = _run_stages(pipeline, names, counts, res)
                except (ValueError, FloatingPointError) as err:   # bad label/image content: skipped and counted
                    failures[type(err).__name__] += 1
                    scores_file.write(json.dumps(dict(id=res['id'], index=res['index'], kept=False,
                                                      error=str(err))) + '\n')
                    continue
                scores_file.write(json.dumps(record) + '\n')
                if 'oks' in record['scores']:
                    oks_values.append(record['scores']['oks'])
                    kept_flags.append(record['kept'])
                # OKS rounded down, so a value shown as the threshold is never one the filter dropped.
                oks_text = [f"oks {math.floor(record['scores']['oks'] * 1000) / 1000:.3f}"] \
                    if 'oks' in record['scores'] else []
                caption = (res['id'], ' '.join(oks_text + ([record['drop_reason']] if not record['kept'] else [])))
                tiles = kept_tiles if record['kept'] else rejected_tiles
                if len(tiles) < report_samples:
                    tiles.append(labelled_tile(res['img'], res['keypoints_coco17'], caption))
                if record['kept']:
                    kept_rows.append(dict(id=res['id'], index=res['index'],
                                          image=reader.meta(res['index'])['image']))
            bar.update(min(n_total, chunk_start + batch_size) - chunk_start)
    bar.close()
    atomic_write_text(osp.join(out_dir, 'manifest_filtered.jsonl'), ''.join(json.dumps(r) + '\n' for r in kept_rows))
    n_failed = sum(failures.values())
    stage_counts = [dict(c, dropped=dict(c['dropped'])) for c in counts.values()]
    summary = dict(data_root=osp.abspath(data_root), num_samples=n_total, num_scored=n_total - n_failed,
                   num_kept=len(kept_rows), num_failed=n_failed, failures=dict(failures), stages=stage_cfgs,
                   stage_counts=stage_counts, seconds=round(time.time() - start, 2))
    if oks_values:
        summary['control_accuracy'] = control_accuracy(np.array(oks_values), np.array(kept_flags))
    atomic_write_text(osp.join(out_dir, 'summary.json'), json.dumps(summary, indent=1, default=str))
    oks_thr = next((getattr(t, 'thr') for t in pipeline if type(t).__name__ == 'FilterByOKS'), None)
    title = (f'{osp.basename(osp.abspath(data_root))}: kept {len(kept_rows)} of {n_total - n_failed} scored'
             + (f', {n_failed} unreadable' if n_failed else ''))
    save_filter_report(osp.join(out_dir, 'report.png'), stage_counts, np.array(oks_values), kept_tiles,
                       rejected_tiles, oks_thr=oks_thr, title=title)
    if n_failed:
        print(f'[filter] skipped {n_failed} unreadable samples ({dict(failures)}); see scores.jsonl')
    return summary


def _run_stages(pipeline: list, names: list[str], counts: dict, results: dict) -> dict:
    """Runs one sample through the stages; returns its ``scores.jsonl`` record and updates ``counts``.

    ``counts`` changes only when every stage ran (a sample that raises is counted as a failure, not a drop).
    """
    stage_hit, kept, passed = None, True, []
    for name, stage in zip(names, pipeline):
        out = stage(results)
        if out is None:
            stage_hit, kept = name, False
            break
        passed.append(name)
        results = out
    for name in passed:
        counts[name]['entered'] += 1
        counts[name]['kept'] += 1
    if stage_hit is not None:
        counts[stage_hit]['entered'] += 1
        counts[stage_hit]['dropped'][results.get('drop_reason') or 'dropped'] += 1
    record = dict(id=results['id'], index=results['index'], kept=kept, stage=stage_hit,
                  drop_reason=None if kept else results.get('drop_reason') or 'dropped',
                  scores={k: round(float(v), 6) for k, v in results.get('scores', {}).items()})
    if results.get('pose_match') is not None:
        record['match'] = results['pose_match'].to_dict()
        if not np.isfinite(record['match']['distance']):
            record['match']['distance'] = None
    if isinstance(results.get('pose_detections'), PoseDetections):
        record['detections'] = results['pose_detections'].to_dict()
    return record
