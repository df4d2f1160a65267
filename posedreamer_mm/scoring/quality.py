"""Image-quality measures for the quality filter: sharpness (blur) and exposure.

- Sharpness: the variance of the Laplacian of the grey image (Pech-Pacheco et al., ICPR 2000), computed after
  resizing the image so its longer side is ``ref_size`` pixels (the measure depends on resolution; a fixed
  reference size makes thresholds portable across 512- and 1024-pixel generators). Units: grey levels² (0-255).
- Exposure: the mean luminance (Rec. 601 luma) in ``[0, 1]`` and the fractions of pixels crushed to black
  (luma ``<= 2/255``) and blown to white (``>= 253/255``).
"""
from __future__ import annotations

import cv2
import numpy as np

from .base import check_rgb_image


def laplacian_sharpness(img: np.ndarray, ref_size: int = 512, region: np.ndarray | None = None) -> float:
    """Variance of the Laplacian of an RGB image (higher = sharper).

    Args:
        img: ``(H, W, 3)`` uint8 RGB.
        ref_size: the longer side the image is resized to first (pixels).
        region: optional ``(4,)`` box ``x1, y1, x2, y2`` (pixels of ``img``) to measure inside, e.g. the person.

    Returns:
        The variance in grey levels² at ``ref_size``.
    """
    img = check_rgb_image(img, 'laplacian_sharpness')
    if region is not None:
        h, w = img.shape[:2]
        x1, y1, x2, y2 = np.round(np.asarray(region, np.float64)).astype(int)
        x1, x2 = np.clip([x1, x2], 0, w)
        y1, y2 = np.clip([y1, y2], 0, h)
        if x2 - x1 >= 8 and y2 - y1 >= 8:   # a box too small to measure falls back to the whole image
            img = img[y1:y2, x1:x2]
    grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    scale = ref_size / max(grey.shape)
    if scale != 1:
        grey = cv2.resize(grey, (max(1, round(grey.shape[1] * scale)), max(1, round(grey.shape[0] * scale))),
                          interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    return float(cv2.Laplacian(grey.astype(np.float64), cv2.CV_64F).var())


def exposure_stats(img: np.ndarray) -> dict[str, float]:
    """``brightness`` (mean luma in ``[0, 1]``), ``dark_fraction`` and ``bright_fraction`` (clipped pixels)."""
    img = check_rgb_image(img, 'exposure_stats')
    luma = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    return dict(brightness=float(luma.mean() / 255.0), dark_fraction=float((luma <= 2).mean()),
                bright_fraction=float((luma >= 253).mean()))
