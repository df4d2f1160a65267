"""Generation backends: the rendering baseline and the diffusers ControlNet / control-LoRA pipelines.

Every backend implements :class:`BaseGenerationBackend` (``setup`` / ``generate`` / ``record``) and is registered
in ``GENERATORS``; configs and weights layouts: ``docs/backends.md``.
"""
from .base import BaseGenerationBackend, sample_generators
from .render import RenderBackend

__all__ = ['BaseGenerationBackend', 'sample_generators', 'RenderBackend']
