"""Control renderers: PNCC colour maps, OpenPose skeletons, depth, normal and shaded images.

One rasteriser (:class:`MeshRasterizer`, moderngl through headless EGL, CPU llvmpipe or GPU) draws every mesh
based control; the skeleton is drawn with OpenCV in ControlNet's annotator style. Registered renderers
(``RENDERERS``): ``PNCCRenderer``, ``SkeletonRenderer``, ``DepthRenderer``, ``NormalRenderer``,
``ShadedRenderer``. Conventions and measured speed: ``docs/rendering.md``.
"""
from .base import BaseControlRenderer, body_crop_camera
from .egl import (
                  ForkedContextError,
                  egl_device_for_cuda,
                  egl_devices,
                  get_context,
                  gl_device_info,
                  release_thread_context,
)
from .geometry import GeometryError, check_render_geometry, clip_planes, validate_camera
from .maps import DepthRenderer, NormalRenderer, ShadedRenderer, depth_to_control, lambert, normal_to_control
from .pncc import PNCCRenderer, canonical_pncc_colors, pncc_colors
from .rasterizer import MeshRasterizer, default_rasterizer, vertex_normals
from .skeleton import SkeletonRenderer, draw_bodypose
from .visibility import coco17_keypoints, point_visibility

__all__ = [
    'BaseControlRenderer', 'body_crop_camera', 'MeshRasterizer', 'default_rasterizer', 'egl_devices', 'get_context',
    'egl_device_for_cuda', 'ForkedContextError', 'release_thread_context', 'GeometryError',
    'check_render_geometry', 'clip_planes', 'validate_camera', 'coco17_keypoints', 'point_visibility',
    'gl_device_info', 'vertex_normals', 'PNCCRenderer', 'canonical_pncc_colors', 'pncc_colors',
    'SkeletonRenderer', 'draw_bodypose', 'DepthRenderer', 'NormalRenderer', 'ShadedRenderer',
    'depth_to_control', 'normal_to_control', 'lambert'
]
