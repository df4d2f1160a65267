"""Learning check: does a ControlNet trained on this project's pairs USE its control?

1. Pairs: the generator renders stand-in bodies (procedural poses, random betas, yaw and distance; the open SMPL-X
   stand-in) at ``--size`` pixels, with one fixed caption for all (the control is the only per-sample condition),
   written in the sharded dataset format and read back through ``ControlPairDataset`` + ``PackControlPair``
   (contract 1). The control is the PNCC; the image (``--target``) is ``shaded`` (the Lambert-shaded grey body the
   ``ShadedRenderer`` draws at the same camera: the image follows from the body the control shows) or ``render``
   (the render backend's image: a randomly clothed, lit body over a random background, so only the silhouette and
   shading follow from the control and far less of the image is predictable from it).
2. A tiny SD1.5-layout folder (random CLIP text encoder, a 4x-downsampling VAE whose ``scaling_factor`` gives the
   training latents unit variance and whose posterior is near-deterministic (log-variance -20, as a trained VAE's is
   narrow; a random one's std ~1 would bury the latents in noise no control explains), a UNet of widths (32, 64))
   is written; ``--unet-iters`` first teach the UNet to denoise these images without any control (a ControlNet is
   trained on a base that knows images), then it is frozen and ``ControlNetTrainer`` (``models/editors/controlnet/``,
   initialised from that UNet) trains the ControlNet for ``--iters`` iterations through ``model.train_step`` (what
   mmengine's Runner calls).
3. On held-out pairs, at the SAME latents, noise and timesteps (``--repeats`` draws per pair), the per-sample
   denoising loss (``per_sample_loss``) with the true control and with a mismatched one (the next held-out pair's),
   before and after the ControlNet training. A model that uses the control has a gap (mismatched - true) clearly
   above zero and above its value at initialisation (0: ControlNet outputs start at zero).

Usage (results in docs/control_pairs.md, "Learning check")::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_control_learning.py --work-dir /tmp/bench_control
"""
from __future__ import annotations

import argparse
import json
import math
import os
import os.path as osp
import time

import numpy as np
import torch

PROMPT = 'a photo of a person'


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--work-dir', required=True)
    p.add_argument('--size', type=int, default=64, help='pair image size, pixels')
    p.add_argument('--target', choices=['shaded', 'render'], default='shaded', help='the image of a pair (above)')
    p.add_argument('--train', type=int, default=256, help='training pairs')
    p.add_argument('--test', type=int, default=48, help='held-out pairs')
    p.add_argument('--unet-iters', type=int, default=300, help='base UNet denoising iterations (no control)')
    p.add_argument('--iters', type=int, default=400, help='ControlNet training iterations')
    p.add_argument('--batch', type=int, default=8)
    p.add_argument('--lr', type=float, default=1e-3)
    p.add_argument('--repeats', type=int, default=4, help='noise/timestep draws per held-out pair')
    p.add_argument('--threads', type=int, default=1,
                   help='torch threads (more than the free cores makes OpenMP spin: 10x slower on a busy machine)')
    p.add_argument('--seed', type=int, default=0)
    return p.parse_args()


# --- 1. pairs ---------------------------------------------------------------------------------------------------
def make_pairs(out: str, num: int, size: int, seed: int, model_dir: str) -> dict:
    """Render-backend samples of ``num`` stand-in bodies with PNCC and shaded controls; resumes a finished run."""
    from posedreamer_mm.registry import GENERATORS
    gen = GENERATORS.build(dict(
        type='DatasetGenerator', body_model=dict(type='SMPLXBodyModel', model_path=model_dir),
        source=dict(type='AugmentedSource', source=dict(type='ProceduralPoseSource', num_samples=num, seed=seed),
                    seed=seed + 1, betas_range=2.0, yaw_range=(-180.0, 180.0), distance_range=(2.5, 6.0)),
        pipeline=[dict(type='BodyForward'), dict(type='BodyCropCamera', size=size, margin=0.1),
                  dict(type='RenderControls', controls=[dict(type='PNCCRenderer'), dict(type='ShadedRenderer')]),
                  dict(type='COCO17Visibility', min_visible=8),
                  dict(type='SamplePrompt', prompts=dict(type='PromptSampler', preset=None, templates=[PROMPT]))],
        backend=dict(type='RenderBackend', batch_size=16), writer=dict(shard_size=128, image_format='png'),
        num_samples=num, seed=seed, num_workers=1, progress=False))
    return gen.run(out)


