"""Tiny factories for tests and smoke runs: data and models the tests build themselves (nothing downloads)."""
from .network import free_port
from .tiny_coco import write_tiny_coco

__all__ = ['write_tiny_coco', 'free_port']
