"""apis/generate: a config without body-model files gets the stand-in for every gender a source may need."""
from posedreamer_mm.apis.generate import resolve_body_models
from posedreamer_mm.body.gendered import GenderedSMPLXBodyModel


def test_model_path_none_writes_every_gender_of_the_standin(tmp_path, monkeypatch):
    monkeypatch.setenv('PDM_STANDIN_DIR', str(tmp_path / 'standin'))
    cfg = resolve_body_models(dict(type='DatasetGenerator',
                                   body_model=dict(type='SMPLXBodyModel', model_path=None, num_betas=10)))
    assert cfg['body_model']['model_path'] == str(tmp_path / 'standin')
    assert sorted(p.name for p in (tmp_path / 'standin').glob('*.npz')) == [
        'SMPLX_FEMALE.npz', 'SMPLX_MALE.npz', 'SMPLX_NEUTRAL.npz']
    # A female sample (AMASS fits are gendered) now finds its model instead of stopping the run.
    models = GenderedSMPLXBodyModel.from_config(cfg['body_model'])
    assert models.model('female').gender == 'female'
