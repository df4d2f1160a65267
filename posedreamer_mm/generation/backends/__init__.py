"""Generation backends: the rendering baseline and the diffusers ControlNet / control-LoRA pipelines.

Every backend implements :class:`BaseGenerationBackend` (``setup`` / ``generate`` / ``record``) and is registered
in ``BACKENDS``; configs and weights layouts: ``docs/backends.md``.
"""
from .base import BaseGenerationBackend, sample_generators
from .diffusers_backends import (
                                 FluxControlBackend,
                                 FluxControlNetBackend,
                                 SD15ControlNetBackend,
                                 SDXLControlNetBackend,
                                 SDXLControlNetUnionBackend,
)
from .easycontrol import EasyControlFluxBackend
from .photo import PhotoCropBackend
from .render import RenderBackend
from .weights import WeightsLayoutError

__all__ = ['BaseGenerationBackend', 'sample_generators', 'RenderBackend', 'SD15ControlNetBackend',
           'SDXLControlNetBackend', 'SDXLControlNetUnionBackend', 'FluxControlNetBackend', 'FluxControlBackend',
           'WeightsLayoutError', 'PhotoCropBackend']
__all__ += ['EasyControlFluxBackend']
