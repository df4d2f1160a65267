"""Generating with an EasyControl condition LoRA: the condition tokens and a FluxPipeline with their cache.

:class:`FluxEasyControlPipeline` composes diffusers' ``FluxPipeline`` (it copies none of it): it encodes the
prompts and the condition, runs the condition pass once (:func:`~.processor.run_condition_pass`), then calls the
``FluxPipeline`` with the cache in ``joint_attention_kwargs``, so every denoising step attends to the recorded
condition keys and values.

The condition is the control image resized to ``cond_size`` x ``cond_size`` (whatever the image size, as the
reference does), normalised to [-1, 1], VAE-encoded (the posterior's mode: the same tokens in training and
generation) and packed; its position ids are stretched onto the image's token grid
(``(0, i * H_img / H_cond, j * W_img / W_cond)``), so a condition token sits where its pixels fall in the image.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..flux_control.flux_base import latent_ids, pack_latents
from .processor import run_condition_pass


def condition_pixels(control: torch.Tensor, cond_size: int) -> torch.Tensor:
    """``control`` (B, 3, H, W) in [0, 1] -> (B, 3, cond_size, cond_size) in [-1, 1] (bilinear, antialiased)."""
    if control.ndim != 4 or control.shape[1] != 3:
        raise ValueError(f'EasyControl: one RGB control image per sample expected, (B, 3, H, W), got '
                         f'{tuple(control.shape)}')
    out = F.interpolate(control.float(), size=(int(cond_size), int(cond_size)), mode='bilinear', antialias=True,
                        align_corners=False)
    return out * 2 - 1


def condition_ids(cond_h: int, cond_w: int, image_h: int, image_w: int, device=None,
                  dtype=torch.float32) -> torch.Tensor:
    """Position ids (cond_h/2 * cond_w/2, 3) of the condition tokens of a (cond_h, cond_w) latent, on the token
    grid of an (image_h, image_w) latent: token (i, j) at ``(0, i * image_h / cond_h, j * image_w / cond_w)``."""
    ids = latent_ids(cond_h, cond_w, device, torch.float32)
    ids[:, 1] *= image_h / cond_h
    ids[:, 2] *= image_w / cond_w
    return ids.to(dtype)


@torch.no_grad()
def encode_condition(vae, control: torch.Tensor, cond_size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """(packed condition tokens (B, N, 4C), (cond latent h, w)) of ``control`` (B, 3, H, W) in [0, 1]."""
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    if int(cond_size) % (2 * factor):
        raise ValueError(f'EasyControl: cond_size {cond_size} must be a multiple of {2 * factor} (FLUX packs 2 x 2 '
                         'latent patches)')
    pixels = condition_pixels(control, cond_size).to(vae.device, vae.dtype)
    z = vae.encode(pixels).latent_dist.mode()
    z = (z - vae.config.shift_factor) * vae.config.scaling_factor
    return pack_latents(z), tuple(z.shape[-2:])


class FluxEasyControlPipeline:
    """A ``FluxPipeline`` plus an EasyControl condition: ``pipe(prompt, control_image, height, width, ...)``.

    Args:
        pipe: a ``FluxPipeline`` whose transformer carries the condition LoRA (``add_condition_lora`` /
            ``load_condition_lora``).
        cond_size: the condition's side in pixels (512 in the reference).
    """

    def __init__(self, pipe, cond_size: int = 512) -> None:
        self.pipe = pipe
        self.cond_size = int(cond_size)

    def __getattr__(self, name: str) -> Any:  # components, device, vae_scale_factor, set_progress_bar_config ...
        if name == 'pipe':
            raise AttributeError(name)
        return getattr(self.pipe, name)

    def to(self, *args, **kwargs) -> 'FluxEasyControlPipeline':
        self.pipe.to(*args, **kwargs)
        return self

    def __call__(self, prompt: str | list[str], control_image: torch.Tensor, height: int, width: int,
                 num_inference_steps: int = 28, guidance_scale: float = 3.5, max_sequence_length: int = 512,
                 **kwargs) -> Any:
        """Generates one image per prompt with ``control_image`` (B, 3, H, W) in [0, 1] as the condition; other
        keyword arguments (``generator``, ``output_type`` ...) go to ``FluxPipeline.__call__``."""
        pipe = self.pipe
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if control_image.shape[0] != len(prompts):
            raise ValueError(f'FluxEasyControlPipeline: {control_image.shape[0]} control images for {len(prompts)} '
                             'prompts')
        device = pipe._execution_device
        embeds, pooled, _ = pipe.encode_prompt(prompts, prompt_2=None, device=device,
                                               max_sequence_length=max_sequence_length)
        tokens, (ch, cw) = encode_condition(pipe.vae, control_image.to(device), self.cond_size)
        factor = pipe.vae_scale_factor
        ids = condition_ids(ch, cw, 2 * (int(height) // (2 * factor)), 2 * (int(width) // (2 * factor)), device)
        transformer = pipe.transformer
        guidance = (torch.full((len(prompts),), float(guidance_scale), device=device)
                    if transformer.config.guidance_embeds else None)
        cache = run_condition_pass(transformer, tokens, ids, pooled, guidance)
        extra = dict(kwargs.pop('joint_attention_kwargs', None) or {}, easycontrol=cache)
        return pipe(prompt_embeds=embeds, pooled_prompt_embeds=pooled, height=height, width=width,
                    num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                    max_sequence_length=max_sequence_length, joint_attention_kwargs=extra, **kwargs)


__all__ = ['FluxEasyControlPipeline', 'condition_pixels', 'condition_ids', 'encode_condition']
