"""PNCC control images: each vertex coloured by its normalised position in a canonical A-pose.

PNCC (Projected Normalized Coordinate Code, Zhu et al., "Face Alignment Across Large Poses: A 3D Solution",
https://arxiv.org/abs/1511.07212) paints every vertex with its coordinates in a fixed canonical mesh, so a
pixel's colour says which body point it shows, whatever the pose. Here the canonical mesh is the mean-shape
(betas = 0) SMPL-X body in an A-pose (arms lowered, legs slightly apart, so left and right limbs and feet get
different colours), in the body model's own frame (x towards the body's left, y up, z forwards); each axis is
normalised to [0, 1] over the canonical bounding box:

- red grows from the body's right side to its left,
- green from the feet to the head,
- blue from the back to the front.

Only the visible surface is drawn (z-buffer), background black, no antialiasing: every foreground pixel is an
interpolation of canonical colours within one triangle.
"""
from __future__ import annotations

import os
import os.path as osp
import weakref
from typing import Any

import numpy as np

from posedreamer_mm.registry import RENDERERS

from .base import BaseControlRenderer, to_numpy, torch_safe_after_fork

#: Colours of body models known by their file, by file, gender and hand-pose parametrisation.
_COLOR_CACHE: dict[tuple, np.ndarray] = {}
#: Colours of body models with no file to name them, by (weakly held) model object and pose.
_OBJECT_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def pncc_colors(canonical_vertices: np.ndarray) -> np.ndarray:
    """Per-vertex PNCC colours from canonical vertices.

    Args:
        canonical_vertices: (V, 3) vertices of the canonical mesh.

    Returns:
        (V, 3) float32 in [0, 1]: each axis min-max normalised over the canonical bounding box.
    """
    v = to_numpy(canonical_vertices)
    lo, hi = v.min(0), v.max(0)
    return ((v - lo) / np.maximum(hi - lo, 1e-12)).astype(np.float32)


def build_body_model(body_model: Any):
    """A body model from an instance, a config dict (``BODY_MODELS``) or a model directory/file path."""
    if body_model is None or callable(body_model):
        return body_model
    if isinstance(body_model, (str, os.PathLike)):
        from posedreamer_mm.body.body_model import SMPLXBodyModel
        return SMPLXBodyModel(model_path=os.fspath(body_model), gender='neutral')
    if isinstance(body_model, dict):
        from posedreamer_mm.registry import BODY_MODELS
        cfg = dict(body_model)
        cfg.setdefault('type', 'SMPLXBodyModel')
        return BODY_MODELS.build(cfg)
    raise TypeError(f'body_model must be a module, a config dict or a path, got {type(body_model)}')


def _hand_config(body_model) -> tuple:
    """What a zero hand pose means for this model: it decides the canonical fingers unless hands are given."""
    inner = getattr(body_model, 'smplx', body_model)
    return (('flat_hand_mean', bool(getattr(body_model, 'flat_hand_mean', getattr(inner, 'flat_hand_mean', True)))),
            ('use_pca', bool(getattr(inner, 'use_pca', False))),
            ('hand_dim', int(getattr(body_model, 'hand_dim', 45))))


def _model_key(body_model) -> tuple | None:
    """Cache key: the model file (path, size, mtime), gender and hand parametrisation; None without a file."""
    path = None
    for attr in ('model_file', 'model_path'):
        p = getattr(body_model, attr, None)
        if isinstance(p, (str, os.PathLike)):
            path = os.fspath(p)
            break
    if path is not None and osp.isdir(path):
        gender = str(getattr(body_model, 'gender', 'neutral')).upper()
        candidates = [osp.join(path, f'SMPLX_{gender}.{ext}') for ext in ('npz', 'pkl')]
        candidates += [osp.join(path, 'smplx', osp.basename(c)) for c in candidates]
        path = next((c for c in candidates if osp.isfile(c)), path)
    if path is not None and osp.isfile(path):
        st = os.stat(path)
        return ('file', osp.realpath(path), st.st_size, st.st_mtime_ns, str(getattr(body_model, 'gender', '')),
                _hand_config(body_model))
    return None


def _flat_hands(body_model, dtype, device) -> dict:
    """Hand poses that make the hands flat whatever ``flat_hand_mean`` says (axis-angle hands only).

    smplx adds ``left/right_hand_mean`` to the given hand pose (zero with ``flat_hand_mean=True``, the mean
    curl otherwise), so minus the mean is the flat hand. PCA hands cannot express it exactly: they keep their
    zero pose, and the cache keys on the parametrisation so they never share colours with the others.
    """
    import torch
    inner = getattr(body_model, 'smplx', None)
    if inner is None or getattr(inner, 'use_pca', False) or not hasattr(inner, 'left_hand_mean'):
        return {}
    return {f'{side}_hand_pose': -torch.as_tensor(getattr(inner, f'{side}_hand_mean'), dtype=dtype,
                                                  device=device).reshape(1, -1) for side in ('left', 'right')}


