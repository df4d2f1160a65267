"""FLUX control LoRA training in diffusers' Flux Control format (``FluxControlBackend`` loads the result) and the
FLUX pieces the EasyControl trainer shares (docs/control_training_flux.md)."""
from .flux_base import FluxTrainerBase, latent_ids, pack_latents, unpack_latents
from .flux_control_lora import FLUX_CONTROL_LORA_TARGETS, FluxControlLoRATrainer, widen_x_embedder

__all__ = ['FluxTrainerBase', 'FluxControlLoRATrainer', 'FLUX_CONTROL_LORA_TARGETS', 'widen_x_embedder',
           'pack_latents', 'unpack_latents', 'latent_ids']
