"""DPOControlHook in a real mmengine Runner training DiffusionDPO (tiny SD1.5 ControlNet policy) on in-memory pairs:
base figures equal the plain policy's, the relative reduction is computed from the logged errors, the contact
sheet has the base column, and every checkpoint gets its LoRA in diffusers format."""
import json

import cv2
import numpy as np
import pytest
import torch
from mmengine.runner import Runner
from safetensors.torch import load_file

from posedreamer_mm.apis.control_eval import evaluate_control
from posedreamer_mm.registry import MODELS, SCORERS

from .control_fixtures import SIDE, RecordingScorer, trainer_cfg, write_control_dataset, write_tiny_parts


@pytest.fixture(scope='module')
def parts(tmp_path_factory):
    torch.set_num_threads(1)
    return write_tiny_parts(tmp_path_factory.mktemp('tiny_sd_dpo'))


@pytest.fixture(scope='module')
def val_root(tmp_path_factory):
    return write_control_dataset(tmp_path_factory.mktemp('dpo_val') / 'data', num=4)


class InMemoryPairs(torch.utils.data.Dataset):
    """Packed DPO pairs as DPOPairDataset's pipeline gives them (uint8 images and controls)."""

    def __init__(self, n=4, seed=0):
        gen = torch.Generator().manual_seed(seed)

        def img():
            return torch.randint(0, 256, (3, SIDE, SIDE), generator=gen, dtype=torch.uint8)

        self.items = [dict(inputs=dict(image_w=img(), image_l=img(), control=img()),
                           data_samples=dict(prompt=f'a person {i}', sample_id=f'pair_{i}')) for i in range(n)]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def dpo_cfg(parts):
    return dict(type='DiffusionDPO', policy=trainer_cfg(parts, noise_seed=0), lora=dict(r=4, lora_alpha=4),
                loss=dict(beta=5000.0))


def hook_cfg(val_root, **kw):
    return {**dict(type='DPOControlHook', data_root=str(val_root), control_types=['pncc'],
                   scorer=dict(type='TestOnlyRecordingScorer', miss_every=0), num_samples=3, interval=2,
                   backend=dict(num_inference_steps=2, guidance_scale=1.0), sheet_rows=2, tile=32), **kw}


def run(tmp_path, parts, hooks, max_iters=4):
    runner = Runner(
        model=dpo_cfg(parts), work_dir=str(tmp_path),
        train_dataloader=dict(dataset=InMemoryPairs(), sampler=dict(type='DefaultSampler', shuffle=False),
                              batch_size=2, num_workers=0, collate_fn=dict(type='pseudo_collate')),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=5e-2)),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False),
                           logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=hooks, randomness=dict(seed=7),
        visualizer=dict(type='Visualizer', vis_backends=[dict(type='LocalVisBackend')], name=f'vis_dpo_{id(hooks)}'),
        default_scope='posedreamer_mm')
    runner.train()
    return runner


def test_hook_logs_base_and_current_figures_sheet_and_loras(tmp_path, parts, val_root):
    RecordingScorer.calls.clear()
    runner = run(tmp_path, parts, [hook_cfg(val_root)])
    hook = next(h for h in runner.hooks if type(h).__name__ == 'DPOControlHook')
    model = runner.model

    # the base figures are the plain policy's (no adapter at all), same rows, prompts and seeds
    plain = MODELS.build(trainer_cfg(parts, noise_seed=0)).eval()
    scorer = SCORERS.build(dict(type='TestOnlyRecordingScorer', miss_every=0))
    want = evaluate_control(plain.build_pipeline(), hook.held_out, scorer, control_types=['pncc'],
                            backend=dict(num_inference_steps=2, guidance_scale=1.0))
    for got, ref in zip(hook.base_result.images, want.images):
        np.testing.assert_array_equal(got, ref)
    np.testing.assert_allclose(hook.base_result.oks, want.oks)
    # ... and the trained LoRA changed the images (same seeds)
    assert max(np.abs(a.astype(int) - b.astype(int)).max()
               for a, b in zip(hook.last_result.images, hook.base_result.images)) > 0

    recs = [json.loads(line) for line in open(next(tmp_path.glob('*/vis_data/scalars.json')))]
    base = [r for r in recs if 'dpo_val/base_oks_error' in r and r['step'] == 0]
    assert len(base) == 1 and base[0]['dpo_val/base_oks_error'] == pytest.approx(want.oks_error)
    val = {r['step']: r for r in recs if 'dpo_val/oks_error' in r}
    assert sorted(val) == [2, 4]
    for r in val.values():
        b, e = r['dpo_val/base_oks_error'], r['dpo_val/oks_error']
        assert r['dpo_val/oks_error_reduction'] == pytest.approx((b - e) / b)
        assert r['dpo_val/mean_oks'] == pytest.approx(1 - e)
        assert 0.0 <= r['dpo_val/implicit_acc'] <= 1.0
    assert val[4]['dpo_val/implicit_acc'] == pytest.approx(model.last_metrics['implicit_acc'])
    assert val[4]['dpo_val/oks_error'] == pytest.approx(hook.last_result.oks_error)
    # the training log has the model's DPO figures per iteration
    train = [r for r in recs if 'implicit_acc' in r and 'reward_margin' in r]
    assert len(train) == 4 and all('ref_mse' in r and 'err_w_diff' in r for r in train)

    sheet = cv2.imread(str(next(tmp_path.glob('*/vis_data/vis_image/dpo_val_contact_sheet_4.png'))))
    assert sheet is not None and sheet.shape[1] == 4 * 32  # base | generated | generated + label | pncc

    for step in (2, 4):
        lora = tmp_path / 'dpo_lora' / f'iter_{step}' / 'pytorch_lora_weights.safetensors'
        assert lora.is_file()
        ckpt = torch.load(tmp_path / f'iter_{step}.pth', map_location='cpu', weights_only=False)
        assert ckpt['meta']['dpo_lora'] == f'dpo_lora/iter_{step}'
        assert all(k.startswith('lora_layers.') for k in ckpt['state_dict'])
    saved = load_file(tmp_path / 'dpo_lora' / 'iter_4' / 'pytorch_lora_weights.safetensors')
    live = model.lora_state_dicts()['unet']
    assert len(saved) == len(live)
    for k, v in live.items():
        torch.testing.assert_close(saved[f'unet.{k}'], v, rtol=0, atol=0)


def test_a_model_without_reference_is_named(tmp_path, parts, val_root):
    runner = Runner(
        model=trainer_cfg(parts), work_dir=str(tmp_path),
        train_dataloader=dict(dataset=InMemoryPairs(), sampler=dict(type='DefaultSampler', shuffle=False),
                              batch_size=2, num_workers=0, collate_fn=dict(type='pseudo_collate')),
        train_cfg=dict(by_epoch=False, max_iters=1), optim_wrapper=dict(optimizer=dict(type='AdamW', lr=1e-3)),
        custom_hooks=[hook_cfg(val_root)], default_scope='posedreamer_mm')
    with pytest.raises(TypeError, match='no reference'):
        runner.train()
