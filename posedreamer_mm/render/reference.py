"""Moved to :mod:`posedreamer_mm.testing.reference_rasterizer` (test-only code); re-exported here for the importers
that have not switched yet. New code imports from ``posedreamer_mm.testing.reference_rasterizer``."""
from posedreamer_mm.testing.reference_rasterizer import box, quad, reference_rasterize, uv_sphere  # noqa: F401

__all__ = ['reference_rasterize', 'uv_sphere', 'box', 'quad']
