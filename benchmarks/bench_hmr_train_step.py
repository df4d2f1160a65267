"""HMR train step speed: samples/s of the ViT-L HMR model's full training step (forward, the four losses with the
SMPL-X body forward, backward, clipping, AdamW with layer decay) as the config builds it.

The model, losses and optimizer come from ``configs/hmr/hmr_vitl_posedreamer_bedlam.py`` (random weights: the
backbone checkpoint is not loaded; the body model is the generated SMPL-X stand-in); on a GPU the optimizer runs
under ``AmpOptimWrapper`` with bfloat16 autocast. The batch is real packed samples: the config's training pipeline
over a few fixture images (``posedreamer_mm/testing/hmr_fixtures.py``), repeated to ``--batch``; data loading is
not timed (``benchmarks/bench_hmr_pipeline.py`` measures it). The measured figure on one H100 was 738 samples/s
at batch 64 (docs/performance.md).

Usage::

    python benchmarks/bench_hmr_train_step.py [--batch 64] [--steps 20] [--out figures.json]
    python benchmarks/bench_hmr_train_step.py --cpu-smoke     # tiny ViT, batch 4, 2 steps, CPU
"""
from __future__ import annotations

import argparse
import copy
import json
import os.path as osp
import sys
import tempfile
import time

import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)
CONFIG = osp.join(ROOT, 'configs', 'hmr', 'hmr_vitl_posedreamer_bedlam.py')


def packed_batch(cfg, tmp: str, batch: int) -> tuple[dict, str]:
    """``batch`` packed training samples (the config's train pipeline over fixture images), collated."""
    from mmengine.dataset import pseudo_collate

    from posedreamer_mm.registry import DATASETS
    from posedreamer_mm.testing.hmr_fixtures import hmr_dataset_cfgs, write_hmr_fixtures
    paths = write_hmr_fixtures(tmp, num=4)
    pipeline = copy.deepcopy(cfg.train_pipeline)
    for step in pipeline:
        if 'body_model' in step:
            step['body_model'] = dict(type='SMPLXBodyModel', model_path=paths['smplx_model_dir'])
    ds = DATASETS.build(hmr_dataset_cfgs(paths, pipeline=pipeline)['posedreamer'])
    samples = [ds[i % len(ds)] for i in range(batch)]
    return pseudo_collate(samples), paths['smplx_model_dir']


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--config', default=CONFIG)
    p.add_argument('--batch', type=int, default=64)
    p.add_argument('--steps', type=int, default=20, help='measured steps (after 3 warm-up steps)')
    p.add_argument('--cpu-smoke', action='store_true', help='tiny ViT (width 32, depth 2), batch 4, 2 steps, CPU')
    p.add_argument('--out', help='append the figures (JSON list) to this file')
    args = p.parse_args(argv)
    from mmengine.logging import MMLogger
    from mmengine.optim import build_optim_wrapper

    import posedreamer_mm  # noqa: F401  (compat fixes before mmpose/mmpretrain load)
    from posedreamer_mm.apis.launch import load_config
    from posedreamer_mm.registry import MODELS
    from posedreamer_mm.testing.vit import tiny_head, tiny_vit_backbone
    from posedreamer_mm.utils import register_all_modules
    register_all_modules()
    MMLogger.get_current_instance().setLevel('WARNING')
    cfg = load_config(args.config)
    device = torch.device('cuda' if torch.cuda.is_available() and not args.cpu_smoke else 'cpu')
    if device.type == 'cpu' and not args.cpu_smoke:
        raise SystemExit('no CUDA device: the ViT-L step needs a GPU (use --cpu-smoke to check the code path)')
    batch_size, steps = (4, 2) if args.cpu_smoke else (args.batch, args.steps)
    with tempfile.TemporaryDirectory() as tmp:
        data, model_dir = packed_batch(cfg, tmp, batch_size)
        model_cfg = copy.deepcopy(cfg.model)
        model_cfg['body_model'] = dict(type='SMPLXBodyModel', model_path=model_dir)
        model_cfg['backbone'].pop('init_cfg', None)       # random weights: no checkpoint download
        optim_cfg = copy.deepcopy(cfg.optim_wrapper)
        if args.cpu_smoke:
            h, w = model_cfg['backbone']['img_size']
            model_cfg['backbone'] = tiny_vit_backbone((h, w))
            model_cfg['head'] = tiny_head(pos_embed_size=model_cfg['head'].get('pos_embed_size'))
            optim_cfg['paramwise_cfg']['num_layers'] = 2
        model = MODELS.build(model_cfg).to(device)
        model.init_weights()
        if device.type == 'cuda':
            optim_cfg.update(type='AmpOptimWrapper', dtype='bfloat16')
        optim_wrapper = build_optim_wrapper(model, optim_cfg)
        model.train()
        params_m = sum(p.numel() for p in model.parameters()) / 1e6
        for _ in range(1 if args.cpu_smoke else 3):
            losses = model.train_step(data, optim_wrapper)
        if device.type == 'cuda':
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(steps):
            losses = model.train_step(data, optim_wrapper)
        if device.type == 'cuda':
            torch.cuda.synchronize()
        wall = time.perf_counter() - t0
    assert all(torch.isfinite(v).all() for v in losses.values()), losses
    h, w = model_cfg['backbone']['img_size']
    result = dict(model='HMR ViT-L (config)' if not args.cpu_smoke else 'HMR tiny ViT (smoke)',
                  device=torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU',
                  params_m=round(params_m, 1), input=f'{h}x{w}', batch=batch_size, steps=steps,
                  amp='bfloat16' if device.type == 'cuda' else 'off', samples_per_s=round(batch_size * steps / wall, 1),
                  ms_per_step=round(1000 * wall / steps, 1))
    print(f"{result['model']} train step on {result['device']}: {result['samples_per_s']} samples/s "
          f"(batch {batch_size}, {h}x{w}, {result['params_m']} M params, AMP {result['amp']}, "
          f"{result['ms_per_step']} ms/step)", flush=True)
    if args.out:
        old = json.load(open(args.out)) if osp.isfile(args.out) else []
        with open(args.out, 'w') as f:
            json.dump(old + [result], f, indent=1)
    return result


if __name__ == '__main__':
    main()
