"""Preference losses for diffusion and flow-matching models: Diffusion-DPO, Flow-DPO and their hinge / IPO variants.

Every loss here works on **per-sample denoising errors** ``(B,)`` (mean squared error of a prediction against its
regression target, ``models/utils/diffusion_training.py``'s ``per_sample_mse``) of the trained model and of the
frozen reference, on the winner (``w``) and the loser (``l``) image of each pair, **with the same noise and the
same timestep for winner and loser** (and for model and reference). With

    z = -0.5 * ((err_w_model - err_w_ref) - (err_l_model - err_l_ref))          (per sample)

(the ELBO estimate of the log-likelihood-ratio difference, Wallace et al. 2023), the losses are

- ``'sigmoid'`` (DPO, the paper's): ``-logsigmoid(beta * z)``;
- ``'hinge'`` (SLiC): ``relu(1 - beta * z)``;
- ``'ipo'`` (Azar et al. 2023): ``(z - 1 / (2 * beta)) ** 2``,

each computed **per sample, then averaged** over the batch (never ``-logsigmoid(mean(...))``: the batch mean
inside the sigmoid is a different, weaker loss). The implicit rewards are ``r_w = -0.5 * beta * (err_w_model -
err_w_ref)`` and ``r_l = -0.5 * beta * (err_l_model - err_l_ref)``; ``r_w - r_l = beta * z`` is the reward margin, and
the implicit accuracy is the fraction of pairs with ``r_w > r_l``, a tie counting one half.

**Diffusion-DPO** (Wallace et al. 2023, https://arxiv.org/abs/2311.12908) for epsilon / v-prediction models:
errors against ``eps`` or ``v``; reference ``beta = 5000`` (SD1.5 / SDXL). Written as ``beta' * (ref_diff -
model_diff)`` with ``model_diff = err_w_model - err_l_model``, ``ref_diff = err_w_ref - err_l_ref`` (the form of
diffusers' SD1.5 research script) the same loss has ``beta' = beta / 2``: 2500 there is 5000 here.

**Flow-DPO** (Liu et al. 2025, https://arxiv.org/abs/2501.13918) for rectified-flow models (FLUX): the same form
over the flow-matching errors, the target being ``noise - x0`` at ``x_t = (1 - sigma) x0 + sigma noise``
(:func:`dpo_errors` with ``models/utils/diffusion_training.py``'s ``flow_target`` / ``flow_add_noise``);
reference ``beta = 100``.

``beta`` is a float (an ``int`` is converted, so ``2500`` and ``2500.0`` agree and ``0.5`` is never truncated)
and must be finite and positive (IPO divides by it). Errors in half precision are promoted to float32 before
the differences are taken (``per_sample_mse`` already returns float32): with ``beta`` in the thousands, a bfloat16
logit ``beta * z`` would keep only about three significant digits.
"""
from __future__ import annotations

import dataclasses
import math
import numbers

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from posedreamer_mm.models.utils.diffusion_training import per_sample_mse
from posedreamer_mm.registry import MODELS

#: Supported loss forms.
DPO_LOSS_TYPES = ('sigmoid', 'hinge', 'ipo')
#: Reference betas (Wallace et al. 2023 for SD1.5/SDXL; Flow-DPO for FLUX).
DIFFUSION_DPO_BETA = 5000.0
FLOW_DPO_BETA = 100.0


