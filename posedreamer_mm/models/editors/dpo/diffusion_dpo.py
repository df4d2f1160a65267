"""DPO fine-tuning of a control model with a LoRA (docs/dpo.md): Diffusion-DPO for epsilon / v-prediction models
(Wallace et al. 2023, https://arxiv.org/abs/2311.12908), Flow-DPO for flow-matching models (Liu et al. 2025,
https://arxiv.org/abs/2501.13918).

The policy is any diffusion trainer of ``models/editors/`` (``ControlNetTrainer``, ``FluxControlLoRATrainer``,
...), built from its nested config. Everything in it is frozen; a peft LoRA adapter (``adapter_name``, default
``'dpo'``) is added to the denoiser's attention projections (and optionally the ControlNet's), and only that
adapter is trained. **The reference model is the same network with that adapter switched off**
(:meth:`DiffusionDPO.reference`): no second copy of the weights. Adapters that the policy already had (a FLUX
control LoRA) stay on in both the policy and the reference.
"""
from __future__ import annotations

import contextlib
import math
import numbers
import os
from pathlib import Path
from typing import Any, Sequence

import torch

from posedreamer_mm.models.editors.base_diffusion import BaseDiffusionTrainer
from posedreamer_mm.models.losses.dpo_losses import DIFFUSION_DPO_BETA, FLOW_DPO_BETA, DiffusionDPOLoss, DPOOutput
from posedreamer_mm.registry import MODELS

#: The attention projections of diffusers' UNet / ControlNet / FLUX blocks (the Diffusion-DPO LoRA targets).
ATTENTION_TARGETS = ('to_q', 'to_k', 'to_v', 'to_out.0')
#: Where the LoRA goes: the denoiser, the ControlNet, or both.
LORA_PLACES = ('denoiser', 'controlnet', 'both')


