"""FLUX control LoRA training in diffusers' Flux Control format (what ``FluxControlBackend`` loads).

The control enters FLUX the way FLUX.1-Depth/Canny-dev take theirs: the control image is VAE-encoded, packed like
the image latents and concatenated to them feature-wise, so the transformer's input layer ``x_embedder`` reads
``2 x`` the features it did. As in diffusers' ``examples/flux-control/train_control_lora_flux.py``:

- ``x_embedder`` is widened, the new input columns **zero**: the widened model ignores the control, and step 0
  predicts exactly what the base model predicts;
- a peft LoRA (``r``, ``lora_alpha``) goes on ``x_embedder`` and on the attention and feed-forward projections of
  every block; only the LoRA is trained. The widened ``x_embedder`` itself stays frozen: the LoRA on it is how
  the control columns learn (the diffusers example does the same; its full-fine-tune sibling script trains all
  weights instead, which no LoRA file can carry);
- :meth:`save_pretrained` writes ``FluxControlPipeline.save_lora_weights`` with the adapter's metadata (rank and
  alpha: without it a LoRA with ``lora_alpha != r`` reloads at the wrong scale). ``load_lora_weights`` on plain
  FLUX.1-dev widens ``x_embedder`` with zero columns again and loads the LoRA, i.e. rebuilds this model.

The control is normalised to [-1, 1] before the VAE, as the diffusers example trains it and as
``FluxControlPipeline`` feeds a PIL control image.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch

from posedreamer_mm.registry import MODELS

from .flux_base import FluxTrainerBase, latent_ids, pack_latents, unpack_latents

#: The LoRA targets of diffusers' Flux Control LoRA example (``x_embedder`` plus every block's projections).
FLUX_CONTROL_LORA_TARGETS = ('x_embedder', 'attn.to_k', 'attn.to_q', 'attn.to_v', 'attn.to_out.0', 'attn.add_k_proj',
                             'attn.add_q_proj', 'attn.add_v_proj', 'attn.to_add_out', 'ff.net.0.proj', 'ff.net.2',
                             'ff_context.net.0.proj', 'ff_context.net.2')


def widen_x_embedder(transformer) -> bool:
    """Doubles the input features of ``transformer.x_embedder`` with zero columns (image | control latents) and
    records ``in_channels = 2 x``, ``out_channels = x`` in its config; returns ``False`` when it already reads
    image and control (a FLUX.1-Depth/Canny-dev transformer)."""
    old = transformer.x_embedder
    predicts = transformer.proj_out.out_features
    if old.in_features == 2 * predicts:
        return False
    if old.in_features != predicts:
        raise ValueError(f'x_embedder reads {old.in_features} features and proj_out predicts {predicts}: neither a '
                         'FLUX.1 base nor a FLUX control transformer')
    new = torch.nn.Linear(2 * old.in_features, old.out_features, bias=old.bias is not None,
                          device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, :old.in_features].copy_(old.weight)
        if old.bias is not None:
            new.bias.copy_(old.bias)
    new.requires_grad_(False)
    transformer.x_embedder = new
    transformer.register_to_config(in_channels=2 * old.in_features, out_channels=old.in_features)
    return True


@MODELS.register_module()
class FluxControlLoRATrainer(FluxTrainerBase):
    """Trains a FLUX control LoRA (Flux Control format) on (image, control, caption) pairs.

    Args:
        pretrained: FLUX.1-dev (widened here) or a FLUX control model folder (used as it is).
        rank: LoRA rank ``r``.
        alpha: LoRA ``lora_alpha`` (scale ``alpha / r``); defaults to ``rank`` (the diffusers example).
        target_modules: peft target module names; must include ``'x_embedder'`` (the control columns learn only
            through it).
        adapter_name: the peft adapter's name.
        **kwargs: :class:`~.flux_base.FluxTrainerBase` (``weight_dtype``, ``guidance_scale``,
            ``gradient_checkpointing``, dropouts, seeds, logit-normal parameters).
    """

    trainable_module_names = ('lora_layers',)

    def __init__(self, pretrained: str | os.PathLike, rank: int = 64, alpha: float | None = None,
                 target_modules: Sequence[str] = FLUX_CONTROL_LORA_TARGETS, adapter_name: str = 'control',
                 **kwargs) -> None:
        super().__init__(pretrained, **kwargs)
        from peft import LoraConfig
        if 'x_embedder' not in target_modules:
            raise ValueError(f'{type(self).__name__}: target_modules {list(target_modules)} must include '
                             "'x_embedder': the control latents reach the model only through it")
        widen_x_embedder(self.transformer)
        self.adapter_name = str(adapter_name)
        self.lora_config = LoraConfig(r=int(rank), lora_alpha=float(rank if alpha is None else alpha),
                                      init_lora_weights=True, target_modules=list(target_modules))
        self.transformer.add_adapter(self.lora_config, adapter_name=self.adapter_name)
        # The LoRA is the checkpointed, optimised state: registered here (the transformer itself is frozen and
        # outside the module tree), trained in float32 whatever the transformer's dtype.
        self.lora_layers = torch.nn.ModuleDict()
        for name, module in self.transformer.named_modules():
            if name.endswith(('lora_A', 'lora_B')) and isinstance(module, torch.nn.ModuleDict):
                layer = module[self.adapter_name].float().requires_grad_(True)
                self.lora_layers[name.replace('.', '/')] = layer
        if not len(self.lora_layers):
            raise ValueError(f'{type(self).__name__}: target_modules {list(target_modules)} matched no layer')

    @torch.no_grad()
    def encode_controls(self, controls: torch.Tensor, train: bool, generator: torch.Generator | None = None):
        """Control latents (B, C, h, w) of ``controls`` (B, 3, H, W) in [0, 1], normalised to [-1, 1] for the VAE;
        with ``train`` a sample's control is zeroed (black) with probability ``control_dropout``."""
        if controls.shape[1] != 3:
            raise ValueError(f'{type(self).__name__}: one RGB control image per sample expected (3 channels), got '
                             f'{controls.shape[1]}: configure the pair dataset with one control type')
        if train:
            controls = self.drop_controls(controls, generator)
        return self.vae_encode(controls * 2 - 1, generator).float()

    def predict(self, noisy: torch.Tensor, t: torch.Tensor, cond: dict, control: torch.Tensor) -> torch.Tensor:
        """The flow velocity (B, C, h, w): the transformer on packed ``[noisy | control]`` latents at sigmas ``t``."""
        if control.shape != noisy.shape:
            raise ValueError(f'{type(self).__name__}: control latents {tuple(control.shape)} differ from the image '
                             f'latents {tuple(noisy.shape)}: control and image must have the same size')
        h, w = noisy.shape[-2:]
        dtype = self.transformer.dtype
        tokens = pack_latents(torch.cat([noisy, control], dim=1).to(dtype))
        out = self.transformer(hidden_states=tokens, img_ids=latent_ids(h, w, noisy.device, dtype),
                               return_dict=False, **self.transformer_kwargs(t, cond))[0]
        return unpack_latents(out, h, w).float()

    def build_pipeline(self):
        """A ``FluxControlPipeline`` over the live transformer (widened, with the LoRA being trained)."""
        from diffusers import FluxControlPipeline
        pipe = FluxControlPipeline(scheduler=self.scheduler, vae=self.pipeline_vae(), text_encoder=self.text_encoder,
                                   tokenizer=self.tokenizer, text_encoder_2=self.text_encoder_2,
                                   tokenizer_2=self.tokenizer_2, transformer=self.transformer)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def lora_state_dict(self) -> dict[str, torch.Tensor]:
        """The adapter's weights in peft's naming (``<module>.lora_A.weight``), as ``save_lora_weights`` takes."""
        from peft.utils import get_peft_model_state_dict
        return get_peft_model_state_dict(self.transformer, adapter_name=self.adapter_name)

    def save_pretrained(self, out_dir: str | os.PathLike) -> None:
        """Writes ``pytorch_lora_weights.safetensors`` (float32) with the adapter metadata into ``out_dir``, the
        folder ``FluxControlBackend`` loads as ``loras=[dict(path=out_dir)]`` (``FluxControlPipeline.
        load_lora_weights``)."""
        from diffusers import FluxControlPipeline
        out = Path(os.fspath(out_dir))
        out.mkdir(parents=True, exist_ok=True)
        layers = {k: v.detach().float().cpu().contiguous() for k, v in self.lora_state_dict().items()}
        FluxControlPipeline.save_lora_weights(out, transformer_lora_layers=layers,
                                              transformer_lora_adapter_metadata=self.lora_config.to_dict(),
                                              safe_serialization=True)

    def record(self) -> dict[str, Any]:
        """The settings that decide the LoRA (for logs and docs)."""
        return dict(pretrained=os.fspath(self.pretrained), rank=self.lora_config.r,
                    alpha=self.lora_config.lora_alpha, targets=sorted(self.lora_config.target_modules),
                    guidance_scale=self.guidance_scale)


__all__ = ['FluxControlLoRATrainer', 'FLUX_CONTROL_LORA_TARGETS', 'widen_x_embedder']
