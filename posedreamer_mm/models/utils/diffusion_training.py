"""Pure helpers of diffusion training: timestep sampling, noising, regression targets, dropout masks, seeds.

Shared by every trainer in ``models/editors/`` (SD1.5/SDXL ControlNet, FLUX control LoRA, DPO). Two families:

- **DDPM-style** (SD1.5, SDXL): integer timesteps ``t`` uniform in ``[0, T)``; ``x_t = sqrt(a_t) x0 +
  sqrt(1 - a_t) eps`` with ``a_t`` the scheduler's ``alphas_cumprod``; the network predicts ``eps`` or the
  velocity ``v = sqrt(a_t) eps - sqrt(1 - a_t) x0`` (Salimans & Ho 2022, https://arxiv.org/abs/2202.00512), as
  the scheduler config's ``prediction_type`` says.
- **Rectified flow** (FLUX, SD3): ``sigma`` in ``(0, 1)`` from a logit-normal density (Esser et al. 2024,
  https://arxiv.org/abs/2403.03206, section 3.1: ``sigma = sigmoid(n)``, ``n ~ N(mean, std)``), optionally shifted
  (``shift * s / (1 + (shift - 1) s)``); ``x_sigma = (1 - sigma) x0 + sigma eps``; target ``eps - x0``. Or from
  the paper's mode density (same section, :func:`sample_mode_timesteps`; diffusers' training scripts call it the
  ``'mode'`` weighting scheme, reference ``mode_scale`` 1.29).

Everything takes an explicit ``torch.Generator`` so that a resumed run draws the same numbers
(:func:`step_generator`).
"""
from __future__ import annotations

import hashlib
import math

import torch

#: Prediction types of diffusers' DDPM-family schedulers (``scheduler.config.prediction_type``) plus ``'flow'``.
PREDICTION_TYPES = ('epsilon', 'v_prediction', 'flow')


