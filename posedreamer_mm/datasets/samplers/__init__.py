"""Registered data samplers (mmengine's ``DATA_SAMPLERS``), e.g. the curriculum ``HardSampleSampler``."""
