"""Diffusion-training models (mmagic's ``models/editors/<algo>/`` layout): one sub-package per algorithm
(ControlNet training, FLUX control LoRA, EasyControl, DPO), each registered in ``MODELS``."""
from .controlnet import ControlNetTrainer
from .dpo import DiffusionDPO
from .easycontrol import EasyControlTrainer
from .flux_control import FluxControlLoRATrainer

__all__ = ['ControlNetTrainer']
__all__ += ['FluxControlLoRATrainer', 'EasyControlTrainer']
__all__ += ['DiffusionDPO']
