"""The one mesh rasteriser behind every control image: moderngl through headless EGL, CPU or GPU.

Why moderngl + EGL (measured in ``shared/ENVIRONMENT.md`` on a 10.5K-vertex SMPL-X-sized mesh, one core):
131 renders/s at 512x512 (colour + float depth) against pyrender+OSMesa 92, a vectorised numpy z-buffer 32
and a torch z-buffer 20; it has no hidden MSAA (pyrender forces 4x on EGL, which blends the colours that a
control image uses to encode geometry); and the same code runs on Mesa llvmpipe (CPU) and on the NVIDIA EGL
driver (GPU); the issue's own measurement found no silhouette difference between the two (not re-measured
in the session that wrote this: it had no GPU).

Conventions (``docs/rendering.md``):

- Vertices are in the OpenCV camera frame (x right, y down, z forward, metres); the camera is a pinhole
  ``focal`` (fx, fy), ``princpt`` (cx, cy) in pixels, ``img_size`` (W, H).
- Pixel centres are integer coordinates: a point projected to (u, v) by ``body.camera.project_points``
  (``u = fx * x / z + cx``) lies in pixel ``(round(u), round(v))``, i.e. in row ``round(v)`` and column
  ``round(u)`` of the returned arrays. A pixel is filled when its centre is inside a projected triangle.
- No MSAA, no blending, no culling (a body is never hollow; the z-test alone decides visibility).
- Outputs: ``color`` (H, W, 3) interpolated vertex colours (uint8, or float32 with ``color_dtype='f4'``),
  ``mask`` (H, W) bool, ``depth`` (H, W) float32 camera z of the visible surface in metres (0 on the
  background), ``normal`` (H, W, 3) float32 unit camera-frame normals turned towards the camera (0 on the
  background). All come from one draw call (multiple render targets); only the requested ones are read.
"""
from __future__ import annotations

import os
import threading
import weakref
from collections import OrderedDict
from typing import Sequence

import numpy as np

from posedreamer_mm.utils.pickling import PicklesWithoutLocalState

from .egl import egl_devices, get_context, gl_device_info, keep_inherited, make_current  # noqa: F401 (re-exported)
from .geometry import GeometryError, validate_camera, validate_faces
from .shaders import FRAGMENT_SHADER as _FRAGMENT_SHADER
from .shaders import VERTEX_SHADER as _VERTEX_SHADER
from .shaders import projection_coefficients  # noqa: F401 (re-exported)

#: Targets a render can return (``mask`` always comes with ``color``'s alpha or with ``depth``).
OUTPUTS = ('color', 'mask', 'depth', 'normal')

def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals.

    Args:
        vertices: (V, 3) float positions.
        faces: (F, 3) int vertex indices.

    Returns:
        (V, 3) float32 unit normals (right-handed winding; the rasteriser turns them to the visible side).
    """
    v = np.asarray(vertices, dtype=np.float32)
    f = np.asarray(faces)
    fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    idx = f.ravel()
    n = np.stack([np.bincount(idx, weights=np.repeat(fn[:, k], 3), minlength=len(v)) for k in range(3)], 1)
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    return n.astype(np.float32)


def _per_sample(x, batch: int, width: int, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 0:
        a = np.full((width,), float(a))
    a = a.reshape(-1, width)
    if len(a) not in (1, batch):
        raise ValueError(f'{name} has {len(a)} rows for a batch of {batch}')
    return np.broadcast_to(a, (batch, width))


class _GLState:
    """One thread's GL objects of a rasteriser: its context and what was made in it (never shared)."""

    def __init__(self, ctx, thread: threading.Thread) -> None:
        self.ctx, self.thread, self.pid = ctx, thread, os.getpid()
        self.programs: dict = {}
        self.fbos: OrderedDict = OrderedDict()  # (size, with_normal) -> (framebuffer, attachments), LRU order
        self.buffers: dict = {}
        self.vao = None
        self.vao_key = None
        self.faces = None
        self.num_indices = 0

    def objects(self) -> list:
        """Every GL object made here except the (shared per-thread) context."""
        fbos = [o for fbo, atts in self.fbos.values() for o in (fbo, *atts)]
        return [*fbos, *self.buffers.values(), *self.programs.values(), self.vao]


