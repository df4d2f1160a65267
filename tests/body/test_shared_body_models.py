"""One body model per gender per process: ``shared_body_models`` is the one home; the HMR flip/roll pivot reads its
models from it, equal configs share one set, and the pivot is the model's own rest pelvis."""
import numpy as np
import pytest
import torch

from posedreamer_mm.body.gendered import GenderedSMPLXBodyModel, shared_body_models
from posedreamer_mm.registry import TRANSFORMS


def test_equal_configs_share_one_set_and_each_gender_is_read_once(standin_model_dir):
    cfg = dict(type='SMPLXBodyModel', model_path=str(standin_model_dir), num_betas=10)
    models = shared_body_models(cfg)
    assert isinstance(models, GenderedSMPLXBodyModel) and not models.training
    assert shared_body_models(dict(cfg)) is models
    assert shared_body_models(dict(cfg, type='posedreamer_mm.SMPLXBodyModel')) is models
    assert shared_body_models(dict(cfg, num_betas=11)) is not models  # another model
    neutral = models.model('neutral')
    # Two HMR transforms built from the same config pivot on that very model: nothing is read twice.
    flip = TRANSFORMS.build(dict(type='HMRRandomFlip', prob=1.0, body_model=cfg))
    crop = TRANSFORMS.build(dict(type='HMRTopdownAffine', body_model=cfg))
    assert models.model('neutral') is neutral
    assert flip._pelvis._regressors['neutral'] is crop._pelvis._regressors['neutral'] \
        is models.pelvis_regressor('neutral')


def test_the_pivot_is_the_models_own_rest_pelvis(standin_model_dir):
    """Independent fact: SMPL-X's joint 0 at zero pose and zero translation is ``J0(betas)``."""
    cfg = dict(type='SMPLXBodyModel', model_path=str(standin_model_dir))
    pelvis = TRANSFORMS.build(dict(type='HMRRandomFlip', body_model=cfg))._pelvis
    betas = np.random.default_rng(0).normal(0, 1, 10)
    with torch.no_grad():
        j0 = shared_body_models(cfg).model('neutral')(betas=torch.as_tensor(betas[None], dtype=torch.float32))
    np.testing.assert_allclose(pelvis(betas, 'neutral'), j0.joints[0, 0].numpy(), atol=1e-5)


def test_the_standin_gives_every_gender_to_the_hmr_pivot(tmp_path, monkeypatch):
    """``model_path=None`` (a config's ``body_model_dir = None``): the pivot has the stand-in of every gender; it
    used to stop with a TypeError from ``pathlib.Path(None)`` when the transform was built."""
    monkeypatch.setenv('PDM_STANDIN_DIR', str(tmp_path / 'standin'))
    flip = TRANSFORMS.build(dict(type='HMRRandomFlip', body_model=dict(type='SMPLXBodyModel', model_path=None)))
    for gender in ('neutral', 'male', 'female'):
        assert flip._pelvis(np.zeros(10), gender).shape == (3,)
    assert sorted(p.name for p in (tmp_path / 'standin').glob('*.npz')) == [
        'SMPLX_FEMALE.npz', 'SMPLX_MALE.npz', 'SMPLX_NEUTRAL.npz']


def test_a_set_refuses_an_unknown_gender_by_name(standin_model_dir):
    with pytest.raises(ValueError, match="unknown gender 'Female'"):
        GenderedSMPLXBodyModel(standin_model_dir).model('Female')
