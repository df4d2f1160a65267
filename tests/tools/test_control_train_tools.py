"""ControlNet training through the tools: tools/train.py on the tiny config (kill -9, --resume), dist_train.sh with
two CPU processes, the exported folder in the SD1.5 ControlNet backend; the tiny SDXL config in a Runner."""
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from posedreamer_mm.registry import BACKENDS, GENERATORS
from posedreamer_mm.testing import free_port
from posedreamer_mm.testing.diffusion import write_tiny_sd15, write_tiny_sdxl

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / 'configs' / 'control' / 'tiny_sd15_controlnet.py'
SIZE = 32


@pytest.fixture(scope='module')
def tiny(standin_model_dir, tmp_path_factory):
    """Tiny SD1.5 / SDXL folders and 6 render-backend pairs with PNCC controls (a generated dataset)."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp('tiny_control_train')
    GENERATORS.build(dict(
        type='DatasetGenerator', body_model=dict(type='SMPLXBodyModel', model_path=str(standin_model_dir)),
        source=dict(type='AugmentedSource', source=dict(type='ProceduralPoseSource', num_samples=6, seed=1), seed=3,
                    distance_range=(3.0, 4.0)),
        pipeline=[dict(type='BodyForward'), dict(type='BodyCropCamera', size=SIZE, margin=0.1),
                  dict(type='RenderControls', controls=[dict(type='PNCCRenderer')]), dict(type='SamplePrompt')],
        backend=dict(type='RenderBackend', batch_size=6), writer=dict(shard_size=4, image_format='png'),
        num_samples=6, seed=0, progress=False)).run(str(root / 'pairs'))
    return dict(sd15=write_tiny_sd15(root / 'sd15'), sdxl=write_tiny_sdxl(root / 'sdxl'), pairs=root / 'pairs')


def _env():
    return {**os.environ, 'PYTHONPATH': str(ROOT), 'OMP_NUM_THREADS': '1'}


def _options(tiny, *extra):
    return ['--cfg-options', f'pretrained={tiny["sd15"]}', f'data_root={tiny["pairs"]}', *extra]


def _train(work_dir, tiny, *extra, config=CONFIG, check=True):
    cmd = [sys.executable, str(ROOT / 'tools' / 'train.py'), str(config), '--work-dir', str(work_dir), *extra]
    res = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=600)
    if check:
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


def _run_losses(run_dir) -> dict[int, float]:
    """Training loss per iteration from one run's scalars.json (``work_dir/<timestamp>/vis_data``)."""
    out = {}
    for line in (Path(run_dir) / 'vis_data' / 'scalars.json').read_text().splitlines():
        rec = json.loads(line)
        if 'loss' in rec:
            out[rec['iter']] = rec['loss']
    return out


def test_killed_run_resumes_with_the_same_losses(tmp_path, tiny):
    """SIGKILL after iteration 6 (last checkpoint: iteration 4); --resume must redo 5 and 6 with the losses the
    killed run logged (same data order, same noise, timesteps and dropout draws, same ControlNet and optimiser)."""
    work = tmp_path / 'work'
    preempted = tmp_path / 'preempted.py'
    preempted.write_text(f"_base_ = [{str(CONFIG)!r}]\n"
                         "custom_imports = dict(imports=['tests.tools.preemption_hook'], allow_failed_imports=False)\n"
                         "custom_hooks = [dict(type='DiffusersExportHook', interval=4),\n"
                         "                dict(type='SimulatedPreemptionHook', kill_after_iter=6)]\n")
    res = _train(work, tiny, *_options(tiny), config=preempted, check=False)
    assert res.returncode == -9, res.stderr[-3000:]
    assert (work / 'iter_4.pth').exists() and not (work / 'iter_8.pth').exists()
    (killed,) = [p.parent for p in work.glob('*/vis_data')]
    cut = _run_losses(killed)
    assert sorted(cut) == [1, 2, 3, 4, 5, 6]
    ckpt = torch.load(work / 'iter_4.pth', map_location='cpu', weights_only=False)
    assert ckpt['state_dict'] and all(k.startswith('controlnet.') for k in ckpt['state_dict'])  # no frozen base

    res = _train(work, tiny, '--resume', *_options(tiny))
    assert 'resumed epoch: 0, iter: 4' in res.stdout + res.stderr
    (resumed_dir,) = [p.parent for p in work.glob('*/vis_data') if p.parent != killed]
    resumed = _run_losses(resumed_dir)
    assert sorted(resumed) == [5, 6, 7, 8]
    for it in (5, 6):
        assert resumed[it] == pytest.approx(cut[it], rel=1e-6, abs=1e-9), (it, resumed[it], cut[it])
    assert len({round(v, 6) for v in cut.values()}) == 6  # the losses differ per iteration: the check has teeth
    assert (work / 'iter_8.pth').exists() and (work / 'diffusers' / 'iter_8' / 'config.json').exists()


def _backend_images(tiny, controlnet_dir, records):
    backend = BACKENDS.build(dict(type='SD15ControlNetBackend', weights=str(tiny['sd15']), device='cpu',
                                  dtype='float32', num_inference_steps=2, batch_size=len(records),
                                  controlnets=dict(weights=str(controlnet_dir), control_type='pncc')))
    kwargs = backend.call_arguments(records)
    with torch.inference_mode():
        return np.asarray(backend.pipe(**kwargs).images)


