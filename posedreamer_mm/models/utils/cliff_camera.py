"""CLIFF-style full-frame camera (Li et al., ECCV 2022, https://arxiv.org/abs/2208.00571).

A crop-based HMR head predicts a weak-perspective camera ``(s, tx, ty)`` for its crop. CLIFF feeds the crop's
position and size in the full image (normalised by the full image's focal length) into the head and turns the
crop camera into a perspective translation of the full image, so the projected body matches the *full* image
and the supervision is the full-image reprojection (the crop only resamples it).

Conventions: OpenCV camera frame (x right, y down, z forward, metres); ``focal (fx, fy)``, ``princpt (cx, cy)``
and crop boxes in full-image pixels (docs/conventions.md, "HMR data"). A crop region is given by its centre and
its size ``(w, h)`` in full-image pixels (``bbox_center``/``bbox_scale`` of the packed metainfo); ``b =
max(w, h)`` is the side the weak-perspective scale refers to: the crop side spans 2 units, and a point ``X``
metres from the body origin (parallel to the image plane) lands ``s * X`` units from the camera's ``(tx, ty)``.
"""
from __future__ import annotations

import torch
from torch import Tensor


def crop_side(bbox_scale: Tensor) -> Tensor:
    """``(B,)`` side ``b = max(w, h)`` in pixels of ``(B, 2)`` crop sizes."""
    return bbox_scale.amax(-1)


def cliff_bbox_info(bbox_center: Tensor, bbox_scale: Tensor, focal: Tensor, princpt: Tensor) -> Tensor:
    """The head's conditioning: crop position and size relative to the full-image camera, ``(B, 3)``.

    CLIFF's normalisation (its ``bbox_info``): ``(cx - px) / f * 2.8``, ``(cy - py) / f * 2.8`` and
    ``(b - 0.24 f) / (0.06 f)``, which put typical values in about ``[-1, 1]``. CLIFF uses the image centre; this
    uses the principal point, which is the same for centred cameras and correct otherwise.

    Args:
        bbox_center: ``(B, 2)`` crop centre, full-image pixels.
        bbox_scale: ``(B, 2)`` crop ``(w, h)``, full-image pixels.
        focal: ``(B, 2)`` full-image ``(fx, fy)`` pixels.
        princpt: ``(B, 2)`` full-image principal point, pixels.
    """
    f = focal.mean(-1)
    b = crop_side(bbox_scale)
    offset = (bbox_center - princpt) / focal * 2.8
    size = (b - 0.24 * f) / (0.06 * f)
    return torch.cat([offset, size[:, None]], -1)


def crop_cam_to_full_translation(pred_cam: Tensor, bbox_center: Tensor, bbox_scale: Tensor, focal: Tensor,
                                 princpt: Tensor, eps: float = 1e-9) -> Tensor:
    """Weak-perspective crop camera ``(s, tx, ty)`` -> camera-frame translation ``(B, 3)`` metres (CLIFF).

    ``tz = 2 fx / (b s)``; the crop centre's offset from the principal point shifts the body by
    ``(c - p) * tz / f`` so that the body origin, projected with the full-image camera, lands where the crop
    camera put it. With ``fx == fy`` this is CLIFF's ``cam_crop2full``.

    Args:
        pred_cam: ``(B, 3)`` ``(s, tx, ty)``; ``s > 0`` (the head keeps it positive).
        bbox_center: ``(B, 2)`` crop centre, full-image pixels.
        bbox_scale: ``(B, 2)`` crop ``(w, h)``, full-image pixels.
        focal: ``(B, 2)`` full-image focal, pixels.
        princpt: ``(B, 2)`` full-image principal point, pixels.
        eps: Guards the division when ``s`` is 0.

    Returns:
        ``(B, 3)`` translation to add to the body (SMPL-X ``transl``), camera frame, metres.
    """
    s, txy = pred_cam[:, 0], pred_cam[:, 1:]
    bs = crop_side(bbox_scale) * s + eps
    tz = 2.0 * focal[:, 0] / bs
    xy = txy + (bbox_center - princpt) * tz[:, None] / focal
    return torch.cat([xy, tz[:, None]], -1)


def full_translation_to_crop_cam(transl: Tensor, bbox_center: Tensor, bbox_scale: Tensor, focal: Tensor,
                                 princpt: Tensor) -> Tensor:
    """Inverse of :func:`crop_cam_to_full_translation`: ``(B, 3)`` translation -> ``(B, 3)`` ``(s, tx, ty)``."""
    tz = transl[:, 2]
    s = 2.0 * focal[:, 0] / (crop_side(bbox_scale) * tz)
    txy = transl[:, :2] - (bbox_center - princpt) * tz[:, None] / focal
    return torch.cat([s[:, None], txy], -1)


def apply_affine(points: Tensor, affine: Tensor) -> Tensor:
    """``(B, N, 2)`` points through ``(B, 2, 3)`` affine maps (e.g. the packed ``crop_trans``: full image -> crop)."""
    return points @ affine[:, :, :2].transpose(1, 2) + affine[:, None, :, 2]


__all__ = ['crop_side', 'cliff_bbox_info', 'crop_cam_to_full_translation', 'full_translation_to_crop_cam',
           'apply_affine']
