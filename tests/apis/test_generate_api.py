"""The stand-in is used exactly when a config asks for no body model (``model_path=None``), for every gender a
source may need; a body-model directory that does not exist is an error naming it, never the stand-in."""
import pytest

from posedreamer_mm.body.body_model import BodyModelFileError, SMPLXBodyModel
from posedreamer_mm.body.gendered import GenderedSMPLXBodyModel


def test_model_path_none_writes_the_standin_gender_by_gender(tmp_path, monkeypatch):
    monkeypatch.setenv('PDM_STANDIN_DIR', str(tmp_path / 'standin'))
    models = GenderedSMPLXBodyModel.from_config(dict(type='SMPLXBodyModel', model_path=None, num_betas=10))
    assert not (tmp_path / 'standin').exists()  # nothing built up front
    # A female sample (AMASS fits are gendered) finds its model instead of stopping the run.
    female = models.model('female')
    assert female.gender == 'female' and female.is_standin
    assert female.model_file.resolve() == (tmp_path / 'standin' / 'SMPLX_FEMALE.npz').resolve()
    assert sorted(p.name for p in (tmp_path / 'standin').glob('*.npz')) == ['SMPLX_FEMALE.npz']
    assert SMPLXBodyModel(None).model_file.name == 'SMPLX_NEUTRAL.npz'


def test_a_missing_model_dir_is_an_error_naming_it(tmp_path, monkeypatch):
    monkeypatch.setenv('PDM_STANDIN_DIR', str(tmp_path / 'standin'))
    with pytest.raises(BodyModelFileError, match='/nonexistent/smplx'):
        GenderedSMPLXBodyModel.from_config(dict(type='SMPLXBodyModel', model_path='/nonexistent/smplx')).default
    assert not (tmp_path / 'standin').exists()
