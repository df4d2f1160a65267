"""posedreamer_mm: diffusion-generated humans with exact SMPL-X labels, and HMR training on them.

Importing the package applies the compat fixes (``posedreamer_mm.utils.compat``) before any mmpose, mmdet or
mmpretrain module loads: a fallback ``mmcv.ops`` under mmcv-lite, mmpretrain's multimodal switch for
transformers 5, and torch >= 2.6 safe loading of the Runner's own checkpoints.
"""
from .utils.compat import apply_all as _apply_compat_fixes

COMPAT_FIXES = _apply_compat_fixes()

from .version import __version__  # noqa: E402

__all__ = ['__version__', 'COMPAT_FIXES']
