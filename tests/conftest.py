"""Shared test set-up: offline hubs, registered components, and the generated SMPL-X stand-in."""
import os

# Nothing in the tests may reach a model hub: every model is built from a config or a local directory.
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')
os.environ.setdefault('HF_DATASETS_OFFLINE', '1')

import pytest  # noqa: E402

import posedreamer_mm  # noqa: E402,F401  (applies the compat fixes before mmpose/mmdet load)
from posedreamer_mm.utils import register_all_modules  # noqa: E402

register_all_modules()


def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: long-running test, skipped unless --run-slow')
    config.addinivalue_line('markers', 'gpu: needs a CUDA device, skipped without one')


def pytest_addoption(parser):
    parser.addoption('--run-slow', action='store_true', help='also run tests marked slow')


def pytest_collection_modifyitems(config, items):
    import torch
    skip_slow = pytest.mark.skip(reason='slow: pass --run-slow to run it')
    skip_gpu = pytest.mark.skip(reason='gpu: no CUDA device on this machine')
    for item in items:
        if 'slow' in item.keywords and not config.getoption('--run-slow'):
            item.add_marker(skip_slow)
        if 'gpu' in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


@pytest.fixture(scope='session')
def standin_model_dir(tmp_path_factory):
    """A directory holding a generated SMPL-X stand-in ``SMPLX_NEUTRAL.npz`` (not the licensed model)."""
    from posedreamer_mm.body.standin import write_standin_smplx
    out = tmp_path_factory.mktemp('smplx_standin')
    write_standin_smplx(out)
    return out
