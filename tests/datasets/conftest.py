"""Tiny HMR datasets of every kind, written once per session (posedreamer_mm/testing/hmr_fixtures.py)."""
import pytest


@pytest.fixture(scope='session')
def hmr_paths(standin_model_dir, tmp_path_factory):
    from posedreamer_mm.testing.hmr_fixtures import write_hmr_fixtures
    return write_hmr_fixtures(tmp_path_factory.mktemp('hmr_data'), num=4, smplx_model_dir=standin_model_dir)