def test_dist_train_two_processes_exports_a_controlnet_the_backend_loads(tmp_path, tiny):
    from diffusers import ControlNetModel

    from posedreamer_mm.generation import GeneratedDataReader
    env = {**_env(), 'PYTHON': sys.executable, 'PORT': str(free_port())}
    work = tmp_path / 'wd'
    res = subprocess.run(['bash', str(ROOT / 'tools' / 'dist_train.sh'), str(CONFIG), '2', '--work-dir', str(work),
                          *_options(tiny, 'train_cfg.max_iters=4', 'optim_wrapper.optimizer.lr=0.05')],
                         capture_output=True, text=True, env=env, timeout=600)
    log = res.stdout + res.stderr
    assert res.returncode == 0, log[-4000:]
    assert 'rank 0/2' in log and 'rank 1/2' in log and 'Iter(train) [4/4]' in log
    ckpt = torch.load(work / 'iter_4.pth', map_location='cpu', weights_only=False)
    assert all(k.startswith('controlnet.') for k in ckpt['state_dict'])
    exported = work / 'diffusers' / 'iter_4'
    assert sorted(os.listdir(work / 'diffusers')) == ['iter_4']  # rank 0 alone wrote it, once

    # the untrained ControlNet (zero outputs: changes nothing) against the exported one, same seeds and controls
    untrained = tmp_path / 'untrained'
    from posedreamer_mm.registry import MODELS
    MODELS.build(dict(type='ControlNetTrainer', pretrained=str(tiny['sd15']),
                      conditioning_embedding_out_channels=(16, 32))).save_pretrained(untrained)
    reader = GeneratedDataReader(tiny['pairs'])
    records = [dict(seed=i, sample=reader.sample(i), id=reader.ids[i], prompt='a person',
                    controls=dict(pncc=cv2.cvtColor(cv2.imread(reader.control_path(i, 'pncc')), cv2.COLOR_BGR2RGB)))
               for i in range(2)]
    base = _backend_images(tiny, untrained, records)
    trained = _backend_images(tiny, exported, records)
    assert base.shape == trained.shape == (2, SIZE, SIZE, 3)
    assert np.abs(trained - base).max() > 1e-3
    torch.testing.assert_close(ControlNetModel.from_pretrained(exported).state_dict(),
                               {k[len('controlnet.'):]: v for k, v in ckpt['state_dict'].items()})


def test_tiny_sdxl_config_trains_in_a_runner(tmp_path, tiny):
    from mmengine.runner import Runner

    from posedreamer_mm.apis.launch import load_config
    cfg = load_config(str(ROOT / 'configs' / 'control' / 'tiny_sdxl_controlnet.py'),
                      dict(pretrained=str(tiny['sdxl']), data_root=str(tiny['pairs'])))
    cfg.work_dir = str(tmp_path)
    cfg.experiment_name = f'tiny_sdxl_{uuid.uuid4().hex}'
    cfg.train_cfg.max_iters = 2
    runner = Runner.from_cfg(cfg)
    assert runner.model.sdxl
    runner.train()
    assert (tmp_path / 'diffusers' / 'iter_2' / 'config.json').exists()


@pytest.mark.parametrize('name, base', [('sd15_controlnet_pncc.py', 'sd15'), ('sdxl_controlnet_pncc.py', 'sdxl')])
def test_real_configs_build_and_train_on_tiny_weights(tmp_path, tiny, name, base):
    """The full-size recipes with only the weights, the size and the CPU-incompatible parts swapped: every
    component they name resolves and one optimiser step runs (AmpOptimWrapper needs a GPU)."""
    from mmengine.runner import Runner

    from posedreamer_mm.apis.launch import load_config
    cfg = load_config(str(ROOT / 'configs' / 'control' / name),
                      dict(pretrained=str(tiny[base]), data_root=str(tiny['pairs']), resolution=SIZE,
                           accumulative_counts=1, max_iters=1, save_interval=1))
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper' and cfg.optim_wrapper.optimizer.lr == 1e-5
    assert cfg.train_dataloader.dataset.pipeline[1].size == SIZE
    cfg.optim_wrapper.type = 'OptimWrapper'
    cfg.optim_wrapper.pop('dtype')
    cfg.model.conditioning_embedding_out_channels = (16, 32)
    cfg.model.dtype = 'float32'
    cfg.train_dataloader.update(num_workers=0, persistent_workers=False)
    cfg.work_dir = str(tmp_path)
    cfg.experiment_name = f'{base}_{uuid.uuid4().hex}'
    runner = Runner.from_cfg(cfg)
    assert runner.model.sdxl == (base == 'sdxl')
    assert runner.model.controlnet.is_gradient_checkpointing == (base == 'sdxl')
    runner.train()
    exported = tmp_path / 'diffusers' / 'iter_1'
    assert (tmp_path / 'iter_1.pth').exists() and (exported / 'config.json').exists()
    # the export is what the backend of this family loads
    backend = BACKENDS.build(dict(type='SD15ControlNetBackend' if base == 'sd15' else 'SDXLControlNetBackend',
                                  weights=str(tiny[base]), device='cpu', dtype='float32', num_inference_steps=1,
                                  batch_size=1, controlnets=dict(weights=str(exported), control_type='pncc')))
    backend.setup()
    torch.testing.assert_close(backend.pipe.controlnet.state_dict(), runner.model.controlnet.state_dict())