@MODELS.register_module()
class DiffusionDPO(BaseDiffusionTrainer):
    """Trains a DPO LoRA on (winner, loser, control, prompt) pairs over a frozen diffusion trainer.

    Winner and loser of a pair get the **same noise and timestep** (and the reference the same as the model):
    the policy's ``sample_noise`` / ``sample_timesteps`` draw once per pair from the iteration's generator
    (``noise_seed`` of the policy), and its ``per_sample_loss`` gives the four ``(B,)`` errors the loss
    (``models/losses/dpo_losses.py``) compares. Logged per iteration: ``loss``, ``implicit_acc``,
    ``reward_margin``, ``model_mse`` and ``ref_mse`` (mean errors over winners and losers) and
    ``err_w_diff`` / ``err_l_diff`` (model minus reference on winners / losers: DPO pushes the first down and the
    second up). The last values are also kept in :attr:`last_metrics` for hooks.

    Only the adapter is in ``state_dict()`` (``lora_layers``), so checkpoints hold only the LoRA and resuming loads
    it strictly. bf16: give the policy ``dtype='bfloat16'`` (SD) / ``weight_dtype='bfloat16'`` (FLUX); the adapter
    stays float32 and ``AmpOptimWrapper`` autocasts. Gradient checkpointing: the policy's
    ``gradient_checkpointing=True``. Accumulation: the optim wrapper's ``accumulative_counts``.

    Args:
        policy: the diffusion trainer config (``MODELS``), e.g. ``dict(type='ControlNetTrainer', pretrained=...,
            controlnet=<trained ControlNet folder>)``, or a built one. Set its dropouts to 0 (DPO compares the
            model on the pair's own caption and control).
        loss: ``DiffusionDPOLoss`` arguments (``beta``, ``loss_type`` = ``'sigmoid'`` / ``'hinge'`` / ``'ipo'``,
            ``loss_weight``); ``beta`` defaults to 5000 (Diffusion-DPO) for epsilon / v models and 100 (Flow-DPO)
            for flow models, chosen from the policy's ``prediction_type``.
        lora: ``r`` (rank), ``lora_alpha`` (scale ``alpha / r``; default ``r``), ``target_modules`` (default the
            attention projections), ``on`` (``'denoiser'``, ``'controlnet'`` or ``'both'``), ``lora_dropout``.
        policy_checkpoint: an mmengine checkpoint of the policy's own training (control training, issue 17),
            loaded strictly into the policy before the adapter is added (e.g. a trained FLUX control LoRA).
        adapter_name: the peft adapter's name.
        reference_adapter: keep the reference as a second, frozen adapter (``<adapter_name>_ref``, same shape,
            starting at zero = the policy) instead of the adapter switched off, so that a TR-DPO hook
            (``TRDPOHook``) can move it towards the policy (:meth:`update_reference`). It is checkpointed with the
            LoRA (``ref_layers``).
        data_preprocessor: defaults to ``DiffusionDataPreprocessor`` (``image_w``/``image_l`` to [-1, 1]).
    """

    trainable_module_names = ('lora_layers',)

    def __init__(self, policy: dict | BaseDiffusionTrainer, loss: dict | None = None, lora: dict | None = None,
                 policy_checkpoint: str | os.PathLike | None = None, adapter_name: str = 'dpo',
                 reference_adapter: bool = False, data_preprocessor: dict | None = None,
                 init_cfg: dict | None = None) -> None:
        super().__init__(noise_seed=None, data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        built = MODELS.build(policy) if isinstance(policy, dict) else policy
        if not isinstance(built, BaseDiffusionTrainer):
            raise TypeError(f'DiffusionDPO: policy must build a diffusion trainer (BaseDiffusionTrainer), got '
                            f'{type(built).__name__}')
        if policy_checkpoint is not None:
            _load_policy_checkpoint(built, policy_checkpoint)
        self.add_frozen('policy', built)  # frozen, outside state_dict(), moved with .to(), kept in eval()
        self.prediction_type = built.prediction_type
        self.adapter_name = str(adapter_name)
        self.ref_adapter_name = f'{self.adapter_name}_ref' if reference_adapter else None
        self.loss = self._build_loss(loss)
        self.lora_config, self.part_names = self._add_adapters(dict(lora or {}))
        self.lora_layers = self._collect(self.adapter_name)
        if self.ref_adapter_name is not None:
            self.ref_layers = self._collect(self.ref_adapter_name)
        if not len(self.lora_layers):
            raise ValueError(f'DiffusionDPO: lora target_modules {list(self.lora_config.target_modules)} matched no '
                             f'layer of {list(self.parts)}')
        self._freeze()
        self.last_metrics: dict[str, float] = {}

    # --- building -----------------------------------------------------------------------------------------------
    def _build_loss(self, loss: dict | None):
        cfg = dict(loss or {})
        cfg.setdefault('type', 'DiffusionDPOLoss')  # the registered loss, named or not (docs/dpo.md writes both)
        if 'form' in cfg:  # the spelling
            cfg['loss_type'] = cfg.pop('form')
        cls = cfg['type'] if isinstance(cfg['type'], type) else MODELS.get(cfg['type'])
        if not (isinstance(cls, type) and issubclass(cls, DiffusionDPOLoss)):
            raise TypeError(f'DiffusionDPO: loss type must be DiffusionDPOLoss (it returns the DPOOutput the training '
                            f'step logs), got {cfg["type"]!r}')
        if cfg.get('beta') is None:
            cfg['beta'] = FLOW_DPO_BETA if self.prediction_type == 'flow' else DIFFUSION_DPO_BETA
        return MODELS.build(cfg)

    def denoiser_name(self) -> str:
        for name in ('unet', 'transformer'):
            if isinstance(getattr(self.policy, name, None), torch.nn.Module):
                return name
        raise ValueError(f'DiffusionDPO: the policy {type(self.policy).__name__} has neither a unet nor a transformer')

    def _lora_config(self, lora: dict):
        """peft's ``LoraConfig`` from the ``lora`` dict and the target names as given, every value checked here (one
        error naming the key; peft would truncate ``r=2.5``, split a string target into letters, accept
        ``lora_alpha=0``)."""
        from peft import LoraConfig
        unknown = set(lora) - {'r', 'lora_alpha', 'target_modules', 'on', 'lora_dropout'}
        if unknown:
            raise ValueError(f'DiffusionDPO: lora takes r, lora_alpha, target_modules, on, lora_dropout; unknown '
                             f'{sorted(unknown)}')
        r = lora.get('r', 8)
        if isinstance(r, bool) or not isinstance(r, numbers.Real) or not float(r).is_integer() or r < 1:
            raise ValueError(f'DiffusionDPO: lora r (the rank) must be a whole number >= 1, got {r!r}')
        r = int(r)
        alpha = lora.get('lora_alpha', r)
        if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not math.isfinite(alpha) or alpha <= 0:
            raise ValueError(f'DiffusionDPO: lora lora_alpha must be a finite number > 0 (the LoRA output is scaled '
                             f'by lora_alpha / r: 0 would make an adapter that never trains), got {alpha!r}')
        dropout = lora.get('lora_dropout', 0.0)
        if dropout != 0:
            raise ValueError(f'DiffusionDPO: lora lora_dropout must be 0, got {dropout!r}: the policy\'s modules stay '
                             'in eval mode, so peft would never apply it (and winner, loser and reference must pass '
                             'through one network)')
        targets = lora.get('target_modules', ATTENTION_TARGETS)
        targets = [targets] if isinstance(targets, str) else list(targets)
        if not targets or not all(isinstance(t, str) and t for t in targets):
            raise ValueError(f'DiffusionDPO: lora target_modules must be a non-empty list of module names (matched as '
                             f'name suffixes, e.g. {list(ATTENTION_TARGETS)}), got {targets!r}')
        return LoraConfig(r=r, lora_alpha=float(alpha), init_lora_weights=True, lora_dropout=0.0,
                          target_modules=targets), targets

    def _add_adapters(self, lora: dict):
        config, targets = self._lora_config(lora)
        on = lora.get('on', 'denoiser')
        if on not in LORA_PLACES:
            raise ValueError(f'DiffusionDPO: lora on must be one of {LORA_PLACES}, got {on!r}')
        names = []
        if on in ('denoiser', 'both'):
            names.append(self.denoiser_name())
        if on in ('controlnet', 'both'):
            if not isinstance(getattr(self.policy, 'controlnet', None), torch.nn.Module):
                raise ValueError(f"DiffusionDPO: lora on={on!r} but the policy {type(self.policy).__name__} has no "
                                 'ControlNet')
            names.append('controlnet')
        parts = {}
        for name in names:
            part = getattr(self.policy, name)
            before = list(getattr(part, 'peft_config', {}) or {})
            if self.adapter_name in before:
                raise ValueError(f'DiffusionDPO: the policy\'s {name} already has an adapter named '
                                 f'{self.adapter_name!r}: choose another adapter_name')
            try:
                part.add_adapter(config, adapter_name=self.adapter_name)
            except ValueError as err:
                if 'not found' in str(err):  # peft: "Target modules {...} not found in the base model"
                    raise ValueError(f'DiffusionDPO: lora target_modules {targets} matched no layer of the policy\'s '
                                     f'{name} ({type(part).__name__}): {err}') from err
                raise ValueError(f'DiffusionDPO: peft cannot add the LoRA (target_modules {targets}) to the policy\'s '
                                 f'{name} ({type(part).__name__}): {err}') from err
            if self.ref_adapter_name is not None:
                part.add_adapter(config, adapter_name=self.ref_adapter_name)  # inactive outside reference()
            if before or self.ref_adapter_name is not None:
                # add_adapter activates only the new adapter: keep the policy's own (a control LoRA) on
                part.set_adapters(before + [self.adapter_name])
            parts[name] = part
        adapted = [key for part in parts.values() for key, module in part.named_modules()
                   if isinstance(getattr(module, 'lora_A', None), torch.nn.ModuleDict)
                   and self.adapter_name in module.lora_A]
        unmatched = [t for t in targets if not any(k == t or k.endswith(f'.{t}') for k in adapted)]
        if unmatched:  # peft adds the LoRA where any target matches and ignores the others (a typo trains less)
            raise ValueError(f'DiffusionDPO: lora target_modules {unmatched} matched no layer of the policy\'s '
                             f'{" or ".join(names)} (the others of {targets} did; a target matches a module whose '
                             'name is it or ends with ".<target>")')
        return config, tuple(parts)

    @property
    def parts(self) -> dict[str, torch.nn.Module]:
        """The adapted modules of the policy by attribute name (looked up, not stored: a deep copy of this model,
        e.g. mmengine's EMA copy, shares the policy and must not copy its UNet)."""
        return {name: getattr(self.policy, name) for name in self.part_names}

    def _collect(self, adapter: str) -> torch.nn.ModuleDict:
        """The ``lora_A``/``lora_B`` layers of ``adapter`` in every adapted part, float32, by module path."""
        layers = torch.nn.ModuleDict()
        for part_name, part in self.parts.items():
            for name, module in part.named_modules():
                if name.endswith(('lora_A', 'lora_B')) and isinstance(module, torch.nn.ModuleDict) \
                        and adapter in module:
                    layers[f'{part_name}/{name.replace(".", "/")}'] = module[adapter].float()
        return layers

    @torch.no_grad()
    def update_reference(self, alpha: float = 1.0) -> None:
        """TR-DPO: ``ref <- (1 - alpha) ref + alpha policy`` on the reference adapter's factors. Exact for
        ``alpha = 1`` (the reference becomes the current policy); for ``alpha < 1`` the factors are mixed, which is
        not the mix of the LoRA deltas ``B A`` (docs/dpo.md, "TR-DPO")."""
        if self.ref_adapter_name is None:
            raise RuntimeError('DiffusionDPO.update_reference needs reference_adapter=True (the reference is the '
                               'adapter switched off otherwise)')
        if not 0.0 < float(alpha) <= 1.0:
            raise ValueError(f'DiffusionDPO.update_reference: alpha must lie in (0, 1], got {alpha}')
        for key, ref in self.ref_layers.items():
            ref.weight.lerp_(self.lora_layers[key].weight.to(ref.weight.dtype), float(alpha))

    def _freeze(self) -> None:
        """Only the DPO adapter trains (peft's adapter switches set ``requires_grad`` on whatever they activate)."""
        for part in self.parts.values():
            part.requires_grad_(False)
        self.lora_layers.requires_grad_(True)
        if self.ref_adapter_name is not None:
            self.ref_layers.requires_grad_(False)

    # --- the reference ----------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def reference(self):
        """Inside, the DPO adapter is off: the policy (and any pipeline over it, :meth:`build_pipeline`) is the
        reference model, i.e. exactly the network before DPO (with ``reference_adapter=True``: the reference
        adapter takes its place)."""
        from peft.tuners.tuners_utils import BaseTunerLayer
        switched = []
        for part in self.parts.values():
            for module in part.modules():
                if isinstance(module, BaseTunerLayer) and self.adapter_name in module.active_adapters:
                    active = list(module.active_adapters)
                    others = [a for a in active if a != self.adapter_name]
                    if self.ref_adapter_name is not None:
                        others.append(self.ref_adapter_name)
                    if others:
                        module.set_adapter(others)
                    else:
                        module.enable_adapters(False)
                    switched.append((module, active, bool(others)))
        try:
            yield self
        finally:
            for module, active, had_others in switched:
                if had_others:
                    module.set_adapter(active)
                else:
                    module.enable_adapters(True)
            self._freeze()

    # --- the contract's steps (delegated to the policy: the DPO model is a diffusion trainer too) ---------------
    def encode_prompts(self, prompts, train, generator=None):
        return self.policy.encode_prompts(prompts, train=train, generator=generator)

    def encode_images(self, images, generator=None):
        return self.policy.encode_images(images, generator=generator)

    def encode_controls(self, controls, train, generator=None):
        return self.policy.encode_controls(controls, train=train, generator=generator)

    def predict(self, noisy, t, cond, control):
        return self.policy.predict(noisy, t, cond, control)

    def sample_noise(self, latents, generator=None):
        return self.policy.sample_noise(latents, generator)

    def sample_timesteps(self, n, device, generator=None):
        return self.policy.sample_timesteps(n, device, generator)

    def noisy_latents(self, latents, noise, t):
        return self.policy.noisy_latents(latents, noise, t)

    def target(self, latents, noise, t):
        return self.policy.target(latents, noise, t)

    def per_sample_loss(self, latents, noise, t, cond, control):
        return self.policy.per_sample_loss(latents, noise, t, cond, control)

    def step_generator(self):
        return self.policy.step_generator()

    def build_pipeline(self):
        """The policy's pipeline over the live modules, adapter on; for the base model's images call it inside
        ``with model.reference():``."""
        return self.policy.build_pipeline()

    # --- training ---------------------------------------------------------------------------------------------
    def dpo_errors(self, inputs: dict, prompts: Sequence[str], train: bool):
        """``(err_w_model, err_l_model, err_w_ref, err_l_ref, t)``: the four ``(B,)`` errors at one noise and one
        timestep per pair."""
        img_w, img_l = inputs['image_w'], inputs['image_l']
        if img_w.shape != img_l.shape:
            raise ValueError(f'DiffusionDPO: winner images {tuple(img_w.shape)} and loser images '
                             f'{tuple(img_l.shape)} differ in shape (both of a pair must have the same size)')
        if len(prompts) != img_w.shape[0]:
            raise ValueError(f'DiffusionDPO: {len(prompts)} prompts for {img_w.shape[0]} pairs '
                             "(data_samples['prompt'] must hold one caption per pair)")
        gen = self.step_generator()
        cond = self.encode_prompts(list(prompts), train=train, generator=gen)
        control = self.encode_controls(inputs['control'], train=train, generator=gen)
        # the VAE posterior draw is shared too: identical winner and loser images give identical latents
        if gen is None:  # noise_seed=None: the policy draws from torch's global RNG; replay its state for the loser
            with torch.random.fork_rng(devices=_cuda_devices()):
                lat_w = self.encode_images(img_w, generator=None)
        else:
            state = gen.get_state()
            lat_w = self.encode_images(img_w, generator=gen)
            gen.set_state(state)
        lat_l = self.encode_images(img_l, generator=gen)
        noise = self.sample_noise(lat_w, gen)
        t = self.sample_timesteps(lat_w.shape[0], lat_w.device, gen)
        err_w = self.per_sample_loss(lat_w, noise, t, cond, control)
        err_l = self.per_sample_loss(lat_l, noise, t, cond, control)
        with torch.no_grad(), self.reference():
            ref_w = self.per_sample_loss(lat_w, noise, t, cond, control)
            ref_l = self.per_sample_loss(lat_l, noise, t, cond, control)
        return err_w, err_l, ref_w, ref_l, t

    def forward(self, inputs: dict, data_samples: dict | None = None, mode: str = 'loss'):
        """``mode='loss'``: the DPO loss and its metrics (module docstring); ``mode='tensor'``: the per-pair
        :class:`~posedreamer_mm.models.losses.dpo_losses.DPOOutput`."""
        if mode not in ('loss', 'tensor'):
            raise ValueError(f"DiffusionDPO.forward: mode must be 'loss' or 'tensor', got {mode!r}")
        missing = [k for k in ('image_w', 'image_l', 'control') if k not in inputs]
        if missing:
            raise KeyError(f'DiffusionDPO: inputs lack {missing} (a DPO pair dataset packs image_w, image_l and '
                           f'control; got {sorted(inputs)})')
        prompts = list((data_samples or {}).get('prompt') or [])
        if self.training and mode == 'loss':
            self.check_resumed_objective()
        err_w, err_l, ref_w, ref_l, t = self.dpo_errors(inputs, prompts, self.training and mode == 'loss')
        out: DPOOutput = self.loss(err_w, err_l, ref_w, ref_l)
        if mode == 'tensor':
            return out
        # every error too: an infinite model error on a loser gives a finite loss (sigmoid, hinge: 0) and NaN
        # gradients, an infinite reference error a finite loss and a meaningless margin
        finite = torch.isfinite(torch.stack([e.float() for e in (err_w, err_l, ref_w, ref_l, out.losses)])).all(0)
        if not finite.all():
            self.policy._non_finite(out.losses.detach().masked_fill(~finite, float('nan')), t, data_samples)
        metrics = dict(out.metrics(), ref_mse=(0.5 * (ref_w + ref_l)).mean().detach(),
                       err_w_diff=(err_w - ref_w).mean().detach(), err_l_diff=(err_l - ref_l).mean().detach())
        self.last_metrics = {k: float(v) for k, v in metrics.items()}
        return dict(loss=out.loss, **metrics)

    # --- export -------------------------------------------------------------------------------------------------
    def lora_state_dicts(self) -> dict[str, dict[str, torch.Tensor]]:
        """Per adapted part, the adapter's weights in peft's naming (``<module>.lora_A.weight``), float32, CPU."""
        from peft.utils import get_peft_model_state_dict
        return {name: {k: v.detach().float().cpu().contiguous()
                       for k, v in get_peft_model_state_dict(part, adapter_name=self.adapter_name).items()}
                for name, part in self.parts.items()}

    def save_pretrained(self, out_dir: str | os.PathLike) -> None:
        """Writes the LoRA in diffusers' format with its adapter metadata (rank and alpha; without them a LoRA
        with ``lora_alpha != r`` reloads at the wrong scale):

        - the denoiser's: ``out_dir/pytorch_lora_weights.safetensors`` (the pipeline's ``save_lora_weights``),
          loaded by the generation backends as ``loras=[dict(path=out_dir)]``;
        - the ControlNet's (``on='controlnet'``/``'both'``): ``out_dir/controlnet/`` (``save_lora_adapter``),
          loaded as ``loras=[dict(path=out_dir/'controlnet', target='controlnet')]``.
        """
        with self._own_weights_live():
            self._save(Path(os.fspath(out_dir)))

    @contextlib.contextmanager
    def _own_weights_live(self):
        """Puts this model's LoRA weights into the policy's adapter for the body. They already are, except in a
        deep copy (mmengine's EMA copy shares the policy but holds its own averaged ``lora_layers``)."""
        live = self._collect(self.adapter_name)
        swapped = [(live[k], live[k].weight.detach().clone(), layer) for k, layer in self.lora_layers.items()
                   if live[k] is not layer]
        with torch.no_grad():
            for module, _, own in swapped:
                module.weight.copy_(own.weight)
        try:
            yield
        finally:
            with torch.no_grad():
                for module, backup, _ in swapped:
                    module.weight.copy_(backup)

    def _save(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        layers = self.lora_state_dicts()
        denoiser = self.denoiser_name()
        if denoiser in layers:
            pipe_cls = type(self.build_pipeline())
            pipe_cls.save_lora_weights(out, safe_serialization=True, **{
                f'{denoiser}_lora_layers': layers[denoiser],
                f'{denoiser}_lora_adapter_metadata': self.lora_config.to_dict()})
        if 'controlnet' in layers:
            self.policy.controlnet.save_lora_adapter(os.fspath(out / 'controlnet'), adapter_name=self.adapter_name,
                                                     safe_serialization=True)

    def generation_loras(self, out_dir: str | os.PathLike, weight: float = 1.0) -> list[dict]:
        """The backends' ``loras=[...]`` entries for a folder written by :meth:`save_pretrained`."""
        out = Path(os.fspath(out_dir))
        specs = []
        if self.denoiser_name() in self.parts:
            specs.append(dict(path=os.fspath(out), weight=weight, name='dpo'))
        if 'controlnet' in self.parts:
            specs.append(dict(path=os.fspath(out / 'controlnet'), weight=weight, name='dpo_controlnet',
                              target='controlnet'))
        return specs

    def training_objective(self) -> dict[str, Any]:
        """The policy's objective (its dropouts draw the pairs' captions and controls), the DPO loss's and the LoRA's
        ``lora_alpha`` (the LoRA's scale ``alpha / r``: a checkpoint of another alpha has the same shapes and would
        load into a different model; rank and targets change the shapes and the strict load refuses them)."""
        return dict(self.policy.training_objective(), beta=self.loss.beta, loss_type=self.loss.loss_type,
                    loss_weight=self.loss.loss_weight, lora_alpha=float(self.lora_config.lora_alpha))

    def record(self) -> dict[str, Any]:
        """The settings that decide the LoRA (for logs and docs)."""
        return dict(policy=type(self.policy).__name__, prediction_type=self.prediction_type, beta=self.loss.beta,
                    loss_type=self.loss.loss_type, r=self.lora_config.r, lora_alpha=self.lora_config.lora_alpha,
                    targets=sorted(self.lora_config.target_modules), parts=list(self.parts))


def _cuda_devices() -> list[int]:
    """The CUDA device whose RNG a global-RNG draw uses (the current one), none on a CPU-only run."""
    return [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []


def _load_policy_checkpoint(policy: BaseDiffusionTrainer, path: str | os.PathLike) -> None:
    """Loads an mmengine checkpoint of the policy's own training (its ``state_dict``) strictly."""
    from mmengine.runner.checkpoint import _load_checkpoint
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'DiffusionDPO: policy_checkpoint {path} does not exist (an mmengine .pth checkpoint '
                                'of the control training is expected)')
    ckpt = _load_checkpoint(path, map_location='cpu')
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else ckpt
    state = {k[len('module.'):] if k.startswith('module.') else k: v for k, v in state.items()}
    policy.load_state_dict(state, strict=True)


__all__ = ['ATTENTION_TARGETS', 'DiffusionDPO', 'LORA_PLACES']
