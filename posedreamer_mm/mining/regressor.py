"""Difficulty regressor: LightGBM from the SMPL-X parameter vector to a per-sample score (OKS or an HMR error).

The reference's offline step: a gradient-boosted regressor predicts, from raw SMPL-X parameters, the OKS that the
generated image of a pose will get; the poses with the lowest predicted OKS become the next generation round
(docs/mining.md). Settings (:data:`REFERENCE_PARAMS`): objective regression, 31 leaves, learning rate 0.05,
feature/bagging fraction 0.8 (bagging every 5 rounds), 20 samples per leaf, depth 8, up to 1000 rounds with early
stopping after 50, seed 42, deterministic.

Saved as two files: LightGBM's own text format (``<name>.txt``, never a pickle) and the JSON beside it
(``<name>.features.json``: the :class:`~posedreamer_mm.mining.features.FeatureSpec`, the target and the training
record). :meth:`DifficultyRegressor.load` checks that the two agree and, given the data's layout, that the data
matches.
"""
from __future__ import annotations

import dataclasses
import json
import os
import os.path as osp
from collections.abc import Mapping, Sequence

import numpy as np

from posedreamer_mm.utils.fileio import atomic_write_text

from .errors import FeatureSpecMismatchError, MiningError, MiningFileNotFoundError
from .features import FeatureSpec

#: The reference's LightGBM settings (``num_threads`` and ``verbosity`` are ours: they do not change the model).
REFERENCE_PARAMS: dict = dict(objective='regression', num_leaves=31, learning_rate=0.05, feature_fraction=0.8,
                              bagging_fraction=0.8, bagging_freq=5, min_data_in_leaf=20, max_depth=8, seed=42,
                              deterministic=True, force_row_wise=True, verbosity=-1)
NUM_BOOST_ROUND = 1000
EARLY_STOPPING_ROUNDS = 50
#: Targets and which side is hard: OKS (label vs detection, higher = the image follows its label) is hard when
#: low; an HMR model's per-sample error (e.g. PVE in mm) is hard when high.
TARGETS = {'oks': 'low', 'error': 'high'}


def spec_path(model_path: str | os.PathLike) -> str:
    """The JSON beside a model file: ``x/model.txt`` -> ``x/model.features.json``."""
    root, _ = osp.splitext(os.fspath(model_path))
    return root + '.features.json'


