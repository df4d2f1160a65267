"""The common diffusers backend: loads a ControlNet / control pipeline from local weights and runs it per batch.

Composes the diffusers pipelines (never copies them): subclasses name the pipeline and ControlNet classes, the
accepted weights layouts and how the control images are passed; this class loads, configures (dtype, device,
scheduler, LoRA stack, ``channels_last``, ``torch.compile``) and calls the pipeline with one generator per sample.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .base import BaseGenerationBackend, sample_generators
from .schedulers import build_scheduler
from .weights import (
    apply_loras,
    check_lora_paths,
    check_model_folder,
    check_pipeline_folder,
    describe,
    load_model,
    lora_specs,
    resolve_dtype,
)


def controlnet_specs(controlnets: dict | Sequence[dict] | None) -> list[dict]:
    """Normalised ControlNet specs: ``weights`` (folder or file), ``control_type``, ``scale`` (default 1.0),
    ``single_file_config``; one dict or a list of them (several = Multi-ControlNet)."""
    if controlnets is None:
        return []
    items = [controlnets] if isinstance(controlnets, dict) else list(controlnets)
    out = []
    for i, spec in enumerate(items):
        spec = dict(spec)
        unknown = set(spec) - {'weights', 'control_type', 'scale', 'single_file_config'}
        if 'weights' not in spec or 'control_type' not in spec or unknown:
            raise ValueError(f'ControlNet #{i} {spec}: needs weights and control_type and takes only scale and '
                             f'single_file_config (unknown: {sorted(unknown)})')
        out.append(dict(weights=spec['weights'], control_type=str(spec['control_type']),
                        scale=float(spec.get('scale', 1.0)), single_file_config=spec.get('single_file_config')))
    return out


class DiffusersBackend(BaseGenerationBackend):
    """Base of the diffusers backends (registered subclasses in :mod:`.diffusers_backends`).

    Args:
        weights: base model: a ``from_pretrained`` folder or a single checkpoint file (``docs/backends.md``).
        loras: LoRAs stacked on the pipeline or a ControlNet, each ``dict(path, weight=1.0, name=..., target=
            'pipeline'|'controlnet', controlnet_index=0, weight_name=None)`` (``weights.lora_specs``).
        batch_size: samples per pipeline call.
        num_inference_steps: denoising steps.
        guidance_scale: classifier-free (or FLUX distilled) guidance.
        scheduler: a diffusers scheduler class name or ``dict(type=name, **config overrides)``; ``None`` keeps the
            weights' scheduler.
        dtype: ``'float16'``, ``'bfloat16'`` or ``'float32'``.
        device: torch device the pipeline runs on.
        channels_last: convert the denoiser and ControlNets to ``channels_last`` (convolutional models).
        compile: ``False``, ``True`` or ``torch.compile`` kwargs (e.g. ``dict(mode='max-autotune')``) for the
            denoiser (UNet / transformer) and ControlNets.
        single_file_config: a local diffusers folder giving the architecture when ``weights`` is a single file.
        call_kwargs: extra keyword arguments for every pipeline call (``control_guidance_end=0.8``, ...).
    """

    #: Pipeline class name (recorded with every sample; the diffusers class unless :attr:`load_class` is set).
    pipeline_class: str = ''
    #: diffusers pipeline class :meth:`load_pipeline` loads when :attr:`pipeline_class` is a wrapper of it.
    load_class: str | None = None
    #: ``model_index.json`` ``_class_name`` values ``weights`` may hold.
    accepted_pipelines: tuple[str, ...] = ()
    #: Subfolders ``weights`` must hold.
    required_subfolders: tuple[str, ...] = ()
    #: diffusers class of the ControlNets (``None``: the pipeline takes the control itself).
    controlnet_class: str | None = None
    #: ``config.json`` ``_class_name`` values a ControlNet folder may hold.
    accepted_controlnets: tuple[str, ...] = ()
    #: The pipeline call's name for the control images.
    image_arg: str = 'image'
    #: Attribute of the denoiser (``unet`` or ``transformer``).
    denoiser: str = 'unet'
    #: Output sides must be multiples of ``vae_scale_factor`` times this (FLUX packs 2 x 2 latents).
    latent_patch: int = 1
    #: Whether the pipeline takes ``negative_prompt``.
    uses_negative_prompt: bool = True

    def __init__(self, weights: str | os.PathLike, loras: Sequence[dict] | None = None, batch_size: int = 1,
                 num_inference_steps: int = 30, guidance_scale: float = 7.5, scheduler: str | dict | None = None,
                 dtype: str = 'float16', device: str = 'cuda', channels_last: bool = False,
                 compile: bool | dict = False, single_file_config: str | None = None,
                 call_kwargs: dict | None = None) -> None:
        super().__init__(batch_size)
        self.weights = Path(os.fspath(weights)).expanduser()
        self.loras = lora_specs(loras)
        self.num_inference_steps = int(num_inference_steps)
        self.guidance_scale = float(guidance_scale)
        self.scheduler = scheduler
        self.dtype = resolve_dtype(dtype)
        self.device = torch.device(device)
        self.channels_last, self.compile = bool(channels_last), compile
        self.single_file_config = single_file_config
        self.call_kwargs = dict(call_kwargs or {})
        self.pipe = None

    # --- loading -------------------------------------------------------------------------------------------
    def what(self) -> str:
        return f'{type(self).__name__} ({self.pipeline_class})'

    def check_weights(self) -> None:
        """Checks every weights path before anything loads (:class:`~.weights.WeightsLayoutError` if wrong)."""
        check_pipeline_folder(self.weights, self.accepted_pipelines, self.required_subfolders, self.what())
        check_lora_paths(self.loras)

    def load_controlnets(self) -> dict[str, Any]:
        """The pipeline's extra ``from_pretrained`` components (the ControlNets); none by default."""
        return {}

    def pipeline_kwargs(self) -> dict[str, Any]:
        """Extra ``from_pretrained`` arguments of this pipeline family."""
        return {}

    def load_pipeline(self) -> Any:
        """The diffusers pipeline of :attr:`load_class` (default :attr:`pipeline_class`) from ``weights``, with the
        scheduler and the LoRA stack."""
        import diffusers
        cls = getattr(diffusers, self.load_class or self.pipeline_class)
        kwargs = {**self.load_controlnets(), **self.pipeline_kwargs()}
        pipe = load_model(cls, self.weights, self.dtype, self.single_file_config, **kwargs)
        pipe.scheduler = build_scheduler(self.scheduler, pipe.scheduler)
        apply_loras(pipe, self.loras)
        return pipe

    def attach(self, pipe: Any) -> None:
        """Adds what is not a diffusers component (EasyControl's condition processors) to the loaded pipeline, before
        it moves to ``device`` and the speed switches apply; nothing by default."""

    def wrap(self, pipe: Any) -> Any:
        """The object :meth:`generate` calls, given the finished pipeline: the pipeline itself by default, or a
        wrapper reading its components through it (so the compiled denoiser is the one that runs)."""
        return pipe

    def apply_speed_switches(self, pipe: Any) -> None:
        """``channels_last`` and ``torch.compile`` on the denoiser and the ControlNets of ``pipe``."""
        for name in (self.denoiser, 'controlnet'):
            module = getattr(pipe, name, None)
            if module is None:
                continue
            if self.channels_last:
                module.to(memory_format=torch.channels_last)
            if self.compile:
                setattr(pipe, name, torch.compile(module, **(self.compile if isinstance(self.compile, dict)
                                                             else {})))

    def setup(self) -> None:
        """Loads the pipeline on ``device`` with the scheduler, LoRAs, :meth:`attach`'s parts and the speed switches,
        and keeps :meth:`wrap`'s result (once)."""
        if self.pipe is not None:
            return
        self.check_weights()
        if self.device.type == 'cuda' and not torch.cuda.is_available():
            raise RuntimeError(f"{type(self).__name__}: device='{self.device}' but torch sees no CUDA device; set "
                               "backend.device='cpu' (tiny or test weights only) or run on a GPU machine")
        pipe = self.load_pipeline()
        self.attach(pipe)
        pipe.to(self.device)
        pipe.set_progress_bar_config(disable=True)
        self.apply_speed_switches(pipe)
        self.pipe = self.wrap(pipe)

    # --- generation ------------------------------------------------------------------------------------------
    def control_inputs(self, batch: list[dict]) -> dict[str, Any]:
        """The pipeline's control arguments for a batch (:meth:`control_tensor` per control type)."""
        raise NotImplementedError

    @staticmethod
    def control_tensor(batch: list[dict], control_type: str) -> torch.Tensor:
        """The batch's ``control_type`` images as one (B, 3, H, W) float32 tensor in [0, 1].

        A tensor (rather than PIL images) is what every pipeline accepts per ControlNet for a whole batch, also
        with several ControlNets (SDXL refuses nested image lists); the values equal diffusers' own PIL
        conversion (``uint8 / 255``).
        """
        arr = np.stack([np.asarray(r['controls'][control_type]) for r in batch]).astype(np.float32) / 255.0
        return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()

    def call_arguments(self, batch: list[dict]) -> dict[str, Any]:
        """The pipeline call's keyword arguments for a batch (sets the backend up on first use).

        One CPU generator per sample (:func:`~.base.sample_generators`), prompts and negative prompts per sample,
        the controls at their own size (``height``/``width``), ``output_type='np'`` (float images in [0, 1]).
        """
        h, w = self.check_batch(batch)
        self.setup()
        multiple = int(getattr(self.pipe, 'vae_scale_factor', 8)) * self.latent_patch
        if h % multiple or w % multiple:
            raise ValueError(f'{type(self).__name__}: control size {w}x{h} must be a multiple of {multiple} '
                             '(the pipeline would silently resize it and the label would no longer fit): set the '
                             'crop size accordingly')
        kwargs = dict(prompt=[str(r.get('prompt') or '') for r in batch], height=h, width=w,
                      num_inference_steps=self.num_inference_steps, guidance_scale=self.guidance_scale,
                      generator=sample_generators([r['seed'] for r in batch]), output_type='np',
                      **self.control_inputs(batch))
        if self.uses_negative_prompt:
            kwargs['negative_prompt'] = [str(r.get('negative_prompt', '') or '') for r in batch]
        kwargs.update(self.call_kwargs)
        return kwargs

    def generate(self, batch: list[dict]) -> list[np.ndarray]:
        kwargs = self.call_arguments(batch)
        with torch.inference_mode():
            images = self.pipe(**kwargs).images
        images = np.round(np.clip(np.asarray(images, np.float32), 0, 1) * 255).astype(np.uint8)
        return [img for img in images]

    def scheduler_record(self) -> dict[str, Any]:
        """The scheduler class and its config overrides, the same before and after :meth:`setup`."""
        if self.scheduler is not None:
            spec = dict(type=self.scheduler) if isinstance(self.scheduler, str) else dict(self.scheduler)
            return dict(scheduler=spec.pop('type'), scheduler_overrides=describe(spec))
        config = self.weights / 'scheduler' / 'scheduler_config.json'
        try:
            name = json.loads(config.read_text())['_class_name']
        except (OSError, ValueError, KeyError):
            name = 'the weights\' own'
        return dict(scheduler=name, scheduler_overrides={})

    def record(self) -> dict[str, Any]:
        """Everything that decides the images (stored with every sample; identical before and after setup)."""
        import diffusers
        return {**super().record(), 'pipeline': self.pipeline_class, 'weights': os.fspath(self.weights),
                'steps': self.num_inference_steps, 'guidance': self.guidance_scale, **self.scheduler_record(),
                'dtype': str(self.dtype).replace('torch.', ''), 'diffusers_version': diffusers.__version__,
                'loras': [dict(name=s['name'], path=os.fspath(s['path']), weight=s['weight'], target=s['target'])
                          for s in self.loras],
                'call_kwargs': describe(self.call_kwargs)}


