"""Body-test fixtures: the three stand-in genders in one directory (written once per session)."""
import pytest


@pytest.fixture(scope='session')
def gendered_dir(tmp_path_factory, standin_model_dir):
    """A directory with the stand-in ``SMPLX_{NEUTRAL,MALE,FEMALE}.npz`` (not the licensed model); the neutral
    file is the session's ``standin_model_dir`` one (linked, not rebuilt)."""
    from posedreamer_mm.body.standin import ensure_standin_smplx
    out = tmp_path_factory.mktemp('smplx_gendered')
    (out / 'SMPLX_NEUTRAL.npz').symlink_to(standin_model_dir / 'SMPLX_NEUTRAL.npz')
    ensure_standin_smplx(out, ('neutral', 'male', 'female'))
    return out