def spearman_rho(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN when either side is constant."""
    from scipy.stats import spearmanr
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float('nan')
    return float(spearmanr(a, b).statistic)


def r2_score(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Coefficient of determination ``1 - SS_res / SS_tot`` (NaN for a constant ``y_true``)."""
    y_true, y_pred = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
    ss_tot = float(((y_true - y_true.mean()) ** 2).sum())
    return float('nan') if ss_tot == 0 else 1.0 - float(((y_true - y_pred) ** 2).sum()) / ss_tot


def split_indices(n: int, test_fraction: float = 0.2, valid_fraction: float = 0.1, seed: int = 42,
                  groups: Sequence | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train / early-stopping / held-out test rows, disjoint, from a seeded permutation.

    With ``groups`` (e.g. the pose an augmented sample came from), whole groups go to one split, so views of one
    pose never sit on both sides. Fractions are of groups.

    Returns:
        Sorted index arrays ``(train, valid, test)``.

    Raises:
        MiningError: a split would be empty.
    """
    if not 0 < test_fraction < 1 or not 0 < valid_fraction < 1 or test_fraction + valid_fraction >= 1:
        raise MiningError(f'test_fraction {test_fraction} and valid_fraction {valid_fraction} must be in (0, 1) '
                          'with a sum below 1')
    keys = np.arange(n) if groups is None else np.asarray(groups)
    if len(keys) != n:
        raise MiningError(f'groups has {len(keys)} entries for {n} rows')
    uniq, inverse = np.unique(keys, return_inverse=True)
    order = np.random.default_rng(seed).permutation(len(uniq))
    n_test = int(round(test_fraction * len(uniq)))
    n_valid = int(round(valid_fraction * len(uniq)))
    if min(n_test, n_valid, len(uniq) - n_test - n_valid) < 1:
        raise MiningError(f'{n} rows in {len(uniq)} groups are too few for a train / early-stopping / held-out split '
                          f'of fractions {1 - test_fraction - valid_fraction:.2f} / {valid_fraction} / {test_fraction}')
    which = np.empty(len(uniq), np.int64)
    which[order[:n_test]] = 2
    which[order[n_test:n_test + n_valid]] = 1
    which[order[n_test + n_valid:]] = 0
    row_split = which[inverse.reshape(-1)]
    return tuple(np.flatnonzero(row_split == k) for k in (0, 1, 2))


@dataclasses.dataclass
class HeldOut:
    """How the model does on rows it never saw (neither trained on nor used for early stopping).

    Attributes:
        spearman_rho: rank correlation of predicted vs measured (0 = chance, 1 = the same order).
        r2: coefficient of determination of the predictions (0 = predicting the mean, 1 = exact).
        measured, predicted: ``(n_test,)`` values behind the figures (for the scatter plot).
        ids: the held-out rows' ids.
    """
    spearman_rho: float
    r2: float
    measured: np.ndarray
    predicted: np.ndarray
    ids: list[str]

    def summary(self) -> dict:
        return dict(spearman_rho=self.spearman_rho, r2=self.r2, n_test=len(self.measured),
                    measured_mean=float(np.mean(self.measured)), predicted_mean=float(np.mean(self.predicted)))


class DifficultyRegressor:
    """A trained LightGBM booster plus its feature layout and target.

    Args:
        booster: ``lightgbm.Booster`` whose feature names are ``spec.names``.
        spec: The feature layout.
        target: ``'oks'`` (hard = low) or ``'error'`` (hard = high), :data:`TARGETS`.
        info: Training record saved with the model (sizes, rounds, held-out figures, data).
    """

    def __init__(self, booster, spec: FeatureSpec, target: str = 'oks', info: dict | None = None):
        if target not in TARGETS:
            raise MiningError(f'target must be one of {sorted(TARGETS)}, got {target!r}')
        self.booster, self.spec, self.target, self.info = booster, spec, target, dict(info or {})

    @property
    def hard_when(self) -> str:
        """``'low'`` or ``'high'``: which predicted values are hard."""
        return TARGETS[self.target]

    def predict(self, params: Mapping[str, np.ndarray] | Sequence, where: str = 'the data') -> np.ndarray:
        """Predicted target of stacked record fields or samples, ``(N,)`` float64 (best iteration)."""
        feats = params if isinstance(params, np.ndarray) else self.spec.features(params, where)
        if feats.ndim != 2 or feats.shape[1] != self.spec.num_features:
            raise FeatureSpecMismatchError(f'{where}: feature matrix of shape {feats.shape}, the model takes '
                                           f'{self.spec.num_features} columns')
        if len(feats) == 0:
            return np.zeros(0)
        return self.booster.predict(feats, num_iteration=self.booster.best_iteration or None)

    def difficulty(self, predicted: np.ndarray) -> np.ndarray:
        """Predictions turned so that larger = harder (``-oks`` or ``error``)."""
        predicted = np.asarray(predicted, np.float64)
        return -predicted if self.hard_when == 'low' else predicted

    def save(self, path: str | os.PathLike) -> tuple[str, str]:
        """Writes ``path`` (LightGBM text) and :func:`spec_path` (layout, target, training record), atomically.

        Returns:
            The two paths.
        """
        path = os.fspath(path)
        # Only the trees up to the best iteration: the file alone predicts what predict() does.
        atomic_write_text(path, self.booster.model_to_string(num_iteration=self.booster.best_iteration or -1))
        record = dict(feature_spec=self.spec.to_dict(), target=self.target, hard_when=self.hard_when,
                      best_iteration=int(self.booster.best_iteration or self.booster.current_iteration()),
                      info=self.info)
        atomic_write_text(spec_path(path), json.dumps(record, indent=1, default=_json_default))
        return path, spec_path(path)

    @classmethod
    def load(cls, path: str | os.PathLike, expect: FeatureSpec | None = None) -> DifficultyRegressor:
        """Reads a saved model.

        Args:
            path: The LightGBM text file (its ``.features.json`` must sit beside it).
            expect: The data's layout; a difference is an error.

        Raises:
            MiningFileNotFoundError: either file is missing (naming it).
            MiningError: a file is unreadable or not what it should be (naming it).
            FeatureSpecMismatchError: the model's feature names are not its spec's, or ``expect`` differs.
        """
        import lightgbm as lgb
        path, json_path = os.fspath(path), spec_path(path)
        for p, what in ((path, 'difficulty model (LightGBM text)'), (json_path, 'feature spec of the model')):
            if not osp.isfile(p):
                raise MiningFileNotFoundError(f'{what} {p} not found')
        try:
            with open(json_path, encoding='utf-8') as f:
                record = json.load(f)
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
            raise MiningError(f'cannot read {json_path}: {err}') from err
        if not isinstance(record, dict) or 'feature_spec' not in record:
            raise MiningError(f'{json_path} has no feature_spec (not written by DifficultyRegressor.save)')
        spec = FeatureSpec.from_dict(record['feature_spec'], where=json_path)
        try:
            with open(path, encoding='utf-8') as f:
                booster = lgb.Booster(model_str=f.read())
        except (OSError, UnicodeDecodeError, lgb.basic.LightGBMError) as err:
            raise MiningError(f'{path} is not a LightGBM text model: {err}') from err
        if booster.feature_name() != spec.names:
            theirs = booster.feature_name()
            first = next((i for i, (a, b) in enumerate(zip(theirs, spec.names)) if a != b), min(len(theirs),
                                                                                                   len(spec.names)))
            raise FeatureSpecMismatchError(
                f'{path} has {len(theirs)} features but {json_path} describes {spec.num_features}; first difference '
                f'at column {first}: model {theirs[first] if first < len(theirs) else None!r}, spec '
                f'{spec.names[first] if first < spec.num_features else None!r} (the two files are not one model)')
        if expect is not None:
            spec.check_matches(expect, where=f'model {path} (layout in {json_path}) vs the data')
        return cls(booster, spec, record.get('target', 'oks'), record.get('info'))


def train_regressor(features: np.ndarray, targets: np.ndarray, spec: FeatureSpec, target: str = 'oks',
                    ids: Sequence[str] | None = None, groups: Sequence | None = None, test_fraction: float = 0.2,
                    valid_fraction: float = 0.1, split_seed: int = 42, params: Mapping | None = None,
                    num_boost_round: int = NUM_BOOST_ROUND,
                    early_stopping_rounds: int = EARLY_STOPPING_ROUNDS) -> tuple[DifficultyRegressor, HeldOut]:
    """Fits the regressor with a held-out split.

    Rows are split by :func:`split_indices` into train, early-stopping validation and a held-out test set; the
    boosting stops when the validation L2 has not improved for ``early_stopping_rounds`` rounds, and the held-out
    figures come from the test rows only.

    Args:
        features: ``(N, spec.num_features)``.
        targets: ``(N,)`` measured OKS or error.
        spec: Layout of ``features``.
        target: ``'oks'`` or ``'error'``.
        ids: Row ids (held-out ids are reported).
        groups: Rows of one group stay in one split.
        params: Overrides of :data:`REFERENCE_PARAMS` (``num_threads``, or ``min_data_in_leaf`` for tiny sets).

    Returns:
        The model and its held-out figures.
    """
    import lightgbm as lgb
    features = np.asarray(features, np.float32)
    targets = np.asarray(targets, np.float64)
    if features.ndim != 2 or features.shape[1] != spec.num_features or len(features) != len(targets):
        raise MiningError(f'features {features.shape} and targets {targets.shape} do not fit a layout of '
                          f'{spec.num_features} features')
    if not np.isfinite(targets).all():
        raise MiningError(f'{int((~np.isfinite(targets)).sum())} targets are NaN or inf')
    ids = [str(i) for i in (ids if ids is not None else range(len(targets)))]
    train, valid, test = split_indices(len(targets), test_fraction, valid_fraction, split_seed, groups)
    full_params = {**REFERENCE_PARAMS, **dict(params or {})}
    dtrain = lgb.Dataset(features[train], targets[train], feature_name=spec.names, free_raw_data=False,
                         params=dict(verbosity=-1))
    dvalid = lgb.Dataset(features[valid], targets[valid], reference=dtrain)
    booster = lgb.train(full_params, dtrain, num_boost_round=int(num_boost_round), valid_sets=[dvalid],
                        valid_names=['valid'],
                        callbacks=[lgb.early_stopping(int(early_stopping_rounds), verbose=False)])
    model = DifficultyRegressor(booster, spec, target)
    predicted = model.predict(features[test])
    held = HeldOut(spearman_rho(targets[test], predicted), r2_score(targets[test], predicted), targets[test],
                   predicted, [ids[i] for i in test])
    model.info.update(n_train=len(train), n_valid=len(valid), n_test=len(test), split_seed=split_seed,
                      test_fraction=test_fraction, valid_fraction=valid_fraction, params=full_params,
                      num_boost_round=int(num_boost_round), early_stopping_rounds=int(early_stopping_rounds),
                      best_iteration=int(booster.best_iteration), heldout=held.summary(),
                      grouped=groups is not None)
    return model, held


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f'{type(value).__name__} is not JSON-serialisable')
