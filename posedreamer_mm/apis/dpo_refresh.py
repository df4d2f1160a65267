"""On-line DPO pair refresh: one round of candidates -> scores -> pairs made with the policy being trained.

What ``DPOControlHook(refresh=dict(...))`` runs every ``interval`` iterations (docs/dpo.md, "On-line pair
refresh"); the files are the offline chain's (docs/dpo_pairs.md), so a round is audited like a
``tools/generate.py`` + ``tools/filter.py`` + ``tools/make_dpo_pairs.py`` run::

    work_dir/<out_dir>/iter_<K>/           a generated dataset (docs/dataset_format.md) of the round's candidates
        manifest.json, shards/...          rows ``<control id>_c<jjj>`` with ``group``, ``candidate``, ``seed``
        filter/scores.jsonl                per candidate: ``scores.oks`` and the label ``match`` (tools/filter.py's)
        dpo_pairs.jsonl                    the pairs (apis/dpo_pairs.py's rule and line format)
        dpo_pairs.report.json / .png       counts per reason and unscored cause, gaps, the round's figures

Candidate ``j`` of control ``g`` in the round at iteration ``K`` has the id ``candidate_id(g, j)`` and the seed
``stable_seed(seed, 'dpo_refresh', K, id)``: fixed for a run (a resumed run redraws the same), different in every
round. The folder appears by one rename once complete (``.iter_<K>.tmp-refresh`` while being written).

**Distributed**: the candidates are a sharded dataset of ``controls_per_shard`` controls per shard; rank ``r`` of
``W`` generates, scores and writes shards ``r, r + W, ...`` (the generator's ``shards_of_rank``), the score
records are gathered, rank 0 finalises the dataset, pairs the candidates and renames the folder, and every rank
returns rank 0's report. A failure on any rank is gathered and raised on every rank (none waits in a collective).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import os.path as osp
import shutil
import uuid
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from posedreamer_mm.apis.control_eval import HeldOutSample, evaluate_control, load_held_out, select_indices
from posedreamer_mm.apis.dpo_pairs import (
    build_pairs,
    candidate_groups,
    candidate_oks,
    pair_group,
    save_pairs_report_png,
)
from posedreamer_mm.body.sources.base import stable_seed
from posedreamer_mm.generation.generator import candidate_id
from posedreamer_mm.generation.reader import GeneratedDataReader
from posedreamer_mm.generation.writer import ShardedDatasetWriter, shards_of_rank
from posedreamer_mm.utils import output_lock
from posedreamer_mm.utils.fileio import TMP_MARKER, atomic_write_text
from posedreamer_mm.visualization.contact_sheet import tile_sheet

#: ``refresh=dict(...)``'s keys and defaults (``None``: required).
REFRESH_DEFAULTS = dict(interval=None, controls=None, num_controls=None, candidates=4, min_gap=0.05, min_winner=0.5,
                        no_match='exclude', mode='replace', out_dir='dpo_refresh', seed=0, controls_per_shard=16,
                        image_format='png', sheet_rows=4)
REFRESH_MODES = ('replace', 'mix')
PAIRS_NAME = 'dpo_pairs.jsonl'
SCORES_REL = 'filter/scores.jsonl'


def refresh_settings(cfg: dict) -> dict:
    """``refresh=dict(...)`` checked and completed with :data:`REFRESH_DEFAULTS`.

    Raises:
        ValueError: an unknown or missing key, or a value out of range (the message names the key).
    """
    if not isinstance(cfg, dict):
        raise ValueError(f'DPOControlHook: refresh must be a dict, got {type(cfg).__name__}')
    unknown = sorted(set(cfg) - set(REFRESH_DEFAULTS))
    if unknown:
        raise ValueError(f'DPOControlHook: refresh has unknown keys {unknown}; the keys are {sorted(REFRESH_DEFAULTS)}')
    s = dict(REFRESH_DEFAULTS, **cfg)
    for key in ('interval', 'controls'):
        if s[key] is None:
            raise ValueError(f'DPOControlHook: refresh.{key} is required')
    s['controls'] = os.fspath(s['controls'])

    def integer(key: str, low: int) -> int:
        value = s[key]
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f'DPOControlHook: refresh.{key} must be an integer >= {low}, got {value!r}')
        return int(value)

    s['interval'], s['candidates'] = integer('interval', 1), integer('candidates', 2)
    s['controls_per_shard'], s['seed'], s['sheet_rows'] = (integer('controls_per_shard', 1), integer('seed', 0),
                                                            integer('sheet_rows', 0))
    if s['num_controls'] is not None:
        s['num_controls'] = integer('num_controls', 1)
    for key in ('min_gap', 'min_winner'):  # the pairing rule's range (apis/dpo_pairs.py), checked before training
        if isinstance(s[key], bool) or not isinstance(s[key], (int, float)) or not 0.0 <= s[key] <= 1.0:
            raise ValueError(f'DPOControlHook: refresh.{key} must be a number in [0, 1] (an OKS), got {s[key]!r}')
        s[key] = float(s[key])
    choices = dict(no_match=('exclude', 'zero'), mode=REFRESH_MODES, image_format=('png', 'jpg'))
    for key, allowed in choices.items():
        if s[key] not in allowed:
            raise ValueError(f'DPOControlHook: refresh.{key} must be one of {list(allowed)}, got {s[key]!r}')
    out_dir = s['out_dir']
    if not isinstance(out_dir, str) or not out_dir or osp.isabs(out_dir) or '..' in out_dir.split('/'):
        raise ValueError(f'DPOControlHook: refresh.out_dir must be a folder name under the work dir, got {out_dir!r}')
    return s


class _Rows:
    """A subset of a reader's rows with the reader's interface (what ``load_held_out`` reads)."""

    def __init__(self, reader: GeneratedDataReader, rows: Sequence[int]) -> None:
        self.reader, self.rows = reader, list(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def meta(self, i: int) -> dict:
        return self.reader.meta(self.rows[i])

    def sample(self, i: int):
        return self.reader.sample(self.rows[i])

    def control_path(self, i: int, control_type: str) -> str:
        return self.reader.control_path(self.rows[i], control_type)

    def __repr__(self) -> str:
        return repr(self.reader)


def load_controls(root: str, control_types: Sequence[str], num_controls: int | None = None) -> list[HeldOutSample]:
    """The training controls of the refresh rounds: labelled rows of a generated dataset with stored controls.

    A candidates dataset (rows with ``group``, e.g. the offline candidates the run started from) gives one control
    per group (its first candidate's row; the controls and prompt are the group's); a plain dataset one per row.
    ``num_controls`` takes that many, evenly spaced (``select_indices``); ``None`` takes all. Each control's
    ``sample_id`` is its group (pose) id, the group of its refreshed candidates.

    Raises:
        FileNotFoundError: ``root`` is not a directory (naming ``refresh.controls``).
        ValueError: a row without a label or without one of ``control_types`` (naming the dataset and row).
    """
    if not osp.isdir(root):
        raise FileNotFoundError(f'DPOControlHook: refresh.controls {root!r} is not a directory (expected a generated '
                                'dataset with labels and stored controls, e.g. the candidates dataset)')
    reader = GeneratedDataReader(root)
    if len(reader) == 0:
        raise ValueError(f'DPOControlHook: refresh.controls {root} holds no sample')
    if 'group' in reader.meta(0):
        groups = candidate_groups(reader)
        rows = [groups[g][0] for g in groups]
    else:
        rows = list(range(len(reader)))
    if num_controls is not None:
        rows = [rows[i] for i in select_indices(len(rows), num_controls)]
    view = _Rows(reader, rows)
    out = load_held_out(view, len(rows), control_types)
    return [dataclasses.replace(s, sample_id=str(view.meta(i).get('group', s.sample_id))) for i, s in enumerate(out)]


def candidate_seed(seed: int, step: int, cid: str) -> int:
    """The seed of candidate ``cid`` in the round at iteration ``step``."""
    return stable_seed(seed, 'dpo_refresh', int(step), cid)


def _gather(obj: Any) -> list:
    from mmengine.dist import all_gather_object
    return all_gather_object(obj)


def _raise_failed(gathered: list[dict], what: str, cause: BaseException | None = None) -> None:
    """Raises on every rank when a gathered payload has an error; ``cause``: this rank's own exception (chained,
    so that its traceback is shown where it happened)."""
    errors = [f'rank {r}: {p["error"]}' for r, p in enumerate(gathered) if p.get('error')]
    if errors:
        raise RuntimeError(f'DPO pair refresh failed ({what}) on ' + '; '.join(errors)) from cause


def _write_shard(generator: Any, writer: ShardedDatasetWriter, tmp: str, shard: int, num_rows: int,
                 controls: Sequence[HeldOutSample], step: int, s: dict, eval_kwargs: dict) -> list[dict]:
    """Generates, scores and writes one shard of candidates; returns its score records (tools/filter.py's)."""
    n = s['candidates']
    rows = list(writer.shard_range(shard, num_rows))
    cands = []
    for index in rows:
        control, j = controls[index // n], index % n
        cid = candidate_id(control.sample_id, j)
        cands.append(dataclasses.replace(control, sample_id=cid, seed=candidate_seed(s['seed'], step, cid)))
    result = evaluate_control(generator, cands, **eval_kwargs)
    builder = writer.open_shard(tmp, shard, num_rows)
    records = []
    try:
        for index, cand, img, match in zip(rows, cands, result.images, result.matches):
            control, j = controls[index // n], index % n
            sample = cand.sample.copy()
            sample.id = cand.sample_id
            sample.meta.update(group=control.sample_id, candidate=j)
            builder.add(index, dict(sample=sample, img=img, controls=cand.controls, seed=cand.seed, prompt=cand.prompt,
                                    negative_prompt=cand.negative_prompt, backend=f'DPOControlHook@iter_{step}',
                                    group=control.sample_id, candidate=j, scores=dict(oks=round(float(match.oks), 6))))
            record = dict(id=cand.sample_id, index=index, kept=True, stage=None, drop_reason=None,
                          scores=dict(oks=round(float(match.oks), 6)), match=match.to_dict())
            if record['match']['distance'] is not None and not np.isfinite(record['match']['distance']):
                record['match']['distance'] = None
            records.append(record)
        builder.commit()
    except BaseException:
        builder.abort()
        raise
    return records


def _remove_killed(root: str, writer: ShardedDatasetWriter) -> None:
    """Deletes what a killed attempt at the round ``root`` left: its temporary folder, and the previous folder a
    kill between :func:`_publish`'s two renames left moved aside (``.iter_<K>.tmp-*``; the final folder is not
    touched). A temporary folder whose writer lock another live run holds (a second run in the same work dir at
    the same round) is left alone and named in a ``LockHeldError``; the lock of a killed run is stale and taken
    over (``utils/output_lock.py``: at once on the same host, after ``lock_stale_s`` without a heartbeat from
    another)."""
    prefix = f'.{osp.basename(root)}{TMP_MARKER}'
    for name in sorted(os.listdir(osp.dirname(root))):
        if not name.startswith(prefix):
            continue
        path = osp.join(osp.dirname(root), name)
        if osp.isfile(osp.join(path, output_lock.LOCK_NAME)):
            try:
                output_lock.acquire(path, writer.lock_stale_s, writer.lock_heartbeat_s)
            except output_lock.LockHeldError as err:
                raise output_lock.LockHeldError(f'another live run writes the round {root} in {path} ({err}): two '
                                                'runs in one work dir; stop one, or give each its own') from None
            output_lock.release(path)
        shutil.rmtree(path, ignore_errors=True)


def _publish(tmp: str, final: str) -> None:
    """``tmp`` becomes ``final`` by rename; an existing ``final`` (a round redone after a resume from an earlier
    checkpoint) is moved aside first and deleted after."""
    if osp.exists(final):
        old = osp.join(osp.dirname(final), f'.{osp.basename(final)}{TMP_MARKER}old-{uuid.uuid4().hex[:8]}')
        os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, final)


def refresh_round(generator: Any, controls: Sequence[HeldOutSample], scorer: Any, root: str, step: int, s: dict,
                  control_types: Sequence[str], backend: dict | None = None, batch_size: int = 1,
                  keypoint_thr: float = 0.3, min_keypoints: int = 4) -> dict:
    """One refresh round into ``root`` (module docstring): returns the pairs report of rank 0 on every rank.

    Args:
        generator: the live pipeline (or a generation backend) of the current policy.
        controls: from :func:`load_controls`.
        scorer: a built pose scorer.
        root: the round's folder (``work_dir/<out_dir>/iter_<step>``).
        step: the iteration the round is made at.
        s: :func:`refresh_settings`.
        control_types, backend, batch_size, keypoint_thr, min_keypoints: the hook's generation and matching
            settings (``apis/control_eval.py``).

    Returns:
        ``apis/dpo_pairs.py``'s report (``num_pairs``, ``groups_by_reason``, ``unscored_by_cause``, gap
        statistics, ``pairs``: the pairs file) with ``refresh``: ``iter``, ``num_controls``,
        ``candidates_per_control``, ``mean_oks`` (every candidate, one without a matched person counting 0),
        ``num_unmatched``, ``seed``, ``pairs_sha256`` (of the pairs file: a resume checks it, :func:`file_sha256`).
    """
    from mmengine.dist import get_dist_info
    rank, world = get_dist_info()
    n, num_rows = s['candidates'], len(controls) * s['candidates']
    writer = ShardedDatasetWriter(shard_size=n * s['controls_per_shard'], image_format=s['image_format'],
                                  save_controls=True)
    root = osp.abspath(root)
    tmp = osp.join(osp.dirname(root), f'.{osp.basename(root)}{TMP_MARKER}refresh')
    header = dict(fingerprint=f'dpo-refresh-{step}-{stable_seed(s["seed"], *[c.sample_id for c in controls])}',
                  config=dict(dpo_refresh=dict(iter=int(step), controls=s['controls'], candidates=n,
                                               seed=s['seed'])), num_samples=num_rows)
    state, failure = dict(error=None), None
    if rank == 0:
        try:
            os.makedirs(osp.dirname(root), exist_ok=True)
            _remove_killed(root, writer)
            writer.prepare_output(tmp, header)
        except Exception as err:
            state['error'], failure = f'{type(err).__name__}: {err}', err
    _raise_failed(_gather(state), f'preparing {tmp}', failure)

    eval_kwargs = dict(scorer=scorer, control_types=list(control_types), backend=backend, batch_size=batch_size,
                       keypoint_thr=keypoint_thr, min_keypoints=min_keypoints)
    payload = dict(error=None, records=[])
    try:
        for shard in shards_of_rank(writer.num_shards(num_rows), rank, world):
            payload['records'] += _write_shard(generator, writer, tmp, shard, num_rows, controls, step, s, eval_kwargs)
    except Exception as err:  # gathered so that the other ranks raise too instead of waiting
        payload, failure = dict(error=f'{type(err).__name__}: {err}', records=[]), err
    gathered = _gather(payload)
    try:
        _raise_failed(gathered, 'generating and scoring the candidates', failure)
    except RuntimeError:
        if rank == 0:
            writer.release_output(tmp)
            shutil.rmtree(tmp, ignore_errors=True)
        raise

    outcome: dict = dict(error=None, report=None)
    if rank == 0:
        try:
            outcome['report'] = _pair_and_publish(writer, tmp, root, step, s, controls,
                                                  sorted((r for p in gathered for r in p['records']),
                                                         key=lambda r: r['index']))
        except Exception as err:
            outcome['error'], failure = f'{type(err).__name__}: {err}', err
            writer.release_output(tmp)
            shutil.rmtree(tmp, ignore_errors=True)
    final = _gather(outcome)
    _raise_failed(final, 'pairing', failure)
    return final[0]['report']


def _pair_and_publish(writer: ShardedDatasetWriter, tmp: str, root: str, step: int, s: dict,
                      controls: Sequence[HeldOutSample], records: list[dict]) -> dict:
    n = s['candidates']
    writer.finalize(tmp, len(records), extra=dict(candidates_per_sample=n, num_source_samples=len(controls)))
    atomic_write_text(osp.join(tmp, *SCORES_REL.split('/')),
                      ''.join(json.dumps(r, sort_keys=True) + '\n' for r in records))
    reader = GeneratedDataReader(tmp)
    pairs, report, gaps_all = build_pairs(reader, {r['id']: r for r in records}, s['min_gap'], s['min_winner'],
                                          s['no_match'])
    oks = np.array([r['scores']['oks'] for r in records], np.float64)
    unmatched = sum(r['match']['index'] is None for r in records)
    report.update(candidates=root, scores=osp.join(root, *SCORES_REL.split('/')), pairs=osp.join(root, PAIRS_NAME),
                  report_png=osp.join(root, 'dpo_pairs.report.png'),
                  refresh=dict(iter=int(step), controls=s['controls'], num_controls=len(controls),
                               candidates_per_control=n, seed=s['seed'], mean_oks=float(oks.mean()),
                               num_unmatched=int(unmatched), seed_rule="stable_seed(seed, 'dpo_refresh', iter, id)"))
    text = ''.join(json.dumps(p, sort_keys=True) + '\n' for p in pairs)
    report['refresh']['pairs_sha256'] = hashlib.sha256(text.encode()).hexdigest()
    atomic_write_text(osp.join(tmp, PAIRS_NAME), text)
    save_pairs_report_png(osp.join(tmp, 'dpo_pairs.report.png'), report, [p['gap'] for p in pairs], gaps_all)
    atomic_write_text(osp.join(tmp, 'dpo_pairs.report.json'), json.dumps(report, indent=1, sort_keys=True))
    writer.release_output(tmp)
    _publish(tmp, root)
    return report


def refresh_contact_sheet(root: str, s: dict, max_rows: int = 4, tile: int = 128) -> np.ndarray | None:
    """The round's contact sheet: per control (the first ``max_rows``), its candidates (winner framed green, loser
    red, OKS and the group's reason in the caption) and its control(s); ``None`` when there is nothing to show."""
    reader = GeneratedDataReader(root)
    groups = candidate_groups(reader)
    with open(osp.join(root, *SCORES_REL.split('/'))) as f:
        scores = {r['id']: r for r in map(json.loads, f) if r}
    rows, captions, types = [], [], []
    for group in list(groups)[:max(0, int(max_rows))]:
        members = groups[group]
        values = [candidate_oks(scores.get(reader.ids[r]), s['no_match'])[0] for r in members]
        reason, w, lo = pair_group(values, s['min_gap'], s['min_winner'])
        tiles = []
        for k, row in enumerate(members):
            img = cv2.resize(reader.load_image(row), (tile, tile), interpolation=cv2.INTER_AREA)
            if reason == 'paired' and k in (w, lo):
                cv2.rectangle(img, (1, 1), (tile - 2, tile - 2), (0, 200, 0) if k == w else (220, 0, 0), 3)
            text = 'unscored' if values[k] is None else f'{values[k]:.2f}'
            cv2.putText(img, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 0), 1, cv2.LINE_AA)
            tiles.append(img)
        types = types or sorted(reader.meta(members[0]).get('controls', {}))
        for t in types:
            control = cv2.imread(reader.control_path(members[0], t), cv2.IMREAD_COLOR)
            tiles.append(cv2.cvtColor(control, cv2.COLOR_BGR2RGB))
        rows.append(tiles)
        captions.append(f'{group[-14:]} {reason}')
    if not rows:
        return None
    columns = [f'c{j:03d}' for j in range(s['candidates'])] + types
    return tile_sheet(rows, columns, captions, tile)


__all__ = ['PAIRS_NAME', 'REFRESH_DEFAULTS', 'REFRESH_MODES', 'candidate_seed', 'load_controls',
           'refresh_contact_sheet', 'refresh_round', 'refresh_settings']
