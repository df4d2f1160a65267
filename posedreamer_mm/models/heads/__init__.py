"""HMR heads."""
from .smplx_head import SMPLXTransformerHead

__all__ = ['SMPLXTransformerHead']
