"""What ``tools/mine_hard.py`` calls: train the difficulty regressor on a scored dataset, score a pose pool, write the
hardest poses as a pose list for the next generation round (docs/mining.md).

Steps (each a function, so notebooks can run one alone):

1. :func:`read_scored_dataset`: the SMPL-X parameters of a generated dataset's labels and one target per row:
   the OKS of ``tools/filter.py``'s ``scores.jsonl`` (default ``<root>/filter/scores.jsonl``, else the ``oks`` the
   generator's own stages stored in ``meta.jsonl``), or an HMR model's per-sample error from a file of
   ``id -> error``;
2. :func:`train_on_dataset`: :func:`~posedreamer_mm.mining.regressor.train_regressor` on them, grouped by pose (the
   ``AugmentedSource`` inner id), and :func:`plot_heldout` of predicted vs measured;
3. :func:`score_pool`: predictions for every sample of a pose source (any ``POSE_SOURCES`` config);
4. :func:`select_and_write`: the K hardest with the diversity guard
   (:func:`~posedreamer_mm.mining.selection.select_hardest`), written with
   :func:`~posedreamer_mm.body.sources.pose_list.write_pose_list` for ``PoseListSource``.

Outputs in ``out_dir`` (each written atomically): ``difficulty_model.txt`` + ``difficulty_model.features.json``,
``heldout.png``, ``heldout.jsonl`` (id, measured, predicted of the held-out rows), ``pool_predictions.jsonl`` (id,
predicted, difficulty of every pool sample), ``hard_poses.npz``, ``difficulty_<dataset>.npz`` for each dataset to
predict (the curriculum sampler's initial difficulty) and ``summary.json``.
"""
from __future__ import annotations

import collections
import dataclasses
import io
import json
import math
import os
import os.path as osp
from collections.abc import Mapping, Sequence

import numpy as np
from tqdm import tqdm

from posedreamer_mm.mining import (
    DEFAULT_PARTS,
    DifficultyRegressor,
    FeatureSpec,
    HeldOut,
    MiningError,
    MiningFileNotFoundError,
    Selection,
    select_hardest,
    stack_params,
    train_regressor,
)
from posedreamer_mm.utils.fileio import atomic_write_bytes, atomic_write_text, read_id_records

MODEL_NAME = 'difficulty_model.txt'
POSE_LIST_NAME = 'hard_poses.npz'
#: Fewest usable rows to train on (a held-out split of fewer says nothing).
MIN_ROWS = 10


@dataclasses.dataclass
class ScoredData:
    """Rows of a scored dataset with a target.

    Attributes:
        ids: row ids.
        params: stacked record fields (``features.PARAM_KEYS``), ``(N, ...)``.
        targets: ``(N,)`` OKS or error.
        target: ``'oks'`` or ``'error'``.
        groups: the pose each row shows (``meta['augment']['inner_id']``, else its id): rows of one pose stay in one
            split.
        origin: where the targets came from (file).
        skipped: reason -> count of rows without a usable target.
    """
    ids: list[str]
    params: dict[str, np.ndarray]
    targets: np.ndarray
    target: str
    groups: list[str]
    origin: str
    skipped: dict[str, int]


def read_oks_scores(path: str, skipped: collections.Counter) -> dict[str, float]:
    """``id -> oks`` from a ``tools/filter.py`` ``scores.jsonl``; rows it could not score and rows without an
    ``oks`` score are counted in ``skipped``. A row without a match has OKS 0 (the scorer saw no such person), a
    real, hard target."""
    table = {}
    for _, rec in read_id_records(path, error=MiningError):
        if 'error' in rec:
            skipped['unreadable when scored'] += 1
        elif 'oks' not in (rec.get('scores') or {}):
            skipped['no oks score'] += 1
        else:
            table[rec['id']] = float(rec['scores']['oks'])
    return table


