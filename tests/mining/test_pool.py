"""Scoring a pose pool in chunks, writing the selection, and the sampler's difficulty mapping."""
import numpy as np
import pytest

from posedreamer_mm.apis.mine import sampler_difficulty, score_pool, select_and_write
from posedreamer_mm.mining import FeatureSpec, train_regressor
from posedreamer_mm.registry import POSE_SOURCES
from tests.mining.conftest import random_params, true_oks


@pytest.fixture(scope='module')
def model():
    params = random_params(300, seed=11)
    spec = FeatureSpec(10)
    return train_regressor(spec.features(params), true_oks(params), spec, params=dict(num_threads=1))[0]


def test_chunked_pool_scores_equal_one_prediction_of_all_samples(model):
    source = POSE_SOURCES.build(dict(type='ProceduralPoseSource', num_samples=30, seed=2))
    samples = list(source)
    pool = score_pool(model, source, chunk=7, progress=False)
    np.testing.assert_array_equal(pool.predicted, model.predict(samples))
    assert pool.ids == [s.id for s in samples]
    np.testing.assert_array_equal(pool.body_pose, np.stack([s.body_pose for s in samples]))
    np.testing.assert_array_equal(pool.difficulty, -pool.predicted)
    assert len(score_pool(model, source, max_samples=10, chunk=4, progress=False).ids) == 10


def test_select_and_write_stores_the_pool_samples_at_the_chosen_indices(model, tmp_path):
    source = POSE_SOURCES.build(dict(type='ProceduralPoseSource', num_samples=40, seed=3))
    pool = score_pool(model, source, progress=False)
    chosen = select_and_write(str(tmp_path / 'l.npz'), source, pool, 5, 0.0, progress=False)
    assert chosen.indices.tolist() == np.argsort(pool.predicted, kind='stable')[:5].tolist()
    listed = POSE_SOURCES.build(dict(type='PoseListSource', file=str(tmp_path / 'l.npz')))
    assert [s.id for s in listed] == [source[int(i)].id for i in chosen.indices]
    assert [s.meta['pose_list']['predicted'] for s in listed] == pool.predicted[chosen.indices].tolist()
    assert listed.info['selection']['selected'] == 5


def test_sampler_difficulty_is_one_minus_oks_or_the_error(model):
    np.testing.assert_allclose(sampler_difficulty(model, np.array([0.9, 1.2, -0.1])), [0.1, 0.0, 1.0])
    model_err = type(model)(model.booster, model.spec, target='error')
    np.testing.assert_allclose(sampler_difficulty(model_err, np.array([12.0, -3.0])), [12.0, 0.0])
