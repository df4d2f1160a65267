"""The base of every diffusion trainer (docs/control_training.md): frozen parts, noise, targets, the loss.

A subclass loads its diffusers components and implements the model-specific steps (``encode_prompts``,
``encode_images``, ``encode_controls``, ``predict``, ``build_pipeline``, ``save_pretrained``); this class owns
what they share: noise and timestep sampling from a per-iteration generator (a resumed run draws the same numbers),
noising and regression targets from the scheduler's ``alphas_cumprod`` and ``prediction_type``
(``models/utils/diffusion_training.py``), the per-sample loss DPO builds on, and the split between the trainable
modules and the frozen ones.

**Frozen modules live outside the module tree.** A frozen UNet/VAE/text encoder is attached with
:meth:`add_frozen` (``object.__setattr__``, not ``nn.Module`` registration), so ``state_dict()``,
``load_state_dict``, ``parameters()``, DDP, the optimizer and mmengine's checkpoints see only the trainable modules
(a checkpoint does not copy the 2.6 B-parameter SDXL UNet, and resuming loads strictly: a checkpoint of another
ControlNet shape is an error, not a warning). ``.to()``/``.cuda()`` still move them (:meth:`_apply`), they stay in
``eval()`` mode whatever ``train()`` says, and ``copy.deepcopy`` (mmengine's ``EMAHook`` copies the model) shares
them instead of copying them.

**A resume keeps the training objective.** :meth:`training_objective` (prediction type, caption/control dropout,
timestep density, and what a subclass adds) is recorded in mmengine's ``MessageHub`` at the first training step, so
every checkpoint carries it (``checkpoint['message_hub']``); a resumed run (mmengine restores the hub on ``resume``
only) whose config changes any of them stops at its first step, before any update, with
:class:`~posedreamer_mm.apis.checkpoint.CheckpointMismatchError` naming each setting, the checkpoint's value and the
config's. ``load_from`` (fine-tuning from the weights) starts a new objective and is not checked.
"""
from __future__ import annotations

import copy
import inspect
from typing import Any

import torch
from mmengine.model import BaseModel

from posedreamer_mm.models.utils.diffusion_training import (
    PREDICTION_TYPES,
    ddpm_add_noise,
    diffusion_target,
    dropout_mask,
    flow_add_noise,
    per_sample_mse,
    sample_logit_normal,
    sample_uniform_timesteps,
    shift_sigmas,
    step_generator,
)

#: ``MessageHub`` runtime-info key of :meth:`BaseDiffusionTrainer.training_objective` (saved with checkpoints).
OBJECTIVE_INFO_KEY = 'diffusion_training_objective'
#: The records this process wrote (by identity): a hub value that is none of them was restored by a resume.
_WRITTEN_OBJECTIVES: list[dict] = []


