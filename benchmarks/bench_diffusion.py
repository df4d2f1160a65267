"""Diffusion generation speed: full-size SD1.5 + ControlNet and SDXL + ControlNet with random weights, through the
project's backends (``SD15ControlNetBackend`` / ``SDXLControlNetBackend.generate``: control tensors, per-sample
generators, prompts, CFG, VAE decode, uint8 conversion), eager and with ``torch.compile``.

No weights are downloaded: every model is built from the architecture configs below (the published SD1.5 /
SDXL / ControlNet shapes; ``ControlNetModel.from_unet``) with random weights directly on the device, and put into
the backend in place of its ``from_pretrained`` load. Random weights run the same arithmetic as trained ones.

Figures per (model, eager|compiled): images/s over the measured batches (after one warm-up batch, which includes
the compile), seconds per denoising step, and the **fraction of wall time the denoiser is busy**: time inside the
UNet and ControlNet forward calls (CUDA events on a GPU, so the pipeline is not synchronised more than it is
anyway; ``perf_counter`` on CPU) over the wall time of ``generate()``. The rest is text encoding, the scheduler,
VAE decoding, host-side work and conversion.

Usage::

    python benchmarks/bench_diffusion.py [--models sd15 sdxl] [--compile both|off|on] [--out figures.json]
    python benchmarks/bench_diffusion.py --cpu-smoke      # tiny configs, 64 px, 2 steps, CPU (a few seconds)

``--deadline-s S``: skip a compiled run that would not finish within S seconds of the start (compiling takes
about 75 s for SD1.5 and 180 s for SDXL on one H100, docs/performance.md).
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import sys
import time

import numpy as np
import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

# --- architecture configs (full size) ---------------------------------------------------------------------------
SD15_UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                 block_out_channels=(320, 640, 1280, 1280),
                 down_block_types=('CrossAttnDownBlock2D',) * 3 + ('DownBlock2D',),
                 up_block_types=('UpBlock2D',) + ('CrossAttnUpBlock2D',) * 3,
                 cross_attention_dim=768, attention_head_dim=8)
SDXL_UNET = dict(sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
                 block_out_channels=(320, 640, 1280),
                 down_block_types=('DownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D'),
                 up_block_types=('CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'UpBlock2D'),
                 transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
                 addition_embed_type='text_time', addition_time_embed_dim=256,
                 projection_class_embeddings_input_dim=2816, use_linear_projection=True)
VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
           block_out_channels=(128, 256, 512, 512),
           down_block_types=('DownEncoderBlock2D',) * 4, up_block_types=('UpDecoderBlock2D',) * 4)
CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
              projection_dim=768, hidden_act='quick_gelu')
CLIP_BIGG = dict(hidden_size=1280, intermediate_size=5120, num_attention_heads=20, num_hidden_layers=32,
                 projection_dim=1280, hidden_act='gelu')
#: Full-size runs: resolution, batch, steps, guidance (the generation configs' settings).
FULL = dict(sd15=dict(size=512, batch=16, steps=20, guidance=7.5),
            sdxl=dict(size=1024, batch=4, steps=25, guidance=5.0))

# --- tiny configs for --cpu-smoke (same classes and code path) ---------------------------------------------------
_TINY_UNET = dict(block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8, attention_head_dim=8,
                  down_block_types=('DownBlock2D', 'CrossAttnDownBlock2D'),
                  up_block_types=('CrossAttnUpBlock2D', 'UpBlock2D'))
TINY = dict(
    sd15_unet={**SD15_UNET, **_TINY_UNET, 'sample_size': 8, 'cross_attention_dim': 32},
    sdxl_unet={**SDXL_UNET, **_TINY_UNET, 'sample_size': 8, 'cross_attention_dim': 64,
               'transformer_layers_per_block': (1, 1), 'attention_head_dim': 8, 'addition_time_embed_dim': 8,
               'projection_class_embeddings_input_dim': 6 * 8 + 32},
    vae={**VAE, 'block_out_channels': (8, 8, 8, 8), 'layers_per_block': 1, 'norm_num_groups': 8},
    clip=dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, projection_dim=32),
    run=dict(sd15=dict(size=64, batch=2, steps=2, guidance=7.5), sdxl=dict(size=64, batch=2, steps=2, guidance=5.0)))


def _clip(cfg: dict, projection: bool, vocab: int):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection
    config = CLIPTextConfig(vocab_size=vocab, max_position_embeddings=77, bos_token_id=0, eos_token_id=1,
                            pad_token_id=1, **cfg)
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)


def build_pipeline(kind: str, tiny: bool, device: torch.device, dtype: torch.dtype):
    """A ``StableDiffusion(XL)ControlNetPipeline`` with random weights, built on ``device`` in ``dtype``."""
    import diffusers
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel

    from posedreamer_mm.testing.diffusion import tiny_clip_tokenizer
    tokenizer = tiny_clip_tokenizer()   # token ids only (no vocabulary download); sequences are padded to 77 anyway
    vocab = len(tokenizer)
    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel(**(TINY[f'{kind}_unet'] if tiny else (SD15_UNET if kind == 'sd15' else SDXL_UNET)))
        controlnet = ControlNetModel.from_unet(unet)
        vae = AutoencoderKL(**(TINY['vae'] if tiny else VAE))
        text = _clip(TINY['clip'] if tiny else CLIP_L, False, vocab)
        if kind == 'sdxl':
            text_2 = _clip(TINY['clip'] if tiny else CLIP_BIGG, True, vocab)
    scheduler_cfg = dict(beta_start=0.00085, beta_end=0.012, beta_schedule='scaled_linear', steps_offset=1)
    if kind == 'sd15':
        pipe = diffusers.StableDiffusionControlNetPipeline(
            vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet, controlnet=controlnet,
            scheduler=diffusers.UniPCMultistepScheduler(**scheduler_cfg), safety_checker=None,
            feature_extractor=None, requires_safety_checker=False)
    else:
        pipe = diffusers.StableDiffusionXLControlNetPipeline(
            vae=vae, text_encoder=text, text_encoder_2=text_2, tokenizer=tokenizer, tokenizer_2=tokenizer,
            unet=unet, controlnet=controlnet,
            scheduler=diffusers.EulerDiscreteScheduler(timestep_spacing='leading', **scheduler_cfg))
    pipe.to(device=device, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


class DenoiserTimer:
    """Sums the time spent inside the UNet and ControlNet forward calls (CUDA events on a GPU)."""

    def __init__(self, pipe, device: torch.device) -> None:
        self.cuda = device.type == 'cuda'
        self.spans: list = []
        self.calls = 0
        for name in ('unet', 'controlnet'):
            module = getattr(pipe, name)
            module.forward = self._wrap(module.forward)

    def _wrap(self, forward):
        def timed(*args, **kwargs):
            self.calls += 1
            if self.cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                out = forward(*args, **kwargs)
                end.record()
                self.spans.append((start, end))
            else:
                t0 = time.perf_counter()
                out = forward(*args, **kwargs)
                self.spans.append(time.perf_counter() - t0)
            return out
        return timed

    def reset(self) -> None:
        self.spans, self.calls = [], 0

    def busy_seconds(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
            return sum(s.elapsed_time(e) for s, e in self.spans) / 1000.0
        return float(sum(self.spans))


def make_batch(n: int, size: int, seed: int = 0) -> list[dict]:
    """Results dicts as the generator passes them: a PNCC-like control, a prompt, a seed, a sample."""
    from posedreamer_mm.body.sample import BodySample
    rng = np.random.default_rng(seed)
    return [dict(id=f'bench{i}', seed=seed + i, prompt='a photo of a person doing yoga in a park, full body',
                 negative_prompt='blurry, low quality',
                 sample=BodySample(id=f'bench{i}', img_size=np.array([size] * 2)),
                 controls=dict(pncc=rng.integers(0, 256, (size, size, 3), dtype=np.uint8))) for i in range(n)]


def run_one(kind: str, compiled: bool, tiny: bool, device: torch.device, dtype: torch.dtype, batches: int,
            compile_backend: str) -> dict:
    from posedreamer_mm.registry import BACKENDS
    setting = (TINY['run'] if tiny else FULL)[kind]
    t0 = time.perf_counter()
    pipe = build_pipeline(kind, tiny, device, dtype)
    build_s = time.perf_counter() - t0
    params = {n: sum(p.numel() for p in getattr(pipe, n).parameters()) for n in ('unet', 'controlnet')}
    if compiled:
        for name in ('unet', 'controlnet'):   # what DiffusersBackend.setup does with compile=True
            setattr(pipe, name, torch.compile(getattr(pipe, name), backend=compile_backend))
    backend = BACKENDS.build(dict(
        type='SD15ControlNetBackend' if kind == 'sd15' else 'SDXLControlNetBackend', weights='(random, in memory)',
        controlnets=dict(weights='(random, in memory)', control_type='pncc'), batch_size=setting['batch'],
        num_inference_steps=setting['steps'], guidance_scale=setting['guidance'], device=str(device),
        dtype=str(dtype).replace('torch.', '')))
    backend.pipe = pipe                        # instead of setup()'s from_pretrained
    timer = DenoiserTimer(pipe, device)
    batch = make_batch(setting['batch'], setting['size'])
    t0 = time.perf_counter()
    backend.generate(batch)                    # warm-up (and compile)
    if device.type == 'cuda':
        torch.cuda.synchronize()
    warmup_s = time.perf_counter() - t0
    timer.reset()
    t0 = time.perf_counter()
    for _ in range(batches):
        images = backend.generate(batch)
    if device.type == 'cuda':
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    busy = timer.busy_seconds()
    assert len(images) == setting['batch'] and images[0].shape == (setting['size'], setting['size'], 3)
    out = dict(model=f'{kind.upper()} + ControlNet', compiled=compiled, size=setting['size'], batch=setting['batch'],
               steps=setting['steps'], cfg=True, dtype=str(dtype).replace('torch.', ''),
               unet_params_m=round(params['unet'] / 1e6, 1), controlnet_params_m=round(params['controlnet'] / 1e6, 1),
               build_s=round(build_s, 1), warmup_s=round(warmup_s, 1),
               images_per_s=round(batches * setting['batch'] / wall, 3),
               s_per_step=round(wall / (batches * setting['steps']), 4),
               denoiser_busy=round(busy / wall, 3), denoiser_calls=timer.calls)
    del backend, pipe
    if device.type == 'cuda':
        torch.cuda.empty_cache()
    return out


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--models', nargs='+', default=['sd15', 'sdxl'], choices=['sd15', 'sdxl'])
    p.add_argument('--compile', choices=['both', 'off', 'on'], default='both')
    p.add_argument('--batches', type=int, default=2, help='measured batches after the warm-up batch')
    p.add_argument('--dtype', default='bfloat16')
    p.add_argument('--cpu-smoke', action='store_true', help='tiny configs on CPU (checks the code path)')
    p.add_argument('--deadline-s', type=float, help='skip compiled runs that would end after this many seconds')
    p.add_argument('--out', help='append the figures (JSON list) to this file')
    args = p.parse_args(argv)
    from diffusers.utils import logging as diffusers_logging

    from posedreamer_mm.utils import register_all_modules
    register_all_modules()
    diffusers_logging.set_verbosity_error()   # "modules that should be kept in float32: []" per cast model
    start = time.perf_counter()
    tiny = args.cpu_smoke
    device = torch.device('cpu' if tiny or not torch.cuda.is_available() else 'cuda')
    if device.type == 'cpu' and not tiny:
        raise SystemExit('no CUDA device: full-size pipelines need a GPU (use --cpu-smoke to check the code path)')
    dtype = torch.float32 if tiny else getattr(torch, args.dtype)
    # A compiled run costs about this much before its first image (one H100; eager 'backend' in the smoke).
    compile_cost = dict(sd15=100.0, sdxl=230.0)
    print(f'device: {torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"}; '
          f'torch {torch.__version__}', flush=True)
    results = []
    for kind in args.models:
        for compiled in {'both': (False, True), 'off': (False,), 'on': (True,)}[args.compile]:
            elapsed = time.perf_counter() - start
            if compiled and args.deadline_s and not tiny and elapsed + compile_cost[kind] > args.deadline_s:
                print(f'{kind} compiled: skipped ({elapsed:.0f} s used, about {compile_cost[kind]:.0f} s needed, '
                      f'deadline {args.deadline_s:.0f} s)', flush=True)
                results.append(dict(model=f'{kind.upper()} + ControlNet', compiled=True, skipped='time budget'))
                continue
            r = run_one(kind, compiled, tiny, device, dtype, args.batches, 'eager' if tiny else 'inductor')
            results.append(r)
            print(f"{r['model']} {'compiled' if compiled else 'eager   '} {r['size']}px batch {r['batch']} "
                  f"{r['steps']} steps CFG {r['dtype']}: {r['images_per_s']:.3f} images/s, "
                  f"{r['s_per_step']:.4f} s/step, denoiser busy {100 * r['denoiser_busy']:.1f} % "
                  f"(UNet {r['unet_params_m']} M + ControlNet {r['controlnet_params_m']} M params; build "
                  f"{r['build_s']} s, warm-up {r['warmup_s']} s)", flush=True)
    if args.out:
        old = json.load(open(args.out)) if osp.isfile(args.out) else []
        with open(args.out, 'w') as f:
            json.dump(old + results, f, indent=1)
    return results


if __name__ == '__main__':
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    main()