def _bcast(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``values`` (B,) reshaped to (B, 1, ..., 1) for broadcasting against ``like`` (B, ...), in its dtype."""
    return values.to(device=like.device, dtype=like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


def step_generator(seed: int, step: int, rank: int = 0, device: torch.device | str = 'cpu') -> torch.Generator:
    """A generator seeded from ``(seed, step, rank)`` only: the noise of iteration ``step`` on rank ``rank`` is the
    same whether the run got there directly or resumed from a checkpoint (mmengine does not store RNG states).

    The three numbers are hashed (not added) so that neighbouring seeds/ranks/steps give unrelated streams.
    """
    digest = hashlib.blake2b(f'{int(seed)}:{int(step)}:{int(rank)}'.encode(), digest_size=8).digest()
    gen = torch.Generator(device=device)
    gen.manual_seed(int.from_bytes(digest, 'little') & ((1 << 63) - 1))
    return gen


def sample_uniform_timesteps(n: int, num_train_timesteps: int, device: torch.device | str = 'cpu',
                             generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` integer timesteps uniform in ``[0, num_train_timesteps)`` (int64, shape (n,)), as DDPM training draws."""
    if num_train_timesteps < 1:
        raise ValueError(f'num_train_timesteps must be >= 1, got {num_train_timesteps}')
    t = torch.randint(0, num_train_timesteps, (n,), generator=generator, device=_gen_device(generator, device))
    return t.to(device)


def sample_logit_normal(n: int, mean: float = 0.0, std: float = 1.0, device: torch.device | str = 'cpu',
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` values ``sigmoid(N(mean, std))`` in ``(0, 1)`` (float32, shape (n,)): the SD3/FLUX training density.

    Its density is ``p(u) = 1 / (std sqrt(2 pi)) / (u (1 - u)) exp(-(logit(u) - mean)^2 / (2 std^2))``.
    """
    if std <= 0:
        raise ValueError(f'logit-normal std must be > 0, got {std}')
    z = torch.randn((n,), generator=generator, device=_gen_device(generator, device))
    return torch.sigmoid(z * std + mean).to(device)


#: Scales for which the mode map is monotone onto ``[0, 1]`` (SD3 paper, section 3.1: ``-1 <= s <= 2 / (pi - 2)``).
MODE_SCALE_RANGE = (-1.0, 2.0 / (math.pi - 2.0))


def mode_density_map(u: torch.Tensor, mode_scale: float = 1.29) -> torch.Tensor:
    """The SD3 paper's mode map ``f(u) = 1 - u - s (cos^2(pi u / 2) - 1 + u)`` (section 3.1): a uniform ``u``
    becomes a value in ``[0, 1]`` whose density has its mode at 1/2 for ``s > 0`` (uniform at ``s = 0``, heavier
    tails for ``s < 0``); symmetric, ``f(1 - u) = 1 - f(u)``."""
    return 1 - u - mode_scale * (torch.cos(math.pi * u / 2) ** 2 - 1 + u)


def sample_mode_timesteps(n: int, mode_scale: float = 1.29, device: torch.device | str = 'cpu',
                          generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` values in ``[0, 1]`` (float32, shape (n,)) from the mode density: :func:`mode_density_map` of
    ``torch.rand`` draws (diffusers' ``compute_density_for_timestep_sampling('mode', ...)``).

    Raises:
        ValueError: ``mode_scale`` outside :data:`MODE_SCALE_RANGE` (the map would leave ``[0, 1]``).
    """
    lo, hi = MODE_SCALE_RANGE
    if not lo <= float(mode_scale) <= hi:
        raise ValueError(f'mode_scale must be in [{lo}, {hi:.4f}] (SD3 paper, section 3.1), got {mode_scale}')
    u = torch.rand((n,), generator=generator, device=_gen_device(generator, device))
    return mode_density_map(u, float(mode_scale)).clamp(0.0, 1.0).to(device)


def shift_sigmas(sigmas: torch.Tensor, shift: float = 1.0) -> torch.Tensor:
    """Resolution shift of flow sigmas: ``shift * s / (1 + (shift - 1) * s)`` (identity at ``shift=1``); the form
    of diffusers' ``FlowMatchEulerDiscreteScheduler`` with a static ``shift``."""
    if shift <= 0:
        raise ValueError(f'shift must be > 0, got {shift}')
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def _gen_device(generator: torch.Generator | None, device) -> torch.device:
    return generator.device if generator is not None else torch.device(device)


def _alphas_at(alphas_cumprod: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    t = t.long()
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= len(alphas_cumprod)):
        raise ValueError(f'timesteps must lie in [0, {len(alphas_cumprod)}), got [{int(t.min())}, {int(t.max())}]')
    return alphas_cumprod.to(t.device)[t].float()


def ddpm_add_noise(alphas_cumprod: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor,
                   t: torch.Tensor) -> torch.Tensor:
    """``sqrt(a_t) x0 + sqrt(1 - a_t) noise`` per sample (``x0``, ``noise`` (B, ...); ``t`` (B,) integers)."""
    a = _alphas_at(alphas_cumprod, t)
    return _bcast(a.sqrt(), x0) * x0 + _bcast((1 - a).sqrt(), x0) * noise


def ddpm_velocity(alphas_cumprod: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor,
                  t: torch.Tensor) -> torch.Tensor:
    """The v-prediction target ``sqrt(a_t) noise - sqrt(1 - a_t) x0`` per sample."""
    a = _alphas_at(alphas_cumprod, t)
    return _bcast(a.sqrt(), x0) * noise - _bcast((1 - a).sqrt(), x0) * x0


def flow_add_noise(x0: torch.Tensor, noise: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """``(1 - sigma) x0 + sigma noise`` per sample (``sigmas`` (B,) in [0, 1])."""
    s = _bcast(sigmas, x0)
    return (1 - s) * x0 + s * noise


def flow_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The rectified-flow velocity ``noise - x0`` (what FLUX's transformer predicts)."""
    return noise - x0


def diffusion_target(prediction_type: str, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor | None = None,
                     alphas_cumprod: torch.Tensor | None = None) -> torch.Tensor:
    """The regression target of ``prediction_type`` (one of :data:`PREDICTION_TYPES`)."""
    if prediction_type == 'epsilon':
        return noise
    if prediction_type == 'v_prediction':
        if t is None or alphas_cumprod is None:
            raise ValueError("the 'v_prediction' target needs the timesteps and the scheduler's alphas_cumprod")
        return ddpm_velocity(alphas_cumprod, x0, noise, t)
    if prediction_type == 'flow':
        return flow_target(x0, noise)
    raise ValueError(f'prediction_type {prediction_type!r} is not one of {PREDICTION_TYPES} (diffusers\' '
                     "'sample' prediction is not supported for training)")


def dropout_mask(n: int, p: float, device: torch.device | str = 'cpu',
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """(n,) bool, True where a sample's condition is dropped, each independently with probability ``p``.

    ``p=0`` drops nothing and ``p=1`` everything, without drawing edge cases from the float comparison.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f'dropout probability must lie in [0, 1], got {p}')
    u = torch.rand((n,), generator=generator, device=_gen_device(generator, device)).to(device)
    return u < p


def per_sample_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error per sample, (B,) float32 (computed in float32 whatever the autocast dtype)."""
    if pred.shape != target.shape:
        raise ValueError(f'prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape')
    return (pred.float() - target.float()).pow(2).reshape(pred.shape[0], -1).mean(dim=1)


__all__ = ['MODE_SCALE_RANGE', 'PREDICTION_TYPES', 'step_generator', 'sample_uniform_timesteps', 'sample_logit_normal',
           'mode_density_map', 'sample_mode_timesteps', 'shift_sigmas',
           'ddpm_add_noise', 'ddpm_velocity', 'flow_add_noise', 'flow_target', 'diffusion_target', 'dropout_mask',
           'per_sample_mse']
