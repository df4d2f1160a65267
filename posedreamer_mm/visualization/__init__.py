"""One set of drawing helpers (skeletons, mesh overlays, contact sheets) used by figures, tools and reports."""
from .contact_sheet import make_contact_sheet
from .draw import draw_coco17

__all__ = ['draw_coco17', 'make_contact_sheet']
