"""Depth, normal and shaded control images from one rasterisation each.

Conventions (``docs/rendering.md``):

- **Depth control** (ControlNet-depth, MiDaS-style): inverse depth ``1 / z`` min-max normalised over the
  foreground pixels of this image, near = bright. The foreground is mapped to ``[fg_range[0], fg_range[1]] *
  255`` (default ``(0.2, 1.0)``: the farthest body point stays distinct from the black background, which MiDaS
  gives to far scenery); ``fg_range=(0, 1)`` is the plain normalisation. Grey, replicated to 3 channels.
  ``clip_percentiles=(2, 98)`` normalises between percentiles instead of the extremes (off by default).
  The metric depth (camera z in metres, 0 background) is returned next to it as the label.
- **Normal control** (ControlNet 1.1 normalbae, ScanNet protocol: "blue is front, red is left, green is
  top"): with camera-frame normals ``n`` in the OpenCV frame (x right, y down, z forward) the colour is
  ``rgb = (1 - n) / 2 * 255``; a surface facing the camera is (128, 128, 255), one facing image-left is red,
  one facing up is green. Background black (0, 0, 0) by default (no unit normal maps there; unambiguous with
  the mask); pass ``background=(128, 128, 255)`` for a flat wall facing the camera instead.
- **Shaded**: Lambert with ambient, light from the camera's side (a headlight tilted up and to the right), grey or
  vertex-coloured; a plain picture for overlays and a rendering-based baseline image.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from posedreamer_mm.registry import RENDERERS

from .base import BaseControlRenderer, to_numpy


def depth_to_control(depth: np.ndarray, mask: np.ndarray | None = None,
                     fg_range: Sequence[float] = (0.2, 1.0),
                     clip_percentiles: Sequence[float] | None = None) -> np.ndarray:
    """ControlNet-depth image from metric depth.

    Args:
        depth: (H, W) camera z in metres (0 or negative = background).
        mask: (H, W) foreground; ``depth > 0`` if None.
        fg_range: fraction of 255 the farthest and the nearest foreground points get.
        clip_percentiles: ``(low, high)`` percentiles (0-100) of the foreground's inverse depth that map to the
            ends of ``fg_range``; pixels beyond them saturate. ``None`` (default): the minimum and maximum. A
            hand reaching towards the camera then no longer squeezes the rest of the body into a few grey levels,
            at the price of the outermost pixels' depth order (everything nearer than the high percentile is
            equally white).

    Returns:
        (H, W, 3) uint8: normalised inverse depth over the foreground, background 0.
    """
    depth = np.asarray(depth, np.float64)
    mask = depth > 0 if mask is None else np.asarray(mask, bool) & (depth > 0)
    out = np.zeros(depth.shape, np.float64)
    if mask.any():
        inv = 1.0 / depth[mask]
        if clip_percentiles is None:
            lo, hi = inv.min(), inv.max()
        else:
            lo, hi = np.percentile(inv, [float(clip_percentiles[0]), float(clip_percentiles[1])])
        t = np.clip((inv - lo) / (hi - lo), 0.0, 1.0) if hi > lo else np.ones_like(inv)
        out[mask] = fg_range[0] + (fg_range[1] - fg_range[0]) * t
    img = np.round(np.clip(out, 0, 1) * 255).astype(np.uint8)
    return np.repeat(img[..., None], 3, axis=-1)


def normal_to_control(normal: np.ndarray, mask: np.ndarray, background: Sequence[int] = (0, 0, 0)) -> np.ndarray:
    """ControlNet-normal (normalbae) image from OpenCV camera-frame unit normals: ``(1 - n) / 2 * 255``.

    Args:
        normal: (H, W, 3) normals, x right, y down, z forward (visible ones point towards the camera, z < 0).
        mask: (H, W) foreground.
        background: RGB of background pixels.

    Returns:
        (H, W, 3) uint8.
    """
    img = np.empty(normal.shape, np.uint8)
    img[:] = np.asarray(background, np.uint8)
    m = np.asarray(mask, bool)
    img[m] = np.round(np.clip((1.0 - normal[m]) * 127.5, 0, 255)).astype(np.uint8)
    return img


def lambert(normal: np.ndarray, mask: np.ndarray, albedo: np.ndarray | Sequence[float] = (0.75, 0.75, 0.75),
            light_dir: Sequence[float] = (0.3, -0.4, -1.0), ambient: float = 0.35,
            background: Sequence[int] = (0, 0, 0)) -> np.ndarray:
    """Lambert shading of camera-frame normals.

    Args:
        normal: (H, W, 3) OpenCV camera-frame unit normals.
        mask: (H, W) foreground.
        albedo: (3,) colour or (H, W, 3) per-pixel colours in [0, 1].
        light_dir: direction from the surface towards the light, camera frame (default: from the camera,
            slightly right and above).
        ambient: ambient fraction; diffuse gets ``1 - ambient``.
        background: RGB of background pixels.

    Returns:
        (H, W, 3) uint8.
    """
    light = np.asarray(light_dir, np.float64)
    light = light / np.linalg.norm(light)
    m = np.asarray(mask, bool)
    shade = ambient + (1.0 - ambient) * np.clip(normal[m] @ light, 0.0, 1.0)
    alb = np.asarray(albedo, np.float64)
    alb = alb[m] if alb.ndim == 3 else alb[None]
    img = np.empty(normal.shape, np.uint8)
    img[:] = np.asarray(background, np.uint8)
    img[m] = np.round(np.clip(alb * shade[:, None], 0, 1) * 255).astype(np.uint8)
    return img


@RENDERERS.register_module()
class DepthRenderer(BaseControlRenderer):
    """ControlNet-depth control image (H, W, 3) uint8; ``render()`` adds metric ``depth`` (m) and ``mask``.

    Args:
        fg_range: fractions of 255 for the farthest and nearest foreground points (see module docstring).
        clip_percentiles: e.g. ``(2, 98)``: normalise between these percentiles of the inverse depth instead of
            its extremes (:func:`depth_to_control`); ``None`` (default) keeps the plain min-max.
        **kwargs: ``size``, ``margin``, ... (:class:`BaseControlRenderer`).
    """

    control_type = 'depth'

    def __init__(self, fg_range: Sequence[float] = (0.2, 1.0), clip_percentiles: Sequence[float] | None = None,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.fg_range = tuple(float(x) for x in fg_range)
        if clip_percentiles is not None:
            clip_percentiles = tuple(float(x) for x in clip_percentiles)
            if not 0 <= clip_percentiles[0] < clip_percentiles[1] <= 100:
                raise ValueError(f'clip_percentiles must be (low, high) with 0 <= low < high <= 100, '
                                 f'got {clip_percentiles}')
        self.clip_percentiles = clip_percentiles

    def draw(self, vertices, faces, focal, princpt, img_size, joints, planes):
        out = self.rasterizer.render(vertices, faces, focal, princpt, img_size, outputs=('mask', 'depth'),
                                     planes=planes)
        out['image'] = depth_to_control(out['depth'], out['mask'], self.fg_range, self.clip_percentiles)
        return out


@RENDERERS.register_module()
class NormalRenderer(BaseControlRenderer):
    """ControlNet-normal control image (H, W, 3) uint8; ``render()`` adds float ``normal`` and ``mask``.

    Args:
        background: RGB of the background (black by default; (128, 128, 255) for a camera-facing wall).
        **kwargs: ``size``, ``margin``, ... (:class:`BaseControlRenderer`).
    """

    control_type = 'normal'

    def __init__(self, background: Sequence[int] = (0, 0, 0), **kwargs) -> None:
        super().__init__(**kwargs)
        self.background = tuple(int(c) for c in background)

    def draw(self, vertices, faces, focal, princpt, img_size, joints, planes):
        out = self.rasterizer.render(vertices, faces, focal, princpt, img_size,
                                     outputs=('mask', 'depth', 'normal'), planes=planes)
        out['image'] = normal_to_control(out['normal'], out['mask'], self.background)
        return out


@RENDERERS.register_module()
class ShadedRenderer(BaseControlRenderer):
    """Lambert-shaded render (H, W, 3) uint8, grey or vertex-coloured; ``render()`` adds ``mask`` and ``depth``.

    Args:
        color: (3,) RGB albedo in [0, 1] used when ``vertex_colors`` is None.
        vertex_colors: optional (V, 3) per-vertex albedo in [0, 1].
        light_dir: direction towards the light in the camera frame.
        ambient: ambient fraction.
        background: RGB of the background.
        **kwargs: ``size``, ``margin``, ... (:class:`BaseControlRenderer`).
    """

    control_type = 'shaded'

    def __init__(self, color: Sequence[float] = (0.75, 0.75, 0.75), vertex_colors: np.ndarray | None = None,
                 light_dir: Sequence[float] = (0.3, -0.4, -1.0), ambient: float = 0.35,
                 background: Sequence[int] = (0, 0, 0), **kwargs) -> None:
        super().__init__(**kwargs)
        self.color = tuple(float(c) for c in color)
        self.vertex_colors = to_numpy(vertex_colors, np.float32)
        self.light_dir, self.ambient = tuple(light_dir), float(ambient)
        self.background = tuple(int(c) for c in background)

    def draw(self, vertices, faces, focal, princpt, img_size, joints, planes):
        outputs = ('mask', 'depth', 'normal') + (('color',) if self.vertex_colors is not None else ())
        out = self.rasterizer.render(vertices, faces, focal, princpt, img_size, colors=self.vertex_colors,
                                     outputs=outputs, planes=planes)
        albedo = out.pop('color') / 255.0 if self.vertex_colors is not None else self.color
        out['image'] = lambert(out['normal'], out['mask'], albedo, self.light_dir, self.ambient, self.background)
        return out
