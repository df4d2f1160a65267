"""Difficulty regressor: learns a known structure, reference settings, text round trip, layout mismatches."""
import json

import numpy as np
import pytest

from posedreamer_mm.mining import (
    REFERENCE_PARAMS,
    DifficultyRegressor,
    FeatureSpec,
    FeatureSpecMismatchError,
    MiningError,
    r2_score,
    select_hardest,
    spearman_rho,
    spec_path,
    split_indices,
    train_regressor,
)
from tests.mining.conftest import random_params, true_oks

FAST = dict(num_threads=1)


@pytest.fixture(scope='module')
def trained(synthetic):
    params, oks = synthetic
    spec = FeatureSpec(num_betas=10)
    model, held = train_regressor(spec.features(params), oks, spec, params=FAST)
    return model, held, spec


def test_heldout_rho_well_above_chance_and_a_shuffled_target_is_at_chance(trained, synthetic):
    model, held, spec = trained
    assert held.spearman_rho > 0.85 and held.r2 > 0.7
    assert len(held.measured) == model.info['n_test'] == 300
    params, oks = synthetic
    shuffled = np.random.default_rng(3).permutation(oks)      # same values, structure destroyed
    _, chance = train_regressor(spec.features(params), shuffled, spec, params=FAST)
    assert abs(chance.spearman_rho) < 0.15


def test_selection_returns_the_truly_hardest_poses(trained):
    model = trained[0]
    pool = random_params(2000, seed=5)                         # poses the model never saw
    truth = true_oks(pool)
    chosen = select_hardest(model.difficulty(model.predict(pool)), pool['body_pose'], 50, min_distance_deg=0)
    assert (truth[chosen.indices] <= np.quantile(truth, 0.10)).all()     # every pick in the true hardest 10 %
    overlap = len(set(chosen.indices.tolist()) & set(np.argsort(truth)[:50].tolist()))
    assert overlap >= 20                                       # a random pick overlaps the true top 50 by ~1.25


def test_reference_settings_reach_lightgbm_and_the_text_file(trained, tmp_path):
    model = trained[0]
    for key, value in dict(objective='regression', num_leaves=31, learning_rate=0.05, feature_fraction=0.8,
                           bagging_fraction=0.8, bagging_freq=5, min_data_in_leaf=20, max_depth=8, seed=42,
                           deterministic=True).items():
        assert REFERENCE_PARAMS[key] == value
    path, _ = model.save(tmp_path / 'm.txt')
    text = open(path).read()
    for line in ('[num_leaves: 31]', '[learning_rate: 0.05]', '[feature_fraction: 0.8]', '[bagging_fraction: 0.8]',
                 '[bagging_freq: 5]', '[min_data_in_leaf: 20]', '[max_depth: 8]', '[seed: 42]',
                 '[deterministic: 1]', '[objective: regression]'):
        assert line in text, line
    assert text.startswith('tree')                             # LightGBM text, not a pickle
    assert model.info['num_boost_round'] == 1000 and model.info['early_stopping_rounds'] == 50
    assert 0 < model.info['best_iteration'] < 1000             # early stopping ended it
    assert text.count('Tree=') == model.info['best_iteration']  # the file holds the best iteration's trees only


def test_text_model_round_trip_gives_identical_predictions(trained, tmp_path):
    model, _, spec = trained
    model.save(tmp_path / 'model.txt')
    loaded = DifficultyRegressor.load(tmp_path / 'model.txt', expect=FeatureSpec(num_betas=10))
    pool = random_params(300, seed=9)
    assert np.array_equal(loaded.predict(pool), model.predict(pool))
    assert loaded.spec == spec and loaded.target == 'oks' and loaded.hard_when == 'low'
    record = json.loads(open(spec_path(tmp_path / 'model.txt')).read())
    assert record['feature_spec']['slices']['betas'] == [66, 76] and record['feature_spec']['num_betas'] == 10
    assert record['info']['heldout']['spearman_rho'] == pytest.approx(trained[1].spearman_rho)


