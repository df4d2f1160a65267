"""Body-test fixtures: the three stand-in genders in one directory (written once per session)."""
import pytest


@pytest.fixture(scope='session')
def gendered_dir(tmp_path_factory):
    """A directory with the stand-in ``SMPLX_{NEUTRAL,MALE,FEMALE}.npz`` (not the licensed model)."""
    from posedreamer_mm.body.standin import ensure_standin_smplx
    out = tmp_path_factory.mktemp('smplx_gendered')
    ensure_standin_smplx(out, ('neutral', 'male', 'female'))
    return out