def load_pairs(root: str, target: str = 'shaded') -> dict:
    """Every pair of a dataset through ControlPairDataset + PackControlPair, stacked: uint8 tensors; with
    ``target='shaded'`` the image is the shaded control (the last 3 control channels)."""
    from mmengine.dataset import pseudo_collate

    from posedreamer_mm.registry import DATASETS
    ds = DATASETS.build(dict(type='ControlPairDataset', data_root=root, control_types=['pncc', 'shaded'],
                             pipeline=[dict(type='LoadControlPair'), dict(type='PackControlPair')]))
    batch = pseudo_collate([ds[i] for i in range(len(ds))])
    control = torch.stack(batch['inputs']['control'])
    image = control[:, 3:] if target == 'shaded' else torch.stack(batch['inputs']['image'])
    return dict(image=image.contiguous(), control=control[:, :3].contiguous(),
                prompt=list(batch['data_samples']['prompt']))


# --- 2. the base ------------------------------------------------------------------------------------------------
def write_base(folder: str, images: torch.Tensor, seed: int) -> str:
    """A tiny SD1.5-layout folder whose VAE scaling gives ``images``' latents unit variance."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from posedreamer_mm.testing.diffusion import tiny_clip_tokenizer
    torch.manual_seed(seed)
    vae = AutoencoderKL(block_out_channels=(16, 32, 32), in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=('DownEncoderBlock2D',) * 3, up_block_types=('UpDecoderBlock2D',) * 3,
                        layers_per_block=1, norm_num_groups=8, sample_size=images.shape[-1])
    with torch.no_grad():
        # A random encoder's posterior has std ~1 (log-variance ~0), far above its mean's spread: the sampled latents
        # would be mostly noise no control can explain. A trained VAE's posterior is narrow; so is this stand-in's:
        # the quant_conv (the last layer before the posterior) outputs log-variance -20 (std 4.5e-5), so the samples
        # are the posterior mean to within 1e-4. A property of the stand-in VAE; the trainer still samples.
        vae.quant_conv.weight[4:].zero_()
        vae.quant_conv.bias[4:].fill_(-20.0)
        mean = vae.encode(images[:128].float() / 127.5 - 1).latent_dist.mean
    vae.register_to_config(scaling_factor=float(1.0 / mean.std()))
    text = CLIPTextModel(CLIPTextConfig(bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=32,
                                        intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                                        vocab_size=1000, projection_dim=32))
    unet = UNet2DConditionModel(sample_size=images.shape[-1] // 4, in_channels=4, out_channels=4,
                                block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8,
                                down_block_types=('DownBlock2D', 'CrossAttnDownBlock2D'),
                                up_block_types=('CrossAttnUpBlock2D', 'UpBlock2D'), cross_attention_dim=32,
                                attention_head_dim=8)
    sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule='scaled_linear', clip_sample=False,
                          set_alpha_to_one=False, steps_offset=1)
    StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=text, tokenizer=tiny_clip_tokenizer(), scheduler=sched,
                            safety_checker=None, feature_extractor=None,
                            requires_safety_checker=False).save_pretrained(folder, safe_serialization=True)
    return folder


def pretrain_unet(folder: str, pairs: dict, iters: int, batch: int, lr: float, seed: int) -> list[float]:
    """Teaches the base UNet to denoise the pair images (text-conditioned, no control); saves it into ``folder``."""
    from posedreamer_mm.registry import MODELS
    model = MODELS.build(dict(type='ControlNetTrainer', pretrained=folder, conditioning_channels=3,
                              conditioning_embedding_out_channels=(16, 32, 64), noise_seed=seed))
    unet = model.unet
    unet.requires_grad_(True).train()
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=1e-2)
    rng = np.random.default_rng(seed)
    losses = []
    cond = model.encode_prompts([PROMPT] * batch, train=False)
    for it in range(iters):
        idx = rng.choice(len(pairs['image']), batch, replace=False)
        gen = torch.Generator().manual_seed(seed * 100003 + it)
        images = pairs['image'][idx].float() / 127.5 - 1
        latents = model.encode_images(images, generator=gen)
        noise = model.sample_noise(latents, gen)
        t = model.sample_timesteps(batch, latents.device, gen)
        pred = unet(model.noisy_latents(latents, noise, t), t, encoder_hidden_states=cond['encoder_hidden_states'],
                    return_dict=False)[0]
        loss = torch.nn.functional.mse_loss(pred, model.target(latents, noise, t))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    unet.eval().save_pretrained(osp.join(folder, 'unet'), safe_serialization=True)
    return losses


# --- 3. the check -------------------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(model, pairs: dict, repeats: int, seed: int, batch: int = 32) -> dict:
    """Per-sample loss with the true and with a mismatched control (the next pair's) at identical latents, noise
    and timesteps; mean over pairs and ``repeats`` draws, and the paired standard error of the gap."""
    model.eval()
    n = len(pairs['image'])
    true_l, mis_l = [], []
    for r in range(repeats):
        for s in range(0, n, batch):
            idx = torch.arange(s, min(n, s + batch))
            gen = torch.Generator().manual_seed(10_000 * seed + 100 * r + s)
            data = model.data_preprocessor(dict(inputs=dict(image=list(pairs['image'][idx]),
                                                            control=list(pairs['control'][idx])),
                                                data_samples=dict(prompt=[pairs['prompt'][i] for i in idx])))
            latents = model.encode_images(data['inputs']['image'], generator=gen)
            noise = model.sample_noise(latents, gen)
            t = model.sample_timesteps(len(idx), latents.device, gen)
            cond = model.encode_prompts(data['data_samples']['prompt'], train=False)
            control = model.encode_controls(data['inputs']['control'], train=False)
            other = model.encode_controls(pairs['control'][(idx + 1) % n].float() / 255, train=False)
            true_l.append(model.per_sample_loss(latents, noise, t, cond, control))
            mis_l.append(model.per_sample_loss(latents, noise, t, cond, other))
    true_l, mis_l = torch.cat(true_l).double(), torch.cat(mis_l).double()
    gap = mis_l - true_l
    model.train()
    return dict(loss_true=float(true_l.mean()), loss_mismatched=float(mis_l.mean()), gap=float(gap.mean()),
                gap_se=float(gap.std() / math.sqrt(len(gap))), gap_positive=float((gap > 0).double().mean()),
                n=len(gap))


def train_controlnet(model, pairs: dict, iters: int, batch: int, lr: float, seed: int, schedule=None,
                     log: bool = False) -> list[float]:
    """``model.train_step`` (what mmengine's Runner calls) for ``iters`` iterations of AdamW; ``schedule(opt, iters)``
    builds a learning-rate scheduler stepped after each iteration (``None``: constant); ``log`` prints the loss
    five times."""
    from mmengine.optim import OptimWrapper
    opt = torch.optim.AdamW(model.controlnet.parameters(), lr=lr, weight_decay=1e-2)
    sched = schedule(opt, iters) if schedule is not None else None
    optim = OptimWrapper(opt, clip_grad=dict(max_norm=1.0))
    rng = np.random.default_rng(seed + 1)
    losses = []
    model.train()
    for it in range(iters):
        idx = rng.choice(len(pairs['image']), batch, replace=False)
        data = dict(inputs=dict(image=list(pairs['image'][idx]), control=list(pairs['control'][idx])),
                    data_samples=dict(prompt=[pairs['prompt'][i] for i in idx]))
        losses.append(model.train_step(data, optim)['loss'].item())
        if sched is not None:
            sched.step()
        if log and (it + 1) % max(1, iters // 5) == 0:
            print(f'    ControlNet it {it + 1}: loss {np.mean(losses[-50:]):.4f}', flush=True)
    return losses


def fmt(row: dict) -> str:
    return (f"loss true {row['loss_true']:.4f}  mismatched {row['loss_mismatched']:.4f}  gap {row['gap']:+.4f} "
            f"(+- {row['gap_se']:.4f} s.e., positive in {100 * row['gap_positive']:.0f} % of {row['n']})")


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    from posedreamer_mm.body.standin import write_standin_smplx
    from posedreamer_mm.registry import MODELS
    from posedreamer_mm.utils import register_all_modules
    register_all_modules()
    os.makedirs(args.work_dir, exist_ok=True)
    t0 = time.time()
    model_dir = osp.join(args.work_dir, 'smplx_standin')
    if not osp.isfile(osp.join(model_dir, 'SMPLX_NEUTRAL.npz')):
        write_standin_smplx(model_dir)
    num = args.train + args.test + 32   # a few are dropped (fewer than 8 keypoints in view)
    data_root = osp.join(args.work_dir, f'pairs_{args.size}_{num}')
    summary = make_pairs(data_root, num, args.size, args.seed, model_dir)
    pairs = load_pairs(data_root, args.target)
    if len(pairs['image']) < args.train + args.test:
        raise SystemExit(f'only {len(pairs["image"])} pairs written ({summary["dropped"]} dropped); raise --train')
    train = {k: v[:args.train] for k, v in pairs.items()}
    test = {k: v[args.train:args.train + args.test] for k, v in pairs.items()}
    t_pairs = time.time() - t0
    print(f'pairs ({args.target}): {len(pairs["image"])} written at {args.size} px ({summary["dropped"]} dropped) in '
          f'{t_pairs:.0f} s; train {args.train}, held-out {args.test}', flush=True)

    base = write_base(osp.join(args.work_dir, f'base_{args.target}'), train['image'], args.seed)
    t1 = time.time()
    unet_losses = pretrain_unet(base, train, args.unet_iters, args.batch, args.lr, args.seed)
    if unet_losses:
        print(f'base UNet: {args.unet_iters} denoising iterations in {time.time() - t1:.0f} s, loss '
              f'{np.mean(unet_losses[:20]):.4f} -> {np.mean(unet_losses[-20:]):.4f}', flush=True)

    model = MODELS.build(dict(type='ControlNetTrainer', pretrained=base, conditioning_channels=3,
                              conditioning_embedding_out_channels=(16, 32, 64), noise_seed=args.seed))
    before = evaluate(model, test, args.repeats, args.seed)
    print('before:', fmt(before), flush=True)
    t2 = time.time()
    losses = train_controlnet(model, train, args.iters, args.batch, args.lr, args.seed)
    t_train = time.time() - t2
    after = evaluate(model, test, args.repeats, args.seed)
    on_train = evaluate(model, {k: v[:args.test] for k, v in train.items()}, args.repeats, args.seed)
    print(f'ControlNet: {args.iters} iterations (batch {args.batch}, lr {args.lr}) in {t_train:.0f} s '
          f'({1000 * t_train / max(args.iters, 1):.0f} ms/it), training loss {np.mean(losses[:20]):.4f} -> '
          f'{np.mean(losses[-20:]):.4f}')
    print('after: ', fmt(after))
    print('after, on training pairs:', fmt(on_train))
    ok = after['gap'] > 3 * after['gap_se'] and after['gap'] > before['gap'] + 3 * after['gap_se']
    print(f'control used: {"yes" if ok else "NO"} (gap after > 3 s.e. and > gap before + 3 s.e.); total '
          f'{time.time() - t0:.0f} s on {args.threads} thread(s)')
    print(json.dumps(dict(args=vars(args), before=before, after=after, after_train=on_train, ok=ok,
                          pairs_s=round(t_pairs, 1), train_s=round(t_train, 1))))


if __name__ == '__main__':
    main()
