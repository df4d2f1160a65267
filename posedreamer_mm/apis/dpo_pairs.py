"""What ``tools/make_dpo_pairs.py`` calls: DPO preference pairs from scored candidates (docs/dpo_pairs.md).

The candidates are a generated dataset written with ``candidates_per_sample=N`` (every row carries ``group``, the
pose id, and ``candidate``); ``tools/filter.py`` scored it into ``scores.jsonl`` (per row: ``scores.oks`` and the
label ``match``). Per group (one control, one prompt, N seeds) :func:`pair_group` applies the pairing rule:

1. a candidate is *scored* when its record has no ``error``, a finite ``scores.oks`` and, where the record has a
   ``match``, a matched person (``match.index`` not ``None``); the others are *unscored* (counted by cause:
   ``error``, ``no_match``, ``no_oks``, ``not_in_scores``) and left out (``no_match='zero'`` scores an image
   without a detected person OKS 0 instead, so it can be a loser);
2. fewer than 2 scored candidates: no pair (``too_few_scored``);
3. winner = the highest OKS, loser = the lowest (equal OKS: the lower candidate number); equal best and worst:
   no pair (``tie``);
4. winner OKS < ``min_winner``: no pair (``winner_below_min``); gap = winner - loser < ``min_gap``: no pair
   (``gap_below_min``); both compared with a 1e-9 tolerance, so a gap written as exactly the threshold passes;
5. otherwise one pair (``paired``).

The pairs file holds references, never latents (one JSON object per line, :func:`pair_record`); the report is
``<out>.report.json`` (counts per reason and per unscored cause, gap statistics) and ``<out>.report.png`` (the
counts and the gap histogram).
"""
from __future__ import annotations

import collections
import io
import json
import math
import os
import os.path as osp
from collections.abc import Iterable, Sequence

import numpy as np

from posedreamer_mm.datasets.dpo_pairs import PairsFileError
from posedreamer_mm.generation.reader import GeneratedDataReader
from posedreamer_mm.utils.fileio import atomic_write_bytes, atomic_write_text, read_id_records

#: Group outcomes, in the order the rule checks them.
REASONS = ('paired', 'too_few_scored', 'tie', 'winner_below_min', 'gap_below_min')
#: Why a candidate is unscored.
UNSCORED_CAUSES = ('error', 'no_match', 'no_oks', 'not_in_scores')
PAIRS_FORMAT = 'posedreamer_mm.dpo_pairs'
_TOL = 1e-9


def candidate_oks(record: dict | None, no_match: str = 'exclude') -> tuple[float | None, str | None]:
    """A ``scores.jsonl`` record's OKS, or ``(None, cause)`` for an unscored candidate (rule 1 above)."""
    if record is None:
        return None, 'not_in_scores'
    if 'error' in record:
        return None, 'error'
    match = record.get('match')
    if isinstance(match, dict) and match.get('index') is None:
        return (0.0, None) if no_match == 'zero' else (None, 'no_match')
    oks = (record.get('scores') or {}).get('oks')
    if not isinstance(oks, (int, float)) or isinstance(oks, bool) or not math.isfinite(oks):
        return None, 'no_oks'
    return float(oks), None


def pair_group(oks: Sequence[float | None], min_gap: float = 0.05, min_winner: float = 0.5
               ) -> tuple[str, int | None, int | None]:
    """The pairing rule on one group: ``(reason, winner position, loser position)`` (positions into ``oks``).

    Args:
        oks: per candidate (in candidate order) its OKS, ``None`` when unscored.
        min_gap: the smallest winner - loser OKS gap kept (reference 0.05).
        min_winner: the smallest winner OKS kept (reference 0.5).
    """
    scored = [(float(v), i) for i, v in enumerate(oks) if v is not None]
    if len(scored) < 2:
        return 'too_few_scored', None, None
    best = max(v for v, _ in scored)
    worst = min(v for v, _ in scored)
    w = min(i for v, i in scored if v == best)
    lo = min(i for v, i in scored if v == worst)
    if best == worst:
        return 'tie', None, None
    if best < min_winner - _TOL:
        return 'winner_below_min', w, lo
    if best - worst < min_gap - _TOL:
        return 'gap_below_min', w, lo
    return 'paired', w, lo


