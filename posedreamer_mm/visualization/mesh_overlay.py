"""Meshes drawn over the image they were recovered from (HMR demo, evaluation pictures).

Each mesh is rendered with :class:`~posedreamer_mm.render.ShadedRenderer` at the image's own camera
(``size=None``: no crop, the full image's ``focal``/``princpt``), so a mesh whose full-image camera is right lands
exactly on the person. Several people are composited by depth (the nearer surface wins per pixel), then
alpha-blended over the photo.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

#: Albedo per person (RGB in [0, 1]), cycled.
PERSON_COLORS = ((0.65, 0.74, 0.86), (0.90, 0.70, 0.55), (0.62, 0.85, 0.62), (0.88, 0.62, 0.80),
                 (0.92, 0.88, 0.55))


def render_mesh_overlay(image: np.ndarray, vertices: Sequence[np.ndarray] | np.ndarray, faces: np.ndarray, focal,
                        princpt, alpha: float = 0.8, colors: Sequence[Sequence[float]] = PERSON_COLORS,
                        renderer=None) -> np.ndarray:
    """Draws camera-frame meshes over an RGB image.

    Args:
        image: ``(H, W, 3)`` uint8 RGB (the full image the camera describes).
        vertices: One ``(V, 3)`` array per person (or a ``(P, V, 3)`` array), OpenCV camera frame, metres.
        faces: ``(F, 3)`` triangle indices.
        focal: ``(2,)`` ``(fx, fy)`` pixels of ``image``.
        princpt: ``(2,)`` pixels of ``image``.
        alpha: Opacity of the meshes.
        colors: Albedo per person, cycled.
        renderer: A :class:`~posedreamer_mm.render.ShadedRenderer` with ``size=None`` to reuse (its colour is
            replaced per person); default a new one.

    Returns:
        ``(H, W, 3)`` uint8 RGB: the image with the meshes blended in (unchanged where no mesh is).
    """
    from posedreamer_mm.render import ShadedRenderer

    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f'image must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}')
    h, w = image.shape[:2]
    renderer = renderer or ShadedRenderer(size=None)
    if renderer.size is not None:
        raise ValueError('render_mesh_overlay needs a renderer with size=None (render at the image camera)')
    colour = np.zeros((h, w, 3), np.float32)
    depth = np.full((h, w), np.inf, np.float32)
    for i, verts in enumerate(vertices):
        verts = np.asarray(verts, np.float32)
        if not np.isfinite(verts).all() or not (verts[:, 2] > 0).any():
            continue  # nothing drawable in front of the camera
        renderer.color = tuple(float(c) for c in colors[i % len(colors)])
        out = renderer.render(verts, faces, focal, princpt, img_size=(w, h))
        nearer = out['mask'] & (out['depth'] < depth)
        colour[nearer] = out['image'][nearer]
        depth[nearer] = out['depth'][nearer]
    mask = np.isfinite(depth)
    blended = image.astype(np.float32)
    blended[mask] = (1 - alpha) * blended[mask] + alpha * colour[mask]
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)


__all__ = ['render_mesh_overlay', 'PERSON_COLORS']
