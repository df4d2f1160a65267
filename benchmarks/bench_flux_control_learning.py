"""Learning check for the FLUX recipes: do a Flux Control LoRA and an EasyControl condition LoRA USE the control?

The FLUX counterpart of ``benchmarks/bench_control_learning.py`` (whose pairs, held-out evaluation and print-out it
reuses): the same render-backend pairs (PNCC control -> shaded stand-in body, one fixed caption, so the control is
the only per-sample condition), a tiny FLUX.1-layout folder (random CLIP and T5, a 4x VAE scaled to unit-variance
latents, a 2 + 2 block transformer) whose transformer first learns to denoise the images without any control
(``--base-iters``, the whole transformer trained), then each recipe trains only its LoRA on the frozen base through
``model.train_step``:

- ``control-lora``: ``FluxControlLoRATrainer`` (widened ``x_embedder``, LoRA on it and every block);
- ``easycontrol``: ``EasyControlTrainer`` (condition tokens at half the image size, LoRA on them only).

On held-out pairs, at the SAME latents, noise and sigmas, the per-sample loss with the true control and with a
mismatched one (the next pair's), before and after: a model that uses the control opens a gap (mismatched - true)
clearly above zero and above its value at initialisation (exactly 0 for the control LoRA, whose control columns
start at zero).

Usage (results in docs/control_training_flux.md, "Learning check")::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_flux_control_learning.py --work-dir /tmp/bench_flux_control
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import os.path as osp
import time

import numpy as np
import torch

HERE = osp.dirname(osp.abspath(__file__))


def _sd_check():
    """``benchmarks/bench_control_learning.py`` (the SD1.5 check) as a module: its pairs and evaluation."""
    spec = importlib.util.spec_from_file_location('bench_control_learning', osp.join(HERE, 'bench_control_learning.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--work-dir', required=True)
    p.add_argument('--recipes', nargs='+', default=['control-lora', 'easycontrol'],
                   choices=['control-lora', 'easycontrol'])
    p.add_argument('--size', type=int, default=64, help='pair image size, pixels')
    p.add_argument('--train', type=int, default=256, help='training pairs')
    p.add_argument('--test', type=int, default=48, help='held-out pairs')
    p.add_argument('--base-iters', type=int, default=300, help='base transformer denoising iterations (no control)')
    p.add_argument('--iters', type=int, default=400, help='LoRA training iterations per recipe')
    p.add_argument('--rank', type=int, default=16)
    p.add_argument('--batch', type=int, default=8)
    p.add_argument('--base-lr', type=float, default=1e-3)
    p.add_argument('--lr', type=float, default=1e-3)
    p.add_argument('--repeats', type=int, default=4, help='noise/sigma draws per held-out pair')
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--seed', type=int, default=0)
    return p.parse_args()


def write_flux_base(folder: str, images: torch.Tensor, seed: int) -> str:
    """A tiny FLUX.1-layout folder whose VAE scaling gives ``images``' latents unit variance."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    from posedreamer_mm.testing.diffusion import HIDDEN, _clip_text, tiny_clip_tokenizer, tiny_t5_tokenizer
    torch.manual_seed(seed)
    vae = AutoencoderKL(block_out_channels=(16, 32, 32), in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=('DownEncoderBlock2D',) * 3, up_block_types=('UpDecoderBlock2D',) * 3,
                        layers_per_block=1, norm_num_groups=8, sample_size=images.shape[-1], use_quant_conv=False,
                        use_post_quant_conv=False, shift_factor=0.0)
    with torch.no_grad():
        # A random encoder's posterior has std ~1, far above its mean's spread: samples would be mostly noise. A
        # trained VAE's posterior is narrow; so is this one's (log-variance -20).
        vae.encoder.conv_out.weight[4:].zero_()
        vae.encoder.conv_out.bias[4:].fill_(-20.0)
        mean = vae.encode(images[:128].float() / 127.5 - 1).latent_dist.mean
    vae.register_to_config(scaling_factor=float(1.0 / mean.std()), shift_factor=float(mean.mean()))
    t5_tok = tiny_t5_tokenizer()
    t5 = T5EncoderModel(T5Config(vocab_size=len(t5_tok), d_model=HIDDEN, d_ff=37, d_kv=8, num_layers=2, num_heads=4,
                                 decoder_start_token_id=0))
    transformer = FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=2, num_single_layers=2,
                                         attention_head_dim=16, num_attention_heads=4, joint_attention_dim=HIDDEN,
                                         pooled_projection_dim=HIDDEN, axes_dims_rope=[4, 6, 6])
    FluxPipeline(transformer=transformer, vae=vae, text_encoder=_clip_text(), tokenizer=tiny_clip_tokenizer(),
                 text_encoder_2=t5, tokenizer_2=t5_tok,
                 scheduler=FlowMatchEulerDiscreteScheduler()).save_pretrained(folder, safe_serialization=True)
    return folder


