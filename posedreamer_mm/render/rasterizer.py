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
import weakref
from collections import OrderedDict
from typing import Sequence

import numpy as np

from .egl import egl_devices, get_context, gl_device_info, keep_inherited, make_current  # noqa: F401 (re-exported)
from .geometry import GeometryError, validate_camera, validate_faces

#: Targets a render can return (``mask`` always comes with ``color``'s alpha or with ``depth``).
OUTPUTS = ('color', 'mask', 'depth', 'normal')

_VERTEX_SHADER = """
#version 330
uniform vec4 proj_xy;   // clip.x = proj_xy.x * x + proj_xy.y * z ; clip.y = proj_xy.z * y + proj_xy.w * z
uniform vec2 proj_z;    // clip.z = proj_z.x * z + proj_z.y ; clip.w = z
in vec3 in_pos;
in vec3 in_color;
in vec3 in_normal;
out vec3 v_pos;
out vec3 v_color;
out vec3 v_normal;
void main() {
    v_pos = in_pos;
    v_color = in_color;
    v_normal = in_normal;
    gl_Position = vec4(proj_xy.x * in_pos.x + proj_xy.y * in_pos.z,
                       proj_xy.z * in_pos.y + proj_xy.w * in_pos.z,
                       proj_z.x * in_pos.z + proj_z.y,
                       in_pos.z);
}
"""

_FRAGMENT_SHADER = """
#version 330
in vec3 v_pos;
in vec3 v_color;
in vec3 v_normal;
layout(location = 0) out vec4 out_color;
layout(location = 1) out float out_depth;
#ifdef WITH_NORMAL
layout(location = 2) out vec4 out_normal;
#endif
void main() {
    out_color = vec4(v_color, 1.0);
    out_depth = v_pos.z;
#ifdef WITH_NORMAL
    // The geometric normal of the visible side (turned towards the camera) decides which way the smooth
    // normal points, so back faces seen through an open mesh are lit from the visible side too.
    vec3 ng = cross(dFdx(v_pos), dFdy(v_pos));
    if (dot(ng, v_pos) > 0.0) ng = -ng;
    vec3 n = normalize(v_normal);
    if (dot(n, ng) < 0.0) n = -n;
    out_normal = vec4(n, 1.0);
#endif
}
"""


def projection_coefficients(focal: Sequence[float], princpt: Sequence[float], img_size: Sequence[int],
                            near: float, far: float) -> tuple[tuple[float, ...], tuple[float, float]]:
    """Clip-space coefficients that reproduce ``project_points`` and the pixel-centre convention.

    Window x must be ``u + 0.5`` (GL fills pixel i when its centre i + 0.5 is covered; ours is at i), so
    ``clip.x / clip.w = 2 * (fx * x / z + cx + 0.5) / W - 1``. The same holds for y with no flip: GL's
    window y grows upwards, but ``glReadPixels`` returns the bottom row first, so array row v holds window
    y in [v, v + 1), which is image row v of the y-down OpenCV image.

    Returns:
        ``(ax, bx, ay, by)`` with ``clip.x = ax * x + bx * z``, ``clip.y = ay * y + by * z``, and
        ``(cz, dz)`` with ``clip.z = cz * z + dz`` (z = near -> -1, z = far -> +1), ``clip.w = z``.
    """
    fx, fy = (float(f) for f in focal)
    cx, cy = (float(c) for c in princpt)
    w, h = (int(s) for s in img_size)
    xy = (2.0 * fx / w, 2.0 * (cx + 0.5) / w - 1.0, 2.0 * fy / h, 2.0 * (cy + 0.5) / h - 1.0)
    z = ((far + near) / (far - near), -2.0 * far * near / (far - near))
    return xy, z


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