def canonical_vertices(body_model, pose: str = 'A') -> np.ndarray:
    """Vertices of the mean-shape body (betas = 0) in a canonical pose with flat hands, in the model frame.

    Args:
        body_model: a ``SMPLXBodyModel``-like module (``forward(betas=..., body_pose=...)`` -> ``.vertices``).
        pose: canonical pose kind for ``body.body_model.canonical_body_pose`` (``'A'``: arms lowered, legs apart).

    Returns:
        (V, 3) float64 vertices.
    """
    import torch

    from posedreamer_mm.body.body_model import canonical_body_pose
    torch_safe_after_fork()
    body_pose = canonical_body_pose(kind=pose)
    param = next(iter(body_model.parameters()), None) if hasattr(body_model, 'parameters') else None
    buf = next(iter(body_model.buffers()), None) if hasattr(body_model, 'buffers') else None
    ref = param if param is not None else buf
    dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32
    device = ref.device if ref is not None else 'cpu'
    num_betas = int(getattr(body_model, 'num_betas', 10))
    with torch.no_grad():
        out = body_model(betas=torch.zeros(1, num_betas, dtype=dtype, device=device),
                         global_orient=torch.zeros(1, 3, dtype=dtype, device=device),
                         body_pose=body_pose.to(device=device, dtype=dtype),
                         transl=torch.zeros(1, 3, dtype=dtype, device=device),
                         **_flat_hands(body_model, dtype, device))
    return to_numpy(out.vertices[0])


def canonical_pncc_colors(body_model, pose: str = 'A') -> np.ndarray:
    """PNCC colours of a body model, computed once per process and model (mean shape, given pose, flat hands).

    Models built from the same file share one entry (file, gender and hand parametrisation in the key); a model
    with no file is cached on the object itself (weakly: a new model at a reused address is not confused with
    a collected one).

    Returns:
        (V, 3) float32 colours in [0, 1] (a shared array: do not modify in place).
    """
    key = _model_key(body_model)
    if key is None:
        try:
            per_model = _OBJECT_CACHE.setdefault(body_model, {})
        except TypeError:  # neither hashable nor weakly referenceable: no cache
            per_model = {}
        if pose not in per_model:
            per_model[pose] = _frozen(pncc_colors(canonical_vertices(body_model, pose)))
        return per_model[pose]
    key = (key, 'betas=mean', pose)
    if key not in _COLOR_CACHE:
        _COLOR_CACHE[key] = _frozen(pncc_colors(canonical_vertices(body_model, pose)))
    return _COLOR_CACHE[key]


def _frozen(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


@RENDERERS.register_module()
class PNCCRenderer(BaseControlRenderer):
    """PNCC control image (H, W, 3) uint8; ``render()`` adds ``mask`` and metric ``depth`` (same pass).

    The colours are computed when the renderer is built (one SMPL-X forward in the building process, cached
    per model file), never lazily in a worker: a renderer is then cheap to pickle (the colours, not the body
    model) and a fork or forkserver worker runs no body-model forward. Thread safe: one renderer may be shared
    by a thread pool (see ``egl``).

    Args:
        body_model: the body model whose canonical A-pose defines the colours: a module, a config dict
            (``dict(type='SMPLXBodyModel', model_path=...)``) or a model directory.
        colors: (V, 3) colours in [0, 1] to use instead of a body model (any mesh).
        pose: canonical pose kind (``body.body_model.canonical_body_pose``).
        with_depth: also return the metric depth and mask of the same rasterisation.
        **kwargs: ``size``, ``margin``, ``near``, ``far``, ``device_index`` (:class:`BaseControlRenderer`).
    """

    control_type = 'pncc'

    def __init__(self, body_model: Any = None, colors: np.ndarray | None = None, pose: str = 'A',
                 with_depth: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        if body_model is None and colors is None:
            raise ValueError('PNCCRenderer needs a body_model (its canonical pose defines the colours) or colors')
        self.pose = pose
        self.with_depth = with_depth
        if colors is None:
            colors = canonical_pncc_colors(build_body_model(body_model), pose)
        colors = to_numpy(colors, np.float32)
        if colors.ndim != 2 or colors.shape[1] != 3 or not np.isfinite(colors).all():
            raise ValueError(f'PNCC colours must be finite (V, 3) values, got shape {colors.shape}')
        self._colors = colors

    @property
    def colors(self) -> np.ndarray:
        """(V, 3) float32 PNCC colours (computed when the renderer was built)."""
        return self._colors

    def draw(self, vertices, faces, focal, princpt, img_size, joints, planes):
        colors = self.colors
        if len(colors) != len(vertices):
            raise ValueError(f'PNCC colours are for {len(colors)} vertices, the mesh has {len(vertices)}')
        outputs = ('color', 'mask', 'depth') if self.with_depth else ('color',)
        out = self.rasterizer.render(vertices, faces, focal, princpt, img_size, colors=colors, outputs=outputs,
                                     planes=planes)
        out['image'] = out.pop('color')
        return out