def test_feature_layout_mismatch_is_one_error_naming_the_file_and_the_difference(trained, tmp_path):
    model = trained[0]
    model.save(tmp_path / 'model.txt')
    with pytest.raises(FeatureSpecMismatchError, match=r'model\.txt.*betas: the model has 10, the data 16'):
        DifficultyRegressor.load(tmp_path / 'model.txt', expect=FeatureSpec(num_betas=16))
    no_hands = FeatureSpec(10, parts=('global_orient', 'body_pose', 'betas', 'jaw_pose', 'expression'))
    with pytest.raises(FeatureSpecMismatchError,
                       match=r"model\.txt.*\['left_hand_pose', 'right_hand_pose'\] of the model are missing"):
        DifficultyRegressor.load(tmp_path / 'model.txt', expect=no_hands)
    with pytest.raises(FeatureSpecMismatchError, match='rotations are axis_angle in the model, rot6d in the data'):
        DifficultyRegressor.load(tmp_path / 'model.txt', expect=FeatureSpec(10, representation='rot6d'))
    with pytest.raises(FeatureSpecMismatchError, match='pool has 16 betas per sample but the feature layout has 10'):
        model.predict(random_params(4, seed=2, num_betas=16), where='pool')


def test_a_spec_file_that_does_not_describe_the_model_is_refused(trained, tmp_path):
    model = trained[0]
    model.save(tmp_path / 'model.txt')
    other = FeatureSpec(num_betas=16)                       # self-consistent, but not the model's 179 columns
    record = json.loads(open(spec_path(tmp_path / 'model.txt')).read())
    record['feature_spec'] = other.to_dict()
    open(spec_path(tmp_path / 'model.txt'), 'w').write(json.dumps(record))
    with pytest.raises(FeatureSpecMismatchError, match=r'model\.txt has 179 features but .*model\.features\.json '
                                                       r'describes 185; first difference at column 76'):
        DifficultyRegressor.load(tmp_path / 'model.txt')
    record['feature_spec']['num_betas'] = 10                  # settings and stored names now disagree
    open(spec_path(tmp_path / 'model.txt'), 'w').write(json.dumps(record))
    with pytest.raises(MiningError, match='do not follow from parts'):
        DifficultyRegressor.load(tmp_path / 'model.txt')
    (tmp_path / 'model.features.json').unlink()
    with pytest.raises(FileNotFoundError, match='model.features.json'):
        DifficultyRegressor.load(tmp_path / 'model.txt')


def test_error_target_is_hard_when_high():
    spec = FeatureSpec(10, parts=('body_pose',))
    params = random_params(400, seed=4)
    error_mm = 200 * np.abs(params['body_pose'][:, 9])
    model, held = train_regressor(spec.features(params), error_mm, spec, target='error', params=FAST)
    assert model.hard_when == 'high' and held.spearman_rho > 0.8
    pred = model.predict(params)
    assert np.array_equal(model.difficulty(pred), pred)


def test_spearman_and_r2_by_hand():
    assert spearman_rho([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(1 - 6 * 2 / (4 * 15))
    assert np.isnan(spearman_rho([1, 2, 3], [5, 5, 5]))
    assert r2_score([1, 2, 3], [1, 2, 4]) == pytest.approx(1 - 1 / 2)
    assert r2_score([1, 2, 3], [2, 2, 2]) == pytest.approx(0.0)


def test_split_is_disjoint_covering_deterministic_and_keeps_groups_together():
    train, valid, test = split_indices(100, 0.2, 0.1, seed=42)
    assert (len(train), len(valid), len(test)) == (70, 10, 20)
    assert sorted(np.concatenate([train, valid, test]).tolist()) == list(range(100))
    again = split_indices(100, 0.2, 0.1, seed=42)
    assert all(np.array_equal(a, b) for a, b in zip((train, valid, test), again))
    assert not np.array_equal(split_indices(100, 0.2, 0.1, seed=1)[2], test)
    groups = np.repeat(np.arange(25), 4)                       # 4 views of each of 25 poses
    parts = split_indices(100, 0.2, 0.1, seed=0, groups=groups)
    owners = [set(groups[p]) for p in parts]
    assert not (owners[0] & owners[1] or owners[0] & owners[2] or owners[1] & owners[2])
    assert [len(o) for o in owners] == [18, 2, 5]
    with pytest.raises(MiningError, match='too few'):
        split_indices(5, 0.2, 0.1)
