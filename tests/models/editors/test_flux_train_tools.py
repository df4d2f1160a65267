"""The tiny FLUX configs through tools/train.py: a few iterations on generated PNCC pairs, checkpoints holding only
the LoRA, and the exported folder loading in its generation backend and changing the images."""
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from posedreamer_mm.registry import BACKENDS, GENERATORS
from posedreamer_mm.testing.diffusion import write_tiny_flux

ROOT = Path(__file__).resolve().parents[3]
SIZE = 32


@pytest.fixture(scope='module')
def tiny(standin_model_dir, tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp('tiny_flux_train')
    GENERATORS.build(dict(
        type='DatasetGenerator', body_model=dict(type='SMPLXBodyModel', model_path=str(standin_model_dir)),
        source=dict(type='AugmentedSource', source=dict(type='ProceduralPoseSource', num_samples=4, seed=1), seed=3,
                    distance_range=(3.0, 4.0)),
        pipeline=[dict(type='BodyForward'), dict(type='BodyCropCamera', size=SIZE, margin=0.1),
                  dict(type='RenderControls', controls=[dict(type='PNCCRenderer')]), dict(type='SamplePrompt')],
        backend=dict(type='RenderBackend', batch_size=4), writer=dict(shard_size=4, image_format='png'),
        num_samples=4, seed=0, progress=False)).run(str(root / 'pairs'))
    return SimpleNamespace(flux=write_tiny_flux(root / 'flux'), pairs=root / 'pairs')


def _results(n=2):
    rng = np.random.default_rng(0)
    return [dict(seed=i, sample=SimpleNamespace(id=f's{i}'), prompt='a person standing',
                 controls=dict(pncc=rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))) for i in range(n)]


def _images(cfg):
    backend = BACKENDS.build(dict(cfg, device='cpu', dtype='float32', num_inference_steps=2, batch_size=2,
                                  control_type='pncc'))
    kwargs = backend.call_arguments(_results())
    with torch.no_grad():
        return np.asarray(backend.pipe(**kwargs).images)


CASES = {
    'tiny_flux_control-lora.py': lambda flux, out, w: dict(type='FluxControlBackend', weights=flux,
                                                           loras=[dict(path=out, name='control', weight=w)]),
    'tiny_flux_easycontrol.py': lambda flux, out, w: dict(type='EasyControlFluxBackend', weights=flux,
                                                          condition=dict(path=out, weight=w)),
}


@pytest.mark.parametrize('config', sorted(CASES))
def test_tiny_config_trains_and_its_export_loads_in_the_backend(config, tiny, tmp_path):
    work = tmp_path / 'work'
    cmd = [sys.executable, str(ROOT / 'tools' / 'train.py'), str(ROOT / 'configs' / 'control' / config),
           '--work-dir', str(work), '--cfg-options', f'pretrained={tiny.flux}', f'data_root={tiny.pairs}']
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                         env={**os.environ, 'PYTHONPATH': str(ROOT), 'OMP_NUM_THREADS': '1'})
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    state = torch.load(work / 'iter_4.pth', map_location='cpu', weights_only=False)['state_dict']
    assert state and all('lora' in k for k in state)  # the frozen 12B base is not copied into checkpoints
    export = work / 'diffusers' / 'iter_4'
    trained, off = _images(CASES[config](tiny.flux, export, 1.0)), _images(CASES[config](tiny.flux, export, 0.0))
    assert np.abs(trained - off).max() > 1e-4
