from .diffusion_dpo import DiffusionDPO

__all__ = ['DiffusionDPO']
