"""Utilities: compat fixes (applied on ``import posedreamer_mm``) and component registration."""
from .compat import apply_all as apply_compat_fixes
from .setup_env import register_all_modules

__all__ = ['apply_compat_fixes', 'register_all_modules']
