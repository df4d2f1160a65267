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
``<out>.report.json`` (counts per reason and per unscored cause, gap statistics, the sha256 of the pairs file and
of the scores) and ``<out>.report.png`` (the counts and the gap histogram).

Bad input is refused with one :class:`PairsFileError` naming the file: an empty scores file, an OKS outside
``[0, 1]`` or not a number (NaN stays an unscored candidate, ``no_oks``), a group whose candidates do not share one
label and prompt or repeat a candidate number, an output that is an input, or an output another run made with other
settings (``overwrite=True`` replaces it).
"""
from __future__ import annotations

import collections
import contextlib
import hashlib
import io
import json
import math
import os
import os.path as osp
import uuid
from collections.abc import Iterable, Sequence

import numpy as np

from posedreamer_mm.datasets.dpo_pairs import PairsFileError
from posedreamer_mm.generation.reader import GeneratedDataReader
from posedreamer_mm.generation.writer import MANIFEST, SHARDS_DIR, SUMMARY
from posedreamer_mm.utils.fileio import TMP_MARKER, atomic_write_bytes, atomic_write_text, iter_id_records

#: Group outcomes, in the order the rule checks them.
REASONS = ('paired', 'too_few_scored', 'tie', 'winner_below_min', 'gap_below_min')
#: Why a candidate is unscored.
UNSCORED_CAUSES = ('error', 'no_match', 'no_oks', 'not_in_scores')
PAIRS_FORMAT = 'posedreamer_mm.dpo_pairs'
_TOL = 1e-9
#: Label fields the candidates of one group share (one pose, one crop camera: one control).
_LABEL_FIELDS = ('betas', 'global_orient', 'body_pose', 'left_hand_pose', 'right_hand_pose', 'jaw_pose', 'transl',
                 'focal', 'princpt', 'img_size')
#: Report keys that define a pairs file: a second run into the same output with other values is refused.
_SETTINGS = ('min_gap', 'min_winner', 'no_match', 'candidates_fingerprint')


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
    """``scores.jsonl`` (``tools/filter.py``) by sample id, each record cut to what pairing reads (``id``,
    ``error``, ``scores.oks``, ``match.index``: :func:`candidate_oks`).

    The file is streamed: its records carry every detection's keypoints (~1.3 kB a line), and holding them all took
    about nine times the file's size (12 GB for a million candidates).

    Raises:
        PairsFileError: a line that is no JSON object with a string ``id``, or an id twice (naming file and line;
            the messages of :func:`~posedreamer_mm.utils.fileio.read_id_records`); a ``scores.oks`` that is not a
            number in ``[0, 1]`` (NaN is allowed: an unscored candidate); a file without any record.
    """
    if not osp.isfile(path):
        raise PairsFileError(f'scores file {path} does not exist: score the candidates first '
                             '(python tools/filter.py CANDIDATES_DIR [CONFIG], which writes CANDIDATES_DIR/filter/'
                             'scores.jsonl)')
    out: dict[str, dict] = {}
    for n, rec in iter_id_records(path, error=PairsFileError):
        _check_oks(path, n, rec)
        out[rec['id']] = _slim(rec)
    if not out:
        raise PairsFileError(f'scores file {path} holds no record (empty): expected one JSON line per candidate of '
                             'tools/filter.py; score the candidates again')
    return out


def _slim(rec: dict) -> dict:
    """The part of a scores record :func:`candidate_oks` reads."""
    out = dict(id=rec['id'])
    if 'error' in rec:
        out['error'] = rec['error']
    scores, match = rec.get('scores'), rec.get('match')
    if isinstance(scores, dict) and 'oks' in scores:
        out['scores'] = dict(oks=scores['oks'])
    if isinstance(match, dict):
        out['match'] = dict(index=match.get('index'))
    return out


def _check_oks(path: str, n: int, rec: dict) -> None:
    scores = rec.get('scores')
    if scores is None or 'error' in rec:
        return
    if not isinstance(scores, dict):
        raise PairsFileError(f'{path}, line {n}: sample {rec["id"]!r} has "scores" {scores!r}; expected a JSON '
                             'object (tools/filter.py\'s record)')
    oks = scores.get('oks')
    if oks is None or (isinstance(oks, float) and math.isnan(oks)):
        return   # no OKS: an unscored candidate ('no_oks'), skipped and counted
    if isinstance(oks, bool) or not isinstance(oks, (int, float)) or not 0.0 <= oks <= 1.0 + _TOL:
        raise PairsFileError(f'{path}, line {n}: sample {rec["id"]!r} has scores.oks {oks!r}; expected a number in '
                             '[0, 1] (OKS; NaN or no value for an unscored candidate): not the scores of '
                             'tools/filter.py')


def candidate_groups(reader: GeneratedDataReader) -> dict[str, list[int]]:
    """Rows of the candidates dataset by group (pose id), each in candidate order.

    Raises:
        PairsFileError: a row without ``group``/``candidate`` (not written with ``candidates_per_sample``); a group
            whose candidates repeat a candidate number, or differ in prompt or label (one group is one control).
    """
    groups: dict[str, list[tuple[int, int]]] = collections.defaultdict(list)
    captions = []
    for row in range(len(reader)):
        meta = reader.meta(row)
        if 'group' not in meta or 'candidate' not in meta:
            raise PairsFileError(f'{reader.root}: row {row} (sample {meta.get("id")!r}) has no "group"/"candidate" '
                                 'in its meta.jsonl: not a candidates dataset; generate it with the generator\'s '
                                 'candidates_per_sample=N (configs/dpo/candidates/)')
        candidate = meta['candidate']
        if isinstance(candidate, bool) or not isinstance(candidate, int):
            raise PairsFileError(f'{reader.root}: row {row} (sample {meta["id"]!r}) has "candidate" {candidate!r} '
                                 'in its meta.jsonl; expected an integer')
        groups[str(meta['group'])].append((candidate, row))
        captions.append((meta.get('prompt'), meta.get('negative_prompt')))
    out = {g: [row for _, row in sorted(rows)] for g, rows in groups.items()}
    labels = _LabelRows(reader)
    for g, rows in groups.items():
        _check_group(reader, labels, captions, g, sorted(rows))
    return out


class _LabelRows:
    """Row ``i``'s label fields (:data:`_LABEL_FIELDS`) as one float64 vector and its gender; one shard's matrix
    kept (a group's rows are neighbours), so checking a million candidates costs seconds, not a ``BodySample`` each."""

    def __init__(self, reader: GeneratedDataReader) -> None:
        self.reader, self.pos, self.matrix, self.gender = reader, None, None, None
        self.slices: dict[str, slice] = {}

    def __call__(self, i: int) -> tuple[np.ndarray, str]:
        pos, row = self.reader._loc[i]
        if pos != self.pos:
            labels = self.reader._shard_labels(pos)
            n = len(labels['id'])
            parts = [np.asarray(labels[k], np.float64).reshape(n, -1) for k in _LABEL_FIELDS]
            ends = np.cumsum([p.shape[1] for p in parts]).tolist()
            self.slices = {k: slice(e - p.shape[1], e) for k, p, e in zip(_LABEL_FIELDS, parts, ends)}
            self.matrix = np.concatenate(parts, axis=1)
            self.gender, self.pos = np.asarray(labels['gender']), pos
        return self.matrix[row], str(self.gender[row])

    def differing(self, a: np.ndarray, b: np.ndarray, gender_a: str, gender_b: str) -> list[str]:
        """The label fields in which two rows' vectors differ."""
        return (['gender'] if gender_a != gender_b else []) + [
            k for k, sl in self.slices.items() if not np.allclose(a[sl], b[sl], rtol=1e-5, atol=1e-6)]


def _check_group(reader: GeneratedDataReader, labels: _LabelRows, captions: list[tuple], group: str,
                 rows: list[tuple[int, int]]) -> None:
    """One control per group: distinct candidate numbers, one prompt, one label (pose and crop camera)."""
    where = f'{reader.root}: group {group!r}'
    for (j0, r0), (j1, r1) in zip(rows, rows[1:]):
        if j0 == j1:
            raise PairsFileError(f'{where}: candidate {j0} appears twice (rows {r0} and {r1}: {reader.ids[r0]!r}, '
                                 f'{reader.ids[r1]!r}); a group holds candidates 0..N-1 of one control once each')
    first = rows[0][1]
    label0, gender0 = labels(first)
    label0 = label0.copy()
    for _, row in rows[1:]:
        for key, mine, theirs in zip(('prompt', 'negative_prompt'), captions[row], captions[first]):
            if mine != theirs:
                raise PairsFileError(f'{where}: candidate {reader.ids[row]!r} (row {row}) has another {key} than '
                                     f'candidate {reader.ids[first]!r} (row {first}): {mine!r} vs {theirs!r}; the '
                                     'candidates of one group share one control and caption')
        label, gender = labels(row)
        same = label.shape == label0.shape and (np.array_equal(label, label0)   # the usual case, 15x cheaper
                                                or np.allclose(label, label0, rtol=1e-5, atol=1e-6))
        if gender != gender0 or not same:
            differ = labels.differing(label, label0, gender, gender0) if label.shape == label0.shape else 'shape'
            raise PairsFileError(f'{where}: candidate {reader.ids[row]!r} (row {row}) has another label {differ} '
                                 f'than candidate {reader.ids[first]!r} (row {first}); the candidates of one group '
                                 'share one pose and crop camera (one control): a pair across two controls would '
                                 'credit the winner\'s control with the loser\'s image')


def check_scores_dataset(reader: GeneratedDataReader, scores_path: str) -> None:
    """Refuses scores that ``tools/filter.py`` made on another candidates run of the same poses (same ids).

    The filter's ``summary.json`` beside the scores names the dataset it scored (``data_root``). When that folder
    exists, is not ``reader``'s and its ``manifest.json`` fingerprint differs, the scores rank other images. A copy
    of the dataset (same fingerprint), a folder gone since, or scores without a summary (the on-line refresh's)
    are accepted.

    Raises:
        PairsFileError: naming the scores, both datasets and their fingerprints.
    """
    try:
        with open(osp.join(osp.dirname(osp.abspath(scores_path)), SUMMARY), encoding='utf-8') as f:
            scored = json.load(f).get('data_root')
        if not isinstance(scored, str) or osp.realpath(scored) == osp.realpath(reader.root):
            return
        with open(osp.join(scored, MANIFEST), encoding='utf-8') as f:
            fingerprint = json.load(f).get('fingerprint')
    except (OSError, ValueError, AttributeError):
        return
    if fingerprint != reader.manifest.get('fingerprint'):
        raise PairsFileError(f'{scores_path} scores {scored} (fingerprint {fingerprint!r}), not {reader.root} '
                             f'(fingerprint {reader.manifest.get("fingerprint")!r}), by the filter\'s summary.json '
                             'beside it: another candidates run of the same poses has the same ids, other images. '
                             'Score this dataset (python tools/filter.py CANDIDATES_DIR CONFIG) and pass its scores')


def _candidate(reader: GeneratedDataReader, row: int, oks: float) -> dict:
    meta = reader.meta(row)
    return dict(id=meta['id'], row=row, candidate=int(meta['candidate']), seed=int(meta['seed']),
                image=meta['image'], oks=round(float(oks), 6))


def pair_record(reader: GeneratedDataReader, group: str, w_row: int, l_row: int, w_oks: float, l_oks: float,
                num_candidates: int, num_scored: int) -> dict:
    """One line of the pairs file: references into the candidates dataset (paths relative to its root).

    ``winner``/``loser``: ``id``, ``row``, ``candidate``, ``seed``, ``image``, ``oks``; ``controls``: control type
    -> path (the group's shared controls, from the winner's row); ``prompt``, ``negative_prompt``, ``gap``,
    ``num_candidates``, ``num_scored``; ``candidates_fingerprint``: the candidates dataset's config fingerprint
    (its ``manifest.json``), which :class:`~posedreamer_mm.datasets.dpo_pairs.DPOPairDataset` compares with its
    ``data_root``'s (another run of the same poses has the same paths, not the same images).
    """
    meta = reader.meta(w_row)
    return dict(group=group, winner=_candidate(reader, w_row, w_oks), loser=_candidate(reader, l_row, l_oks),
                controls=dict(meta.get('controls', {})), prompt=str(meta.get('prompt') or ''),
                negative_prompt=str(meta.get('negative_prompt') or ''), gap=round(float(w_oks - l_oks), 6),
                num_candidates=num_candidates, num_scored=num_scored,
                candidates_fingerprint=reader.manifest.get('fingerprint'))


def build_pairs(reader: GeneratedDataReader, scores: dict[str, dict], min_gap: float = 0.05,
                min_winner: float = 0.5, no_match: str = 'exclude', scores_path: str | None = None
                ) -> tuple[list[dict], dict, list[float]]:
    """Pairs of every group and the counts: ``(pairs, report, gaps)`` (module docstring, the rule); ``gaps``:
    best - worst OKS of every group with 2 or more scored candidates (paired or not, ties as 0). ``scores_path``
    only names the scores in errors.

    Raises:
        PairsFileError: the scores name ids that are not in the candidates dataset (another dataset's scores, or
            rows the dataset lost since scoring); a malformed group (:func:`candidate_groups`).
        ValueError: ``min_gap`` or ``min_winner`` not a number in ``[0, 1]``; ``no_match`` not one of its values.
    """
    if no_match not in ('exclude', 'zero'):
        raise ValueError(f'no_match must be "exclude" or "zero", got {no_match!r}')
    for name, value in (('min_gap', min_gap), ('min_winner', min_winner)):
        # NaN compares False everywhere: a NaN threshold would pass every group
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise ValueError(f'{name} must be a number in [0, 1] (an OKS), got {value!r}')
    unknown = sorted(set(scores) - set(reader.ids))
    if unknown:
        raise PairsFileError(f'{scores_path or "the scores"} names {len(unknown)} ids that are not in {reader.root} '
                             f'(first: {unknown[:3]}; {len(scores) - len(unknown)} are): the scores of another '
                             'dataset, or the dataset lost rows since it was scored (a shard folder without '
                             'shard.json is skipped: see the warning above; the generate command regenerates it)')
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
    report = dict(format=PAIRS_FORMAT, candidates=reader.root,
                  candidates_fingerprint=reader.manifest.get('fingerprint'),
                  candidates_status=reader.manifest.get('status'), num_groups=len(groups),
                  num_pairs=len(pairs), num_candidates=len(reader), groups_by_reason=dict(reasons),
                  unscored_by_cause=dict(unscored),
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


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _output_paths(out_path: str) -> tuple[str, str, str]:
    stem = osp.splitext(out_path)[0]
    return out_path, stem + '.report.json', stem + '.report.png'


def check_outputs(reader: GeneratedDataReader, scores_path: str, out_path: str, settings: dict,
                  overwrite: bool = False) -> dict | None:
    """Refuses an output that is an input, or that another run made with other ``settings`` (:data:`_SETTINGS`);
    returns the existing pairs file's report (``None`` when there is none, or with ``overwrite``).

    Raises:
        PairsFileError: an output path is the scores file, a file of the candidates dataset (``manifest.json``,
            ``summary.json``, ``writer.lock``, anything under ``shards/``) or a directory (even with
            ``overwrite``); the pairs file exists and its report is missing, names other settings or another
            pairs file (``pairs_sha256``: the file was edited since) (unless ``overwrite``).
    """
    root = osp.realpath(reader.root)
    inputs = {osp.realpath(scores_path): 'the scores file'}
    inputs.update({osp.join(root, name): f'the candidates dataset\'s {name}'
                   for name in (MANIFEST, SUMMARY, 'writer.lock')})
    for path in _output_paths(out_path):
        real = osp.realpath(path)
        what = inputs.get(real)
        if what is None and osp.commonpath([real, osp.join(root, SHARDS_DIR)]) == osp.join(root, SHARDS_DIR):
            what = 'a file of the candidates dataset\'s shards'
        if what is None and osp.isdir(real):
            what = 'a directory'
        if what is not None:
            raise PairsFileError(f'--out {out_path}: writing {path} would overwrite {what}; choose another --out '
                                 '(the default is CANDIDATES_DIR/dpo_pairs.jsonl)')
    if overwrite or not osp.exists(out_path):
        return None
    report_path = _output_paths(out_path)[1]
    hint = ('choose another --out, or pass --overwrite (make_pairs(..., overwrite=True)) to replace it and its '
            'report')
    try:
        with open(report_path, encoding='utf-8') as f:
            old = json.load(f)
    except FileNotFoundError:
        raise PairsFileError(f'{out_path} exists and has no {osp.basename(report_path)} beside it (not a pairs file '
                             f'of this tool, or its report was deleted): {hint}') from None
    except (OSError, ValueError) as err:
        raise PairsFileError(f'{out_path} exists and its report {report_path} is unreadable ({err}): {hint}') from None
    differ = [k for k in _SETTINGS if k in old and old.get(k) != settings[k]]
    if differ:
        shown = ', '.join(f'{k} {_show(old.get(k))} there, {_show(settings[k])} now' for k in differ)
        raise PairsFileError(f'{out_path} was made with other settings ({shown}): a second run does not replace '
                             f'another run\'s pairs (a training run resumed on this file would change data): {hint}')
    if 'pairs_sha256' in old:
        with open(out_path, 'rb') as f:
            if _sha256(f.read()) != old['pairs_sha256']:
                raise PairsFileError(f'{out_path} is not the file its report {report_path} describes (pairs_sha256 '
                                     f'differs: edited by hand since it was made?): {hint}')
    return old


def _show(value: object) -> str:
    return f'{value:g}' if isinstance(value, float) else str(value)


def make_pairs(candidates_dir: str, scores_path: str, out_path: str, min_gap: float = 0.05, min_winner: float = 0.5,
               no_match: str = 'exclude', overwrite: bool = False) -> dict:
    """Reads the candidates and their scores, writes ``out_path`` (pairs), ``<stem>.report.json`` and
    ``<stem>.report.png``; returns the report.

    The three files are written to temporaries first and renamed in at the end, the pairs file last: a run killed
    or failing before that leaves the previous three files as they were (the report's ``pairs_sha256`` names the
    pairs file it describes). Into an existing pairs file made with other settings (thresholds, ``no_match``,
    candidates dataset) only with ``overwrite=True`` (:func:`check_outputs`).
    """
    reader = GeneratedDataReader(candidates_dir)
    scores = read_scores(scores_path)
    check_scores_dataset(reader, scores_path)
    pairs, report, gaps_all = build_pairs(reader, scores, min_gap, min_winner, no_match, scores_path)
    old = check_outputs(reader, scores_path, out_path, report, overwrite)
    pairs_text = ''.join(json.dumps(p, sort_keys=True) + '\n' for p in pairs)
    with open(scores_path, 'rb') as f:
        scores_sha = _sha256(f.read())
    report.update(scores=osp.abspath(scores_path), scores_sha256=scores_sha, pairs=osp.abspath(out_path),
                  pairs_sha256=_sha256(pairs_text.encode('utf-8')))
    if old is not None and old.get('pairs_sha256') != report['pairs_sha256']:
        # the same settings on new candidates or scores (a resumed generation, a rescoring): said, not silent
        report['replaced'] = dict(num_pairs=old.get('num_pairs'), pairs_sha256=old.get('pairs_sha256'),
                                  scores_sha256=old.get('scores_sha256'))
    out_path, json_path, png_path = _output_paths(out_path)
    directory = osp.dirname(osp.abspath(out_path))
    os.makedirs(directory, exist_ok=True)
    mine = tuple(f'.{osp.basename(p)}{TMP_MARKER}' for p in (out_path, json_path, png_path))
    for entry in os.scandir(directory):   # a killed run's temporaries (only ours: others may be writing here)
        if entry.name.startswith(mine):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
    token = uuid.uuid4().hex[:12]
    tmp = {p: osp.join(osp.dirname(osp.abspath(p)), f'.{osp.basename(p)}{TMP_MARKER}{token}')
           for p in (out_path, json_path, png_path)}
    try:
        atomic_write_text(tmp[out_path], pairs_text)
        report['report_png'] = png_path
        save_pairs_report_png(tmp[png_path], report, [p['gap'] for p in pairs], gaps_all)
        atomic_write_text(tmp[json_path], json.dumps(report, indent=1, sort_keys=True))
        for path in (png_path, json_path, out_path):
            os.replace(tmp[path], path)
    finally:
        for path in tmp.values():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    return report


__all__ = ['PAIRS_FORMAT', 'REASONS', 'UNSCORED_CAUSES', 'PairsFileError', 'build_pairs', 'candidate_groups',
           'candidate_oks', 'check_outputs', 'check_scores_dataset', 'make_pairs', 'pair_group', 'pair_record',
           'read_scores', 'save_pairs_report_png']
