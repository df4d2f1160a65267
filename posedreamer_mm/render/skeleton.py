"""OpenPose-18 skeleton control images, drawn as the public ControlNet-openpose checkpoints were trained.

The drawing reproduces ``draw_bodypose`` of lllyasviel's ControlNet 1.1 annotator (also shipped by
``controlnet_aux``): the same 17 limbs (``LIMB_SEQ``, 1-based OpenPose-18 indices) and 18 colours; limbs are
filled ellipses of half-width ``stickwidth = 4`` around each bone, drawn in order over black, then the whole
limb layer is scaled by 0.6 (so limbs are 60 % of their colour, later limbs over earlier ones); then joints are
filled circles of radius 4 in the full joint colours on top. The annotator draws at its detect resolution
(512 on the short side) and resizes; here sizes scale with ``min(W, H) / 512`` instead, so nothing is resampled.

Differences from the annotator, on purpose: joint and ellipse centres are rounded (``round(u)``: the pixel that
contains the projected point under the pixel-centre convention) rather than truncated; joints behind the
camera or outside the image are skipped, and so is every limb that touches one. Hands and face keypoints
(the annotator's ``draw_handpose``/``draw_facepose``) are out of scope.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from posedreamer_mm.registry import RENDERERS

from .base import BaseControlRenderer, project

#: Limbs as 1-based OpenPose-18 index pairs, in the annotator's drawing order (17 drawn).
LIMB_SEQ = ((2, 3), (2, 6), (3, 4), (4, 5), (6, 7), (7, 8), (2, 9), (9, 10), (10, 11), (2, 12), (12, 13),
            (13, 14), (2, 1), (1, 15), (15, 17), (1, 16), (16, 18))
#: RGB colour of limb i and of joint i (OpenPose-18 order: 0 nose, 1 neck, 2 r_sho, ...).
COLORS = ((255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
          (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
          (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85))
#: Fraction of its colour a limb is drawn with.
LIMB_ALPHA = 0.6


def draw_bodypose(canvas: np.ndarray, keypoints: np.ndarray, visible: np.ndarray | None = None,
                  stickwidth: int = 4, radius: int = 4) -> np.ndarray:
    """Draws one OpenPose-18 body onto an RGB canvas (in place), as ControlNet's annotator does.

    Args:
        canvas: (H, W, 3) uint8 RGB image, normally black.
        keypoints: (18, 2) pixel coordinates (u, v) in OpenPose-18 order.
        visible: (18,) bool; invisible joints and their limbs are not drawn (all visible if None).
        stickwidth: half-width of the limb ellipses in pixels.
        radius: joint circle radius in pixels.

    Returns:
        ``canvas``.
    """
    kp = np.asarray(keypoints, dtype=np.float64)
    vis = np.ones(len(kp), bool) if visible is None else np.asarray(visible, bool)
    limbs = np.zeros_like(canvas)
    for (a, b), color in zip(LIMB_SEQ, COLORS):
        i, j = a - 1, b - 1
        if not (vis[i] and vis[j]):
            continue
        (u0, v0), (u1, v1) = kp[i], kp[j]
        length = math.hypot(u0 - u1, v0 - v1)
        angle = math.degrees(math.atan2(v0 - v1, u0 - u1))
        center = (int(round((u0 + u1) / 2)), int(round((v0 + v1) / 2)))
        polygon = cv2.ellipse2Poly(center, (int(length / 2), int(stickwidth)), int(angle), 0, 360, 1)
        cv2.fillConvexPoly(limbs, polygon, color)
    drawn = limbs.any(-1)
    canvas[drawn] = (limbs[drawn] * LIMB_ALPHA).astype(np.uint8)
    for k, color in enumerate(COLORS[:len(kp)]):
        if vis[k]:
            cv2.circle(canvas, (int(round(kp[k, 0])), int(round(kp[k, 1]))), int(radius), color, thickness=-1)
    return canvas


def openpose18(joints: np.ndarray) -> np.ndarray:
    """OpenPose-18 joints from SMPL-X joints (J >= 127), or the joints themselves when J == 18."""
    if len(joints) == 18:
        return joints
    from posedreamer_mm.body.joint_maps import smplx_to_openpose18
    out = smplx_to_openpose18(joints)
    return out.detach().cpu().numpy() if hasattr(out, 'detach') else np.asarray(out)


@RENDERERS.register_module()
class SkeletonRenderer(BaseControlRenderer):
    """OpenPose-18 skeleton control image (H, W, 3) uint8 (ControlNet-openpose convention).

    Args:
        stickwidth: limb half-width at ``ref_resolution``.
        radius: joint radius at ``ref_resolution``.
        ref_resolution: short image side at which ``stickwidth`` and ``radius`` apply (the annotator's detect
            resolution); they scale with ``min(W, H) / ref_resolution``, at least 1 pixel.
        **kwargs: ``size``, ``margin``, ... (:class:`BaseControlRenderer`). The crop is the body's (from the
            vertices), the same as the other control types'.
    """

    control_type = 'openpose'

    def __init__(self, stickwidth: int = 4, radius: int = 4, ref_resolution: int = 512, **kwargs) -> None:
        super().__init__(**kwargs)
        self.stickwidth, self.radius, self.ref_resolution = stickwidth, radius, ref_resolution

    def draw(self, vertices, faces, focal, princpt, img_size, joints):
        if joints is None:
            raise ValueError('SkeletonRenderer needs joints (SMPL-X joints or OpenPose-18, camera frame)')
        w, h = img_size
        kp3d = openpose18(np.asarray(joints, np.float64))
        kp = project(kp3d, focal, princpt)
        px = np.round(kp)
        visible = (kp3d[:, 2] > self.near) & (px[:, 0] >= 0) & (px[:, 0] < w) & (px[:, 1] >= 0) & (px[:, 1] < h)
        scale = min(w, h) / self.ref_resolution
        canvas = np.zeros((h, w, 3), np.uint8)
        draw_bodypose(canvas, kp, visible, stickwidth=max(1, round(self.stickwidth * scale)),
                      radius=max(1, round(self.radius * scale)))
        return dict(image=canvas, keypoints_openpose18=np.concatenate([kp, visible[:, None]], 1))
