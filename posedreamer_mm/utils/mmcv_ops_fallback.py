"""A fallback ``mmcv.ops`` for mmcv installs without compiled ops (``mmcv-lite``).

mmpose and mmdet import ``mmcv.ops`` at module load time (mmpose only for EDPose's
``MultiScaleDeformableAttention``; mmdet for ``nms``/``batched_nms``/``RoIAlign`` and many more), so without
compiled ops *no* mmpose model and most mmdet detectors import. This module serves the ops that the
detectors and pose models this project uses really call, implemented with ``torchvision.ops`` or pure torch
and tested against reference implementations:

* ``nms``, ``batched_nms`` (mmcv's signatures and return values: ``(dets (N, 5), keep)``),
* ``RoIAlign`` / ``roi_align`` (two-stage person detectors, e.g. Faster R-CNN),
* ``point_sample`` (pure ``F.grid_sample``).

Every other name resolves to a placeholder class, so ``from mmcv.ops import X`` succeeds at import time and
only *using* ``X`` raises :class:`MissingMMCVOpError` naming the op and how to install full mmcv. With full
mmcv installed this module is never used (see :func:`posedreamer_mm.utils.compat.install_mmcv_ops_fallback`).
"""
from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

#: Marker set on the module object so code and tests can tell the fallback from full mmcv.
IS_POSEDREAMER_FALLBACK = True

_INSTALL_HINT = ('Install full mmcv with compiled ops (e.g. `pip install mmcv==2.1.0 -f '
                 'https://download.openmmlab.com/mmcv/dist/<cuda>/<torch>/index.html`, or build it: '
                 '`MMCV_WITH_OPS=1 pip install mmcv==2.1.0 --no-build-isolation`). posedreamer_mm serves only '
                 'nms, batched_nms, RoIAlign/roi_align and point_sample without it.')


class MissingMMCVOpError(ImportError):
    """Raised when an mmcv op that needs the compiled extension is used under mmcv-lite."""


def _missing(name: str) -> type:
    """A placeholder for op ``name``: importable and subclassable, raising only when used."""

    def _fail(*args, **kwargs):
        raise MissingMMCVOpError(f'mmcv.ops.{name} needs mmcv compiled with ops, but only mmcv-lite is '
                                 f'installed. {_INSTALL_HINT}')

    # nn.Module base: mmdet subclasses some ops (e.g. DeformConv2dPack) at import time.
    return type(name, (nn.Module, ), {'__init__': _fail, '__new__': _fail, '__call__': _fail,
                                      '__doc__': f'Placeholder for mmcv.ops.{name} (needs full mmcv).',
                                      '_posedreamer_placeholder': True})


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float, offset: int = 0, score_threshold: float = 0,
        max_num: int = -1) -> tuple[Tensor, Tensor]:
    """Non-maximum suppression with mmcv's signature.

    Args:
        boxes: ``(N, 4)`` boxes ``x1, y1, x2, y2``.
        scores: ``(N,)`` scores.
        iou_threshold: boxes overlapping a kept box by more IoU than this are dropped.
        offset: 0 or 1; 1 treats coordinates as inclusive pixel indices (``w = x2 - x1 + 1``), as mmcv does.
        score_threshold: boxes scoring at or below this are dropped first.
        max_num: keep at most this many (``-1``: all).

    Returns:
        ``dets (K, 5)`` (boxes with their score, by descending score) and ``keep (K,)`` indices into the input.
    """
    if offset not in (0, 1):
        raise ValueError(f'offset must be 0 or 1, got {offset}')
    is_numpy = not isinstance(boxes, Tensor)
    if is_numpy:
        boxes, scores = torch.from_numpy(boxes), torch.from_numpy(scores)
    valid = torch.arange(boxes.shape[0], device=boxes.device)
    if score_threshold > 0:
        valid = valid[scores > score_threshold]
    b = boxes[valid].float()
    if offset:
        # torchvision computes areas as (x2-x1)*(y2-y1): shift the far corner to emulate mmcv's +1.
        b = torch.cat([b[:, :2], b[:, 2:] + 1], dim=1)
    import torchvision
    keep = valid[torchvision.ops.nms(b, scores[valid].float(), float(iou_threshold))]
    if max_num > 0:
        keep = keep[:max_num]
    dets = torch.cat([boxes[keep], scores[keep].reshape(-1, 1).to(boxes.dtype)], dim=1)
    if is_numpy:
        return dets.numpy(), keep.numpy()
    return dets, keep


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, nms_cfg: dict | None,
                class_agnostic: bool = False) -> tuple[Tensor, Tensor]:
    """Per-class NMS with mmcv's signature (``mmcv.ops.batched_nms``).

    Boxes of different ``idxs`` never suppress each other (unless ``class_agnostic``). ``nms_cfg`` keys:
    ``iou_threshold`` (required), ``type`` (only ``'nms'`` is served), ``max_num``, ``split_thr`` (ignored:
    the offset trick is exact), ``offset``. ``nms_cfg=None`` skips NMS and only sorts by score.

    Returns:
        ``dets (K, 5)`` sorted by descending score and ``keep (K,)`` indices into the input.
    """
    if nms_cfg is None:
        scores, inds = scores.sort(descending=True)
        return torch.cat([boxes[inds], scores[:, None]], -1), inds
    cfg = dict(nms_cfg)
    nms_type = cfg.pop('type', 'nms')
    if nms_type not in ('nms', 'NMS'):
        raise MissingMMCVOpError(f'batched_nms with type={nms_type!r} needs full mmcv. {_INSTALL_HINT}')
    class_agnostic = cfg.pop('class_agnostic', class_agnostic)
    cfg.pop('split_thr', None)
    max_num = cfg.pop('max_num', -1)
    iou_threshold = cfg.pop('iou_threshold', cfg.pop('iou_thr', None))
    if iou_threshold is None:
        raise KeyError('nms_cfg needs iou_threshold')
    offset = cfg.pop('offset', 0)
    if class_agnostic or boxes.numel() == 0:
        boxes_for_nms = boxes
    else:
        # Shift each class into its own coordinate range so one NMS call never mixes classes (as mmcv does).
        max_coordinate = boxes.max()
        offsets = idxs.to(boxes) * (max_coordinate + torch.tensor(1).to(boxes))
        boxes_for_nms = boxes + offsets[:, None]
    dets, keep = nms(boxes_for_nms, scores, iou_threshold, offset=offset, **cfg)
    boxes = boxes[keep]
    scores = dets[:, -1]
    if max_num > 0:
        keep, boxes, scores = keep[:max_num], boxes[:max_num], scores[:max_num]
    return torch.cat([boxes, scores[:, None]], -1), keep