@dataclasses.dataclass
class DPOOutput:
    """What a DPO loss returns.

    Attributes:
        loss: scalar, the batch mean of ``losses`` (float32, or float64 for float64 errors).
        losses: ``(B,)`` per-pair losses.
        reward_w: ``(B,)`` implicit rewards of the winners, ``-0.5 beta (err_w_model - err_w_ref)``.
        reward_l: ``(B,)`` implicit rewards of the losers.
        reward_margin: scalar, mean of ``reward_w - reward_l`` (``beta * z``).
        implicit_acc: scalar in ``[0, 1]``, fraction of pairs with ``reward_w > reward_l`` (ties count 1/2).
        model_mse: scalar, the model's mean error over winners and losers (the plain denoising loss, to watch).
    """

    loss: Tensor
    losses: Tensor
    reward_w: Tensor
    reward_l: Tensor
    reward_margin: Tensor
    implicit_acc: Tensor
    model_mse: Tensor

    def metrics(self, prefix: str = '') -> dict[str, Tensor]:
        """Detached scalars to log (``implicit_acc``, ``reward_margin``, ``model_mse``)."""
        return {f'{prefix}implicit_acc': self.implicit_acc.detach(),
                f'{prefix}reward_margin': self.reward_margin.detach(), f'{prefix}model_mse': self.model_mse.detach()}


def _positive(value, what: str) -> float:
    """``value`` as a float; raises unless it is a finite positive real number (numpy scalars included; ``bool``
    and strings refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise ValueError(f'{what} must be a finite number > 0, got {value!r}')
    return float(value)


def check_beta(beta: float) -> float:
    """``beta`` as a float; raises unless it is a finite positive number (``bool`` refused)."""
    return _positive(beta, 'DPO beta')


def dpo_loss_from_errors(err_w_model: Tensor, err_l_model: Tensor, err_w_ref: Tensor, err_l_ref: Tensor,
                         beta: float, loss_type: str = 'sigmoid') -> DPOOutput:
    """The DPO loss from per-sample errors (module docstring for the forms).

    Args:
        err_w_model, err_l_model: ``(B,)`` the trained model's errors on winners and losers.
        err_w_ref, err_l_ref: ``(B,)`` the reference model's errors on the same inputs (no gradient needed).
        beta: the DPO temperature (5000 Diffusion-DPO, 100 Flow-DPO).
        loss_type: ``'sigmoid'``, ``'hinge'`` or ``'ipo'``.

    Returns:
        :class:`DPOOutput`.
    """
    beta = check_beta(beta)
    if loss_type not in DPO_LOSS_TYPES:
        raise ValueError(f'DPO loss_type must be one of {DPO_LOSS_TYPES}, got {loss_type!r}')
    errs = [torch.as_tensor(e) for e in (err_w_model, err_l_model, err_w_ref, err_l_ref)]
    shapes = {tuple(e.shape) for e in errs}
    if len(shapes) != 1 or len(next(iter(shapes))) != 1 or errs[0].shape[0] == 0:
        raise ValueError(f'DPO errors must be four (B,) tensors with B >= 1 (one error per pair), got shapes '
                         f'{[tuple(e.shape) for e in errs]}')
    dtype = torch.float32   # at least float32, and the widest of the four (a float64 reference stays float64)
    for e in errs:
        dtype = torch.promote_types(dtype, e.dtype)
    w_m, l_m, w_r, l_r = (e.to(dtype) for e in errs)
    w_r, l_r = w_r.detach(), l_r.detach()
    reward_w = -0.5 * beta * (w_m - w_r)
    reward_l = -0.5 * beta * (l_m - l_r)
    z = -0.5 * ((w_m - w_r) - (l_m - l_r))
    if loss_type == 'sigmoid':
        losses = -F.logsigmoid(beta * z)
    elif loss_type == 'hinge':
        losses = torch.relu(1 - beta * z)
    else:
        losses = (z - 1 / (2 * beta)) ** 2
    margin = (reward_w - reward_l).detach()
    acc = ((margin > 0).to(dtype) + 0.5 * (margin == 0).to(dtype)).mean()
    return DPOOutput(loss=losses.mean(), losses=losses, reward_w=reward_w.detach(),
                     reward_l=reward_l.detach(), reward_margin=margin.mean(), implicit_acc=acc,
                     model_mse=(0.5 * (w_m + l_m)).mean().detach())


def dpo_errors(pred_w: Tensor, pred_l: Tensor, ref_pred_w: Tensor, ref_pred_l: Tensor, target_w: Tensor,
               target_l: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-sample errors ``(err_w_model, err_l_model, err_w_ref, err_l_ref)``, each ``(B,)``, from predictions.

    ``target_*`` is the regression target of each image at the shared noise and timestep: ``eps``, ``v``, or
    ``noise - x0`` for flow models (``models/utils/diffusion_training.py``'s ``diffusion_target``).
    """
    return (per_sample_mse(pred_w, target_w), per_sample_mse(pred_l, target_l),
            per_sample_mse(ref_pred_w, target_w), per_sample_mse(ref_pred_l, target_l))