def pretrain_transformer(folder: str, pairs: dict, iters: int, batch: int, lr: float, seed: int) -> list[float]:
    """Teaches the base transformer to denoise the pair images (flow loss, text only); saves it into ``folder``."""
    from posedreamer_mm.models.editors.flux_control import FluxTrainerBase, latent_ids, pack_latents, unpack_latents

    class Denoiser(FluxTrainerBase):
        def encode_controls(self, controls, train, generator=None):
            return None

        def predict(self, noisy, t, cond, control):
            h, w = noisy.shape[-2:]
            out = self.transformer(hidden_states=pack_latents(noisy), img_ids=latent_ids(h, w), return_dict=False,
                                   **self.transformer_kwargs(t, cond))[0]
            return unpack_latents(out, h, w)

    model = Denoiser(pretrained=folder, max_sequence_length=16, noise_seed=seed)
    transformer = model.transformer.requires_grad_(True).train()
    opt = torch.optim.AdamW(transformer.parameters(), lr=lr, weight_decay=1e-2)
    rng = np.random.default_rng(seed)
    losses = []
    for _ in range(iters):
        idx = rng.choice(len(pairs['image']), batch, replace=False)
        loss = model(dict(image=pairs['image'][idx].float() / 127.5 - 1, control=pairs['control'][idx].float() / 255),
                     dict(prompt=[pairs['prompt'][i] for i in idx]))['loss']
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    transformer.eval().save_pretrained(osp.join(folder, 'transformer'), safe_serialization=True)
    return losses


def train_lora(model, pairs: dict, iters: int, batch: int, lr: float, seed: int) -> list[float]:
    from mmengine.optim import OptimWrapper
    params = [p for p in model.parameters() if p.requires_grad]
    optim = OptimWrapper(torch.optim.AdamW(params, lr=lr, weight_decay=1e-4), clip_grad=dict(max_norm=1.0))
    rng = np.random.default_rng(seed + 1)
    losses = []
    model.train()
    for _ in range(iters):
        idx = rng.choice(len(pairs['image']), batch, replace=False)
        data = dict(inputs=dict(image=list(pairs['image'][idx]), control=list(pairs['control'][idx])),
                    data_samples=dict(prompt=[pairs['prompt'][i] for i in idx]))
        loss = model.train_step(data, optim)['loss']
        losses.append(float(loss.detach() if torch.is_tensor(loss) else loss))
    return losses


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    from posedreamer_mm.body.standin import write_standin_smplx
    from posedreamer_mm.registry import MODELS
    from posedreamer_mm.utils import register_all_modules
    register_all_modules()
    sd = _sd_check()
    os.makedirs(args.work_dir, exist_ok=True)
    t0 = time.time()
    model_dir = osp.join(args.work_dir, 'smplx_standin')
    if not osp.isfile(osp.join(model_dir, 'SMPLX_NEUTRAL.npz')):
        write_standin_smplx(model_dir)
    num = args.train + args.test + 32
    data_root = osp.join(args.work_dir, f'pairs_{args.size}_{num}')
    summary = sd.make_pairs(data_root, num, args.size, args.seed, model_dir)
    pairs = sd.load_pairs(data_root)
    if len(pairs['image']) < args.train + args.test:
        raise SystemExit(f'only {len(pairs["image"])} pairs written ({summary["dropped"]} dropped); raise --train')
    train = {k: v[:args.train] for k, v in pairs.items()}
    test = {k: v[args.train:args.train + args.test] for k, v in pairs.items()}
    print(f'pairs: {len(pairs["image"])} at {args.size} px in {time.time() - t0:.0f} s; train {args.train}, '
          f'held-out {args.test}', flush=True)

    base = write_flux_base(osp.join(args.work_dir, 'flux_base'), train['image'], args.seed)
    t1 = time.time()
    base_losses = pretrain_transformer(base, train, args.base_iters, args.batch, args.base_lr, args.seed)
    if base_losses:
        print(f'base transformer: {args.base_iters} iterations in {time.time() - t1:.0f} s, loss '
              f'{np.mean(base_losses[:20]):.4f} -> {np.mean(base_losses[-20:]):.4f}', flush=True)

    configs = {'control-lora': dict(type='FluxControlLoRATrainer', rank=args.rank),
               'easycontrol': dict(type='EasyControlTrainer', rank=args.rank, cond_size=args.size // 2)}
    results = {}
    for recipe in args.recipes:
        model = MODELS.build(dict(configs[recipe], pretrained=base, max_sequence_length=16, noise_seed=args.seed))
        before = sd.evaluate(model, test, args.repeats, args.seed)
        t2 = time.time()
        losses = train_lora(model, train, args.iters, args.batch, args.lr, args.seed)
        t_train = time.time() - t2
        after = sd.evaluate(model, test, args.repeats, args.seed)
        ok = after['gap'] > 3 * after['gap_se'] and after['gap'] > before['gap'] + 3 * after['gap_se']
        print(f'{recipe}: {args.iters} iterations (rank {args.rank}, batch {args.batch}, lr {args.lr}) in '
              f'{t_train:.0f} s ({1000 * t_train / max(args.iters, 1):.0f} ms/it), training loss '
              f'{np.mean(losses[:20]):.4f} -> {np.mean(losses[-20:]):.4f}')
        print('  before:', sd.fmt(before))
        print('  after: ', sd.fmt(after))
        print(f'  control used: {"yes" if ok else "NO"} (gap after > 3 s.e. and > gap before + 3 s.e.)', flush=True)
        results[recipe] = dict(before=before, after=after, ok=ok, train_s=round(t_train, 1))
    print(f'total {time.time() - t0:.0f} s on {args.threads} thread(s)')
    print(json.dumps(dict(args=vars(args), results=results)))


if __name__ == '__main__':
    main()
