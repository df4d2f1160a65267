"""Registers the test-only ``NoiseTestBackend`` in BACKENDS; imported by subprocess configs only."""
from posedreamer_mm.registry import BACKENDS
from tests.generation.stub_backend import NoiseTestBackend

BACKENDS.register_module(module=NoiseTestBackend)
