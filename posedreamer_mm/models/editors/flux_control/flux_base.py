"""What every FLUX trainer shares: loading FLUX.1 from a local folder, prompts, latents, packing, guidance.

FLUX's transformer reads *packed* latents: the VAE latents (B, C, h, w) cut into 2 x 2 patches, one token of
``4 C`` features per patch, ``(h / 2) (w / 2)`` tokens, each with a position id ``(0, row, col)`` for the rotary
embedding (diffusers' ``FluxPipeline._pack_latents`` / ``_prepare_latent_image_ids``, reused here, not copied).
The flow-matching loss is computed on the unpacked latents, so noise, targets and the base class's per-sample loss
are shaped like the VAE latents.

The timesteps a flow trainer samples are the sigmas themselves (in (0, 1)); FLUX's transformer takes ``timestep``
as ``t / 1000`` with the scheduler's ``t = 1000 sigma``, i.e. the sigma.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from posedreamer_mm.models.editors.base_diffusion import BaseDiffusionTrainer

#: ``model_index.json`` ``_class_name`` values holding the FLUX.1 components, and the subfolders needed.
FLUX_PIPELINES = ('FluxPipeline', 'FluxControlPipeline', 'FluxControlNetPipeline')
FLUX_PARTS = ('transformer', 'vae', 'text_encoder', 'tokenizer', 'text_encoder_2', 'tokenizer_2', 'scheduler')


def pack_latents(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) latents -> (B, h/2 * w/2, 4C) FLUX tokens (``h``, ``w`` even)."""
    from diffusers import FluxPipeline
    b, c, h, w = latents.shape
    if h % 2 or w % 2:
        raise ValueError(f'FLUX packs 2 x 2 latent patches: latent size {w}x{h} must be even (image size a '
                         'multiple of 16 with an 8x VAE)')
    return FluxPipeline._pack_latents(latents, b, c, h, w)


