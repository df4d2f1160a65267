"""Pinhole cameras, projection and square crops (batched torch; numpy accepted where noted).

Conventions (docs/conventions.md, "The sample convention"):

- Camera frame: OpenCV, x right, y down, z forward, metres. A sample's ``global_orient``/``transl`` are already
  in this frame, so no extrinsics are needed. SMPL-X's canonical body is y-up and faces +z; standing it upright
  in front of the camera is a 180-degree rotation about x (:func:`upright_global_orient`), which maps y-up to
  y-down and turns the body to face -z, i.e. towards the camera. The person's left (+x) stays image right.
- Intrinsics: ``focal (fx, fy)`` and ``princpt (cx, cy)`` in pixels; ``u = fx * x / z + cx``.
- Pixel centres: pixel ``(i, j)`` (column i, row j) covers ``[i - 0.5, i + 0.5) x [j - 0.5, j + 0.5)`` and its
  centre is the integer coordinate, as in OpenCV's ``warpAffine``/``remap``. A crop box ``(x, y, w, h)`` is in
  the same continuous coordinates; resizing it to ``out_size`` maps ``u -> (u - x) * out_size / w``, so a
  point at box corner ``(x, y)`` lands at output coordinate 0 (a pixel centre). :func:`crop_image`,
  :func:`crop_points_2d` and :func:`crop_camera` all use exactly this map, so a projected point lands on the
  same image content after a crop.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import torch
from torch import Tensor

from .rotations import axis_angle_to_matrix, matrix_to_axis_angle


def _t(x, like: Tensor | None = None) -> Tensor:
    """Tensor view of array-likes (numpy in, float tensor out), matching ``like``'s dtype/device if given."""
    if isinstance(x, Tensor):
        return x if like is None else x.to(like)
    t = torch.as_tensor(np.asarray(x), dtype=torch.float32 if like is None else like.dtype)
    return t if like is None else t.to(like.device)


def intrinsics_matrix(focal, princpt) -> Tensor:
    """``K`` from ``focal (..., 2)`` and ``princpt (..., 2)`` pixels -> ``(..., 3, 3)``."""
    focal = _t(focal)
    princpt = _t(princpt, focal)
    k = torch.zeros(*focal.shape[:-1], 3, 3, dtype=focal.dtype, device=focal.device)
    k[..., 0, 0], k[..., 1, 1] = focal[..., 0], focal[..., 1]
    k[..., 0, 2], k[..., 1, 2] = princpt[..., 0], princpt[..., 1]
    k[..., 2, 2] = 1.0
    return k


def project_points(points, focal, princpt, eps: float = 1e-8) -> Tensor:
    """Perspective projection of camera-frame points.

    ``z`` is clamped to at least ``eps`` so the result stays finite, which means a point on or **behind** the
    camera plane gets a meaningless, huge coordinate (about ``x / eps * f``, ~1e9 px at 1 m off-axis) instead of
    an error. Check :func:`points_in_front` before using such points; :func:`bbox_from_points` takes that
    mask as ``valid``.

    Args:
        points: ``(..., N, 3)`` OpenCV camera frame, metres (z > 0 in front of the camera).
        focal: ``(..., 2)`` pixels, broadcast over N.
        princpt: ``(..., 2)`` pixels.
        eps: Floor on ``z`` (metres).

    Returns:
        ``(..., N, 2)`` pixel coordinates (meaningful only where :func:`points_in_front`).
    """
    points = _t(points)
    focal, princpt = _t(focal, points)[..., None, :], _t(princpt, points)[..., None, :]
    z = points[..., 2:].clamp(min=eps)
    return points[..., :2] / z * focal + princpt


def unproject_points(uv, depth, focal, princpt) -> Tensor:
    """Inverse of :func:`project_points`: pixels ``(..., N, 2)`` at camera depth ``z (..., N)`` -> ``(..., N, 3)``."""
    uv = _t(uv)
    depth = _t(depth, uv)[..., None]
    focal, princpt = _t(focal, uv)[..., None, :], _t(princpt, uv)[..., None, :]
    return torch.cat([(uv - princpt) / focal * depth, depth], -1)


def transform_points(points, rot, transl) -> Tensor:
    """World -> camera: ``R @ p + t`` for ``points (..., N, 3)``, ``rot (..., 3, 3)``, ``transl (..., 3)``."""
    points = _t(points)
    rot, transl = _t(rot, points), _t(transl, points)
    return points @ rot.transpose(-1, -2) + transl[..., None, :]


def points_in_front(points, eps: float = 1e-8) -> Tensor:
    """``(..., N)`` bool: the camera-frame points ``(..., N, 3)`` that :func:`project_points` projects
    meaningfully (finite, ``z > eps``)."""
    points = _t(points)
    return torch.isfinite(points).all(-1) & (points[..., 2] > eps)


