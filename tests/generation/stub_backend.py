"""A test-only generation backend (a stand-in, not a model): seeded noise over the first control, optional sleep.

It follows ``BaseGenerationBackend``: each image depends only on its own results dict (its seed and controls).
``PDM_TEST_KILL_AFTER_CALLS=N`` makes the process SIGKILL itself after its N-th ``generate`` call (a preemption,
for the resume tests), after ``PDM_TEST_KILL_DELAY_S`` seconds so the writer thread can commit what it has.
Not registered here (registering from a test module would change the registries of the whole test session);
``stub_backend_registered`` registers it for subprocesses through ``custom_imports``.
"""
from __future__ import annotations

import os
import signal
import time

import numpy as np

from posedreamer_mm.generation.backends.base import BaseGenerationBackend


class NoiseTestBackend(BaseGenerationBackend):
    """Test stand-in: ``image = 0.5 * control + 0.5 * noise(seed)``; ``sleep_s`` per call models a denoiser."""

    name = 'noise_test_stub'

    def __init__(self, batch_size: int = 2, sleep_s: float = 0.0, control_type: str = 'pncc') -> None:
        super().__init__(batch_size)
        self.sleep_s, self.control_types = float(sleep_s), [control_type]
        self.calls = 0

    def generate(self, batch: list[dict]) -> list[np.ndarray]:
        h, w = self.check_batch(batch)
        if self.sleep_s:
            time.sleep(self.sleep_s)
        out = []
        for results in batch:
            noise = np.random.default_rng(int(results['seed']) % 2 ** 63).integers(0, 256, (h, w, 3))
            ctrl = results['controls'][self.control_types[0]].astype(np.int64)
            out.append(((ctrl + noise) // 2).astype(np.uint8))
        self.calls += 1
        kill_after = int(os.environ.get('PDM_TEST_KILL_AFTER_CALLS', '0'))
        if kill_after and self.calls >= kill_after:
            time.sleep(float(os.environ.get('PDM_TEST_KILL_DELAY_S', '0')))
            os.kill(os.getpid(), signal.SIGKILL)
        return out

    def record(self) -> dict:
        return dict(super().record(), sleep_s=self.sleep_s)
