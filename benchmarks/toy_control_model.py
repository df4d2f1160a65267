"""The tiny control model of the toy-scale DPO benchmark (``bench_dpo_method.py``): a base that draws bodies.

Real diffusers components in the SD1.5 layout, all trained here on the stand-in pair images (nothing downloaded):

- **A stand-in VAE**: a small ``AutoencoderKL`` (widths 16, 32, 64: 4x downsampling, 4 latent channels)
  trained once to reconstruct the pair images (MSE + L1 + a KL weight of 1e-6, posterior samples as SD's VAE
  training draws them), then given the ``scaling_factor`` that makes the training latents unit-variance. It stands in
  for SD's VAE: its decoder is what turns the denoiser's latents into an image the scorer can read (a random decoder,
  the previous attempt's, draws noise textures).
- **A random CLIP text encoder** (the prompt is one fixed caption: it carries no information).
- **A UNet** taught from scratch to denoise the training latents without control (the base "knows" images before a
  ControlNet is trained on it, as SD does); the latents are encoded once and cached, each iteration draws a fresh
  posterior sample, noise and timestep with the trainer's own ``sample_noise`` / ``sample_timesteps`` /
  ``noisy_latents`` / ``target``.

Each stage writes a ``settings.json`` beside its output and is reused when the settings match.
"""
from __future__ import annotations

import json
import os.path as osp
import shutil
import time

import numpy as np
import torch

PROMPT = 'a photo of a person'


def _cached(folder: str, settings: dict) -> bool:
    """``True`` when ``folder`` holds a finished stage written with ``settings``."""
    path = osp.join(folder, 'settings.json')
    if not osp.isfile(path):
        return False
    with open(path) as f:
        return json.load(f) == json.loads(json.dumps(settings))


def _finish(folder: str, settings: dict, extra: dict | None = None) -> None:
    with open(osp.join(folder, 'settings.json'), 'w') as f:
        json.dump(settings, f, indent=1)
    if extra is not None:
        with open(osp.join(folder, 'stage.json'), 'w') as f:
            json.dump(extra, f, indent=1)


def stage_info(folder: str) -> dict:
    path = osp.join(folder, 'stage.json')
    if not osp.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


def warmup_cosine(opt, iters: int, warm: float):
    """Learning rate: linear warm-up over ``warm`` of the iterations, then cosine decay to 5 % of the peak."""
    n_warm = max(1, int(warm * iters))

    def factor(i: int) -> float:
        if i < n_warm:
            return (i + 1) / n_warm
        return 0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * min(1.0, (i - n_warm) / max(1, iters - n_warm))))
    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