def bbox_from_points(uv, valid=None) -> Tensor:
    """Tight ``(..., 4)`` box ``(x, y, w, h)`` around the finite ``uv (..., N, 2)`` pixels.

    Args:
        uv: Pixel coordinates.
        valid: Optional ``(..., N)`` bool mask of the points to use (e.g. :func:`points_in_front` of the 3D
            points, since projected points behind the camera are meaningless).

    Returns:
        ``(..., 4)``; all NaN where no point is usable.
    """
    uv = _t(uv)
    keep = torch.isfinite(uv).all(-1)
    if valid is not None:
        keep = keep & _t(valid).to(torch.bool).to(uv.device)
    keep = keep[..., None]
    lo = torch.where(keep, uv, torch.full_like(uv, math.inf)).amin(-2)
    hi = torch.where(keep, uv, torch.full_like(uv, -math.inf)).amax(-2)
    box = torch.cat([lo, hi - lo], -1)
    return torch.where(keep.any(-2), box, torch.full_like(box, math.nan))


def square_crop_box(bbox, margin: float = 0.1) -> Tensor:
    """Square box around a box's centre with side ``max(w, h) * (1 + margin)``: ``(..., 4)`` xywh pixels.

    The reference crop for a rendered body is its mesh bbox through this with the default 10 % margin.
    """
    bbox = _t(bbox)
    centre = bbox[..., :2] + bbox[..., 2:] / 2
    side = bbox[..., 2:].amax(-1, keepdim=True) * (1.0 + margin)
    return torch.cat([centre - side / 2, side, side], -1)


def _crop_scale(crop_box: Tensor, out_size) -> Tensor:
    """Output pixels per input pixel, ``(..., 2)``; ``out_size`` is a side or ``(W, H)``."""
    if isinstance(out_size, (int, float, np.integer)):
        out_size = (float(out_size), float(out_size))
    return _t(out_size, crop_box) / crop_box[..., 2:]


def crop_points_2d(uv, crop_box, out_size) -> Tensor:
    """Pixels ``(..., N, 2)`` in the image -> pixels in the crop resized to ``out_size`` (int or ``(W, H)``)."""
    uv = _t(uv)
    crop_box = _t(crop_box, uv)
    scale = _crop_scale(crop_box, out_size)
    return (uv - crop_box[..., None, :2]) * scale[..., None, :]


def crop_camera(focal, princpt, crop_box, out_size) -> tuple[Tensor, Tensor]:
    """Intrinsics of the cropped, resized image: the crop shifts the principal point, the resize scales both.

    Args:
        focal: ``(..., 2)`` pixels.
        princpt: ``(..., 2)`` pixels.
        crop_box: ``(..., 4)`` xywh pixels (may leave the image).
        out_size: Output side (int) or ``(W, H)``.

    Returns:
        ``(focal', princpt')``, each ``(..., 2)``; projecting with them equals :func:`crop_points_2d` of the
        original projection.
    """
    focal = _t(focal)
    princpt, crop_box = _t(princpt, focal), _t(crop_box, focal)
    scale = _crop_scale(crop_box, out_size)
    return focal * scale, (princpt - crop_box[..., :2]) * scale