def diffusion_dpo_loss(err_w_model: Tensor, err_l_model: Tensor, err_w_ref: Tensor, err_l_ref: Tensor,
                       beta: float = DIFFUSION_DPO_BETA, loss_type: str = 'sigmoid') -> DPOOutput:
    """Diffusion-DPO (epsilon / v-prediction errors; reference ``beta`` 5000): :func:`dpo_loss_from_errors`."""
    return dpo_loss_from_errors(err_w_model, err_l_model, err_w_ref, err_l_ref, beta, loss_type)


def flow_dpo_loss(err_w_model: Tensor, err_l_model: Tensor, err_w_ref: Tensor, err_l_ref: Tensor,
                  beta: float = FLOW_DPO_BETA, loss_type: str = 'sigmoid') -> DPOOutput:
    """Flow-DPO (flow-matching errors against ``noise - x0``; reference ``beta`` 100): :func:`dpo_loss_from_errors`."""
    return dpo_loss_from_errors(err_w_model, err_l_model, err_w_ref, err_l_ref, beta, loss_type)


@MODELS.register_module()
class DiffusionDPOLoss(nn.Module):
    """Config-selectable DPO loss: ``loss=dict(type='DiffusionDPOLoss', beta=5000.0, loss_type='sigmoid')``.

    Called with the four ``(B,)`` error tensors; returns :class:`DPOOutput` (the losses of this module docstring).

    Args:
        beta: DPO temperature (5000 for SD1.5/SDXL Diffusion-DPO, 100 for FLUX Flow-DPO).
        loss_type: ``'sigmoid'``, ``'hinge'`` or ``'ipo'``.
        loss_weight: multiplies ``loss`` and ``losses``; a finite number > 0.
    """

    def __init__(self, beta: float = DIFFUSION_DPO_BETA, loss_type: str = 'sigmoid', loss_weight: float = 1.0) -> None:
        super().__init__()
        self.beta = check_beta(beta)
        if loss_type not in DPO_LOSS_TYPES:
            raise ValueError(f'DiffusionDPOLoss: loss_type must be one of {DPO_LOSS_TYPES}, got {loss_type!r}')
        # a NaN weight makes every loss non-finite, a negative one trains towards the losers, 0 trains nothing
        self.loss_type, self.loss_weight = loss_type, _positive(loss_weight, 'DiffusionDPOLoss: loss_weight')

    def forward(self, err_w_model: Tensor, err_l_model: Tensor, err_w_ref: Tensor, err_l_ref: Tensor) -> DPOOutput:
        out = dpo_loss_from_errors(err_w_model, err_l_model, err_w_ref, err_l_ref, self.beta, self.loss_type)
        return dataclasses.replace(out, loss=out.loss * self.loss_weight, losses=out.losses * self.loss_weight)

    def extra_repr(self) -> str:
        return f'beta={self.beta}, loss_type={self.loss_type!r}, loss_weight={self.loss_weight}'


__all__ = ['DIFFUSION_DPO_BETA', 'DPOOutput', 'DPO_LOSS_TYPES', 'DiffusionDPOLoss', 'FLOW_DPO_BETA', 'check_beta',
           'diffusion_dpo_loss', 'dpo_errors', 'dpo_loss_from_errors', 'flow_dpo_loss']
