"""TR-DPO: the DPO reference moves towards the policy during training (Gorbatovski et al. 2024,
https://arxiv.org/abs/2404.09656; docs/dpo.md, "TR-DPO")."""
from __future__ import annotations

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from posedreamer_mm.registry import HOOKS


@HOOKS.register_module()
class TRDPOHook(Hook):
    """Every ``interval`` iterations: ``ref <- (1 - alpha) ref + alpha policy`` (``DiffusionDPO.update_reference``).

    Needs ``DiffusionDPO(reference_adapter=True)``: the reference is then a second, frozen adapter (checkpointed
    with the LoRA, so a resumed run continues from the same reference). ``alpha = 1`` (TR-DPO's hard update) is
    exact; ``alpha < 1`` mixes the LoRA factors, an approximation of mixing the models (docs/dpo.md).

    Args:
        interval: update every this many training iterations (TR-DPO's ``tau``; mmengine counts micro-batches, so
            multiply by the accumulation to count optimiser steps).
        alpha: the update weight in ``(0, 1]``.
    """

    priority = 'LOW'  # after the optimiser step of the iteration

    def __init__(self, interval: int = 512, alpha: float = 1.0) -> None:
        if int(interval) < 1:
            raise ValueError(f'TRDPOHook: interval must be >= 1, got {interval}')
        if not 0.0 < float(alpha) <= 1.0:
            raise ValueError(f'TRDPOHook: alpha must lie in (0, 1], got {alpha}')
        self.interval, self.alpha = int(interval), float(alpha)

    def before_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        if getattr(model, 'ref_adapter_name', None) is None:
            raise TypeError(f'TRDPOHook: the model {type(model).__name__} has no reference adapter (use '
                            'DiffusionDPO with reference_adapter=True)')

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if self.every_n_train_iters(runner, self.interval):
            model = runner.model.module if is_model_wrapper(runner.model) else runner.model
            model.update_reference(self.alpha)


__all__ = ['TRDPOHook']