def crop_image(img: np.ndarray, crop_box, out_size, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """Crops and resizes one ``(H, W, C)`` (or ``(H, W)``) image; outside the image is black.

    Uses the same affine map as :func:`crop_points_2d` (see the module docstring), through ``cv2.warpAffine``.

    Args:
        img: Image array, any dtype cv2 supports.
        crop_box: ``(4,)`` xywh pixels (numpy or tensor).
        out_size: Output side (int) or ``(W, H)``.
        interpolation: cv2 flag (``INTER_NEAREST`` for label maps).

    Returns:
        ``(H_out, W_out[, C])`` array of ``img``'s dtype.
    """
    x, y, w, h = (float(v) for v in np.asarray(crop_box, np.float64).reshape(4))
    ow, oh = (out_size, out_size) if isinstance(out_size, (int, np.integer)) else (int(out_size[0]), int(out_size[1]))
    sx, sy = ow / w, oh / h
    mat = np.array([[sx, 0.0, -x * sx], [0.0, sy, -y * sy]])
    return cv2.warpAffine(img, mat, (ow, oh), flags=interpolation, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


#: Canonical (y-up, facing +z) -> OpenCV camera (y-down, facing the camera): 180 degrees about x.
CANONICAL_TO_CAMERA = np.diag([1.0, -1.0, -1.0])


def _f64(x) -> Tensor:
    """Float64 tensor of a float, numpy array or tensor (rotations are composed in float64)."""
    if isinstance(x, Tensor):
        return x.to(torch.float64)
    return torch.as_tensor(np.asarray(x, np.float64))


def _ry(yaw: Tensor) -> Tensor:
    """``(..., 3, 3)`` rotations by ``yaw (...,)`` radians about +y."""
    c, s = torch.cos(yaw), torch.sin(yaw)
    one, zero = torch.ones_like(c), torch.zeros_like(c)
    return torch.stack([c, zero, s, zero, one, zero, -s, zero, c], -1).reshape(*yaw.shape, 3, 3)


def upright_rotation(yaw_rad) -> Tensor:
    """``Rx(pi) @ Ry(yaw)``: the camera-frame root rotation of an upright body at heading ``yaw_rad``.

    Args:
        yaw_rad: Scalar or ``(...,)`` radians (float, numpy or tensor).

    Returns:
        ``(..., 3, 3)`` float64 rotation matrices.
    """
    return torch.as_tensor(CANONICAL_TO_CAMERA) @ _ry(_f64(yaw_rad))


def upright_global_orient(yaw_rad, dtype=torch.float32, tilt=None) -> Tensor:
    """Camera-frame ``global_orient`` of an upright body turned by ``yaw_rad`` about its vertical axis.

    ``R = Rx(pi) @ Ry(yaw) [@ tilt]``: first tilt the canonical y-up body (optional), turn it about its own
    vertical (+y) axis, then flip it into the OpenCV camera frame. ``yaw = 0`` faces the camera (its left hand on
    the image's right); positive yaw turns it counter-clockwise seen from above. With ``tilt``, this inverts
    :func:`split_heading`.

    Without ``tilt`` the rotation is a half turn about ``(cos(yaw / 2), 0, sin(yaw / 2))``, so its axis-angle has
    two valid signs; this returns the one with ``cos(yaw / 2) >= 0`` (as scipy's ``as_rotvec`` does), continuous in
    yaw on ``(-pi, pi)``.

    Args:
        yaw_rad: Scalar or ``(...,)`` radians (float, numpy or tensor).
        dtype: Output dtype.
        tilt: Optional ``(..., 3, 3)`` rotation applied in the canonical frame before the heading.

    Returns:
        ``(..., 3)`` axis-angle.
    """
    if tilt is not None:
        return matrix_to_axis_angle(upright_rotation(yaw_rad) @ _f64(tilt)).to(dtype)
    half = _f64(yaw_rad) / 2
    c, s = torch.cos(half), torch.sin(half)
    sign = 1.0 - 2.0 * (c < 0).to(c.dtype)
    return (math.pi * sign[..., None] * torch.stack([c, torch.zeros_like(c), s], -1)).to(dtype)


def upright_global_orient_np(yaw_rad, tilt=None) -> np.ndarray:
    """:func:`upright_global_orient` for numpy sample data: ``(..., 3)`` float32 axis-angle."""
    return upright_global_orient(yaw_rad, torch.float32, tilt).numpy()


def split_heading(global_orient) -> tuple[Tensor, Tensor]:
    """Splits a camera-frame root rotation into heading (yaw about the vertical) and the remaining tilt.

    ``global_orient == Rx(pi) @ Ry(yaw) @ tilt`` where ``tilt`` keeps the canonical forward axis (+z) in the
    canonical y-z plane (no heading). Assumes a level camera (vertical = camera -y). Inverse of
    :func:`upright_global_orient` with ``tilt``.

    Args:
        global_orient: ``(..., 3)`` axis-angle, camera frame (numpy or tensor).

    Returns:
        ``(yaw (...,) radians, tilt (..., 3, 3))``, both float64 tensors.
    """
    rot = axis_angle_to_matrix(_f64(global_orient))
    rel = torch.as_tensor(CANONICAL_TO_CAMERA).T @ rot
    yaw = torch.atan2(rel[..., 0, 2], rel[..., 2, 2])  # the canonical forward axis is rel's third column
    return yaw, _ry(-yaw) @ rel


def look_at_distance(height_m: float, focal_px: float, image_px: int, fill: float = 0.8) -> float:
    """Camera distance (m) at which a ``height_m`` tall person fills ``fill`` of a ``image_px`` tall image."""
    return height_m * focal_px / (fill * image_px)


__all__ = ['intrinsics_matrix', 'project_points', 'points_in_front', 'unproject_points', 'transform_points',
           'bbox_from_points', 'square_crop_box', 'crop_camera', 'crop_points_2d', 'crop_image',
           'upright_rotation', 'upright_global_orient',
           'upright_global_orient_np', 'split_heading', 'look_at_distance', 'CANONICAL_TO_CAMERA']