def read_scores(path: str) -> dict[str, dict]:
    """``scores.jsonl`` (``tools/filter.py``) by sample id.

    Raises:
        PairsFileError: a line that is no JSON object with an ``id``, or an id twice (naming file and line;
            :func:`~posedreamer_mm.utils.fileio.read_id_records`).
    """
    if not osp.isfile(path):
        raise PairsFileError(f'scores file {path} does not exist: score the candidates first '
                             '(python tools/filter.py CANDIDATES_DIR [CONFIG], which writes CANDIDATES_DIR/filter/'
                             'scores.jsonl)')
    return {rec['id']: rec for _, rec in read_id_records(path, error=PairsFileError)}


def candidate_groups(reader: GeneratedDataReader) -> dict[str, list[int]]:
    """Rows of the candidates dataset by group (pose id), each in candidate order.

    Raises:
        PairsFileError: a row without ``group``/``candidate`` (not written with ``candidates_per_sample``).
    """
    groups: dict[str, list[tuple[int, int]]] = collections.defaultdict(list)
    for row in range(len(reader)):
        meta = reader.meta(row)
        if 'group' not in meta or 'candidate' not in meta:
            raise PairsFileError(f'{reader.root}: row {row} (sample {meta.get("id")!r}) has no "group"/"candidate" '
                                 'in its meta.jsonl: not a candidates dataset; generate it with the generator\'s '
                                 'candidates_per_sample=N (configs/dpo/candidates/)')
        groups[str(meta['group'])].append((int(meta['candidate']), row))
    return {g: [row for _, row in sorted(rows)] for g, rows in groups.items()}


def _candidate(reader: GeneratedDataReader, row: int, oks: float) -> dict:
    meta = reader.meta(row)
    return dict(id=meta['id'], row=row, candidate=int(meta['candidate']), seed=int(meta['seed']),
                image=meta['image'], oks=round(float(oks), 6))


def pair_record(reader: GeneratedDataReader, group: str, w_row: int, l_row: int, w_oks: float, l_oks: float,
                num_candidates: int, num_scored: int) -> dict:
    """One line of the pairs file: references into the candidates dataset (paths relative to its root).

    ``winner``/``loser``: ``id``, ``row``, ``candidate``, ``seed``, ``image``, ``oks``; ``controls``: control type
    -> path (the group's shared controls, from the winner's row); ``prompt``, ``negative_prompt``, ``gap``,
    ``num_candidates``, ``num_scored``.
    """
    meta = reader.meta(w_row)
    return dict(group=group, winner=_candidate(reader, w_row, w_oks), loser=_candidate(reader, l_row, l_oks),
                controls=dict(meta.get('controls', {})), prompt=str(meta.get('prompt') or ''),
                negative_prompt=str(meta.get('negative_prompt') or ''), gap=round(float(w_oks - l_oks), 6),
                num_candidates=num_candidates, num_scored=num_scored)


def build_pairs(reader: GeneratedDataReader, scores: dict[str, dict], min_gap: float = 0.05,
                min_winner: float = 0.5, no_match: str = 'exclude') -> tuple[list[dict], dict, list[float]]:
    """Pairs of every group and the counts: ``(pairs, report, gaps)`` (module docstring, the rule); ``gaps``:
    best - worst OKS of every group with 2 or more scored candidates (paired or not, ties as 0).

    Raises:
        PairsFileError: the scores name ids that are not in the candidates dataset (another dataset's scores).
    """
    if no_match not in ('exclude', 'zero'):
        raise ValueError(f'no_match must be "exclude" or "zero", got {no_match!r}')
    unknown = sorted(set(scores) - set(reader.ids))
    if unknown:
        raise PairsFileError(f'the scores name {len(unknown)} ids that are not in {reader.root} (first: '
                             f'{unknown[:3]}): they score another dataset')
    groups = candidate_groups(reader)
    reasons: collections.Counter = collections.Counter({r: 0 for r in REASONS})
    unscored: collections.Counter = collections.Counter({c: 0 for c in UNSCORED_CAUSES})
    pairs, gaps_all = [], []
    for group, rows in groups.items():
        values = []
        for row in rows:
            value, cause = candidate_oks(scores.get(reader.ids[row]), no_match)
            values.append(value)
            if cause:
                unscored[cause] += 1
        reason, w, lo = pair_group(values, min_gap, min_winner)
        reasons[reason] += 1
        scored = [v for v in values if v is not None]
        if len(scored) >= 2:
            gaps_all.append(max(scored) - min(scored))
        if reason == 'paired':
            pairs.append(pair_record(reader, group, rows[w], rows[lo], values[w], values[lo], len(rows),
                                     sum(v is not None for v in values)))
    gaps = np.array([p['gap'] for p in pairs], np.float64)
    report = dict(format=PAIRS_FORMAT, candidates=reader.root, num_groups=len(groups), num_pairs=len(pairs),
                  num_candidates=len(reader), groups_by_reason=dict(reasons), unscored_by_cause=dict(unscored),
                  min_gap=float(min_gap), min_winner=float(min_winner), no_match=no_match,
                  gap=_stats(gaps), gap_all_groups=_stats(np.array(gaps_all, np.float64)),
                  winner_oks=_stats(np.array([p['winner']['oks'] for p in pairs], np.float64)),
                  loser_oks=_stats(np.array([p['loser']['oks'] for p in pairs], np.float64)))
    return pairs, report, gaps_all


