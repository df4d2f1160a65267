"""SD1.5 / SDXL ControlNet training (``ControlNetTrainer``)."""
from .controlnet_trainer import ControlNetTrainer

__all__ = ['ControlNetTrainer']