class BaseDiffusionTrainer(BaseModel):
    """Shared training logic of the diffusion trainers (docs/control_training.md, "The model").

    Subclasses set ``self.prediction_type`` (one of ``'epsilon'``, ``'v_prediction'``, ``'flow'``) and, for DDPM
    models, ``self.alphas_cumprod`` (T,) and ``self.num_train_timesteps``, then implement the abstract steps.

    Args:
        caption_dropout: probability of replacing a training caption by the empty prompt (classifier-free
            guidance needs the model to have seen it).
        control_dropout: probability of replacing a training control image by zeros.
        noise_seed: seed of the per-iteration generator of noise, timesteps and dropout (``None``: torch's global
            RNG, not reproducible on resume). The iteration comes from mmengine's ``MessageHub`` (``iter``) inside a
            Runner, else from a counter of forward calls.
        logit_mean, logit_std, flow_shift: the logit-normal timestep density of flow models (ignored otherwise).
        data_preprocessor: defaults to ``DiffusionDataPreprocessor``.
        init_cfg: mmengine's init config (unused by the pretrained components).
    """

    #: Names of the attributes holding the trained modules (the checkpointed state).
    trainable_module_names: tuple[str, ...] = ()
    #: Attributes that are caches (e.g. a pipeline over the live modules): a deep copy gets ``None`` and rebuilds.
    cache_attributes: tuple[str, ...] = ('_pipe',)

    def __init__(self, caption_dropout: float = 0.0, control_dropout: float = 0.0, noise_seed: int | None = 0,
                 logit_mean: float = 0.0, logit_std: float = 1.0, flow_shift: float = 1.0,
                 data_preprocessor: dict | None = None, init_cfg: dict | None = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor or dict(type='DiffusionDataPreprocessor'),
                         init_cfg=init_cfg)
        for name, p in (('caption_dropout', caption_dropout), ('control_dropout', control_dropout)):
            if not 0.0 <= float(p) <= 1.0:
                raise ValueError(f'{type(self).__name__}: {name} must lie in [0, 1], got {p}')
        self.caption_dropout = float(caption_dropout)
        self.control_dropout = float(control_dropout)
        self.noise_seed = None if noise_seed is None else int(noise_seed)
        self.logit_mean, self.logit_std, self.flow_shift = float(logit_mean), float(logit_std), float(flow_shift)
        self.prediction_type = 'epsilon'
        self.alphas_cumprod: torch.Tensor | None = None
        self.num_train_timesteps = 1000
        object.__setattr__(self, '_frozen_names', [])
        object.__setattr__(self, '_calls', 0)
        object.__setattr__(self, '_objective_checked', False)

    # --- frozen modules ---------------------------------------------------------------------------------------
    def add_frozen(self, name: str, module: torch.nn.Module | None) -> None:
        """Attaches ``module`` as ``self.<name>``, frozen (no grad, eval) and outside the module tree."""
        if isinstance(module, torch.nn.Module):
            module.requires_grad_(False).eval()
        object.__setattr__(self, name, module)
        if name not in self._frozen_names:
            self._frozen_names.append(name)

    def frozen_modules(self) -> dict[str, torch.nn.Module]:
        """The frozen modules by name (those that are modules; tokenizers and schedulers are left out)."""
        return {n: getattr(self, n) for n in self._frozen_names if isinstance(getattr(self, n), torch.nn.Module)}

    def _apply(self, fn, recurse: bool = True):
        # .to(device)/.cuda()/.float() move the frozen parts too; casting them to another dtype is the
        # subclass's choice at load time (weight_dtype), so only a device move is applied here.
        super()._apply(fn, recurse)
        for module in self.frozen_modules().values():
            probe = fn(torch.empty(0))
            module.to(probe.device)
        return self

    def train(self, mode: bool = True):
        super().train(mode)
        for module in self.frozen_modules().values():
            module.eval()
        return self

    def __deepcopy__(self, memo):
        # mmengine's EMAHook deep-copies the model: share the frozen parts instead of copying gigabytes of weights
        # nobody averages (they are not in state_dict(), so the EMA never reads them).
        for module in self.frozen_modules().values():
            memo[id(module)] = module
        for name in self.cache_attributes:
            if getattr(self, name, None) is not None:
                memo[id(getattr(self, name))] = None
        cls = type(self)
        new = cls.__new__(cls)
        memo[id(self)] = new
        for key, value in self.__dict__.items():
            object.__setattr__(new, key, copy.deepcopy(value, memo))
        return new

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        # Every loader reaches the top module here with the whole state (torch's load_state_dict, mmengine's
        # resume/load_from, which default to strict=False and only log a layer of another shape, and the EMA
        # hook's): the trained state must fit exactly, or training would go on from partly random weights.
        from posedreamer_mm.apis.checkpoint import CheckpointMismatchError, state_dict_mismatch
        own = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
        diff = state_dict_mismatch(self, own)
        if diff['missing'] or diff['unexpected'] or diff['shape']:
            raise CheckpointMismatchError(
                f'{type(self).__name__}: the checkpoint does not fit the trained modules '
                f'{list(self.trainable_module_names)} of this config: {len(diff["missing"])} missing '
                f'{diff["missing"][:3]}, {len(diff["unexpected"])} unexpected {diff["unexpected"][:3]}, '
                f'{len(diff["shape"])} of another shape {diff["shape"][:3]} (was it written with another '
                'ControlNet/LoRA config?)')
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    # --- the training objective a resume must keep -------------------------------------------------------------
    def training_objective(self) -> dict[str, Any]:
        """The settings that define what the trained modules learn: a resumed run continuing the optimiser state
        under other values would silently optimise another loss. Subclasses add theirs (``super()`` first)."""
        out: dict[str, Any] = dict(prediction_type=self.prediction_type, caption_dropout=self.caption_dropout,
                                   control_dropout=self.control_dropout)
        if self.prediction_type == 'flow':
            out.update(logit_mean=self.logit_mean, logit_std=self.logit_std, flow_shift=self.flow_shift)
        else:
            out['num_train_timesteps'] = int(self.num_train_timesteps)
        return out

    def check_resumed_objective(self) -> None:
        """Compares :meth:`training_objective` with the one a resumed checkpoint recorded, then records this run's
        (once per model, at its first training step; see the module docstring).

        Raises:
            CheckpointMismatchError: naming every changed setting with the checkpoint's and the config's value.
        """
        if self._objective_checked:
            return
        from mmengine.logging import MessageHub

        from posedreamer_mm.apis.checkpoint import CheckpointMismatchError
        hub = MessageHub.get_current_instance()
        own = self.training_objective()
        saved = hub.get_info(OBJECTIVE_INFO_KEY)
        restored = isinstance(saved, dict) and not any(saved is w for w in _WRITTEN_OBJECTIVES)
        if restored and saved != own:
            changed = [f'{k}: checkpoint {saved.get(k, "<not recorded>")!r}, config {own.get(k, "<not set>")!r}'
                       for k in [*own, *(k for k in saved if k not in own)] if saved.get(k) != own.get(k)]
            raise CheckpointMismatchError(
                f'{type(self).__name__}: the resumed checkpoint was trained with another objective ('
                f'{"; ".join(changed)}). Continuing its optimiser state under the new settings would silently train '
                'another loss: resume with the checkpoint\'s settings, or start a new run from its weights with '
                'load_from (without --resume)')
        hub.update_info(OBJECTIVE_INFO_KEY, own)
        _WRITTEN_OBJECTIVES.append(own)
        object.__setattr__(self, '_objective_checked', True)

    # --- the contract's steps (subclasses) --------------------------------------------------------------------
    def encode_prompts(self, prompts: list[str], train: bool, generator: torch.Generator | None = None) -> dict:
        """Denoiser conditioning kwargs for ``prompts``; with ``train`` each is replaced by ``''`` with probability
        ``caption_dropout``."""
        raise NotImplementedError

    def encode_images(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Latents of ``images`` (B, 3, H, W) in [-1, 1], scaled as the pipeline expects; no gradient. A VAE
        posterior sample draws from ``generator`` (:meth:`forward` passes it where the signature has it)."""
        raise NotImplementedError

    def encode_controls(self, controls: torch.Tensor, train: bool, generator: torch.Generator | None = None) -> Any:
        """Control conditioning from ``controls`` (B, C, H, W) in [0, 1]; with ``train`` each is zeroed with
        probability ``control_dropout``."""
        raise NotImplementedError

    def predict(self, noisy: torch.Tensor, t: torch.Tensor, cond: dict, control: Any) -> torch.Tensor:
        """The denoiser's output (same shape as ``noisy``) at timesteps ``t`` (B,)."""
        raise NotImplementedError

    def build_pipeline(self):
        """A diffusers pipeline holding the live modules (for validation)."""
        raise NotImplementedError

    def save_pretrained(self, out_dir) -> None:
        """Writes the trained part in the diffusers layout the generation backends load."""
        raise NotImplementedError

    # --- shared steps -----------------------------------------------------------------------------------------
    def drop_prompts(self, prompts: list[str], generator: torch.Generator | None = None) -> list[str]:
        """``prompts`` with each replaced by ``''`` with probability ``caption_dropout`` (one draw per prompt)."""
        prompts = [str(p) for p in prompts]
        if not prompts or self.caption_dropout == 0:
            return prompts
        drop = dropout_mask(len(prompts), self.caption_dropout, generator=generator)
        return ['' if d else p for p, d in zip(prompts, drop.tolist())]

    def drop_controls(self, controls: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``controls`` with each sample zeroed with probability ``control_dropout``."""
        if self.control_dropout == 0:
            return controls
        keep = ~dropout_mask(controls.shape[0], self.control_dropout, generator=generator)
        return controls * keep.to(controls.device, controls.dtype).reshape(-1, *([1] * (controls.ndim - 1)))

    def sample_noise(self, latents: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Standard normal noise shaped like ``latents`` (drawn on the generator's device, then moved)."""
        device = generator.device if generator is not None else latents.device
        noise = torch.randn(latents.shape, generator=generator, device=device, dtype=torch.float32)
        return noise.to(latents.device, latents.dtype)

    def sample_timesteps(self, n: int, device, generator: torch.Generator | None = None) -> torch.Tensor:
        """Integer timesteps uniform in ``[0, T)`` (DDPM models) or flow sigmas in (0, 1) from the (shifted)
        logit-normal density (``prediction_type='flow'``), shape (n,)."""
        if self.prediction_type == 'flow':
            u = sample_logit_normal(n, self.logit_mean, self.logit_std, generator=generator)
            return shift_sigmas(u, self.flow_shift).to(device)
        return sample_uniform_timesteps(n, self.num_train_timesteps, generator=generator).to(device)

    def noisy_latents(self, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.prediction_type == 'flow':
            return flow_add_noise(latents, noise, t)
        return ddpm_add_noise(self.alphas_cumprod, latents, noise, t)

    def target(self, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f'{type(self).__name__}: prediction_type {self.prediction_type!r} is not one of '
                             f'{PREDICTION_TYPES}')
        return diffusion_target(self.prediction_type, latents, noise, t, self.alphas_cumprod)

    def per_sample_loss(self, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, cond: dict,
                        control: Any) -> torch.Tensor:
        """Mean squared error of the prediction against the target, per sample (B,), float32."""
        pred = self.predict(self.noisy_latents(latents, noise, t), t, cond, control)
        return per_sample_mse(pred, self.target(latents, noise, t))

    def step_generator(self) -> torch.Generator | None:
        """The generator of this iteration's random draws (see ``noise_seed``), on the CPU."""
        if self.noise_seed is None:
            return None
        from mmengine.dist import get_rank
        from mmengine.logging import MessageHub
        step = MessageHub.get_current_instance().get_info('iter')
        if step is None:
            step = self._calls
        object.__setattr__(self, '_calls', self._calls + 1)
        return step_generator(self.noise_seed, int(step), get_rank())

    def forward(self, inputs: dict, data_samples: dict | None = None, mode: str = 'loss'):
        """``mode='loss'``: ``dict(loss=...)``, the mean of :meth:`per_sample_loss` over the batch;
        ``mode='tensor'``: the per-sample losses (B,). ``inputs`` as ``DiffusionDataPreprocessor`` gives them;
        ``data_samples['prompt']`` the captions."""
        if mode not in ('loss', 'tensor'):
            raise ValueError(f"{type(self).__name__}.forward: mode must be 'loss' or 'tensor', got {mode!r} "
                             '(images are generated through build_pipeline(), e.g. by the validation hook)')
        prompts = list((data_samples or {}).get('prompt') or [])
        images = inputs['image']
        if len(prompts) != images.shape[0]:
            raise ValueError(f'{type(self).__name__}: {len(prompts)} prompts for {images.shape[0]} images '
                             "(data_samples['prompt'] must hold one caption per sample; '' for none)")
        train = self.training and mode == 'loss'
        if train:
            self.check_resumed_objective()
        gen = self.step_generator()
        cond = self.encode_prompts(prompts, train=train, generator=gen)
        control = self.encode_controls(inputs['control'], train=train, generator=gen)
        if 'generator' in inspect.signature(self.encode_images).parameters:
            latents = self.encode_images(images, generator=gen)
        else:  # the contract's first form, encode_images(images)
            latents = self.encode_images(images)
        noise = self.sample_noise(latents, gen)
        t = self.sample_timesteps(latents.shape[0], latents.device, gen)
        losses = self.per_sample_loss(latents, noise, t, cond, control)
        if mode == 'tensor':
            return losses
        if not torch.isfinite(losses).all():
            self._non_finite(losses, t, data_samples)
        return dict(loss=losses.mean())

    def _non_finite(self, losses: torch.Tensor, t: torch.Tensor, data_samples: dict | None) -> None:
        """Stops training on a NaN/inf loss before the optimiser sees it (mmengine would step on NaN gradients,
        gradient clipping then spreads NaN into every weight, and only ``loss: nan`` is logged)."""
        from mmengine.logging import MessageHub
        step = MessageHub.get_current_instance().get_info('iter')
        where = f'iteration {int(step) + 1}' if step is not None else 'this batch'
        bad = (~torch.isfinite(losses)).nonzero().flatten().tolist()
        ids = list((data_samples or {}).get('sample_id') or [])
        times = t.flatten().tolist()
        raise FloatingPointError(
            f'{type(self).__name__}: non-finite loss at {where} for samples '
            f'{[ids[i] for i in bad] if ids else bad} (timesteps {[times[i] for i in bad]}); no weights were '
            'updated. Usual causes: float16 overflow (use bfloat16, or vae_dtype=float32 for SDXL), a learning rate '
            'too high; resume from the last checkpoint after fixing it')


__all__ = ['BaseDiffusionTrainer']