def _stats(x: np.ndarray) -> dict:
    if not x.size:
        return dict(n=0)
    return dict(n=int(x.size), mean=round(float(x.mean()), 6), min=round(float(x.min()), 6),
                median=round(float(np.median(x)), 6), max=round(float(x.max()), 6))


def save_pairs_report_png(path: str, report: dict, gaps: Iterable[float], gaps_all: Iterable[float]) -> str:
    """The report figure: groups per reason and the gap histogram (paired groups over all groups with a
    best and a worst), the ``min_gap`` threshold dashed."""
    import matplotlib
    matplotlib.use('Agg', force=False)
    import matplotlib.pyplot as plt

    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 3.6), dpi=100)
    names = list(report['groups_by_reason'])
    ax0.barh(names, [report['groups_by_reason'][n] for n in names], color='#2e86c1')
    ax0.invert_yaxis()
    ax0.set_xlabel('groups (controls)')
    unscored = ', '.join(f'{k} {v}' for k, v in report['unscored_by_cause'].items() if v) or 'none'
    ax0.set_title(f'{report["num_pairs"]} pairs of {report["num_groups"]} groups; unscored: {unscored}', fontsize=8)
    bins = np.linspace(0, 1, 41)
    ax1.hist(list(gaps_all), bins=bins, color='#bbbbbb', label='all groups (best - worst)')
    ax1.hist(list(gaps), bins=bins, color='#27ae60', label='kept pairs')
    ax1.axvline(report['min_gap'], color='#c0392b', ls='--', label=f'min_gap {report["min_gap"]:g}')
    ax1.set_xlabel('OKS gap (winner - loser)')
    ax1.set_ylabel('groups')
    ax1.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format='png')
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def make_pairs(candidates_dir: str, scores_path: str, out_path: str, min_gap: float = 0.05, min_winner: float = 0.5,
               no_match: str = 'exclude') -> dict:
    """Reads the candidates and their scores, writes ``out_path`` (pairs), ``<stem>.report.json`` and
    ``<stem>.report.png``; returns the report. Every file is written atomically."""
    reader = GeneratedDataReader(candidates_dir)
    scores = read_scores(scores_path)
    pairs, report, gaps_all = build_pairs(reader, scores, min_gap, min_winner, no_match)
    report.update(scores=osp.abspath(scores_path), pairs=osp.abspath(out_path))
    os.makedirs(osp.dirname(osp.abspath(out_path)), exist_ok=True)
    atomic_write_text(out_path, ''.join(json.dumps(p, sort_keys=True) + '\n' for p in pairs))
    stem = osp.splitext(out_path)[0]
    report['report_png'] = save_pairs_report_png(stem + '.report.png', report, [p['gap'] for p in pairs], gaps_all)
    atomic_write_text(stem + '.report.json', json.dumps(report, indent=1, sort_keys=True))
    return report


__all__ = ['PAIRS_FORMAT', 'REASONS', 'UNSCORED_CAUSES', 'PairsFileError', 'build_pairs', 'candidate_groups',
           'candidate_oks', 'make_pairs', 'pair_group', 'pair_record', 'read_scores', 'save_pairs_report_png']
