"""EasyControlTrainer: trains an EasyControl condition LoRA on FLUX.1 (the reference's PNCC control model).

Only the condition LoRA trains (the reference: rank 128, alpha = rank, lr 1e-4, condition 512 px, image 1024 px,
bf16, FLUX.1-dev frozen). Each prediction is the two passes of :mod:`.processor`: the condition pass (condition
tokens alone at timestep 0, with the LoRA) and the denoising pass (text + image tokens at the sampled sigma,
attending to the condition's recorded keys and values). The loss is the flow-matching loss of the base class with
logit-normal sigmas (the reference sampled them uniformly; ``logit_std`` large approaches that).

:meth:`save_pretrained` writes ``lora.safetensors`` in the reference's key layout with ``rank``/``alpha``/
``cond_size`` metadata: what ``EasyControlFluxBackend`` loads (``configs/generation/backends/
flux_easycontrol_pncc.py``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from posedreamer_mm.registry import MODELS

from ..flux_control.flux_base import FluxTrainerBase, latent_ids, pack_latents, unpack_latents
from .pipeline import FluxEasyControlPipeline, condition_ids, encode_condition
from .processor import add_condition_lora, run_condition_pass, save_condition_lora

#: File name :meth:`EasyControlTrainer.save_pretrained` writes (the reference's checkpoints use it too).
LORA_FILE = 'lora.safetensors'


@MODELS.register_module()
class EasyControlTrainer(FluxTrainerBase):
    """Trains an EasyControl condition LoRA (LoRA on the condition tokens only, condition at a fixed size).

    Args:
        pretrained: a FLUX.1 folder (``FluxPipeline`` layout).
        rank: condition-LoRA rank (128 in the reference).
        alpha: its alpha (scale ``alpha / rank``); defaults to ``rank`` as the reference trains.
        cond_size: the condition's side in pixels (512 in the reference; a multiple of 16 for an 8x VAE).
        guidance_scale: the distilled guidance fed during training (1.0 in the reference's training script).
        **kwargs: :class:`~posedreamer_mm.models.editors.flux_control.FluxTrainerBase`.
    """

    trainable_module_names = ('condition_lora',)

    def __init__(self, pretrained: str | os.PathLike, rank: int = 128, alpha: float | None = None,
                 cond_size: int = 512, guidance_scale: float = 1.0, **kwargs) -> None:
        super().__init__(pretrained, guidance_scale=guidance_scale, **kwargs)
        self.cond_size = int(cond_size)
        if self.cond_size % (2 * self.vae_scale_factor):
            raise ValueError(f'{type(self).__name__}: cond_size {cond_size} must be a multiple of '
                             f'{2 * self.vae_scale_factor} (FLUX packs 2 x 2 latent patches)')
        # The processors live in the frozen transformer; registered here they are the checkpointed, trained state.
        self.condition_lora = add_condition_lora(self.transformer, rank, alpha)

    def encode_controls(self, controls: torch.Tensor, train: bool, generator: torch.Generator | None = None):
        """``dict(tokens (B, N, F), hw (cond latent h, w))`` of ``controls`` (B, 3, H, W) in [0, 1] resized to
        ``cond_size``; with ``train`` a sample's control is zeroed with probability ``control_dropout``."""
        if controls.shape[1] != 3:
            raise ValueError(f'{type(self).__name__}: one RGB control image per sample expected (3 channels), got '
                             f'{controls.shape[1]}: configure the pair dataset with one control type')
        if train:
            controls = self.drop_controls(controls, generator)
        tokens, hw = encode_condition(self.vae, controls, self.cond_size)
        return dict(tokens=tokens, hw=hw)

    def predict(self, noisy: torch.Tensor, t: torch.Tensor, cond: dict, control: dict) -> torch.Tensor:
        """The flow velocity (B, C, h, w) at sigmas ``t``: the condition pass, then the denoising pass."""
        h, w = noisy.shape[-2:]
        dtype = self.transformer.dtype
        kwargs = self.transformer_kwargs(t, cond)
        ids = condition_ids(*control['hw'], h, w, noisy.device, dtype)
        cache = run_condition_pass(self.transformer, control['tokens'], ids, kwargs['pooled_projections'],
                                   kwargs['guidance'])
        out = self.transformer(hidden_states=pack_latents(noisy.to(dtype)), img_ids=latent_ids(h, w, noisy.device,
                                                                                                 dtype),
                               joint_attention_kwargs=dict(easycontrol=cache), return_dict=False, **kwargs)[0]
        return unpack_latents(out, h, w).float()

    def build_pipeline(self) -> FluxEasyControlPipeline:
        """A :class:`~.pipeline.FluxEasyControlPipeline` over the live transformer and its condition LoRA."""
        from diffusers import FluxPipeline
        pipe = FluxPipeline(scheduler=self.scheduler, vae=self.pipeline_vae(), text_encoder=self.text_encoder,
                            tokenizer=self.tokenizer, text_encoder_2=self.text_encoder_2, tokenizer_2=self.tokenizer_2,
                            transformer=self.transformer)
        pipe.set_progress_bar_config(disable=True)
        return FluxEasyControlPipeline(pipe, self.cond_size)

    def save_pretrained(self, out_dir: str | os.PathLike) -> None:
        """Writes ``out_dir/lora.safetensors`` (float32, reference key layout, rank/alpha/cond_size metadata)."""
        save_condition_lora(self.transformer, Path(os.fspath(out_dir)) / LORA_FILE, self.cond_size)

    def training_objective(self) -> dict[str, Any]:
        """FLUX's settings and the condition's size (the tokens the condition LoRA learns from)."""
        return dict(super().training_objective(), cond_size=self.cond_size)

    def record(self) -> dict[str, Any]:
        lora = next(iter(self.condition_lora.values())).q_loras[0]
        return dict(pretrained=os.fspath(self.pretrained), rank=lora.rank, alpha=lora.alpha,
                    cond_size=self.cond_size, guidance_scale=self.guidance_scale)


__all__ = ['EasyControlTrainer', 'LORA_FILE']