def unpack_latents(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, h/2 * w/2, 4C) FLUX tokens -> (B, C, h, w) latents (the inverse of :func:`pack_latents`)."""
    b, n, f = tokens.shape
    if n != (h // 2) * (w // 2):
        raise ValueError(f'{n} tokens do not tile a {w}x{h} latent in 2 x 2 patches')
    return tokens.view(b, h // 2, w // 2, f // 4, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, f // 4, h, w)


def latent_ids(h: int, w: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Position ids (h/2 * w/2, 3) of the packed tokens of an (h, w) latent: ``(0, row, col)`` row-major."""
    from diffusers import FluxPipeline
    return FluxPipeline._prepare_latent_image_ids(1, h // 2, w // 2, device, dtype)


class FluxTrainerBase(BaseDiffusionTrainer):
    """Base of the FLUX.1 trainers: the frozen VAE, text encoders and transformer, loaded from a local folder.

    Args:
        pretrained: a FLUX.1 ``from_pretrained`` folder (``model_index.json`` naming ``FluxPipeline`` or
            ``FluxControlPipeline``, with the subfolders of :data:`FLUX_PARTS`).
        weight_dtype: dtype of the frozen transformer and text encoders (``'bfloat16'`` for FLUX.1-dev: 24 GB
            instead of 48 GB); the VAE stays in float32 (as diffusers' FLUX training examples keep it) and the
            trained parameters in float32.
        guidance_scale: the distilled-guidance value fed to a guidance-embedding transformer (FLUX.1-dev) during
            training; ignored by transformers without ``guidance_embeds``.
        max_sequence_length: T5 tokens per prompt (512 for FLUX.1-dev; tiny configs use fewer).
        gradient_checkpointing: recompute each transformer block in the backward pass (FLUX.1-dev at 1024 px
            does not fit an 80 GB GPU without it).
        **kwargs: :class:`~posedreamer_mm.models.editors.base_diffusion.BaseDiffusionTrainer` (caption and
            control dropout, noise seed, logit-normal ``logit_mean``/``logit_std``, ``flow_shift``).
    """

    def __init__(self, pretrained: str | os.PathLike, weight_dtype: str = 'float32', guidance_scale: float = 3.5,
                 max_sequence_length: int = 512, gradient_checkpointing: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        from posedreamer_mm.generation.backends.weights import resolve_dtype
        self.prediction_type = 'flow'
        self.pretrained = Path(os.fspath(pretrained)).expanduser()
        self.weight_dtype = resolve_dtype(weight_dtype)
        self.guidance_scale = float(guidance_scale)
        self.max_sequence_length = int(max_sequence_length)
        parts = self.load_components(self.pretrained, self.weight_dtype)
        for name in ('vae', 'text_encoder', 'text_encoder_2', 'tokenizer', 'tokenizer_2', 'scheduler', 'transformer'):
            self.add_frozen(name, parts[name])
        if gradient_checkpointing:
            self.transformer.enable_gradient_checkpointing()

    @staticmethod
    def load_components(path: Path, dtype: torch.dtype) -> dict[str, Any]:
        """The FLUX.1 components of ``path``, the VAE in float32 and the others in ``dtype`` (the folder is checked
        first: a wrong one is one clear error naming it)."""
        import diffusers

        from posedreamer_mm.generation.backends.weights import check_pipeline_folder, load_model
        check_pipeline_folder(path, FLUX_PIPELINES, FLUX_PARTS, 'FLUX trainer (pretrained)')
        vae = load_model(diffusers.AutoencoderKL, path / 'vae', torch.float32)  # encodes in float32 (see above)
        pipe = load_model(diffusers.FluxPipeline, path, dtype, vae=vae)
        return dict(pipe.components)

    # --- pieces of the contract -------------------------------------------------------------------------------
    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def text_pipeline(self):
        """A ``FluxPipeline`` of the text encoders only (its ``encode_prompt`` is FLUX's prompt encoding)."""
        from diffusers import FluxPipeline
        return FluxPipeline(scheduler=self.scheduler, vae=None, text_encoder=self.text_encoder,
                            tokenizer=self.tokenizer, text_encoder_2=self.text_encoder_2, tokenizer_2=self.tokenizer_2,
                            transformer=None)

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str], train: bool, generator: torch.Generator | None = None) -> dict:
        """``dict(encoder_hidden_states (B, L, D), pooled_projections (B, P), txt_ids (L, 3))`` of the T5 and CLIP
        encoders; with ``train`` each caption is replaced by ``''`` with probability ``caption_dropout``."""
        if train:
            prompts = self.drop_prompts(prompts, generator)
        device = next(self.text_encoder.parameters()).device
        embeds, pooled, txt_ids = self.text_pipeline().encode_prompt(
            list(prompts), prompt_2=None, device=device, max_sequence_length=self.max_sequence_length)
        return dict(encoder_hidden_states=embeds, pooled_projections=pooled, txt_ids=txt_ids)

    @torch.no_grad()
    def vae_encode(self, pixels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """FLUX latents ``(z - shift_factor) * scaling_factor`` of ``pixels`` (B, 3, H, W) in [-1, 1]: a posterior
        sample drawn from ``generator`` (as diffusers' FLUX training scripts and ``FluxControlPipeline`` encode), or
        the posterior's mode without one."""
        h, w = pixels.shape[-2:]
        multiple = self.vae_scale_factor * 2
        if h % multiple or w % multiple:
            raise ValueError(f'{type(self).__name__}: image size {w}x{h} must be a multiple of {multiple} (FLUX packs '
                             '2 x 2 latent patches)')
        dist = self.vae.encode(pixels.to(self.vae.device, self.vae.dtype)).latent_dist
        z = dist.mode() if generator is None else dist.sample(generator=generator)
        return (z - self.vae.config.shift_factor) * self.vae.config.scaling_factor

    def encode_images(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.vae_encode(images, generator).float()

    def pipeline_vae(self):
        """The VAE for :meth:`build_pipeline`: diffusers' FLUX pipelines assume one dtype (a float32 VAE's control
        latents would meet a bfloat16 transformer), so a bfloat16 run gets a cached copy in the transformer's dtype
        (84 M parameters) while training keeps encoding in float32."""
        dtype = self.transformer.dtype
        if self.vae.dtype == dtype:
            return self.vae
        cached = getattr(self, '_pipeline_vae', None)
        if cached is None or cached.dtype != dtype or cached.device != self.vae.device:
            import copy
            cached = copy.deepcopy(self.vae).to(dtype)
            object.__setattr__(self, '_pipeline_vae', cached)
        return cached

    def guidance(self, n: int, device) -> torch.Tensor | None:
        """The (n,) distilled-guidance vector of a guidance-embedding transformer, else ``None``."""
        if not self.transformer.config.guidance_embeds:
            return None
        return torch.full((n,), self.guidance_scale, device=device, dtype=torch.float32)

    def training_objective(self) -> dict[str, Any]:
        """The base's settings and the distilled guidance the transformer is trained at."""
        return dict(super().training_objective(), guidance_scale=self.guidance_scale)

    def transformer_kwargs(self, t: torch.Tensor, cond: dict) -> dict[str, Any]:
        """The transformer's conditioning arguments at sigmas ``t`` (B,), in its dtype."""
        dtype = self.transformer.dtype
        return dict(timestep=t.to(dtype), guidance=self.guidance(t.shape[0], t.device),
                    pooled_projections=cond['pooled_projections'].to(dtype),
                    encoder_hidden_states=cond['encoder_hidden_states'].to(dtype), txt_ids=cond['txt_ids'])

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]


__all__ = ['FluxTrainerBase', 'pack_latents', 'unpack_latents', 'latent_ids', 'FLUX_PIPELINES', 'FLUX_PARTS']