# --- the stand-in VAE ---------------------------------------------------------------------------------------------
def train_toy_vae(folder: str, images: torch.Tensor, widths: tuple[int, ...] = (16, 32, 64), iters: int = 400,
                  batch: int = 16, lr: float = 2e-3, seed: int = 0, tag: str = '') -> dict:
    """Trains (or reuses) a small ``AutoencoderKL`` on ``images`` (N, 3, H, W) uint8; saved in ``folder``.

    Returns the stage record: reconstruction MSE (in [-1, 1] units) on the first and last 20 iterations, the
    scaling factor, seconds.
    """
    from diffusers import AutoencoderKL
    settings = dict(widths=list(widths), iters=iters, batch=batch, lr=lr, seed=seed, n=len(images),
                    size=int(images.shape[-1]), data=tag)
    if _cached(folder, settings):
        return dict(stage_info(folder), reused=True)
    shutil.rmtree(folder, ignore_errors=True)
    t0, c0 = time.time(), time.process_time()
    torch.manual_seed(seed)
    vae = AutoencoderKL(block_out_channels=tuple(widths), in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=('DownEncoderBlock2D',) * len(widths),
                        up_block_types=('UpDecoderBlock2D',) * len(widths), layers_per_block=1, norm_num_groups=8,
                        sample_size=int(images.shape[-1]))
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    sched = warmup_cosine(opt, iters, 0.1)
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    x = images.float() / 127.5 - 1
    mses = []
    vae.train()
    for it in range(iters):
        b = x[rng.choice(len(x), min(batch, len(x)), replace=False)]
        post = vae.encode(b).latent_dist
        rec = vae.decode(post.sample(generator=gen)).sample
        mse = torch.nn.functional.mse_loss(rec, b)
        loss = mse + 0.5 * (rec - b).abs().mean() + 1e-6 * post.kl().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        mses.append(mse.item())
        if (it + 1) % max(1, iters // 5) == 0:
            print(f'    VAE it {it + 1}: reconstruction MSE {np.mean(mses[-20:]):.4f}', flush=True)
    vae.eval()
    with torch.no_grad():
        means = torch.cat([vae.encode(x[s:s + 64]).latent_dist.mean for s in range(0, min(len(x), 256), 64)])
    vae.register_to_config(scaling_factor=float(1.0 / means.std()))
    vae.save_pretrained(folder, safe_serialization=True)
    info = dict(mse_first=float(np.mean(mses[:20])), mse_last=float(np.mean(mses[-20:])),
                scaling_factor=float(vae.config.scaling_factor), wall_s=round(time.time() - t0, 1),
                cpu_s=round(time.process_time() - c0, 1))
    _finish(folder, settings, info)
    return info


@torch.no_grad()
def reconstruction_mse(vae_folder: str, images: torch.Tensor) -> float:
    """The stand-in VAE's reconstruction MSE (posterior mean, [-1, 1] units) on ``images`` (held-out ones)."""
    from diffusers import AutoencoderKL
    vae = AutoencoderKL.from_pretrained(vae_folder).eval()
    x = images.float() / 127.5 - 1
    rec = torch.cat([vae.decode(vae.encode(x[s:s + 32]).latent_dist.mean).sample for s in range(0, len(x), 32)])
    return float(torch.nn.functional.mse_loss(rec, x))


# --- the base folder ----------------------------------------------------------------------------------------------
def write_toy_base(folder: str, vae_folder: str, size: int, unet_widths: tuple[int, ...] = (32, 64),
                   seed: int = 0) -> str:
    """A tiny SD1.5-layout folder: the trained stand-in VAE, a random CLIP text encoder, an untrained UNet."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from posedreamer_mm.testing.diffusion import tiny_clip_tokenizer
    torch.manual_seed(seed)
    vae = AutoencoderKL.from_pretrained(vae_folder)
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    text = CLIPTextModel(CLIPTextConfig(bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=32,
                                        intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                                        vocab_size=1000, projection_dim=32))
    n = len(unet_widths)
    unet = UNet2DConditionModel(sample_size=size // factor, in_channels=4, out_channels=4,
                                block_out_channels=tuple(unet_widths), layers_per_block=1, norm_num_groups=8,
                                down_block_types=('DownBlock2D',) + ('CrossAttnDownBlock2D',) * (n - 1),
                                up_block_types=('CrossAttnUpBlock2D',) * (n - 1) + ('UpBlock2D',),
                                cross_attention_dim=32, attention_head_dim=8)
    sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule='scaled_linear', clip_sample=False,
                          set_alpha_to_one=False, steps_offset=1)
    StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=text, tokenizer=tiny_clip_tokenizer(), scheduler=sched,
                            safety_checker=None, feature_extractor=None,
                            requires_safety_checker=False).save_pretrained(folder, safe_serialization=True)
    return folder


def pretrain_unet(folder: str, images: torch.Tensor, iters: int, batch: int, lr: float, seed: int) -> list[float]:
    """Teaches the base UNet of ``folder`` to denoise ``images``' latents (fixed caption, no control); saves it.

    The VAE posterior (mean, std) of every image is computed once; each iteration samples from it with the
    iteration's generator, then draws noise and timesteps and forms the target with ``ControlNetTrainer``'s own
    methods (the schedule the ControlNet and DPO stages train with).
    """
    from posedreamer_mm.registry import MODELS
    model = MODELS.build(dict(type='ControlNetTrainer', pretrained=folder, conditioning_channels=3, noise_seed=seed,
                              conditioning_embedding_out_channels=(16, 32, 64)))
    vae, scale = model.vae, model.vae.config.scaling_factor
    with torch.no_grad():
        x = images.float() / 127.5 - 1
        post = [vae.encode(x[s:s + 64]).latent_dist for s in range(0, len(x), 64)]
        mean, std = torch.cat([p.mean for p in post]), torch.cat([p.std for p in post])
    unet = model.unet
    unet.requires_grad_(True).train()
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=1e-2)
    sched = warmup_cosine(opt, iters, 0.05)
    rng = np.random.default_rng(seed)
    cond = model.encode_prompts([PROMPT] * batch, train=False)['encoder_hidden_states']
    losses = []
    for it in range(iters):
        idx = torch.from_numpy(rng.choice(len(x), batch, replace=False))
        gen = torch.Generator().manual_seed(seed * 100003 + it)
        latents = (mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=gen)) * scale
        noise = model.sample_noise(latents, gen)
        t = model.sample_timesteps(batch, latents.device, gen)
        pred = unet(model.noisy_latents(latents, noise, t), t, encoder_hidden_states=cond, return_dict=False)[0]
        loss = torch.nn.functional.mse_loss(pred, model.target(latents, noise, t))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if (it + 1) % max(1, iters // 5) == 0:
            print(f'    UNet it {it + 1}: loss {np.mean(losses[-50:]):.4f}', flush=True)
    unet.eval().save_pretrained(osp.join(folder, 'unet'), safe_serialization=True)
    return losses


def train_controlnet(model, pairs: dict, iters: int, batch: int, lr: float, seed: int) -> list[float]:
    """``ControlNetTrainer.train_step`` (what mmengine's Runner calls) for ``iters`` iterations, AdamW with a
    one-cycle learning rate (bench_control_learning.py's loop with a warm-up + cosine schedule)."""
    import bench_control_learning as bcl  # beside this file (benchmarks/ is on the path of the scripts using it)
    return bcl.train_controlnet(model, pairs, iters, batch, lr, seed,
                                schedule=lambda opt, n: warmup_cosine(opt, n, 0.05), log=True)


def build_control_model(work: str, train: dict, *, size: int, tag: str, vae_widths=(16, 32, 64), vae_iters=400,
                        vae_batch=16, vae_lr=2e-3, unet_widths=(32, 64), unet_iters=1000, unet_batch=16,
                        unet_lr=2e-3, cn_iters=500, cn_batch=8, cn_lr=1e-3, seed=0, clock=None) -> dict:
    """The three stages (VAE, base UNet, ControlNet), each reused when finished with the same settings.

    Returns ``dict(base=<SD1.5 folder>, controlnet=<ControlNet folder>, vae=..., records...)``.
    """
    from posedreamer_mm.registry import MODELS
    lap = clock.lap if clock is not None else (lambda name: None)
    vae_dir = osp.join(work, 'toy_vae')
    vae_info = train_toy_vae(vae_dir, train['image'], tuple(vae_widths), vae_iters, vae_batch, vae_lr, seed, tag)
    print(f'stand-in VAE: {"reused" if vae_info.get("reused") else "trained"}, reconstruction MSE '
          f'{vae_info["mse_first"]:.4f} -> {vae_info["mse_last"]:.4f}, scaling factor '
          f'{vae_info["scaling_factor"]:.3f}', flush=True)
    lap('stand-in VAE')
    base_settings = dict(vae=json.load(open(osp.join(vae_dir, 'settings.json'))), unet_widths=list(unet_widths),
                         unet_iters=unet_iters, unet_batch=unet_batch, unet_lr=unet_lr, seed=seed, size=size)
    base = osp.join(work, 'toy_base')
    if _cached(base, base_settings):
        base_info = dict(stage_info(base), reused=True)
    else:
        shutil.rmtree(base, ignore_errors=True)
        t0, c0 = time.time(), time.process_time()
        write_toy_base(base, vae_dir, size, tuple(unet_widths), seed)
        losses = pretrain_unet(base, train['image'], unet_iters, unet_batch, unet_lr, seed)
        base_info = dict(loss_first=float(np.mean(losses[:50])), loss_last=float(np.mean(losses[-50:])),
                         wall_s=round(time.time() - t0, 1), cpu_s=round(time.process_time() - c0, 1))
        _finish(base, base_settings, base_info)
    print(f'base UNet: {"reused" if base_info.get("reused") else "trained"}, {unet_iters} its, loss '
          f'{base_info["loss_first"]:.4f} -> {base_info["loss_last"]:.4f}', flush=True)
    lap('base UNet')
    cn_settings = dict(base=base_settings, cn_iters=cn_iters, cn_batch=cn_batch, cn_lr=cn_lr, seed=seed,
                       n=len(train['image']))
    cn_dir = osp.join(work, 'toy_controlnet')
    if _cached(cn_dir, cn_settings):
        cn_info = dict(stage_info(cn_dir), reused=True)
    else:
        shutil.rmtree(cn_dir, ignore_errors=True)
        t0, c0 = time.time(), time.process_time()
        model = MODELS.build(dict(type='ControlNetTrainer', pretrained=base, conditioning_channels=3,
                                  conditioning_embedding_out_channels=(16, 32, 64), noise_seed=seed))
        losses = train_controlnet(model, train, cn_iters, cn_batch, cn_lr, seed)
        model.save_pretrained(cn_dir)
        cn_info = dict(loss_first=float(np.mean(losses[:50])), loss_last=float(np.mean(losses[-50:])),
                       wall_s=round(time.time() - t0, 1), cpu_s=round(time.process_time() - c0, 1))
        _finish(cn_dir, cn_settings, cn_info)
    print(f'ControlNet: {"reused" if cn_info.get("reused") else "trained"}, {cn_iters} its, loss '
          f'{cn_info["loss_first"]:.4f} -> {cn_info["loss_last"]:.4f}', flush=True)
    lap('ControlNet')
    sub = osp.join(cn_dir, 'controlnet')
    return dict(base=base, controlnet=sub if osp.isfile(osp.join(sub, 'config.json')) else cn_dir, vae=vae_dir,
                vae_info=vae_info, base_info=base_info, cn_info=cn_info)


if __name__ == '__main__':  # pragma: no cover - a module of bench_dpo_method.py
    raise SystemExit('run benchmarks/bench_dpo_method.py')
