"""Registered training hooks (``custom_hooks=[dict(type=...)]``): control-model validation, diffusers-layout
export, DPO control alignment, per-sample difficulty. Each module registers its hook in ``HOOKS``."""
from .diffusers_export_hook import DiffusersExportHook
from .dpo_control_hook import DPOControlHook
from .tr_dpo_hook import TRDPOHook

__all__ = ['DiffusersExportHook']
__all__ += ['DPOControlHook', 'TRDPOHook']
