"""Registers the test-only ``NoiseTestBackend`` in GENERATORS; imported by subprocess configs only."""
from posedreamer_mm.registry import GENERATORS
from tests.generation.stub_backend import NoiseTestBackend

GENERATORS.register_module(module=NoiseTestBackend)