def roi_align(input: Tensor, rois: Tensor, output_size: int | tuple[int, int], spatial_scale: float = 1.0,
              sampling_ratio: int = 0, pool_mode: str = 'avg', aligned: bool = True) -> Tensor:
    """RoIAlign with mmcv's signature; ``rois`` is ``(K, 5)``: batch index, x1, y1, x2, y2."""
    if pool_mode != 'avg':
        raise MissingMMCVOpError(f'roi_align pool_mode={pool_mode!r} needs full mmcv. {_INSTALL_HINT}')
    import torchvision
    return torchvision.ops.roi_align(input, rois.to(input.dtype), output_size, spatial_scale, sampling_ratio,
                                     aligned)


class RoIAlign(nn.Module):
    """``mmcv.ops.RoIAlign`` served by ``torchvision.ops.roi_align`` (average pooling only)."""

    def __init__(self, output_size: int | tuple[int, int], spatial_scale: float = 1.0, sampling_ratio: int = 0,
                 pool_mode: str = 'avg', aligned: bool = True, use_torchvision: bool = False) -> None:
        super().__init__()
        # mmcv stores a (h, w) pair; mmdet's RoI extractors unpack it.
        self.output_size = _pair(output_size)
        self.spatial_scale = float(spatial_scale)
        self.sampling_ratio = int(sampling_ratio)
        self.pool_mode = pool_mode
        self.aligned = aligned

    def forward(self, input: Tensor, rois: Tensor) -> Tensor:
        return roi_align(input, rois, self.output_size, self.spatial_scale, self.sampling_ratio, self.pool_mode,
                         self.aligned)

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(output_size={self.output_size}, spatial_scale={self.spatial_scale}, '
                f'sampling_ratio={self.sampling_ratio}, pool_mode={self.pool_mode}, aligned={self.aligned})')


def point_sample(input: Tensor, points: Tensor, align_corners: bool = False, **kwargs) -> Tensor:
    """``mmcv.ops.point_sample``: samples ``input (N, C, H, W)`` at ``points (N, P, 2)`` in [0, 1] coordinates."""
    add_dim = points.dim() == 3
    if add_dim:
        points = points.unsqueeze(2)
    out = F.grid_sample(input, 2.0 * points - 1.0, align_corners=align_corners, **kwargs)
    return out.squeeze(3) if add_dim else out


SERVED = {'nms': nms, 'batched_nms': batched_nms, 'roi_align': roi_align, 'RoIAlign': RoIAlign,
          'point_sample': point_sample}


class FallbackOpsModule(types.ModuleType):
    """``mmcv.ops`` (and its submodules): served ops by name, a placeholder for anything else."""

    def __setattr__(self, name: str, value) -> None:
        # The import system binds a loaded submodule onto its parent (``mmcv.ops.nms`` the module would
        # replace ``mmcv.ops.nms`` the function); the served callable must win.
        if name in SERVED and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)

    def __getattr__(self, name: str):
        if name.startswith('__'):
            raise AttributeError(name)
        value = SERVED.get(name) or _missing(name)
        setattr(self, name, value)
        return value
