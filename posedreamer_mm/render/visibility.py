"""Keypoint visibility: the one implementation behind COCO-17 labels and the skeleton control's hidden points.

A keypoint is judged in three steps, always the same way:

1. **In the image**: its pixel is ``pixel_index(u, v)`` = ``floor(u + 0.5), floor(v + 0.5)`` (pixel ``i`` covers
   ``[i - 0.5, i + 0.5)``, docs/conventions.md; unlike ``np.round`` this never rounds a tie to the even side),
   which must lie in ``[0, W) x [0, H)``, and the point must lie in front of the camera (``z > min_depth``,
   finite).
2. **Occluded**: the rendered surface depth ``d`` at that pixel (0 = background) is nearer than the point by
   *strictly more* than its margin: ``z - d > margin``. A point exactly ``margin`` behind the surface is visible.
3. Flags as COCO: 2 visible, 1 occluded by the body (labelled, not seen), 0 outside the image or behind the
   camera.

Margins: COCO's face keypoints (nose, eyes, ears) are SMPL-X surface vertices, so a few centimetres suffice
(:data:`FACE_OCCLUSION_MARGIN_M`); the other keypoints are joints inside the body (a shoulder joint lies ~5-8 cm
under the skin), so their margin must exceed half a limb's thickness (:data:`JOINT_OCCLUSION_MARGIN_M`). A
heuristic, good for visibility flags. ``inf`` means "never occluded" (the skeleton does not test body joints).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from posedreamer_mm.body.joint_maps import SMPLX_TO_COCO17

FACE_OCCLUSION_MARGIN_M = 0.02
JOINT_OCCLUSION_MARGIN_M = 0.15
#: Per COCO-17 keypoint (COCO order): the first five are the face's surface points.
OCCLUSION_MARGINS_M = np.array([FACE_OCCLUSION_MARGIN_M] * 5 + [JOINT_OCCLUSION_MARGIN_M] * 12)
#: COCO visibility flags.
VIS_OUTSIDE, VIS_OCCLUDED, VIS_VISIBLE = 0.0, 1.0, 2.0


def pixel_index(uv: np.ndarray) -> np.ndarray:
    """``(N, 2)`` int64 pixel (column, row) containing each point ``uv (N, 2)``: ``floor(uv + 0.5)``.

    Non-finite coordinates map to ``-1`` (outside every image).
    """
    uv = np.asarray(uv, np.float64)
    finite = np.isfinite(uv).all(-1, keepdims=True)
    # Clip before the cast so a huge coordinate (a point near the camera plane) cannot overflow int64.
    px = np.floor(np.clip(np.where(finite, uv, -1.0), -2.0 ** 40, 2.0 ** 40) + 0.5)
    return px.astype(np.int64)


def in_image(points: np.ndarray, uv: np.ndarray, img_size: Sequence[int], min_depth: float = 0.0) -> np.ndarray:
    """``(N,)`` bool: finite points in front of the camera (``z > min_depth``) whose pixel is inside the image.

    Args:
        points: ``(N, 3)`` camera-frame points, metres.
        uv: ``(N, 2)`` their projections, pixels.
        img_size: ``(W, H)`` pixels.
        min_depth: metres; points at or nearer than this are outside (a renderer passes its near plane).
    """
    points = np.asarray(points, np.float64)
    w, h = int(img_size[0]), int(img_size[1])
    px = pixel_index(uv)
    front = np.isfinite(points).all(-1) & (points[:, 2] > min_depth)
    return front & (px[:, 0] >= 0) & (px[:, 0] < w) & (px[:, 1] >= 0) & (px[:, 1] < h)


def occluded(points: np.ndarray, uv: np.ndarray, depth: np.ndarray, margins: float | np.ndarray) -> np.ndarray:
    """``(N,)`` bool: points lying behind the rendered surface at their pixel by strictly more than their margin.

    Args:
        points: ``(N, 3)`` camera-frame points, metres.
        uv: ``(N, 2)`` their projections in the pixels of ``depth``.
        depth: ``(H, W)`` rendered camera z of the visible surface, metres (0 = background).
        margins: metres, a scalar or ``(N,)``; ``inf`` = never occluded.

    Returns:
        ``z - depth[pixel] > margin`` where the pixel is inside ``depth`` and not background, else False.
    """
    points = np.asarray(points, np.float64)
    depth = np.asarray(depth)
    h, w = depth.shape
    px = pixel_index(uv)
    inside = (px[:, 0] >= 0) & (px[:, 0] < w) & (px[:, 1] >= 0) & (px[:, 1] < h)
    d = np.zeros(len(points))
    d[inside] = depth[px[inside, 1], px[inside, 0]]
    margins = np.broadcast_to(np.asarray(margins, np.float64), (len(points),))
    with np.errstate(invalid='ignore'):
        return inside & (d > 0) & (points[:, 2] - d > margins)


def point_visibility(points: np.ndarray, uv: np.ndarray, img_size: Sequence[int], depth: np.ndarray | None,
                     margins: float | np.ndarray, min_depth: float = 0.0) -> np.ndarray:
    """COCO visibility flags ``(N,)`` float: 2 visible, 1 occluded, 0 outside the image or behind the camera.

    Args:
        points: ``(N, 3)`` camera-frame points, metres.
        uv: ``(N, 2)`` projections, pixels of the image ``img_size`` (and of ``depth``).
        img_size: ``(W, H)``.
        depth: ``(H, W)`` rendered depth (0 = background), or ``None`` to skip the occlusion test.
        margins: see :func:`occluded`.
        min_depth: see :func:`in_image`.
    """
    inside = in_image(points, uv, img_size, min_depth)
    vis = np.where(inside, VIS_VISIBLE, VIS_OUTSIDE)
    if depth is not None:
        h, w = np.asarray(depth).shape
        if (w, h) != (int(img_size[0]), int(img_size[1])):
            raise ValueError(f'depth map is {w}x{h} but the keypoints are in a {img_size[0]}x{img_size[1]} image')
        vis[inside & occluded(points, uv, depth, margins)] = VIS_OCCLUDED
    return vis


def coco17_keypoints(joints_2d: np.ndarray, joints_3d: np.ndarray, img_size: Sequence[int], depth: np.ndarray | None,
                     margins: np.ndarray = OCCLUSION_MARGINS_M, min_depth: float = 0.0) -> np.ndarray:
    """COCO-17 keypoints with visibility from SMPL-X joints.

    Args:
        joints_2d: ``(J, 2)`` projected SMPL-X joints, pixels (J = 127 or 144).
        joints_3d: ``(J, 3)`` camera-frame joints, metres.
        img_size: ``(W, H)`` pixels.
        depth: ``(H, W)`` rendered metric depth (0 = background), or None to skip the occlusion test.
        margins: ``(17,)`` metres, see :data:`OCCLUSION_MARGINS_M`.
        min_depth: joints at or nearer than this depth (metres) are flagged 0.

    Returns:
        ``(17, 3)`` float32: x, y, visibility (2 visible, 1 occluded by the body, 0 outside the image), as COCO.
    """
    joints_2d, joints_3d = np.asarray(joints_2d), np.asarray(joints_3d)
    if joints_2d.ndim != 2 or joints_3d.ndim != 2 or len(joints_2d) != len(joints_3d) \
            or len(joints_3d) <= int(np.max(SMPLX_TO_COCO17)):
        raise ValueError(f'coco17_keypoints needs SMPL-X joints (J >= 127): joints_2d {joints_2d.shape}, '
                         f'joints_3d {joints_3d.shape}')
    uv = joints_2d[SMPLX_TO_COCO17, :2]
    vis = point_visibility(joints_3d[SMPLX_TO_COCO17], uv, img_size, depth, margins, min_depth)
    return np.concatenate([uv, vis[:, None]], axis=1).astype(np.float32)


__all__ = ['FACE_OCCLUSION_MARGIN_M', 'JOINT_OCCLUSION_MARGIN_M', 'OCCLUSION_MARGINS_M', 'VIS_OUTSIDE',
           'VIS_OCCLUDED', 'VIS_VISIBLE', 'pixel_index', 'in_image', 'occluded', 'point_visibility',
           'coco17_keypoints']
