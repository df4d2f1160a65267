"""Registers the test-only steps of ``stub_steps`` in TRANSFORMS; imported by subprocess configs only."""
from posedreamer_mm.registry import TRANSFORMS
from tests.generation.stub_steps import SigkillWorkerAt

TRANSFORMS.register_module(module=SigkillWorkerAt)