class MeshRasterizer:
    """Renders triangle meshes with vertex attributes into numpy arrays (no MSAA, no culling, z-buffered).

    GL objects are kept between calls: per frame only vertex positions (and colours/normals when given) are
    written to the vertex buffers; framebuffers are cached per image size and output set, the
    ``max_framebuffers`` most recently used ones (older ones are released).

    Fork and pickle safe: GL objects belong to the process that made them. A forked child drops the ones it
    inherited without touching them (``os.register_at_fork`` plus a pid check) and makes its own on first use;
    pickling (``spawn`` workers) drops them too, and the copy rebuilds them lazily.

    Args:
        near: near clipping distance in metres (surface closer than this is cut).
        far: far clipping distance in metres.
        device_index: EGL device (see ``egl.resolve_device_index``: an index, ``'cuda:N'`` or None).
        color_dtype: ``'f1'`` (uint8 colours, rounded by GL) or ``'f4'`` (float32 colours).
        max_framebuffers: framebuffers kept (one per image size and output set). Six hold a generation run's
            working set: the crop with and without normals plus the skeleton's 64/128 px face windows.
    """

    def __init__(self, near: float = 0.01, far: float = 100.0, device_index: int | str | None = None,
                 color_dtype: str = 'f1', max_framebuffers: int = 6) -> None:
        if color_dtype not in ('f1', 'f4'):
            raise ValueError(f"color_dtype must be 'f1' or 'f4', got {color_dtype!r}")
        self.near, self.far = float(near), float(far)
        self.device_index = device_index
        self.color_dtype = color_dtype
        self.max_framebuffers = max(1, int(max_framebuffers))
        self._reset_gl()
        _LIVE.add(self)

    def _reset_gl(self) -> None:
        self._ctx = None
        self._pid = None
        self._programs = {}
        self._fbos: OrderedDict = OrderedDict()  # (size, with_normal) -> (framebuffer, attachments), LRU order
        self._buffers = {}
        self._vao = None
        self._vao_key = None
        self._faces = None
        self._num_indices = 0

    def _gl_objects(self) -> list:
        fbos = [o for fbo, atts in self._fbos.values() for o in (fbo, *atts)]
        return [*fbos, *self._buffers.values(), *self._programs.values(), self._vao, self._ctx]

    def _drop_inherited(self) -> None:
        """Forgets GL objects made by another process (a fork's parent) without calling into GL."""
        keep_inherited(self._gl_objects())
        self._reset_gl()

    @property
    def ctx(self):
        """This process's GL context (a forked child never gets its parent's)."""
        if self._pid != os.getpid():
            if self._pid is not None:
                self._drop_inherited()
            self._ctx = get_context(self.device_index)
            self._pid = os.getpid()
        return self._ctx

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.update(_ctx=None, _pid=None, _programs={}, _fbos=OrderedDict(), _buffers={}, _vao=None, _vao_key=None,
                     _faces=None, _num_indices=0)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        _LIVE.add(self)

    # --- GL object caches --------------------------------------------------------------------------------
    def _program(self, with_normal: bool):
        if with_normal not in self._programs:
            frag = _FRAGMENT_SHADER.replace('#version 330', '#version 330\n#define WITH_NORMAL' if with_normal
                                            else '#version 330', 1)
            self._programs[with_normal] = self.ctx.program(vertex_shader=_VERTEX_SHADER, fragment_shader=frag)
        return self._programs[with_normal]

    def _fbo(self, size: tuple[int, int], with_normal: bool):
        key = (size, with_normal)
        if key in self._fbos:
            self._fbos.move_to_end(key)
            return self._fbos[key][0]
        ctx = self.ctx
        attachments = [ctx.renderbuffer(size, components=4, dtype=self.color_dtype),
                       ctx.renderbuffer(size, components=1, dtype='f4')]
        if with_normal:
            attachments.append(ctx.renderbuffer(size, components=4, dtype='f4'))
        attachments.append(ctx.depth_renderbuffer(size))
        fbo = ctx.framebuffer(color_attachments=attachments[:-1], depth_attachment=attachments[-1])
        self._fbos[key] = (fbo, attachments)
        while len(self._fbos) > self.max_framebuffers:  # e.g. size=None over images of many sizes
            old, old_attachments = self._fbos.popitem(last=False)[1]
            for obj in (old, *old_attachments):
                obj.release()
        return fbo

    def _buffer(self, name: str, data: np.ndarray):
        data = np.ascontiguousarray(data, dtype=np.uint32 if name == 'index' else np.float32)
        buf = self._buffers.get(name)
        if buf is None or buf.size != data.nbytes:
            if buf is not None:
                buf.release()
            buf = self._buffers[name] = self.ctx.buffer(data.tobytes(), dynamic=True)
            self._vao_key = None  # VAOs bind buffer objects: rebuild
        else:
            buf.write(data)
        return buf

    def _set_faces(self, faces: np.ndarray) -> None:
        faces = np.asarray(faces)
        if self._faces is None or self._faces.shape != faces.shape or not np.array_equal(self._faces, faces):
            self._faces = faces.copy()
            self._buffer('index', faces.reshape(-1))
            self._num_indices = faces.size

    def _bind(self, with_normal: bool):
        key = (with_normal, id(self._buffers['index']), id(self._buffers['pos']), id(self._buffers['color']),
               id(self._buffers.get('normal')))
        if self._vao_key != key:
            prog = self._program(with_normal)
            content = [(self._buffers['pos'], '3f', 'in_pos'), (self._buffers['color'], '3f', 'in_color')]
            if with_normal:
                content.append((self._buffers['normal'], '3f', 'in_normal'))
            if self._vao is not None:
                self._vao.release()
            self._vao = self.ctx.vertex_array(prog, content, index_buffer=self._buffers['index'],
                                              index_element_size=4)
            self._vao_key = key
        return self._vao

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

        ctx = self.ctx
        make_current(ctx)  # another context (another device, a probe) may be current on this thread
        fbo = self._fbo((w, h), with_normal)
        self._set_faces(faces)
        if cols is None:
            self._buffer('color', np.ones((nv, 3), np.float32))
        elif len(cols) == 1:
            self._buffer('color', cols[0])
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
        prog = self._program(with_normal)
        for i in range(b):
            self._buffer('pos', verts[i])
            if cols is not None and len(cols) > 1:
                self._buffer('color', cols[i])
            if with_normal:
                n = nrms[0 if len(nrms) == 1 else i] if nrms is not None else vertex_normals(verts[i], faces)
                self._buffer('normal', n)
            xy, z = projection_coefficients(focal[i], princpt[i], (w, h), near, far)
            prog['proj_xy'].value = xy
            prog['proj_z'].value = z
            vao = self._bind(with_normal)
            fbo.clear(0.0, 0.0, 0.0, 0.0, depth=1.0)
            vao.render(mode=ctx.TRIANGLES, vertices=self._num_indices)
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
        """Frees this rasteriser's GL objects (the shared context stays); a forked child only forgets them."""
        if self._pid != os.getpid():
            self._drop_inherited()
            return
        if self._ctx is None:
            return
        make_current(self._ctx)
        for obj in self._gl_objects()[:-1]:
            if obj is not None:
                obj.release()
        self._reset_gl()


#: Every live rasteriser, so a forked child can drop what they inherited.
_LIVE: weakref.WeakSet = weakref.WeakSet()
_DEFAULT: dict[tuple, MeshRasterizer] = {}


def _after_fork_in_child() -> None:
    for rast in list(_LIVE):
        if rast._pid is not None and rast._pid != os.getpid():
            rast._drop_inherited()
    keep_inherited(_DEFAULT.values())
    _DEFAULT.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


def default_rasterizer(near: float = 0.01, far: float = 100.0, device_index: int | str | None = None,
                       color_dtype: str = 'f1') -> MeshRasterizer:
    """A process-wide rasteriser per settings, so renderers built from configs share GL objects."""
    key = (os.getpid(), near, far, device_index, color_dtype)
    if key not in _DEFAULT:
        _DEFAULT[key] = MeshRasterizer(near, far, device_index, color_dtype)
    return _DEFAULT[key]
