"""One set of drawing helpers (skeletons, mesh overlays, contact sheets) used by figures, tools and reports."""
from .draw import draw_coco17

__all__ = ['draw_coco17']