def read_error_file(path: str, key: str = 'error') -> dict[str, float]:
    """``id -> error`` from ``.json`` (one object ``{id: error}``) or ``.jsonl`` (lines ``{"id": ..., key: ...}``).

    Raises:
        MiningError: naming the file (and line) on anything else.
    """
    if not osp.isfile(path):
        raise MiningFileNotFoundError(f'error file {path} not found')
    if path.endswith('.jsonl'):
        recs = [rec for _, rec in read_id_records(path, error=MiningError)]
        missing = next((r['id'] for r in recs if key not in r), None)
        if missing is not None:
            raise MiningError(f'{path}: the line of id {missing!r} has no {key!r} (pass --error-key)')
        table = {r['id']: r[key] for r in recs}
    else:
        try:
            with open(path, encoding='utf-8') as f:
                table = json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise MiningError(f'cannot read {path} as JSON: {err}') from err
        if not isinstance(table, dict):
            raise MiningError(f'{path}: expected one JSON object {{id: error}}, got a {type(table).__name__}')
    try:
        return {str(k): float(v) for k, v in table.items()}
    except (TypeError, ValueError) as err:
        raise MiningError(f'{path}: every error must be a number ({err})') from err


def read_scored_dataset(data_root: str, scores: str | None = None, errors: str | None = None,
                        error_key: str = 'error', max_samples: int | None = None,
                        progress: bool = True) -> ScoredData:
    """The rows of a generated dataset that have a target (see the module docstring for where targets come from).

    Raises:
        MiningError: no scores anywhere, unreadable target files, or fewer than :data:`MIN_ROWS` usable rows.
    """
    from posedreamer_mm.generation.reader import GeneratedDataReader
    reader = GeneratedDataReader(data_root)
    skipped: collections.Counter = collections.Counter()
    default_scores = osp.join(data_root, 'filter', 'scores.jsonl')
    if errors is not None:
        table, target, origin = read_error_file(errors, error_key), 'error', errors
    elif scores is not None or osp.isfile(default_scores):
        origin = scores or default_scores
        if not osp.isfile(origin):
            raise MiningFileNotFoundError(f'scores file {origin} not found (tools/filter.py writes '
                                          'DATA_ROOT/filter/scores.jsonl)')
        table, target = read_oks_scores(origin, skipped), 'oks'
    else:
        table, target, origin = None, 'oks', osp.join(data_root, 'meta.jsonl (scores.oks of each row)')
    n = len(reader) if max_samples is None else min(len(reader), int(max_samples))
    rows, values = [], []
    for i in tqdm(range(n), desc='read labels', unit='row', disable=not progress):
        sid = reader.ids[i]
        if table is None:
            value = (reader.meta(i).get('scores') or {}).get('oks')
            if value is None:
                skipped['no oks score'] += 1
                continue
        elif sid not in table:
            skipped['no target for the id'] += 1
            continue
        else:
            value = table[sid]
        if not math.isfinite(value):
            skipped['target NaN or inf'] += 1
            continue
        rows.append(i)
        values.append(float(value))
    if table is not None and max_samples is None:
        unknown = len(set(table) - set(reader.ids))
        if unknown:
            skipped['target id not in the dataset'] += unknown
    if len(rows) < MIN_ROWS:
        raise MiningError(f'{data_root}: {len(rows)} rows have a target in {origin}, at least {MIN_ROWS} are needed '
                          f'(skipped: {dict(skipped) or "none"}); score the dataset first: python tools/filter.py '
                          f'{data_root}')
    samples = [reader.sample(i) for i in rows]
    groups = [str((s.meta.get('augment') or {}).get('inner_id', s.id)) for s in samples]
    return ScoredData([s.id for s in samples], stack_params(samples), np.asarray(values), target, groups, origin,
                      dict(skipped))


def train_on_dataset(data: ScoredData, parts: Sequence[str] = DEFAULT_PARTS, representation: str = 'axis_angle',
                     lgb_params: Mapping | None = None, test_fraction: float = 0.2, valid_fraction: float = 0.1,
                     seed: int = 42) -> tuple[DifficultyRegressor, HeldOut]:
    """Trains the regressor on a :class:`ScoredData` (split grouped by pose)."""
    spec = FeatureSpec(num_betas=data.params['betas'].shape[1], parts=tuple(parts), representation=representation)
    model, held = train_regressor(spec.features(data.params, where=data.origin), data.targets, spec, data.target,
                                  ids=data.ids, groups=data.groups, test_fraction=test_fraction,
                                  valid_fraction=valid_fraction, split_seed=seed, params=lgb_params)
    model.info.update(data=data.origin, skipped=data.skipped, num_rows=len(data.ids))
    return model, held


