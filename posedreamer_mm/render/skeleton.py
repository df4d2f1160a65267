"""OpenPose-18 skeleton control images, drawn as the public ControlNet-openpose preprocessors draw them.

The drawing reproduces ``draw_bodypose`` of ``controlnet_aux`` (``src/controlnet_aux/open_pose/util.py``, the
preprocessor diffusers users feed to ``lllyasviel/control_v11p_sd15_openpose``; sd-webui-controlnet draws the
same): the 17 limbs (``joint_maps.OPENPOSE18_LIMBS``) and 18 colours (``joint_maps.OPENPOSE18_COLORS``); limbs
are filled ellipses of half-width ``stickwidth = 4`` around each bone, drawn in order over black, then the whole
limb layer is scaled by 0.6 (so limbs are 60 % of their colour, later limbs over earlier ones); then joints are
filled circles of radius 4 in the full joint colours on top. The annotator draws at its detect resolution
(512 on the short side) and resizes; here sizes scale with ``min(W, H) / 512`` instead, so nothing is resampled.
ControlNet 1.0's annotator (and the copy in ControlNet-v1-1-nightly read for this, commit 3b3a7d6) draws the
joints first and blends each limb over them at 0.4/0.6: limb interiors are the same, joint discs differ.

Differences from the annotator, on purpose: joint and ellipse centres are rounded (``floor(u + 0.5)``: the pixel
that contains the projected point under the pixel-centre convention, ``visibility.pixel_index``) rather than
truncated; joints behind the camera or outside the image are skipped, and so is every limb that touches one.
The face points (nose, eyes, ears: SMPL-X surface vertices) are skipped too where the body hides them, i.e.
where they lie more than ``face_occlusion_m`` (2 cm) behind the rendered surface at their pixel, as OpenPose
would not detect them: a nose drawn on the back of a head reads as a face towards the camera. Hands and face
landmarks (the annotator's ``draw_handpose``/``draw_facepose``) are out of scope.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from posedreamer_mm.body.joint_maps import OPENPOSE18_COLORS, OPENPOSE18_LIMBS
from posedreamer_mm.registry import RENDERERS

from .base import BaseControlRenderer, project
from .visibility import in_image, occluded, pixel_index

#: Fraction of its colour a limb is drawn with.
LIMB_ALPHA = 0.6
#: OpenPose-18 indices of the face points (nose, right/left eye, right/left ear): surface points.
FACE_POINTS = (0, 14, 15, 16, 17)


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
    for (i, j), color in zip(OPENPOSE18_LIMBS, OPENPOSE18_COLORS):
        if not (vis[i] and vis[j]):
            continue
        (u0, v0), (u1, v1) = kp[i], kp[j]
        length = math.hypot(u0 - u1, v0 - v1)
        angle = math.degrees(math.atan2(v0 - v1, u0 - u1))
        center = tuple(int(c) for c in pixel_index(np.array([[(u0 + u1) / 2, (v0 + v1) / 2]]))[0])
        polygon = cv2.ellipse2Poly(center, (int(length / 2), int(stickwidth)), int(angle), 0, 360, 1)
        cv2.fillConvexPoly(limbs, polygon, color)
    drawn = limbs.any(-1)
    canvas[drawn] = (limbs[drawn] * LIMB_ALPHA).astype(np.uint8)
    for k, color in enumerate(OPENPOSE18_COLORS[:len(kp)]):
        if vis[k]:
            cv2.circle(canvas, tuple(int(c) for c in pixel_index(kp[k:k + 1])[0]), int(radius), color, thickness=-1)
    return canvas


def openpose18(joints: np.ndarray) -> np.ndarray:
    """OpenPose-18 camera-frame points from SMPL-X joints (J >= 127), or the joints themselves when J == 18.

    The neck is the 3D midpoint of the shoulders. (``joint_maps.coco17_to_openpose18`` reads a third column as
    visibility and gives the neck the smaller shoulder value: right for (x, y, visibility), a neck up to the
    shoulders' depth difference too near for (x, y, z).)
    """
    if len(joints) == 18:
        return joints
    from posedreamer_mm.body.joint_maps import smplx_to_openpose18
    out = smplx_to_openpose18(joints)
    out = np.array(out.detach().cpu().numpy() if hasattr(out, 'detach') else out, dtype=np.float64)
    out[1] = (out[2] + out[5]) / 2
    return out


@RENDERERS.register_module()
class SkeletonRenderer(BaseControlRenderer):
    """OpenPose-18 skeleton control image (H, W, 3) uint8 (ControlNet-openpose convention).

    Args:
        stickwidth: limb half-width at ``ref_resolution``.
        radius: joint radius at ``ref_resolution``.
        ref_resolution: short image side at which ``stickwidth`` and ``radius`` apply (the annotator's detect
            resolution); they scale with ``min(W, H) / ref_resolution``, at least 1 pixel.
        face_occlusion_m: face points (nose, eyes, ears) more than this many metres behind the rendered body
            surface at their pixel are not drawn (one depth-only rasterisation of the mesh); ``None`` draws
            them wherever they project. Body joints lie inside the body and are never tested.
        **kwargs: ``size``, ``margin``, ... (:class:`BaseControlRenderer`). The crop is the body's (from the
            vertices), the same as the other control types'.
    """

    control_type = 'openpose'

    def __init__(self, stickwidth: int = 4, radius: int = 4, ref_resolution: int = 512,
                 face_occlusion_m: float | None = 0.02, **kwargs) -> None:
        super().__init__(**kwargs)
        self.stickwidth, self.radius, self.ref_resolution = stickwidth, radius, ref_resolution
        self.face_occlusion_m = None if face_occlusion_m is None else float(face_occlusion_m)

    def draw(self, vertices, faces, focal, princpt, img_size, joints, planes):
        if joints is None:
            raise ValueError('SkeletonRenderer needs joints (SMPL-X joints or OpenPose-18, camera frame)')
        w, h = img_size
        kp3d = openpose18(np.asarray(joints, np.float64))
        kp = project(kp3d, focal, princpt)
        # Visibility as the COCO labels judge it (render.visibility): in the image and in front of the near
        # plane; face points also not hidden by the body by more than face_occlusion_m.
        visible = in_image(kp3d, kp, (w, h), min_depth=planes[0])
        face = np.array(FACE_POINTS)
        test = face[visible[face]]
        if self.face_occlusion_m is not None and len(test):
            depth, origin = self._depth_around(vertices, faces, focal, princpt, kp[test], planes)
            visible[test] &= ~occluded(kp3d[test], kp[test] - origin, depth, self.face_occlusion_m)
        scale = min(w, h) / self.ref_resolution
        canvas = np.zeros((h, w, 3), np.uint8)
        draw_bodypose(canvas, kp, visible, stickwidth=max(1, round(self.stickwidth * scale)),
                      radius=max(1, round(self.radius * scale)))
        return dict(image=canvas, keypoints_openpose18=np.concatenate([kp, visible[:, None]], 1))

    def _depth_around(self, vertices, faces, focal, princpt, uv: np.ndarray,
                      planes: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Rendered depth of a square window around pixels ``uv`` (N, 2), and the window's top-left pixel.

        Only the face points need depth, so the window (a side of 64 px or a multiple: few framebuffer sizes) is
        rasterised instead of the image: ~0.8 ms instead of ~6 ms at 512 px on one llvmpipe core. Shifting the
        principal point by the integer origin keeps every pixel's centre, so the depths are the full image's.
        """
        px = pixel_index(uv)
        origin = px.min(0) - 2
        side = int(-(-int((px.max(0) + 3 - origin).max()) // 64) * 64)
        window = self.rasterizer.render(vertices, faces, focal, np.asarray(princpt, np.float64) - origin, (side, side),
                                        outputs=('depth',), planes=planes)
        return window['depth'], origin
