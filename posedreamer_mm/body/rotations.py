"""Rotation conversions (one definition each): axis-angle <-> matrix, 6D <-> matrix.

All functions take numpy arrays or torch tensors with any leading batch shape and return torch tensors
(float64 input stays float64). Axis-angle is the record's format (``BodySample``); 6D (the first two columns of
the matrix, Zhou et al. CVPR 2019, https://arxiv.org/abs/1812.07035) is what models regress.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def _t(x) -> Tensor:
    """Float tensor of an array-like (float32 unless already a float tensor or a float64 array)."""
    if isinstance(x, Tensor):
        return x if x.is_floating_point() else x.float()
    a = np.asarray(x)
    return torch.as_tensor(a, dtype=torch.float64 if a.dtype == np.float64 else torch.float32)


def axis_angle_to_matrix(aa) -> Tensor:
    """Rodrigues: ``(..., 3)`` axis-angle -> ``(..., 3, 3)`` rotation matrices."""
    aa = _t(aa)
    angle = aa.norm(dim=-1, keepdim=True)[..., None]
    axis = aa / aa.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    x, y, z = axis.unbind(-1)
    zero = torch.zeros_like(x)
    k = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(*aa.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=aa.dtype, device=aa.device).expand_as(k)
    return eye + torch.sin(angle) * k + (1 - torch.cos(angle)) * (k @ k)


def matrix_to_axis_angle(rot) -> Tensor:
    """``(..., 3, 3)`` rotations -> ``(..., 3)`` axis-angle (angle in [0, pi]), robust near 0 and pi."""
    rot = _t(rot)
    out_dtype = rot.dtype
    rot = rot.to(torch.float64)
    cos = ((rot.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1, 1)
    angle = torch.acos(cos)
    vec = torch.stack([rot[..., 2, 1] - rot[..., 1, 2], rot[..., 0, 2] - rot[..., 2, 0],
                       rot[..., 1, 0] - rot[..., 0, 1]], -1)
    sin = torch.sin(angle)
    small = sin.abs() < 1e-6
    aa = vec / (2 * torch.where(small, torch.ones_like(sin), sin))[..., None] * angle[..., None]
    aa = torch.where((small & (cos > 0))[..., None], vec / 2, aa)
    # Near pi the skew part vanishes: take the axis from the symmetric part, sign fixed by the skew part.
    sym = (rot + rot.transpose(-1, -2)) / 2 - cos[..., None, None] * torch.eye(3, dtype=rot.dtype)
    col = sym.abs().sum(-2).argmax(-1)
    axis = torch.gather(sym, -1, col[..., None, None].expand(*sym.shape[:-1], 1))[..., 0]
    axis = axis / axis.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    axis = axis * torch.where((axis * vec).sum(-1, keepdim=True) < 0, -1.0, 1.0)
    aa = torch.where((small & (cos < 0))[..., None], axis * angle[..., None], aa)
    return aa.to(out_dtype)


def matrix_to_rotation_6d(rot) -> Tensor:
    """``(..., 3, 3)`` rotations -> ``(..., 6)``: the first two columns, column-major ``(r00, r10, r20, r01, ...)``."""
    rot = _t(rot)
    return torch.cat([rot[..., :, 0], rot[..., :, 1]], dim=-1)


def rotation_6d_to_matrix(d6) -> Tensor:
    """``(..., 6)`` -> ``(..., 3, 3)`` by Gram-Schmidt (Zhou et al. 2019); inverse of :func:`matrix_to_rotation_6d`."""
    d6 = _t(d6)
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = torch.nn.functional.normalize(a1, dim=-1)
    b2 = torch.nn.functional.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)


__all__ = ['axis_angle_to_matrix', 'matrix_to_axis_angle', 'matrix_to_rotation_6d', 'rotation_6d_to_matrix']
