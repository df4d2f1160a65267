"""DPO training through tools/train.py on the tiny config with the DPOControlHook: a LoRA-only checkpoint, the
hook's figures, the exported LoRA in the SD1.5 ControlNet backend; the real configs hold the reference settings."""
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config

from posedreamer_mm.registry import BACKENDS
from posedreamer_mm.testing.diffusion import write_tiny_controlnet, write_tiny_sd15

from ..engine.control_fixtures import write_control_dataset

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / 'configs' / 'dpo'
SIZE = 32


def write_pairs(root: Path, n: int = 4) -> Path:
    """A candidates folder with winner, loser and PNCC images and a pairs file in tools/make_dpo_pairs.py's
    line format (group, winner.image, loser.image, controls, prompt)."""
    rng = np.random.default_rng(0)
    lines = []
    for i in range(n):
        for name in ('w', 'l', 'c'):
            cv2.imwrite(str(root / f'{name}{i}.png'), rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
        lines.append(json.dumps(dict(group=f'pose_{i}', winner=dict(image=f'w{i}.png', id=f'pose_{i}_c0'),
                                     loser=dict(image=f'l{i}.png', id=f'pose_{i}_c1'), controls=dict(pncc=f'c{i}.png'),
                                     prompt=f'a person {i}', gap=0.3)))
    (root / 'dpo_pairs.jsonl').write_text('\n'.join(lines) + '\n')
    return root


def test_tiny_config_trains_and_exports_a_lora_the_backend_loads(tmp_path):
    torch.set_num_threads(1)
    sd15, cn = write_tiny_sd15(tmp_path / 'sd15'), write_tiny_controlnet(tmp_path / 'cn')
    cands = tmp_path / 'cands'
    cands.mkdir()
    write_pairs(cands)
    val = write_control_dataset(tmp_path / 'val', num=2)
    config = tmp_path / 'with_hook.py'  # the tiny config plus the DPO hook on a labelled held-out set
    config.write_text(
        f"_base_ = [{str(CONFIGS / 'tiny_sd15_controlnet-dpo.py')!r}]\n"
        "custom_imports = dict(imports=['tests.engine.control_fixtures'], allow_failed_imports=False)\n"
        "custom_hooks = [dict(type='DiffusersExportHook', interval=2),\n"
        f"                dict(type='DPOControlHook', data_root={str(val)!r}, control_types=['pncc'],\n"
        "                     scorer=dict(type='TestOnlyRecordingScorer', miss_every=0), num_samples=2, interval=2,\n"
        "                     backend=dict(num_inference_steps=2, guidance_scale=1.0), sheet_rows=2, tile=32)]\n")
    work = tmp_path / 'work'
    cmd = [sys.executable, str(ROOT / 'tools' / 'train.py'), str(config),
           '--work-dir', str(work), '--cfg-options', f'pretrained={sd15}', f'controlnet={cn}',
           f'candidates_root={cands}']
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                         env={**os.environ, 'PYTHONPATH': str(ROOT), 'OMP_NUM_THREADS': '1'})
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    ckpt = torch.load(work / 'iter_4.pth', map_location='cpu', weights_only=False)
    assert ckpt['state_dict'] and all(k.startswith('lora_layers.unet/') for k in ckpt['state_dict'])
    recs = [json.loads(line) for p in work.glob('*/vis_data/scalars.json') for line in p.read_text().splitlines()]
    logged = [r for r in recs if 'implicit_acc' in r]
    assert len(logged) == 4 and all({'loss', 'reward_margin', 'ref_mse'} <= set(r) for r in logged)

    hook = {r['step']: r for r in recs if 'dpo_val/oks_error_reduction' in r}
    assert sorted(hook) == [2, 4] and all('dpo_val/implicit_acc' in r for r in hook.values())
    assert [r['step'] for r in recs if 'dpo_val/base_oks_error' in r and 'dpo_val/oks_error' not in r] == [0]
    assert list(work.glob('*/vis_data/vis_image/dpo_val_contact_sheet_4.png'))
    assert (work / 'dpo_lora' / 'iter_2' / 'pytorch_lora_weights.safetensors').is_file()

    lora = work / 'diffusers' / 'iter_4'
    assert (lora / 'pytorch_lora_weights.safetensors').is_file()
    cpu = dict(type='SD15ControlNetBackend', weights=str(sd15), device='cpu', dtype='float32', num_inference_steps=2,
               batch_size=2, controlnets=dict(weights=str(cn), control_type='pncc'))
    rng = np.random.default_rng(1)
    records = [dict(seed=i, sample=SimpleNamespace(id=f's{i}'), prompt='a person',
                    controls=dict(pncc=rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))) for i in range(2)]
    images = []
    for backend in (BACKENDS.build(cpu), BACKENDS.build(dict(cpu, loras=[dict(path=str(lora))]))):
        kwargs = backend.call_arguments(records)  # loads the pipeline (and the LoRA)
        with torch.no_grad():
            images.append(np.asarray(backend.pipe(**kwargs).images, np.float64))
    assert np.abs(images[0] - images[1]).max() > 1e-3


@pytest.mark.parametrize('name, policy, beta, lr, accumulation, rank', [
    ('sd15_controlnet-dpo_pncc.py', 'ControlNetTrainer', 5000.0, 5e-5, 4, 64),
    ('sdxl_controlnet-dpo_pncc.py', 'ControlNetTrainer', 5000.0, 5e-5, 16, 64),
    ('flux_control-lora-dpo_pncc.py', 'FluxControlLoRATrainer', 100.0, 5e-5, 16, 128),
])
def test_real_configs_hold_the_reference_settings(name, policy, beta, lr, accumulation, rank):
    cfg = Config.fromfile(CONFIGS / name)
    assert cfg.model.type == 'DiffusionDPO' and cfg.model.policy.type == policy
    assert cfg.model.loss.beta == beta and cfg.model.lora.r == rank
    assert cfg.model.lora.target_modules == ['to_q', 'to_k', 'to_v', 'to_out.0']
    assert cfg.model.policy.caption_dropout == 0.0 and cfg.model.policy.control_dropout == 0.0
    assert cfg.optim_wrapper.optimizer.lr == lr and cfg.optim_wrapper.accumulative_counts == accumulation
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper' and cfg.optim_wrapper.dtype == 'bfloat16'
    assert cfg.train_dataloader.dataset.type == 'DPOPairDataset'
    assert [h.type for h in cfg.custom_hooks] == ['DiffusersExportHook', 'DPOControlHook']
    if policy == 'FluxControlLoRATrainer':
        assert cfg.train_dataloader.batch_size == 1 and cfg.model.policy.gradient_checkpointing
