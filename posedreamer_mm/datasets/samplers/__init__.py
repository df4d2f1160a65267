"""Registered data samplers (mmengine's ``DATA_SAMPLERS``), e.g. the curriculum ``HardSampleSampler``."""
from .hard_sample_sampler import HardSampleSampler

__all__ = ['HardSampleSampler']