class ControlNetBackendMixin:
    """ControlNet loading and control inputs for pipelines that take one ``ControlNetModel`` per control type.

    Args (in addition to :class:`DiffusersBackend`'s):
        controlnets: one ``dict(weights, control_type, scale=1.0)`` or a list of them (Multi-ControlNet: each
            sample's controls of those types go to their ControlNets together).
    """

    def init_controlnets(self, controlnets) -> None:
        self.controlnets = controlnet_specs(controlnets)
        if not self.controlnets:
            raise ValueError(f'{type(self).__name__} needs at least one ControlNet: controlnets=dict(weights=..., '
                             'control_type=...)')
        self.control_types = [c['control_type'] for c in self.controlnets]
        if len(set(self.control_types)) != len(self.control_types):
            raise ValueError(f'{type(self).__name__}: one ControlNet per control type, got {self.control_types}')

    def check_weights(self) -> None:
        super().check_weights()
        for spec in self.controlnets:
            check_model_folder(spec['weights'], self.accepted_controlnets,
                               f'{self.what()} ControlNet for {spec["control_type"]!r}')

    def load_controlnets(self) -> dict[str, Any]:
        import diffusers
        cls = getattr(diffusers, self.controlnet_class)
        nets = [load_model(cls, Path(os.fspath(s['weights'])).expanduser(), self.dtype, s['single_file_config'])
                for s in self.controlnets]
        return dict(controlnet=nets[0] if len(nets) == 1 else nets)

    def control_inputs(self, batch: list[dict]) -> dict[str, Any]:
        images = [self.control_tensor(batch, c['control_type']) for c in self.controlnets]
        scales = [c['scale'] for c in self.controlnets]
        if len(images) == 1:
            return {self.image_arg: images[0], 'controlnet_conditioning_scale': scales[0]}
        return {self.image_arg: images, 'controlnet_conditioning_scale': scales}

    def record(self) -> dict[str, Any]:
        return {**super().record(), 'controlnets': describe(self.controlnets)}