class MeshRasterizer(PicklesWithoutLocalState):
    """Renders triangle meshes with vertex attributes into numpy arrays (no MSAA, no culling, z-buffered).

    GL objects are kept between calls: per frame only vertex positions (and colours/normals when given) are
    written to the vertex buffers; framebuffers are cached per image size and output set, the
    ``max_framebuffers`` most recently used ones (older ones are released).

    Thread safe: GL objects belong to a context, and a context to a thread (``egl.get_context`` gives each thread
    its own), so each thread that renders gets its own set of GL objects here. One rasteriser can be shared by a
    thread pool; renders are byte-identical to the main thread's.

    Fork and pickle safe: GL objects belong to the process that made them. A forked child drops the ones it
    inherited without touching them (``os.register_at_fork`` plus a pid check) and makes its own on first use;
    pickling (``spawn`` workers) drops them too, and the copy rebuilds them lazily.

    Args:
        near: near clipping distance in metres (surface closer than this is cut), unless a render passes
            ``planes``.
        far: far clipping distance in metres, likewise.
        device_index: EGL device (see ``egl.resolve_device_index``: an index, ``'cuda:N'`` or None).
        color_dtype: ``'f1'`` (uint8 colours, rounded by GL) or ``'f4'`` (float32 colours).
        max_framebuffers: framebuffers kept per thread (one per image size and output set). Six hold a
            generation run's working set: the crop with and without normals plus the skeleton's 64/128 px face
            windows.
    """

    #: GL objects of each thread (``utils/pickling.py``: a pickled copy starts without any and a fresh lock).
    _process_local = dict(_states=dict)

    def __init__(self, near: float = 0.01, far: float = 100.0, device_index: int | str | None = None,
                 color_dtype: str = 'f1', max_framebuffers: int = 6) -> None:
        if color_dtype not in ('f1', 'f4'):
            raise ValueError(f"color_dtype must be 'f1' or 'f4', got {color_dtype!r}")
        if not (0 < float(near) < float(far) < np.inf):
            raise ValueError(f'clip planes must satisfy 0 < near < far < inf, got near={near}, far={far}')
        self.near, self.far = float(near), float(far)
        self.device_index = device_index
        self.color_dtype = color_dtype
        self.max_framebuffers = max(1, int(max_framebuffers))
        self._states: dict[int, _GLState] = {}
        self._lock = threading.Lock()
        _LIVE.add(self)

    def _state(self) -> _GLState:
        """The calling thread's GL objects in this process (made on first use; stale ones are parked)."""
        ctx = get_context(self.device_index)
        ident, thread = threading.get_ident(), threading.current_thread()
        with self._lock:
            if any(st.pid != os.getpid() for st in self._states.values()):
                self._drop_inherited()
            st = self._states.get(ident)
            if st is not None and (st.thread is not thread or st.ctx is not ctx):
                # A finished thread's ident reused, or this thread's context was released: never touch them.
                keep_inherited(self._states.pop(ident).objects())
                st = None
            if st is None:
                st = self._states[ident] = _GLState(ctx, thread)
        return st

    def _drop_inherited(self) -> None:
        """Forgets GL objects made by another process (a fork's parent) without calling into GL."""
        for st in self._states.values():
            keep_inherited([*st.objects(), st.ctx])
        self._states = {}

    @property
    def ctx(self):
        """The calling thread's GL context (a forked child never gets its parent's, another thread never this
        thread's)."""
        return self._state().ctx

    @property
    def _fbos(self) -> OrderedDict:
        """The calling thread's framebuffer cache (tests inspect it)."""
        return self._state().fbos

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        _LIVE.add(self)

    # --- GL object caches (of one thread's state) ---------------------------------------------------------
    def _program(self, st: _GLState, with_normal: bool):
        if with_normal not in st.programs:
            frag = _FRAGMENT_SHADER.replace('#version 330', '#version 330\n#define WITH_NORMAL' if with_normal
                                            else '#version 330', 1)
            st.programs[with_normal] = st.ctx.program(vertex_shader=_VERTEX_SHADER, fragment_shader=frag)
        return st.programs[with_normal]

    def _fbo(self, st: _GLState, size: tuple[int, int], with_normal: bool):
        key = (size, with_normal)
        if key in st.fbos:
            st.fbos.move_to_end(key)
            return st.fbos[key][0]
        ctx = st.ctx
        attachments = [ctx.renderbuffer(size, components=4, dtype=self.color_dtype),
                       ctx.renderbuffer(size, components=1, dtype='f4')]
        if with_normal:
            attachments.append(ctx.renderbuffer(size, components=4, dtype='f4'))
        attachments.append(ctx.depth_renderbuffer(size))
        fbo = ctx.framebuffer(color_attachments=attachments[:-1], depth_attachment=attachments[-1])
        st.fbos[key] = (fbo, attachments)
        while len(st.fbos) > self.max_framebuffers:  # e.g. size=None over images of many sizes
            old, old_attachments = st.fbos.popitem(last=False)[1]
            for obj in (old, *old_attachments):
                obj.release()
        return fbo

    def _buffer(self, st: _GLState, name: str, data: np.ndarray):
        data = np.ascontiguousarray(data, dtype=np.uint32 if name == 'index' else np.float32)
        buf = st.buffers.get(name)
        if buf is None or buf.size != data.nbytes:
            if buf is not None:
                buf.release()
            buf = st.buffers[name] = st.ctx.buffer(data.tobytes(), dynamic=True)
            st.vao_key = None  # VAOs bind buffer objects: rebuild
        else:
            buf.write(data)
        return buf

    def _set_faces(self, st: _GLState, faces: np.ndarray) -> None:
        faces = np.asarray(faces)
        if st.faces is None or st.faces.shape != faces.shape or not np.array_equal(st.faces, faces):
            st.faces = faces.copy()
            self._buffer(st, 'index', faces.reshape(-1))
            st.num_indices = faces.size

    def _bind(self, st: _GLState, with_normal: bool):
        key = (with_normal, id(st.buffers['index']), id(st.buffers['pos']), id(st.buffers['color']),
               id(st.buffers.get('normal')))
        if st.vao_key != key:
            prog = self._program(st, with_normal)
            content = [(st.buffers['pos'], '3f', 'in_pos'), (st.buffers['color'], '3f', 'in_color')]
            if with_normal:
                content.append((st.buffers['normal'], '3f', 'in_normal'))
            if st.vao is not None:
                st.vao.release()
            st.vao = st.ctx.vertex_array(prog, content, index_buffer=st.buffers['index'], index_element_size=4)
            st.vao_key = key
        return st.vao

    # --- rendering -----------------------------------------------------------------------------------------
    def render(self, vertices: np.ndarray, faces: np.ndarray, focal, princpt, img_size: Sequence[int],
               colors: np.ndarray | None = None, normals: np.ndarray | None = None,
               outputs: Sequence[str] = ('color', 'mask', 'depth'),
               planes: tuple[float, float] | None = None) -> dict[str, np.ndarray]:
        """Rasterises one mesh or a batch of meshes sharing a topology.

        Args:
            vertices: (V, 3) or (B, V, 3) camera-frame positions in metres.
            faces: (F, 3) int vertex indices.
            focal: (2,) or (B, 2) focal lengths in pixels (a scalar means fx = fy).
            princpt: (2,) or (B, 2) principal points in pixels.
            img_size: (W, H) of the output images.
            colors: (V, 3) or (B, V, 3) vertex colours in [0, 1]; white if omitted.
            normals: (V, 3) or (B, V, 3) vertex normals; computed from the mesh when ``normal`` is asked for.
            outputs: subset of :data:`OUTPUTS`.
            planes: ``(near, far)`` clip planes in metres for this call (the renderers derive them from the
                body's depth range, ``geometry.clip_planes``); ``None``: the rasteriser's ``near``/``far``.
                Surface outside them is cut, as in any rasteriser.

        Returns:
            Dict of the requested outputs, each with a leading batch axis iff ``vertices`` had one:
            ``color`` (H, W, 3) uint8 (or float32), ``mask`` (H, W) bool, ``depth`` (H, W) float32 metres
            (0 background), ``normal`` (H, W, 3) float32 (0 background).

        Raises:
            geometry.GeometryError: a non-finite or non-positive camera, an image size outside
                ``[1, MAX_IMAGE_SIDE]``, non-finite vertices or bad clip planes.
            ValueError: faces indexing missing vertices, unknown outputs.
        """
        unknown = set(outputs) - set(OUTPUTS)
        if unknown:
            raise ValueError(f'unknown outputs {sorted(unknown)}; choose from {OUTPUTS}')
        verts = np.asarray(vertices, dtype=np.float32)
        batched = verts.ndim == 3
        verts = verts if batched else verts[None]
        if verts.ndim != 3 or verts.shape[-1] != 3:
            raise ValueError(f'vertices must be (V, 3) or (B, V, 3), got {np.shape(vertices)}')
        b, nv = verts.shape[:2]
        if not np.isfinite(verts).all():
            raise GeometryError('vertices', 'vertices contain NaN or inf')
        faces = validate_faces(faces, nv)
        near, far = (self.near, self.far) if planes is None else (float(planes[0]), float(planes[1]))
        if not (0 < near < far and np.isfinite(far)):
            raise GeometryError('camera', f'clip planes must satisfy 0 < near < far < inf, got {near}, {far}')
        focal = _per_sample(focal, b, 2, 'focal')
        princpt = _per_sample(princpt, b, 2, 'princpt')
        for i in range(len(focal)):
            validate_camera(focal[i], princpt[i], img_size)
        w, h = (int(s) for s in img_size)
        with_normal = 'normal' in outputs
        cols = None if colors is None else np.asarray(colors, dtype=np.float32).reshape(-1, nv, 3)
        nrms = None if normals is None else np.asarray(normals, dtype=np.float32).reshape(-1, nv, 3)

        st = self._state()
        ctx = st.ctx
        make_current(ctx)  # another context (another device, a probe) may be current on this thread
        fbo = self._fbo(st, (w, h), with_normal)
        self._set_faces(st, faces)
        if cols is None:
            self._buffer(st, 'color', np.ones((nv, 3), np.float32))
        elif len(cols) == 1:
            self._buffer(st, 'color', cols[0])
        np_dtype = np.uint8 if self.color_dtype == 'f1' else np.float32
        # The mask comes from depth > 0 when depth is read, else from the colour's alpha. RGB is read straight
        # into the output when alpha is not needed (cheaper than RGBA plus a strided copy).
        alpha_mask = 'mask' in outputs and 'depth' not in outputs
        n_col = 4 if alpha_mask else 3
        out = {}
        rgba = np.empty((b, h, w, n_col), np_dtype) if ('color' in outputs or alpha_mask) else None
        depth = np.empty((b, h, w), np.float32) if 'depth' in outputs else None
        normal4 = np.empty((b, h, w, 4), np.float32) if with_normal else None

        fbo.use()
        ctx.viewport = (0, 0, w, h)
        ctx.disable(ctx.CULL_FACE | ctx.BLEND)
        ctx.enable(ctx.DEPTH_TEST)
        prog = self._program(st, with_normal)
        for i in range(b):
            self._buffer(st, 'pos', verts[i])
            if cols is not None and len(cols) > 1:
                self._buffer(st, 'color', cols[i])
            if with_normal:
                n = nrms[0 if len(nrms) == 1 else i] if nrms is not None else vertex_normals(verts[i], faces)
                self._buffer(st, 'normal', n)
            xy, z = projection_coefficients(focal[i], princpt[i], (w, h), near, far)
            prog['proj_xy'].value = xy
            prog['proj_z'].value = z
            vao = self._bind(st, with_normal)
            fbo.clear(0.0, 0.0, 0.0, 0.0, depth=1.0)
            vao.render(mode=ctx.TRIANGLES, vertices=st.num_indices)
            if rgba is not None:
                fbo.read_into(rgba[i], components=n_col, attachment=0, dtype=self.color_dtype, alignment=1)
            if depth is not None:
                fbo.read_into(depth[i], components=1, attachment=1, dtype='f4')
            if normal4 is not None:
                fbo.read_into(normal4[i], components=4, attachment=2, dtype='f4')

        if 'color' in outputs:
            out['color'] = rgba[..., :3] if alpha_mask else rgba
        if 'mask' in outputs:
            out['mask'] = depth > 0 if depth is not None else rgba[..., 3] > 0
        if depth is not None:
            out['depth'] = depth
        if normal4 is not None:
            out['normal'] = normal4[..., :3]
        return out if batched else {k: v[0] for k, v in out.items()}

    def release(self) -> None:
        """Frees the calling thread's GL objects of this rasteriser (the thread's context stays); other threads'
        objects are left to them (a thread cannot release another's). A forked child only forgets them."""
        with self._lock:
            if any(st.pid != os.getpid() for st in self._states.values()):
                self._drop_inherited()
                return
            st = self._states.pop(threading.get_ident(), None)
        if st is None:
            return
        if st.thread is not threading.current_thread():
            keep_inherited(st.objects())
            return
        make_current(st.ctx)
        for obj in st.objects():
            if obj is not None:
                obj.release()


#: Every live rasteriser, so a forked child can drop what they inherited.
_LIVE: weakref.WeakSet = weakref.WeakSet()
_DEFAULT: dict[tuple, MeshRasterizer] = {}
_DEFAULT_LOCK = threading.Lock()


def _after_fork_in_child() -> None:
    for rast in list(_LIVE):
        rast._lock = threading.Lock()  # a parent thread may have held it at the fork
        rast._drop_inherited()
    global _DEFAULT_LOCK
    _DEFAULT_LOCK = threading.Lock()
    keep_inherited(_DEFAULT.values())
    _DEFAULT.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


def default_rasterizer(near: float = 0.01, far: float = 100.0, device_index: int | str | None = None,
                       color_dtype: str = 'f1') -> MeshRasterizer:
    """A process-wide rasteriser per settings, so renderers built from configs share GL objects."""
    key = (os.getpid(), near, far, device_index, color_dtype)
    with _DEFAULT_LOCK:
        if key not in _DEFAULT:
            _DEFAULT[key] = MeshRasterizer(near, far, device_index, color_dtype)
        return _DEFAULT[key]
