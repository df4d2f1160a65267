"""A hook that kills its own process at a chosen iteration: a stand-in for a cluster preemption in tests.

Test-only, so it lives under tests/: a config imports it with
``custom_imports = dict(imports=['tests.tools.preemption_hook'])`` (the repository root on ``PYTHONPATH``).
"""
from __future__ import annotations

import os
import signal

from mmengine.hooks import Hook

from posedreamer_mm.registry import HOOKS


@HOOKS.register_module()
class SimulatedPreemptionHook(Hook):
    """SIGKILLs the training process after iteration ``kill_after_iter`` (1-based), like a preempted job.

    Used by the resume tests: nothing gets to clean up, so only what the Runner had already written survives.
    Never put it in a real config.

    Args:
        kill_after_iter: the last iteration that completes.
    """

    priority = 'LOWEST'

    def __init__(self, kill_after_iter: int) -> None:
        self.kill_after_iter = int(kill_after_iter)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if runner.iter + 1 >= self.kill_after_iter:
            os.kill(os.getpid(), signal.SIGKILL)
