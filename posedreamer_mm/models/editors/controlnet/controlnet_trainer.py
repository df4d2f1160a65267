"""SD1.5 / SDXL ControlNet training (docs/control_training.md): frozen UNet, VAE and text encoders; the ControlNet
learns to steer the UNet from a control image (Zhang et al. 2023, https://arxiv.org/abs/2302.05543)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from posedreamer_mm.generation.backends.diffusers_backends import SD15ControlNetBackend, SDXLControlNetBackend
from posedreamer_mm.generation.backends.weights import (
    WeightsLayoutError,
    check_model_folder,
    check_pipeline_folder,
    load_model,
    resolve_dtype,
)
from posedreamer_mm.models.editors.base_diffusion import BaseDiffusionTrainer
from posedreamer_mm.registry import MODELS

#: Frozen components of the SD1.5 and SDXL pipelines.
_SD_PARTS = ('unet', 'vae', 'text_encoder', 'tokenizer', 'scheduler')
_SDXL_PARTS = _SD_PARTS + ('text_encoder_2', 'tokenizer_2')
#: Classes a component folder given in ``components=`` may hold.
_EXPECTED = dict(unet=('UNet2DConditionModel',), vae=('AutoencoderKL',), text_encoder=('CLIPTextModel',),
                 text_encoder_2=('CLIPTextModelWithProjection',))
#: ControlNet config keys that must equal the UNet's for the residuals to fit it.
_UNET_KEYS = ('in_channels', 'block_out_channels', 'down_block_types', 'layers_per_block', 'cross_attention_dim',
              'attention_head_dim', 'addition_embed_type', 'addition_time_embed_dim',
              'projection_class_embeddings_input_dim', 'transformer_layers_per_block')


@MODELS.register_module()
class ControlNetTrainer(BaseDiffusionTrainer):
    """Trains a diffusers ``ControlNetModel`` for a frozen SD1.5 or SDXL base.

    The family follows the ``pretrained`` folder (``text_encoder_2`` in its ``model_index.json``: SDXL). SD1.5
    conditions the UNet on CLIP's last hidden state; SDXL on both encoders' penultimate states plus the pooled
    projection and the ``time_ids`` ``(H, W, 0, 0, H, W)`` of the training crop (the pair is already cropped), as
    the SDXL pipelines build them at inference. Prompts are encoded by the pipeline's own ``encode_prompt``, so
    training and generation see the same text features.

    The training noise schedule is the folder's ``scheduler`` config read as a ``DDPMScheduler`` (its
    ``prediction_type``: ``epsilon`` or ``v_prediction``; ``prediction_type=`` overrides it). Latents are the VAE
    posterior's sample times ``scaling_factor``, drawn from the iteration's generator.

    Args:
        pretrained: a local diffusers SD1.5 or SDXL folder (``model_index.json`` + ``unet``, ``vae``,
            ``text_encoder``, ``tokenizer``, ``scheduler`` [+ ``text_encoder_2``, ``tokenizer_2``]).
            ``None``: every frozen part from ``components``.
        components: per-component overrides of the folder (``unet``, ``vae``, ``text_encoder``, ``tokenizer``,
            ``scheduler``, ``text_encoder_2``, ``tokenizer_2``): a folder of that component (e.g. SDXL's fp16-fix
            VAE), a config dict ``dict(type='<diffusers or transformers class>', **config)`` built with random
            weights (tiny test models), or a built object.
        controlnet: ``None``: initialised from the UNet (``ControlNetModel.from_unet``: encoder copied, zero
            convolutions at the outputs); or a ``ControlNetModel`` folder to continue training.
        conditioning_channels: channels of the control input (3 per control image; ``3 * k`` for ``k`` images
            concatenated).
        conditioning_embedding_out_channels: the control encoder's widths for ``from_unet``; its ``len - 1``
            stride-2 convolutions must shrink the control to the latent size (the VAE's factor, 8 for SD).
            ``None``: diffusers' ``(16, 32, 96, 256)``.
        prediction_type: overrides the scheduler's (``'epsilon'`` or ``'v_prediction'``).
        dtype: dtype of the frozen UNet and text encoders (``'bfloat16'``/``'float16'`` halve their memory on a
            GPU; the ControlNet stays float32 and mixed precision comes from ``AmpOptimWrapper``).
        vae_dtype: dtype of the frozen VAE (float32 by default: SDXL's VAE overflows in float16).
        gradient_checkpointing: recompute the ControlNet's and the UNet's activations in the backward pass (less
            memory, one more forward of each).
        **kwargs: :class:`BaseDiffusionTrainer` (``caption_dropout``, ``control_dropout``, ``noise_seed``, ...).
    """

    trainable_module_names = ('controlnet',)

    def __init__(self, pretrained: str | os.PathLike | None, controlnet: str | os.PathLike | None = None,
                 components: dict[str, Any] | None = None, conditioning_channels: int = 3,
                 conditioning_embedding_out_channels: tuple[int, ...] | None = None,
                 prediction_type: str | None = None, dtype: str = 'float32', vae_dtype: str = 'float32',
                 gradient_checkpointing: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        components = dict(components or {})
        unknown = sorted(set(components) - set(_SDXL_PARTS))
        if unknown:
            raise ValueError(f'{type(self).__name__}: components {unknown} are not among {list(_SDXL_PARTS)}')
        if pretrained is None:
            self.pretrained, index = None, {}
            self.sdxl = 'text_encoder_2' in components
            missing = [n for n in (_SDXL_PARTS if self.sdxl else _SD_PARTS) if n not in components]
            if missing:
                raise ValueError(f'{self.what()}: pretrained=None needs every component in components=; missing '
                                 f'{missing}')
        else:
            self.pretrained = self._check_pretrained(pretrained)
            index = json.loads((self.pretrained / 'model_index.json').read_text())
            self.sdxl = 'text_encoder_2' in index or 'text_encoder_2' in components
        self.dtype, self.vae_dtype = resolve_dtype(dtype), resolve_dtype(vae_dtype)
        self._load_frozen(index, components)
        self._set_schedule(prediction_type)
        self.conditioning_channels = int(conditioning_channels)
        self.controlnet = self._build_controlnet(controlnet, conditioning_embedding_out_channels)
        if gradient_checkpointing:
            # the UNet too: it is frozen, but the backward to the ControlNet's residuals runs through it
            self.controlnet.enable_gradient_checkpointing()
            self.unet.enable_gradient_checkpointing()
        object.__setattr__(self, '_pipe', None)

    # --- loading ----------------------------------------------------------------------------------------------
    def what(self) -> str:
        family = {True: 'SDXL', False: 'SD1.5', None: 'SD1.5 or SDXL'}[getattr(self, 'sdxl', None)]
        return f'{type(self).__name__} ({family})'

    def _check_pretrained(self, path) -> Path:
        accepted = SD15ControlNetBackend.accepted_pipelines + SDXLControlNetBackend.accepted_pipelines
        p = check_pipeline_folder(path, accepted, SD15ControlNetBackend.required_subfolders, self.what())
        if p.is_file():
            raise WeightsLayoutError(f'{self.what()}: pretrained {p} is a single checkpoint file; training needs a '
                                     'diffusers folder (load it once with from_single_file and save_pretrained it)')
        return p

    @property
    def source(self) -> str:
        """Where the frozen components come from, for messages."""
        return str(self.pretrained) if self.pretrained is not None else 'the components= configs'

    def _load_frozen(self, index: dict, components: dict[str, Any]) -> None:
        p = self.pretrained
        if self.sdxl and p is not None:
            missing = [s for s in ('text_encoder_2', 'tokenizer_2') if not (p / s).is_dir() and s not in components]
            if missing:
                raise WeightsLayoutError(f'{self.what()}: {p} is an SDXL base but lacks the subfolders {missing}')
        for name in (_SDXL_PARTS if self.sdxl else _SD_PARTS):
            dtype = self.vae_dtype if name == 'vae' else self.dtype
            if name in components:
                part = _build_component(name, components[name], dtype, self.what())
            else:
                part = _load_component(p / name, index[name][1], dtype)
            self.add_frozen(name, part)

    def _set_schedule(self, prediction_type: str | None) -> None:
        from diffusers import DDPMScheduler
        train_sched = DDPMScheduler.from_config(self.scheduler.config)
        self.prediction_type = prediction_type or train_sched.config.prediction_type
        if self.prediction_type not in ('epsilon', 'v_prediction'):
            raise ValueError(f"{self.what()}: prediction_type must be 'epsilon' or 'v_prediction' (the scheduler "
                             f"config of {self.source} says {train_sched.config.prediction_type!r}), got "
                             f'{self.prediction_type!r}')
        self.alphas_cumprod = train_sched.alphas_cumprod.float()
        self.num_train_timesteps = int(train_sched.config.num_train_timesteps)

    def _build_controlnet(self, controlnet, embedding_channels):
        from diffusers import ControlNetModel
        vae_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        if controlnet is None:
            embedding_channels = tuple(embedding_channels or (16, 32, 96, 256))
            if 2 ** (len(embedding_channels) - 1) != vae_factor:
                raise ValueError(f'{self.what()}: conditioning_embedding_out_channels {embedding_channels} shrink '
                                 f'the control {2 ** (len(embedding_channels) - 1)}x but the VAE of '
                                 f'{self.source} shrinks images {vae_factor}x: give {len(embedding_channels)} '
                                 'widths for a factor of 2 ** (widths - 1)')
            net = ControlNetModel.from_unet(self.unet, conditioning_embedding_out_channels=embedding_channels,
                                            conditioning_channels=self.conditioning_channels)
            return net.float()  # trained in float32 whatever the frozen base's dtype (AMP autocasts)
        what = f'{self.what()} controlnet'
        folder = check_model_folder(controlnet, ('ControlNetModel',), what)
        if folder.is_file():
            raise WeightsLayoutError(f'{what}: {folder} is a single checkpoint file; give a ControlNetModel folder')
        net = load_model(ControlNetModel, folder, torch.float32)  # refuses weights of another shape
        cfg, unet_cfg = net.config, self.unet.config
        diff = [f'{k}={cfg.get(k)!r} (UNet {unet_cfg.get(k)!r})' for k in _UNET_KEYS
                if _norm(cfg.get(k)) != _norm(unet_cfg.get(k))]
        if cfg.conditioning_channels != self.conditioning_channels:
            diff.append(f'conditioning_channels={cfg.conditioning_channels} (config {self.conditioning_channels})')
        if diff:
            raise WeightsLayoutError(f'{what}: {folder} does not fit the UNet of {self.source}: {"; ".join(diff)}')
        return net

    # --- the contract's steps ---------------------------------------------------------------------------------
    @property
    def weight_device(self) -> torch.device:
        return next(self.controlnet.parameters()).device

    def pipeline(self):
        """The pipeline used for prompt encoding and validation (built once; holds the live modules)."""
        if self._pipe is None:
            object.__setattr__(self, '_pipe', self.build_pipeline())
        return self._pipe

    def build_pipeline(self):
        """A ``StableDiffusion[XL]ControlNetPipeline`` over the live modules (the ControlNet being trained) and the
        folder's inference scheduler. With a reduced-precision frozen base (``dtype='bfloat16'``) beside the float32
        ControlNet, its calls run under ``torch.autocast`` to that dtype (the pipelines assume one dtype for all
        components)."""
        from diffusers import StableDiffusionControlNetPipeline, StableDiffusionXLControlNetPipeline
        parts = dict(vae=self.vae, text_encoder=self.text_encoder, tokenizer=self.tokenizer, unet=self.unet,
                     controlnet=self.controlnet, scheduler=self.scheduler)
        if self.sdxl:
            pipe = StableDiffusionXLControlNetPipeline(text_encoder_2=self.text_encoder_2,
                                                       tokenizer_2=self.tokenizer_2, add_watermarker=False, **parts)
        else:
            pipe = StableDiffusionControlNetPipeline(safety_checker=None, feature_extractor=None,
                                                     requires_safety_checker=False, **parts)
        pipe.set_progress_bar_config(disable=True)
        if self.dtype != torch.float32 or self.vae_dtype != torch.float32:
            _autocast_calls(pipe, self.dtype if self.dtype != torch.float32 else self.vae_dtype)
        return pipe

    def encode_prompts(self, prompts: list[str], train: bool, generator: torch.Generator | None = None) -> dict:
        """``encoder_hidden_states`` (B, 77, D) and, for SDXL, ``added_cond_kwargs`` (``text_embeds``,
        ``time_ids``; the time ids are filled in by :meth:`predict` from the latent size)."""
        prompts = list(prompts)
        if not prompts:
            raise ValueError(f'{type(self).__name__}.encode_prompts: no prompts (give one caption per sample, '
                             "'' for none)")
        if train:
            prompts = self.drop_prompts(prompts, generator)
        pipe, device = self.pipeline(), self.weight_device
        with torch.no_grad():
            if self.sdxl:
                embeds, _, pooled, _ = pipe.encode_prompt(prompts, device=device, do_classifier_free_guidance=False)
                return dict(encoder_hidden_states=embeds, added_cond_kwargs=dict(text_embeds=pooled))
            embeds, _ = pipe.encode_prompt(prompts, device, 1, do_classifier_free_guidance=False)
        return dict(encoder_hidden_states=embeds)

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """VAE posterior samples of ``images`` (B, 3, H, W) in [-1, 1], times ``scaling_factor`` (minus
        ``shift_factor`` first where the VAE has one), float32."""
        halvings = len(self.vae.config.block_out_channels) - 1 + len(self.unet.config.block_out_channels) - 1
        multiple = 2 ** halvings
        if images.shape[-2] % multiple or images.shape[-1] % multiple:
            raise ValueError(f'{type(self).__name__}: image size {tuple(images.shape[-2:])} (H, W) is not a multiple '
                             f'of {multiple} (VAE and UNet downsampling of {self.source}): resize the pairs '
                             '(ResizeControlPair size) to a multiple')
        posterior = self.vae.encode(images.to(self.weight_device, self.vae_dtype)).latent_dist
        if generator is None:
            latents = posterior.sample()
        else:
            eps = torch.randn(posterior.mean.shape, generator=generator, device=generator.device)
            latents = posterior.mean + posterior.std * eps.to(posterior.mean)
        shift = getattr(self.vae.config, 'shift_factor', None) or 0.0
        return ((latents - shift) * self.vae.config.scaling_factor).float()

    def encode_controls(self, controls: torch.Tensor, train: bool, generator: torch.Generator | None = None):
        """``controls`` (B, C, H, W) in [0, 1] as the ControlNet's ``controlnet_cond`` (zeroed per sample with
        probability ``control_dropout`` in training)."""
        if controls.shape[1] != self.conditioning_channels:
            raise ValueError(f'{type(self).__name__}: control has {controls.shape[1]} channels, the ControlNet takes '
                             f'conditioning_channels={self.conditioning_channels} (3 per control image)')
        controls = controls.to(self.weight_device, torch.float32)
        return self.drop_controls(controls, generator) if train else controls

    def _time_ids(self, latents: torch.Tensor) -> torch.Tensor:
        h, w = (s * self.pipeline().vae_scale_factor for s in latents.shape[-2:])
        return torch.tensor([h, w, 0, 0, h, w], device=latents.device, dtype=torch.float32).repeat(len(latents), 1)

    def predict(self, noisy: torch.Tensor, t: torch.Tensor, cond: dict, control: Any) -> torch.Tensor:
        """The frozen UNet's output with the ControlNet's residuals added, float32 (B, 4, h, w)."""
        added = None
        if self.sdxl:
            added = dict(text_embeds=cond['added_cond_kwargs']['text_embeds'], time_ids=self._time_ids(noisy))
        hidden = cond['encoder_hidden_states']
        net_dtype = self.controlnet.dtype  # float32 (a bf16 text encoder's output is cast up, also without AMP)
        net_added = None if added is None else {k: v.to(net_dtype) for k, v in added.items()}
        down, mid = self.controlnet(noisy.to(net_dtype), t, encoder_hidden_states=hidden.to(net_dtype),
                                    controlnet_cond=control.to(net_dtype), added_cond_kwargs=net_added,
                                    return_dict=False)
        dt = self.dtype
        if added is not None:
            added = {k: v.to(dt) for k, v in added.items()}
        out = self.unet(noisy.to(dt), t, encoder_hidden_states=hidden.to(dt), added_cond_kwargs=added,
                        down_block_additional_residuals=[r.to(dt) for r in down],
                        mid_block_additional_residual=mid.to(dt), return_dict=False)[0]
        return out.float()

    def save_pretrained(self, out_dir) -> None:
        """Writes the ControlNet as a ``ControlNetModel`` folder (``config.json`` +
        ``diffusion_pytorch_model.safetensors``): ``controlnets=[dict(weights=out_dir, ...)]`` of the SD15/SDXL
        ControlNet backends loads it."""
        self.controlnet.save_pretrained(os.fspath(out_dir), safe_serialization=True)


def _load_component(folder: Path, class_name: str, dtype: torch.dtype):
    """One component of a pipeline folder: models through the backends' checked loader, tokenizers and
    schedulers through their own ``from_pretrained``."""
    import diffusers
    import transformers
    cls = getattr(diffusers, class_name, None) or getattr(transformers, class_name, None)
    if cls is None:
        raise WeightsLayoutError(f'{folder}: model_index.json names {class_name!r}, which neither diffusers nor '
                                 'transformers has')
    if isinstance(cls, type) and issubclass(cls, (torch.nn.Module,)):
        return load_model(cls, folder, dtype)
    return cls.from_pretrained(folder, local_files_only=True)


def _build_component(name: str, spec: Any, dtype: torch.dtype, what: str):
    """A ``components=`` entry: a built object as is; a path, the component's own folder (e.g. SDXL's
    fp16-fix VAE); a dict ``type=<diffusers/transformers class>`` plus its config, built randomly initialised
    (diffusers models and schedulers from the config, transformers models from ``<Class>.config_class``, tokenizers
    from their keyword arguments)."""
    import diffusers
    import transformers
    if isinstance(spec, (str, os.PathLike)):
        folder = Path(os.fspath(spec)).expanduser()
        if name.startswith('tokenizer'):
            if not folder.is_dir():
                raise WeightsLayoutError(f'{what}: components[{name!r}] = {folder} is not a tokenizer folder')
            return _load_component(folder, 'AutoTokenizer', dtype)
        config = folder / ('scheduler_config.json' if name == 'scheduler' else 'config.json')
        if not config.is_file():
            raise WeightsLayoutError(f'{what}: components[{name!r}] = {folder} is not a {name} folder (it has no '
                                     f'{config.name})')
        found = json.loads(config.read_text())
        class_name = found.get('_class_name') or found.get('architectures', [''])[0]
        if name in _EXPECTED and class_name not in _EXPECTED[name]:
            raise WeightsLayoutError(f'{what}: components[{name!r}] = {folder} holds a {class_name!r}, not one of '
                                     f'{list(_EXPECTED[name])}')
        return _load_component(folder, class_name, dtype)
    if not isinstance(spec, dict):
        return spec.to(dtype) if isinstance(spec, torch.nn.Module) else spec
    spec = dict(spec)
    type_name = spec.pop('type', None)
    cls = getattr(diffusers, str(type_name), None) or getattr(transformers, str(type_name), None)
    if cls is None:
        raise ValueError(f'{what}: components[{name!r}] type {type_name!r} is neither a diffusers nor a '
                         'transformers class')
    if isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel):
        return cls(cls.config_class(**spec)).to(dtype)
    if hasattr(cls, 'from_config'):
        built = cls.from_config(spec)
        return built.to(dtype) if isinstance(built, torch.nn.Module) else built
    return cls(**spec)


def _autocast_calls(pipe, dtype: torch.dtype) -> None:
    """Makes ``pipe(...)`` run under autocast to ``dtype`` on its device (a subclass of the pipeline's own class,
    so isinstance checks and everything else stay as diffusers wrote them)."""
    base = type(pipe)

    def __call__(self, *args, **kwargs):
        with torch.autocast(self.device.type, dtype=dtype):
            return base.__call__(self, *args, **kwargs)

    pipe.__class__ = type(base.__name__, (base,), dict(__call__=__call__, __module__=base.__module__))


def _norm(value):
    """Config values compared as JSON has them (tuples and lists alike)."""
    if isinstance(value, (list, tuple)):
        return [_norm(v) for v in value]
    return value


__all__ = ['ControlNetTrainer']
