"""The common base of the control renderers: camera handling, the square body crop, and the label dict.

A renderer is called on one body in the camera frame and returns a control image::

    renderer = RENDERERS.build(dict(type='PNCCRenderer', body_model=dict(model_path=...), size=512))
    image = renderer(vertices, faces, focal, princpt, img_size, joints=joints)        # (512, 512, 3) uint8
    result = renderer.render(vertices, faces, focal, princpt, img_size, joints=joints)  # image + labels

With ``size`` set (the default, 512) the output is the square crop around the projected body with
``margin`` (``body.camera.square_crop_box``), rendered directly at the crop camera (``body.camera.crop_camera``)
so nothing is resampled or blurred; ``focal``, ``princpt``, ``img_size``, ``bbox`` and ``joints_2d`` in the
result describe that crop, and ``crop_box`` is the crop in the input image's pixels. With ``size=None`` the
image is rendered at the given camera and ``img_size`` unchanged.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from .geometry import DEFAULT_FAR_M, DEFAULT_NEAR_M, check_render_geometry, validate_faces
from .rasterizer import MeshRasterizer, default_rasterizer

#: Whether this process was forked (after this module was imported) from one that may have run torch.
_FORKED = False


def _mark_forked() -> None:
    global _FORKED
    _FORKED = True


os.register_at_fork(after_in_child=_mark_forked)


def torch_safe_after_fork() -> None:
    """In a forked child, makes torch run its CPU ops on one thread, as torch's own DataLoader workers do.

    A parent that ran a parallel torch op (an SMPL-X forward) leaves an OpenMP thread pool behind; a forked
    child inherits its state but not its threads, and its next parallel op waits for them forever (a fork
    ``multiprocessing.Pool`` worker hung in the PNCC colours or a projection). One intra-op thread never enters
    that pool. Called by the renderers before any torch op; a no-op outside forked children.
    """
    global _FORKED
    if _FORKED:
        import torch
        torch.set_num_threads(1)
        _FORKED = False


def to_numpy(x: Any, dtype=np.float64) -> np.ndarray | None:
    """Numpy copy of an array-like or (detached, CPU) torch tensor; ``None`` stays ``None``."""
    if x is None:
        return None
    if hasattr(x, 'detach'):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def project(points: np.ndarray, focal: np.ndarray, princpt: np.ndarray) -> np.ndarray:
    """Pinhole projection of (N, 3) camera-frame points to (N, 2) pixels (``body.camera.project_points``)."""
    from posedreamer_mm.body.camera import project_points
    return to_numpy(project_points(np.asarray(points, np.float64), np.asarray(focal, np.float64),
                                   np.asarray(princpt, np.float64)))


def body_crop_camera(vertices: np.ndarray, focal: np.ndarray, princpt: np.ndarray, size: int,
                     margin: float = 0.1) -> dict[str, np.ndarray]:
    """The camera of a ``size`` x ``size`` square crop around the projected body.

    Args:
        vertices: (V, 3) camera-frame vertices.
        focal: (2,) pixels of the input camera.
        princpt: (2,) pixels of the input camera.
        size: output side in pixels.
        margin: the square's side is ``max(w, h) * (1 + margin)`` of the body's bbox (``square_crop_box``).

    Returns:
        ``focal`` (2,), ``princpt`` (2,), ``img_size`` (size, size) of the crop camera, ``crop_box``
        (x, y, w, h) of the square in the input image's pixels and ``bbox`` (x, y, w, h) of the projected
        mesh in the crop's pixels.
    """
    from posedreamer_mm.body.camera import bbox_from_points, crop_camera, crop_points_2d, square_crop_box
    bbox = to_numpy(bbox_from_points(project(vertices, focal, princpt)))
    box = to_numpy(square_crop_box(bbox, margin=margin))
    new_focal, new_princpt = crop_camera(focal, princpt, box, size)
    corners = to_numpy(crop_points_2d(np.array([bbox[:2], bbox[:2] + bbox[2:]]), box, size))
    return dict(focal=to_numpy(new_focal), princpt=to_numpy(new_princpt), img_size=np.array([size, size]),
                crop_box=box, bbox=np.concatenate([corners[0], corners[1] - corners[0]]))


class BaseControlRenderer:
    """Renders one body (camera frame) into a control image plus the labels of the image it describes.

    Subclasses set :attr:`control_type` and implement :meth:`draw`.

    Args:
        size: side of the square body crop to render; ``None`` renders at the given camera and image size.
        margin: the crop side is ``max(w, h) * (1 + margin)`` of the body's projected bbox.
        near: near limit in metres: a body with a vertex at or nearer than this is refused
            (``geometry.GeometryError``); the GL clip planes follow each body's depth range inside the limits.
        far: far limit in metres, likewise.
        device_index: EGL device to render on: an index, ``'cuda:N'`` or ``None`` (``$POSEDREAMER_EGL_DEVICE``
            or 0); see ``egl.resolve_device_index``. EGL indices are not CUDA indices.
    """

    #: Stored with each generated sample (``control_type`` in the generation record).
    control_type: str = ''

    def __init__(self, size: int | None = 512, margin: float = 0.1, near: float = DEFAULT_NEAR_M,
                 far: float = DEFAULT_FAR_M,
                 device_index: int | str | None = None) -> None:
        self.size = None if size is None else int(size)
        self.margin = float(margin)
        self.near, self.far, self.device_index = float(near), float(far), device_index
        self._rasterizer: MeshRasterizer | None = None
        self._rasterizer_pid: int | None = None

    @property
    def rasterizer(self) -> MeshRasterizer:
        """This process's shared rasteriser for these settings (created on first use; a forked child gets its own)."""
        if self._rasterizer is None or self._rasterizer_pid != os.getpid():
            self._rasterizer = default_rasterizer(self.near, self.far, self.device_index)
            self._rasterizer_pid = os.getpid()
        return self._rasterizer

    def __getstate__(self) -> dict:
        # GL objects do not pickle and belong to one process: the copy (a spawn worker) makes its own lazily.
        state = self.__dict__.copy()
        state.update(_rasterizer=None, _rasterizer_pid=None)
        return state

    def camera(self, vertices: np.ndarray, focal: np.ndarray, princpt: np.ndarray,
               img_size: Sequence[int] | None) -> dict[str, np.ndarray | None]:
        """The output camera (the body crop when ``size`` is set, else the input camera) and the mesh bbox in it."""
        if self.size is not None:
            return body_crop_camera(vertices, focal, princpt, self.size, self.margin)
        if img_size is None:
            raise ValueError(f'{type(self).__name__}(size=None) renders at the input camera: pass img_size')
        from posedreamer_mm.body.camera import bbox_from_points
        return dict(focal=focal, princpt=princpt, img_size=np.asarray(img_size, np.int64).reshape(2),
                    crop_box=None, bbox=to_numpy(bbox_from_points(project(vertices, focal, princpt))))

    def render(self, vertices, faces, focal, princpt, img_size: Sequence[int] | None = None,
               joints=None) -> dict[str, Any]:
        """Renders the control image and returns it with its labels.

        The body and camera are checked first (``geometry.check_render_geometry``: finite camera with positive
        focal, the body strictly between ``near`` and ``far``, a non-degenerate projection, and with
        ``size=None`` at least one vertex in the image); the GL clip planes then follow the body's depth range.

        Args:
            vertices: (V, 3) camera-frame vertices in metres (numpy or torch).
            faces: (F, 3) int vertex indices.
            focal: (2,) (fx, fy) pixels, or a scalar.
            princpt: (2,) (cx, cy) pixels.
            img_size: (W, H) of the input camera's image (needed when ``size`` is None).
            joints: (J, 3) camera-frame joints (SMPL-X's 127/144 or OpenPose-18); needed by the skeleton.

        Returns:
            ``image`` (H, W, 3) uint8 control image, ``control_type``, ``focal``, ``princpt``, ``img_size``
            (W, H) and ``bbox`` (x, y, w, h) of the projected mesh in the output image, ``crop_box`` (or None),
            ``joints_2d`` (J, 2) pixels when ``joints`` is given, ``clip_planes`` (near, far) metres used, plus
            the renderer's extra maps (``mask``, ``depth`` in metres, ``normal``...).

        Raises:
            geometry.GeometryError: a camera or body that cannot be rendered (the message names the values).
        """
        torch_safe_after_fork()
        verts = to_numpy(vertices, np.float32)
        if verts.ndim != 2:
            raise ValueError(f'render() takes one body (V, 3), got {verts.shape}; loop over a batch')
        if self.size is None and img_size is None:
            raise ValueError(f'{type(self).__name__}(size=None) renders at the input camera: pass img_size')
        geo = check_render_geometry(verts, focal, princpt, img_size, self.near, self.far,
                                    require_in_view=self.size is None)
        faces = validate_faces(to_numpy(faces, np.int64) if hasattr(faces, 'detach') else faces, len(verts))
        joints = to_numpy(joints)
        if joints is not None and (joints.ndim != 2 or joints.shape[1] != 3 or not np.isfinite(joints).all()):
            raise ValueError(f'joints must be finite (J, 3) camera-frame points, got shape {joints.shape}')
        cam = self.camera(verts, geo.camera.focal, geo.camera.princpt, geo.camera.img_size)
        planes = (geo.near, geo.far)
        out = self.draw(verts, faces, cam['focal'], cam['princpt'], tuple(int(s) for s in cam['img_size']),
                        joints, planes)
        out.update(control_type=self.control_type, focal=cam['focal'], princpt=cam['princpt'],
                   img_size=cam['img_size'], crop_box=cam['crop_box'], bbox=cam['bbox'], clip_planes=planes)
        if joints is not None:
            out['joints_2d'] = project(joints, cam['focal'], cam['princpt'])
        return out

    def __call__(self, vertices, faces, focal, princpt, img_size: Sequence[int] | None = None,
                 joints=None) -> np.ndarray:
        """The control image alone: (H, W, 3) uint8 (see :meth:`render`)."""
        return self.render(vertices, faces, focal, princpt, img_size, joints)['image']

    def draw(self, vertices: np.ndarray, faces: np.ndarray, focal: np.ndarray, princpt: np.ndarray,
             img_size: tuple[int, int], joints: np.ndarray | None, planes: tuple[float, float]) -> dict[str, Any]:
        """Draws at the final camera with GL clip planes ``planes`` (near, far metres, from the body's depth
        range); returns at least ``image`` (H, W, 3) uint8."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f'{type(self).__name__}(size={self.size}, margin={self.margin})'