def plot_heldout(path: str, held: HeldOut, target: str, title: str = '') -> str:
    """Scatter of predicted vs measured on the held-out rows, with the identity line and the figures."""
    import matplotlib
    matplotlib.use('Agg', force=False)
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5.2, 5), dpi=100)
    ax.scatter(held.measured, held.predicted, s=8, alpha=0.5, color='#2e86c1', edgecolors='none')
    lo = float(min(held.measured.min(), held.predicted.min()))
    hi = float(max(held.measured.max(), held.predicted.max()))
    ax.plot([lo, hi], [lo, hi], color='#c0392b', lw=1, ls='--', label='predicted = measured')
    name = 'OKS' if target == 'oks' else 'error'
    ax.set_xlabel(f'measured {name}')
    ax.set_ylabel(f'predicted {name}')
    ax.set_title(f'{title}held-out n={len(held.measured)}: Spearman rho {held.spearman_rho:.3f}, '
                 f'R^2 {held.r2:.3f}', fontsize=9)
    ax.legend(fontsize=8, loc='upper left')
    buf = io.BytesIO()
    fig.savefig(buf, format='png', bbox_inches='tight')
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


@dataclasses.dataclass
class PoolScores:
    """Predictions for a pose pool: ``ids``, ``predicted (N,)``, ``difficulty (N,)`` (larger = harder), and the
    ``body_pose (N, 63)`` / ``global_orient (N, 3)`` the diversity guard compares."""
    ids: list[str]
    predicted: np.ndarray
    difficulty: np.ndarray
    body_pose: np.ndarray
    global_orient: np.ndarray


def score_pool(model: DifficultyRegressor, source, max_samples: int | None = None, chunk: int = 2048,
               progress: bool = True, where: str = 'the pose pool') -> PoolScores:
    """Predicts every sample of ``source`` (a ``BodySource``) in chunks.

    Raises:
        FeatureSpecMismatchError: the pool's betas count is not the model's.
    """
    n = len(source) if max_samples is None else min(len(source), int(max_samples))
    if n == 0:
        raise MiningError(f'{where} is empty')
    ids, preds, body, root = [], [], [], []
    bar = tqdm(total=n, desc='score pool', unit='pose', disable=not progress)
    for start in range(0, n, chunk):
        samples = [source[i] for i in range(start, min(n, start + chunk))]
        params = stack_params(samples)
        preds.append(model.predict(params, where=where))
        ids += [s.id for s in samples]
        body.append(params['body_pose'])
        root.append(params['global_orient'])
        bar.update(len(samples))
    bar.close()
    predicted = np.concatenate(preds)
    return PoolScores(ids, predicted, model.difficulty(predicted), np.concatenate(body), np.concatenate(root))


def select_and_write(path: str, source, pool: PoolScores, num: int, min_distance_deg: float,
                     use_global_orient: bool = False, info: Mapping | None = None,
                     progress: bool = True) -> Selection:
    """Selects the ``num`` hardest pool poses with the guard and writes them (re-read from ``source``) to ``path``."""
    from posedreamer_mm.body.sources.pose_list import write_pose_list
    if len(set(pool.ids)) != len(pool.ids):
        raise MiningError('the pose pool repeats sample ids; a pose list needs unique ids')
    chosen = select_hardest(pool.difficulty, pool.body_pose, num, min_distance_deg,
                            pool.global_orient if use_global_orient else None, progress=progress)
    samples = [source[int(i)] for i in chosen.indices]
    write_pose_list(path, samples, columns=dict(predicted=pool.predicted[chosen.indices],
                                                rank=np.arange(len(samples)), pool_index=chosen.indices),
                    info=dict(info or {}, selection=chosen.summary(), min_distance_deg=min_distance_deg,
                              use_global_orient=use_global_orient))
    return chosen


