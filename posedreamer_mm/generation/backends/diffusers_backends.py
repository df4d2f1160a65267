"""Registered diffusers backends: SD1.5 / SDXL (incl. Union) / FLUX ControlNets and the FLUX control pipeline.

Each composes one diffusers pipeline loaded from local weights (``docs/backends.md`` gives every config and the
weights layouts); :class:`~.diffusers_base.DiffusersBackend` holds the shared loading and calling code.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from posedreamer_mm.registry import BACKENDS

from .diffusers_base import ControlNetBackendMixin, DiffusersBackend, controlnet_specs
from .weights import check_model_folder, describe, load_model

_SD15_PIPELINES = ('StableDiffusionPipeline', 'StableDiffusionControlNetPipeline', 'StableDiffusionImg2ImgPipeline')
_SDXL_PIPELINES = ('StableDiffusionXLPipeline', 'StableDiffusionXLControlNetPipeline',
                   'StableDiffusionXLControlNetUnionPipeline', 'StableDiffusionXLImg2ImgPipeline')
_FLUX_PIPELINES = ('FluxPipeline', 'FluxControlNetPipeline', 'FluxControlPipeline')
_SD_PARTS = ('unet', 'vae', 'text_encoder', 'tokenizer', 'scheduler')
_SDXL_PARTS = _SD_PARTS + ('text_encoder_2', 'tokenizer_2')
_FLUX_PARTS = ('transformer', 'vae', 'text_encoder', 'tokenizer', 'text_encoder_2', 'tokenizer_2', 'scheduler')

#: xinsir/controlnet-union-sdxl-1.0 (ProMax) control modes by this project's control types.
UNION_CONTROL_MODES = dict(openpose=0, depth=1, normal=4)


@BACKENDS.register_module()
class SD15ControlNetBackend(ControlNetBackendMixin, DiffusersBackend):
    """Stable Diffusion 1.5 + ControlNet(s) (``StableDiffusionControlNetPipeline``).

    The safety checker is not loaded (it blacks out whole images, which a dataset of people cannot afford; the
    filter stages judge images instead).

    Args:
        controlnets: ``dict(weights, control_type, scale=1.0)`` or a list (Multi-ControlNet, e.g. openpose + depth).
        **kwargs: :class:`DiffusersBackend` (weights, loras, steps, guidance, scheduler, dtype, device ...).
    """
    name = 'sd15_controlnet'
    pipeline_class = 'StableDiffusionControlNetPipeline'
    accepted_pipelines = _SD15_PIPELINES
    required_subfolders = _SD_PARTS
    controlnet_class = 'ControlNetModel'
    accepted_controlnets = ('ControlNetModel',)

    def __init__(self, controlnets: dict | Sequence[dict], **kwargs) -> None:
        super().__init__(**kwargs)
        self.init_controlnets(controlnets)

    def pipeline_kwargs(self) -> dict[str, Any]:
        return dict(safety_checker=None, requires_safety_checker=False)


@BACKENDS.register_module()
class SDXLControlNetBackend(ControlNetBackendMixin, DiffusersBackend):
    """SDXL + ControlNet(s) (``StableDiffusionXLControlNetPipeline``); several = Multi-ControlNet.

    Args:
        controlnets: ``dict(weights, control_type, scale=1.0)`` or a list of them.
        **kwargs: :class:`DiffusersBackend`.
    """
    name = 'sdxl_controlnet'
    pipeline_class = 'StableDiffusionXLControlNetPipeline'
    accepted_pipelines = _SDXL_PIPELINES
    required_subfolders = _SDXL_PARTS
    controlnet_class = 'ControlNetModel'
    accepted_controlnets = ('ControlNetModel',)

    def __init__(self, controlnets: dict | Sequence[dict], guidance_scale: float = 5.0, **kwargs) -> None:
        super().__init__(guidance_scale=guidance_scale, **kwargs)
        self.init_controlnets(controlnets)


@BACKENDS.register_module()
class SDXLControlNetUnionBackend(DiffusersBackend):
    """SDXL + one ControlNet-Union taking several controls at once (``StableDiffusionXLControlNetUnionPipeline``).

    Args:
        controlnet: ``dict(weights, scale=1.0)`` of the Union model (``ControlNetUnionModel`` folder).
        control_types: the controls given together, e.g. ``['openpose', 'depth']``.
        control_modes: the Union model's mode index per control type; defaults to :data:`UNION_CONTROL_MODES`
            (xinsir ProMax: 0 openpose, 1 depth, 4 normal). A control type without a mode (PNCC) is an error.
        **kwargs: :class:`DiffusersBackend`.
    """
    name = 'sdxl_controlnet_union'
    pipeline_class = 'StableDiffusionXLControlNetUnionPipeline'
    accepted_pipelines = _SDXL_PIPELINES
    required_subfolders = _SDXL_PARTS
    controlnet_class = 'ControlNetUnionModel'
    accepted_controlnets = ('ControlNetUnionModel',)
    image_arg = 'control_image'

    def __init__(self, controlnet: dict, control_types: Sequence[str], control_modes: dict | None = None,
                 guidance_scale: float = 5.0, **kwargs) -> None:
        super().__init__(guidance_scale=guidance_scale, **kwargs)
        self.controlnet = controlnet_specs(dict(controlnet, control_type='union'))[0]
        self.control_types = [str(t) for t in control_types]
        modes = {**UNION_CONTROL_MODES, **dict(control_modes or {})}
        missing = [t for t in self.control_types if t not in modes]
        if not self.control_types or missing:
            raise ValueError(f'SDXLControlNetUnionBackend: no Union control mode for {missing or "(no controls)"}; '
                             f'known {modes}: pass control_modes={{type: index}}')
        self.control_modes = [int(modes[t]) for t in self.control_types]

    def check_weights(self) -> None:
        super().check_weights()
        check_model_folder(self.controlnet['weights'], self.accepted_controlnets, f'{self.what()} ControlNet-Union')

    def load_controlnets(self) -> dict[str, Any]:
        import diffusers
        net = load_model(diffusers.ControlNetUnionModel, Path(os.fspath(self.controlnet['weights'])).expanduser(),
                         self.dtype, self.controlnet['single_file_config'])
        return dict(controlnet=net)

    def control_inputs(self, batch: list[dict]) -> dict[str, Any]:
        return dict(control_image=[self.control_tensor(batch, t) for t in self.control_types],
                    control_mode=list(self.control_modes), controlnet_conditioning_scale=self.controlnet['scale'])

    def record(self) -> dict[str, Any]:
        return {**super().record(), 'controlnet': describe(self.controlnet), 'control_modes': self.control_modes}


@BACKENDS.register_module()
class FluxControlNetBackend(ControlNetBackendMixin, DiffusersBackend):
    """FLUX + ControlNet(s) (``FluxControlNetPipeline``; several = ``FluxMultiControlNetModel``).

    The pipeline encodes InstantX-style control images with the VAE, drawing from each sample's generator; the
    noise of one seed therefore differs from ``FluxPipeline``'s, but stays per sample.

    Args:
        controlnets: ``dict(weights, control_type, scale=1.0)`` or a list of them (``FluxControlNetModel``).
        guidance_scale: FLUX's distilled guidance (3.5 for FLUX.1-dev).
        **kwargs: :class:`DiffusersBackend` (dtype defaults to bfloat16).
    """
    name = 'flux_controlnet'
    pipeline_class = 'FluxControlNetPipeline'
    accepted_pipelines = _FLUX_PIPELINES
    required_subfolders = _FLUX_PARTS
    controlnet_class = 'FluxControlNetModel'
    accepted_controlnets = ('FluxControlNetModel',)
    image_arg = 'control_image'
    denoiser = 'transformer'
    latent_patch = 2
    uses_negative_prompt = False

    def __init__(self, controlnets: dict | Sequence[dict], guidance_scale: float = 3.5, num_inference_steps: int = 28,
                 dtype: str = 'bfloat16', **kwargs) -> None:
        super().__init__(guidance_scale=guidance_scale, num_inference_steps=num_inference_steps, dtype=dtype,
                         **kwargs)
        self.init_controlnets(controlnets)


@BACKENDS.register_module()
class FluxControlBackend(DiffusersBackend):
    """FLUX with channel-concatenated control (``FluxControlPipeline``): FLUX.1-Depth/Canny-dev, or FLUX.1-dev plus
    a control LoRA (the form a trained PNCC control takes in diffusers).

    With a control LoRA, list it first in ``loras`` (``target='pipeline'``): ``load_lora_weights`` widens the
    transformer's input layer for the control latents; further LoRAs (DPO, style) stack on it with their weights.

    Args:
        control_type: the control image the model was trained on (``'pncc'``, ``'depth'`` ...).
        guidance_scale: FLUX's distilled guidance (10 for FLUX.1-Depth-dev, 30 for Canny).
        **kwargs: :class:`DiffusersBackend` (dtype defaults to bfloat16).
    """
    name = 'flux_control'
    pipeline_class = 'FluxControlPipeline'
    accepted_pipelines = _FLUX_PIPELINES
    required_subfolders = _FLUX_PARTS
    image_arg = 'control_image'
    denoiser = 'transformer'
    latent_patch = 2
    uses_negative_prompt = False

    def __init__(self, control_type: str, guidance_scale: float = 10.0, num_inference_steps: int = 28,
                 dtype: str = 'bfloat16', **kwargs) -> None:
        super().__init__(guidance_scale=guidance_scale, num_inference_steps=num_inference_steps, dtype=dtype,
                         **kwargs)
        self.control_types = [str(control_type)]

    def setup(self) -> None:
        super().setup()
        t = getattr(self.pipe.transformer, '_orig_mod', self.pipe.transformer)
        # A control transformer reads image and control latents side by side: twice what it predicts.
        reads, predicts = t.x_embedder.in_features, t.proj_out.out_features
        if reads != 2 * predicts:
            raise ValueError(f'FluxControlBackend: the transformer of {self.weights} reads {reads} latent features '
                             f'and predicts {predicts}: it has no control input. Use a FLUX.1-Depth/Canny-dev folder, '
                             'or add the control LoRA to loras (target="pipeline")')

    def control_inputs(self, batch: list[dict]) -> dict[str, Any]:
        # FluxControlPipeline hands a tensor control to the VAE as it is (it normalises only PIL images): give it
        # the [-1, 1] range FLUX control models are trained on (diffusers' Flux Control training, the trainer).
        return dict(control_image=self.control_tensor(batch, self.control_types[0]) * 2 - 1)