def sampler_difficulty(model: DifficultyRegressor, predicted: np.ndarray) -> np.ndarray:
    """Predictions as the curriculum sampler's difficulty (finite, >= 0, higher = harder): ``1 - OKS`` clipped to
    [0, 1] for an OKS model, the predicted error clipped at 0 for an error model."""
    predicted = np.asarray(predicted, np.float64)
    if model.hard_when == 'low':
        return np.clip(1.0 - predicted, 0.0, 1.0)
    return np.clip(predicted, 0.0, None)


def predict_dataset(model: DifficultyRegressor, data_root: str, path: str, progress: bool = True) -> str:
    """Writes the model's predictions for every row of a generated dataset to ``path`` (``.npz``: ``ids``,
    ``difficulty`` from :func:`sampler_difficulty`, ``predicted``): the initial difficulty file of
    ``HardSampleSampler(difficulty_file=...)`` for an HMR run on that dataset."""
    from posedreamer_mm.generation.reader import GeneratedDataReader
    from posedreamer_mm.utils.fileio import atomic_write
    reader = GeneratedDataReader(data_root)
    if len(reader) == 0:
        raise MiningError(f'{data_root} has no samples to predict')
    preds = []
    for start in tqdm(range(0, len(reader), 2048), desc='predict dataset', unit='chunk', disable=not progress):
        samples = [reader.sample(i) for i in range(start, min(len(reader), start + 2048))]
        preds.append(model.predict(stack_params(samples), where=data_root))
    predicted = np.concatenate(preds)
    with atomic_write(path, 'wb') as f:
        np.savez(f, ids=np.array(reader.ids), difficulty=sampler_difficulty(model, predicted), predicted=predicted)
    return path


def _jsonl(rows: Sequence[dict]) -> str:
    return ''.join(json.dumps(r) + '\n' for r in rows)


def run_mine(out_dir: str, data_root: str | None = None, model_path: str | None = None,
             scores: str | None = None, errors: str | None = None, error_key: str = 'error',
             pool_cfg: Mapping | None = None, num: int = 1000, min_distance_deg: float = 10.0,
             use_global_orient: bool = False, parts: Sequence[str] | None = None, representation: str | None = None,
             lgb_params: Mapping | None = None, test_fraction: float = 0.2, valid_fraction: float = 0.1,
             seed: int = 42, max_samples: int | None = None, max_pool: int | None = None,
             predict: Sequence[str] = (), progress: bool = True) -> dict:
    """Train (or load) -> report -> score the pool -> select -> write; returns the summary (``summary.json``).

    Args:
        out_dir: Where the outputs go.
        data_root: Scored generated dataset to train on; ``None`` with ``model_path``.
        model_path: A saved model to use instead of training.
        pool_cfg: A ``POSE_SOURCES`` config (``dict(type='AMASSSource', ...)``); ``None``: train only.
        num, min_distance_deg, use_global_orient: The selection (:func:`select_hardest`).
        parts, representation: Feature layout (default: the reference's parts, axis-angle; with ``model_path``,
            the model's, and a given value that differs is an error).
        lgb_params: Overrides of the reference LightGBM settings.
        predict: Generated datasets to write sampler difficulty files for (:func:`predict_dataset`,
            ``difficulty_<dataset folder name>.npz``).
    """
    from posedreamer_mm.registry import POSE_SOURCES
    if (data_root is None) == (model_path is None):
        raise MiningError('give a scored dataset to train on or --model (a saved difficulty model), not both')
    os.makedirs(out_dir, exist_ok=True)
    summary: dict = dict(out_dir=osp.abspath(out_dir))
    if model_path is None:
        data = read_scored_dataset(data_root, scores, errors, error_key, max_samples, progress)
        model, held = train_on_dataset(data, parts or DEFAULT_PARTS, representation or 'axis_angle', lgb_params,
                                       test_fraction, valid_fraction, seed)
        model_path = osp.join(out_dir, MODEL_NAME)
        model.save(model_path)
        plot_heldout(osp.join(out_dir, 'heldout.png'), held, model.target, f'{osp.basename(osp.abspath(data_root))}: ')
        atomic_write_text(osp.join(out_dir, 'heldout.jsonl'),
                          _jsonl([dict(id=i, measured=float(m), predicted=float(p))
                                  for i, m, p in zip(held.ids, held.measured, held.predicted)]))
        summary['training'] = dict(data=data.origin, rows=len(data.ids), skipped=data.skipped, target=data.target,
                                   **{k: model.info[k] for k in ('n_train', 'n_valid', 'n_test', 'best_iteration')},
                                   heldout=held.summary())
        print(f'[mine] held-out ({held.summary()["n_test"]} rows never trained on): Spearman rho '
              f'{held.spearman_rho:.3f}, R^2 {held.r2:.3f} (target {data.target}, {model.info["best_iteration"]} '
              f'trees)')
    else:
        model = DifficultyRegressor.load(model_path)
        if parts is not None or representation is not None:
            model.spec.check_matches(FeatureSpec(model.spec.num_betas, tuple(parts or model.spec.parts),
                                                 representation or model.spec.representation),
                                     where=f'model {model_path} vs --parts/--representation')
    summary['model'] = osp.abspath(model_path)
    for root in predict:
        name = osp.basename(osp.normpath(osp.abspath(root)))
        out = predict_dataset(model, root, osp.join(out_dir, f'difficulty_{name}.npz'), progress)
        summary.setdefault('difficulty_files', []).append(osp.abspath(out))
        print(f'[mine] predicted difficulty of {root} -> {out} (HardSampleSampler difficulty_file)')
    if pool_cfg is not None:
        source = POSE_SOURCES.build(dict(pool_cfg))
        where = f'pose pool {pool_cfg.get("type")}'
        first = source[0]
        model.spec.check_matches(FeatureSpec(first.num_betas, model.spec.parts, model.spec.representation),
                                 where=f'model {model_path} vs {where}')
        pool = score_pool(model, source, max_pool, progress=progress, where=where)
        atomic_write_text(osp.join(out_dir, 'pool_predictions.jsonl'),
                          _jsonl([dict(id=i, predicted=float(p), difficulty=float(d))
                                  for i, p, d in zip(pool.ids, pool.predicted, pool.difficulty)]))
        list_path = osp.join(out_dir, POSE_LIST_NAME)
        chosen = select_and_write(list_path, source, pool, num, min_distance_deg, use_global_orient,
                                  info=dict(model=osp.abspath(model_path), pool=_plain(pool_cfg),
                                            target=model.target), progress=progress)
        picked = pool.predicted[chosen.indices]
        summary['selection'] = dict(pool=_plain(pool_cfg), pool_size=len(pool.ids), pose_list=osp.abspath(list_path),
                                    num=num, min_distance_deg=min_distance_deg, **chosen.summary(),
                                    pool_predicted_mean=float(pool.predicted.mean()),
                                    selected_predicted_mean=float(picked.mean()),
                                    selected_predicted_range=[float(picked.min()), float(picked.max())])
        if chosen.exhausted:
            print(f'[mine] WARNING: only {len(chosen.indices)} of {num} poses pass the diversity guard '
                  f'(min_distance_deg={min_distance_deg}); lower it or give a larger pool')
        print(f'[mine] selected {len(chosen.indices)} of {len(pool.ids)} pool poses (predicted {model.target} '
              f'{picked.mean():.3f} vs pool {pool.predicted.mean():.3f}; {len(chosen.rejected)} near duplicates '
              f'rejected) -> {list_path}')
    atomic_write_text(osp.join(out_dir, 'summary.json'), json.dumps(summary, indent=1, default=str))
    return summary


def _plain(cfg):
    if isinstance(cfg, Mapping):
        return {k: _plain(v) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [_plain(v) for v in cfg]
    return cfg


__all__ = ['MODEL_NAME', 'POSE_LIST_NAME', 'PoolScores', 'ScoredData', 'plot_heldout', 'predict_dataset',
           'read_error_file', 'read_oks_scores', 'read_scored_dataset', 'run_mine', 'sampler_difficulty', 'score_pool',
           'select_and_write', 'train_on_dataset']
