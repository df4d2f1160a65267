"""Headless EGL OpenGL contexts, one per thread and EGL device, safe across threads and ``fork``; EGL queries.

**Threads.** An OpenGL context is current on one thread at a time, and GL objects (framebuffers, vertex
arrays) belong to their context. So every thread gets its own context per EGL device, created on its first
render (:func:`get_context`; ~10 ms on llvmpipe) and kept for the thread's life; ``MeshRasterizer`` keeps its
GL objects per thread too. A render from any thread, one after another or concurrently, therefore equals the
main thread's render byte for byte (tests/render/test_threads_and_workers.py). A thread whose Python ``ident``
is reused by a new thread never sees the old thread's context: the context is retired (kept referenced, never
used). :func:`release_thread_context` frees the calling thread's contexts early (a thread pool that is done).

**Processes.** A context is created on first use and cached for the (thread, process). Forked children (mmengine
and torch dataloader workers default to ``fork``) inherit the parent's GL state as a copy of its memory but not
its threads, so they must neither use nor release it:

- ``os.register_at_fork(after_in_child=...)`` moves every inherited context (and, in ``rasterizer.py``, every
  GL object) to :data:`_INHERITED`, where it stays referenced and untouched for the life of the child. Nothing
  inherited is released: releasing would call into a driver whose worker threads do not exist in the child.
- The child then needs its own context. Mesa's llvmpipe keeps its rasteriser threads per EGL *display*, and a
  display initialised by the parent cannot be initialised again in the child (``eglInitialize`` returns the
  inherited one; its first ``glReadPixels`` waits forever for threads that were not forked). So the child opens
  a display the parent did not: the parent uses the EGL device platform (through glcontext, as moderngl does),
  a child the ``EGL_PLATFORM_SURFACELESS_MESA`` display (:class:`_SurfacelessContext`, ctypes), which Mesa
  backs with a fresh llvmpipe screen. Measured on Mesa 22.3.6 (tests/render/test_fork_safety.py).
- With ``LP_NUM_THREADS=0`` set before the ancestor's first render llvmpipe has no threads, and a child may
  create a new context on an inherited display too (so a grandchild of a rendering child works).
- Otherwise (a grandchild of two rendering generations with llvmpipe threads, or any fork after a context on
  a GPU driver: the NVIDIA driver does not support using its state across fork, not tried here for want of
  a GPU) :class:`ForkedContextError` says to use the ``spawn``/``forkserver`` start method instead of hanging.

EGL device indices are ``eglQueryDevicesEXT`` order, which is *not* CUDA's device order (CUDA orders by speed
unless ``CUDA_DEVICE_ORDER=PCI_BUS_ID``, and ``CUDA_VISIBLE_DEVICES`` renumbers CUDA devices, not EGL ones;
the Mesa software device is listed too). :func:`egl_devices` reports each device's CUDA ordinal where the
driver exposes ``EGL_NV_device_cuda``, and ``device_index='cuda:N'`` picks the EGL device of CUDA device N.
"""
from __future__ import annotations

import ctypes
import os
import threading
from typing import Any

#: This process's contexts by (thread ident, EGL device index) -> (thread, context).
_CONTEXTS: dict[tuple[int, int], tuple[threading.Thread, Any]] = {}
#: Guards _CONTEXTS and _DISPLAYS (threads create contexts concurrently).
_LOCK = threading.RLock()
#: EGL displays initialised in this address space, (device index, kind) -> who initialised it and how. Inherited
#: by forked children, which is how they know which displays they cannot use.
_DISPLAYS: dict[tuple[int, str], dict[str, Any]] = {}
#: GL objects a forked child inherited: kept referenced so they are never released, and never used.
_INHERITED: list = []
_PID = os.getpid()
#: Display kinds in the order a process tries them (see the module docstring).
_KINDS = ('device', 'surfaceless')

_EGL_NONE = 0x3038
_EGL_EXTENSIONS = 0x3055
_EGL_OPENGL_API = 0x30A2
_EGL_PLATFORM_SURFACELESS_MESA = 0x31DD
_EGL_CUDA_DEVICE_NV = 0x323A
_EGL_DRM_DEVICE_FILE_EXT = 0x3233


class ForkedContextError(RuntimeError):
    """This forked process cannot get a working GL context because of GL state inherited from its parent."""


def _fork_advice(device_index: int, why: str) -> str:
    return (f'posedreamer_mm.render: process {os.getpid()} was forked from one that had already rendered on EGL '
            f'device {device_index}, and {why}. Start workers with the spawn or forkserver method instead '
            "(mmengine: env_cfg=dict(mp_cfg=dict(mp_start_method='spawn')); torch DataLoader: "
            "multiprocessing_context='spawn'), or set LP_NUM_THREADS=0 before the first render (Mesa only), "
            'or do not render in the parent before forking. See docs/rendering.md.')


def _after_fork_in_child() -> None:
    """Drops (without touching) every context inherited from the parent; registered with ``os.register_at_fork``."""
    global _PID
    if _PID == os.getpid():
        return
    global _LOCK
    _LOCK = threading.RLock()  # a lock held by a parent thread that does not exist here would never be released
    _INHERITED.extend(ctx for _, ctx in _CONTEXTS.values())
    _CONTEXTS.clear()
    _PID = os.getpid()


os.register_at_fork(after_in_child=_after_fork_in_child)


def keep_inherited(objects) -> None:
    """Parks GL objects a forked child inherited so they are neither used nor released (see module docstring)."""
    _INHERITED.extend(o for o in objects if o is not None)


# --- ctypes EGL ----------------------------------------------------------------------------------------------
class _Egl:
    """The few EGL entry points used here, through libEGL (glvnd) with ctypes."""

    def __init__(self) -> None:
        lib = ctypes.CDLL('libEGL.so.1')
        vp, ci, cu, pi = ctypes.c_void_p, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(ctypes.c_int)
        lib.eglGetProcAddress.restype, lib.eglGetProcAddress.argtypes = vp, [ctypes.c_char_p]
        lib.eglGetError.restype = ci
        lib.eglInitialize.restype, lib.eglInitialize.argtypes = cu, [vp, pi, pi]
        lib.eglChooseConfig.restype = cu
        lib.eglChooseConfig.argtypes = [vp, pi, ctypes.POINTER(vp), ci, pi]
        lib.eglBindAPI.restype, lib.eglBindAPI.argtypes = cu, [cu]
        lib.eglCreateContext.restype, lib.eglCreateContext.argtypes = vp, [vp, vp, vp, pi]
        lib.eglMakeCurrent.restype, lib.eglMakeCurrent.argtypes = cu, [vp, vp, vp, vp]
        lib.eglDestroyContext.restype, lib.eglDestroyContext.argtypes = cu, [vp, vp]
        self.lib = lib

        def ext(name, restype, *argtypes):
            address = lib.eglGetProcAddress(name.encode())
            return ctypes.CFUNCTYPE(restype, *argtypes)(address) if address else None

        self.query_devices = ext('eglQueryDevicesEXT', cu, ci, ctypes.POINTER(vp), pi)
        self.query_device_string = ext('eglQueryDeviceStringEXT', ctypes.c_char_p, vp, ci)
        self.query_device_attrib = ext('eglQueryDeviceAttribEXT', cu, vp, ci, ctypes.POINTER(ctypes.c_ssize_t))
        self.get_platform_display = ext('eglGetPlatformDisplayEXT', vp, cu, vp, pi)

    def error(self) -> str:
        return hex(self.lib.eglGetError())

    def devices(self) -> list[int]:
        if self.query_devices is None:
            return []
        n = ctypes.c_int(0)
        if not self.query_devices(0, None, ctypes.byref(n)) or n.value == 0:
            return []
        handles = (ctypes.c_void_p * n.value)()
        self.query_devices(n.value, handles, ctypes.byref(n))
        return list(handles[:n.value])


_EGL_LIB: _Egl | None = None


def _egl() -> _Egl:
    global _EGL_LIB
    if _EGL_LIB is None:
        _EGL_LIB = _Egl()
    return _EGL_LIB


class _SurfacelessContext:
    """A glcontext-compatible loader: an OpenGL 3.3 core context on Mesa's surfaceless EGL display.

    moderngl takes it as ``create_context(standalone=True, context=...)``; it needs ``load_opengl_function``,
    ``release``, ``__enter__`` and ``__exit__``.
    """

    def __init__(self) -> None:
        egl = self.egl = _egl()
        if egl.get_platform_display is None:
            raise RuntimeError('eglGetPlatformDisplayEXT is not available')
        self.dpy = egl.get_platform_display(_EGL_PLATFORM_SURFACELESS_MESA, None, None)
        if not self.dpy:
            raise RuntimeError(f'no surfaceless EGL display (EGL error {egl.error()})')
        major, minor = ctypes.c_int(), ctypes.c_int()
        if not egl.lib.eglInitialize(self.dpy, ctypes.byref(major), ctypes.byref(minor)):
            raise RuntimeError(f'eglInitialize failed on the surfaceless display ({egl.error()})')
        # Pbuffer-capable desktop-GL config; rendering goes to framebuffer objects, so its formats do not matter.
        attribs = (ctypes.c_int * 5)(0x3040, 0x0008, 0x3033, 0x0001, _EGL_NONE)
        config, count = ctypes.c_void_p(), ctypes.c_int(0)
        if not egl.lib.eglChooseConfig(self.dpy, attribs, ctypes.byref(config), 1, ctypes.byref(count)) \
                or count.value == 0:
            raise RuntimeError(f'no OpenGL config on the surfaceless display ({egl.error()})')
        if not egl.lib.eglBindAPI(_EGL_OPENGL_API):
            raise RuntimeError(f'eglBindAPI(EGL_OPENGL_API) failed ({egl.error()})')
        # OpenGL 3.3 core, as glcontext asks for.
        ctx_attribs = (ctypes.c_int * 7)(0x3098, 3, 0x30FB, 3, 0x30FD, 0x1, _EGL_NONE)
        self.ctx = egl.lib.eglCreateContext(self.dpy, config, None, ctx_attribs)
        if not self.ctx:
            raise RuntimeError(f'eglCreateContext failed on the surfaceless display ({egl.error()})')
        self.__enter__()

    def load_opengl_function(self, name: str) -> int:
        return self.egl.lib.eglGetProcAddress(name.encode()) or 0

    def release(self) -> None:
        if self.ctx:
            self.egl.lib.eglMakeCurrent(self.dpy, None, None, None)
            self.egl.lib.eglDestroyContext(self.dpy, self.ctx)
            self.ctx = None

    def __enter__(self):
        if self.ctx and not self.egl.lib.eglMakeCurrent(self.dpy, None, None, self.ctx):
            raise RuntimeError(f'eglMakeCurrent failed ({self.egl.error()})')
        return self

    def __exit__(self, *exc) -> None:
        self.egl.lib.eglMakeCurrent(self.dpy, None, None, None)


# --- contexts ------------------------------------------------------------------------------------------------
def resolve_device_index(device_index: int | str | None = None) -> int:
    """The EGL device index to render on.

    Args:
        device_index: an EGL device index (``eglQueryDevicesEXT`` order), ``'cuda:N'`` for the EGL device of
            CUDA device N (needs the NVIDIA driver's ``EGL_NV_device_cuda``), or ``None``:
            ``$POSEDREAMER_EGL_DEVICE`` (same forms) if set, else 0 (glcontext's default display).

    Returns:
        The EGL device index.
    """
    if device_index is None:
        device_index = os.environ.get('POSEDREAMER_EGL_DEVICE') or 0
    if isinstance(device_index, str):
        if device_index.startswith('cuda:'):
            return egl_device_for_cuda(int(device_index[5:]))
        device_index = int(device_index)
    return int(device_index)


def _display_state(device_index: int) -> tuple[list[str], list[str], list[dict]]:
    """Kinds this process initialised itself, kinds nobody initialised, and records inherited from ancestors."""
    own, free, inherited = [], [], []
    for kind in _KINDS:
        rec = _DISPLAYS.get((device_index, kind))
        if rec is None:
            free.append(kind)
        elif rec['pid'] == os.getpid():
            own.append(kind)
        else:
            inherited.append(dict(rec, kind=kind))
    return own, free, inherited


def _create(device_index: int):
    import moderngl
    own, free, inherited = _display_state(device_index)
    if any(rec['is_gpu'] for rec in inherited):
        raise ForkedContextError(_fork_advice(device_index, 'the GPU driver does not support GL state across fork'))
    if own:
        kind = own[0]
    elif free:
        kind = free[0]
    elif all(rec['unthreaded'] for rec in inherited):
        kind = 'device'  # no llvmpipe threads to miss: a new context on the inherited display works
    else:
        raise ForkedContextError(_fork_advice(
            device_index, 'every EGL display Mesa offers for it was already initialised (with llvmpipe threads, '
            'which a forked process does not have) by this process\'s ancestors'))
    try:
        if kind == 'device':
            ctx = moderngl.create_standalone_context(backend='egl', device_index=device_index)
        else:
            ctx = moderngl.create_context(standalone=True, context=_SurfacelessContext())
    except Exception as err:  # noqa: BLE001 - re-raised with the fix
        raise RuntimeError(
            'Could not create a headless EGL OpenGL context. On Debian/Ubuntu install libegl1 '
            'libegl-mesa0 libgl1-mesa-dri (CPU, llvmpipe); on an NVIDIA node make sure the NVIDIA EGL vendor '
            'library is visible (__EGL_VENDOR_LIBRARY_FILENAMES=.../10_nvidia.json). See docs/rendering.md.'
        ) from err
    info = gl_device_info(ctx)
    if inherited and info['renderer'] != inherited[0]['renderer']:
        ctx.release()
        raise ForkedContextError(_fork_advice(
            device_index, f"the display left to it renders with {info['renderer']!r}, not "
            f"{inherited[0]['renderer']!r} like the parent"))
    ctx.extra = dict(pid=os.getpid(), device_index=device_index, display=kind)
    _DISPLAYS.setdefault((device_index, kind), dict(
        pid=os.getpid(), is_gpu=info['is_gpu'], renderer=info['renderer'],
        unthreaded=os.environ.get('LP_NUM_THREADS') == '0'))
    return ctx


def get_context(device_index: int | str | None = None):
    """The calling thread's headless EGL context for one EGL device, created on first use.

    Args:
        device_index: EGL device (see :func:`resolve_device_index`; ``None``: ``$POSEDREAMER_EGL_DEVICE`` or 0).

    Returns:
        A ``moderngl.Context`` of this thread and process, current on the calling thread when created (call
        :func:`make_current` before using it when several contexts exist). Another thread gets another
        context; a forked child gets its own, never the parent's.

    Raises:
        ForkedContextError: in a forked child that cannot get a working context (see the module docstring).
    """
    if _PID != os.getpid():  # a fork that bypassed os.register_at_fork (e.g. from C)
        _after_fork_in_child()
    index = resolve_device_index(device_index)
    thread = threading.current_thread()
    key = (threading.get_ident(), index)
    with _LOCK:
        owner, ctx = _CONTEXTS.get(key, (None, None))
        if ctx is not None and owner is not thread:  # the ident of a finished thread, reused: never touch it
            _INHERITED.append(ctx)
            ctx = None
        if ctx is None:
            ctx = _create(index)
            _CONTEXTS[key] = (thread, ctx)
    return ctx


def thread_contexts() -> dict[int, Any]:
    """The calling thread's contexts by EGL device index (none before its first render)."""
    ident, thread = threading.get_ident(), threading.current_thread()
    with _LOCK:
        return {dev: ctx for (tid, dev), (owner, ctx) in _CONTEXTS.items() if tid == ident and owner is thread}


def release_thread_context() -> int:
    """Releases the calling thread's contexts (a worker thread that is done rendering); returns how many.

    Rasterisers used from this thread must not be used from it again without rebuilding their GL objects, which
    they do by themselves: their per-thread state notices the new context.
    """
    ident, thread = threading.get_ident(), threading.current_thread()
    released = 0
    with _LOCK:
        for key in [k for k, (owner, _) in _CONTEXTS.items() if k[0] == ident and owner is thread]:
            _CONTEXTS.pop(key)[1].release()
            released += 1
    return released


def make_current(ctx) -> None:
    """Makes a moderngl context current on this thread (about 1 us; GL calls go to the current context)."""
    ctx.mglo.__enter__()


def gl_device_info(ctx=None) -> dict[str, str | bool]:
    """Vendor/renderer strings of a context and whether it is a hardware GPU (not llvmpipe/softpipe)."""
    ctx = ctx if ctx is not None else get_context()
    info = {k: ctx.info[f'GL_{k.upper()}'] for k in ('vendor', 'renderer', 'version')}
    info['is_gpu'] = not any(s in info['renderer'].lower() for s in ('llvmpipe', 'softpipe', 'swrast'))
    return info


def _device_queries(handle) -> dict[str, Any]:
    """What EGL says about a device without a context: software or not, DRM node, CUDA ordinal."""
    egl = _egl()
    exts = (egl.query_device_string(handle, _EGL_EXTENSIONS) or b'').decode() if egl.query_device_string else ''
    out = dict(software='EGL_MESA_device_software' in exts, drm_file=None, cuda_device=None)
    if 'EGL_EXT_device_drm' in exts.split():
        name = egl.query_device_string(handle, _EGL_DRM_DEVICE_FILE_EXT)
        out['drm_file'] = name.decode() if name else None
    if 'EGL_NV_device_cuda' in exts and egl.query_device_attrib is not None:
        value = ctypes.c_ssize_t(-1)
        if egl.query_device_attrib(handle, _EGL_CUDA_DEVICE_NV, ctypes.byref(value)):
            out['cuda_device'] = int(value.value)
    return out


def egl_devices(max_devices: int = 16) -> list[dict[str, Any]]:
    """Every EGL device, in index order: :func:`gl_device_info` plus ``index``, ``software``, ``drm_file`` and
    ``cuda_device`` (the CUDA ordinal from ``EGL_NV_device_cuda``, None where the driver does not say).

    GL strings need a context: a device this process already renders on reuses its context; the others get a
    probe context that is released again (its EGL display stays initialised, as EGL displays do).
    """
    found = []
    for index, handle in enumerate(_egl().devices()[:max_devices]):
        entry = dict(index=index, **_device_queries(handle))
        ctx = thread_contexts().get(index) if _PID == os.getpid() else None
        probe = None
        if ctx is None:
            try:
                ctx = probe = _create(index)
            except RuntimeError as err:
                found.append(dict(entry, vendor='', renderer='', version='', is_gpu=not entry['software'],
                                  error=str(err)))
                continue
        entry.update(gl_device_info(ctx))
        if probe is not None:
            probe.release()  # renderers make their own context current before drawing
        found.append(entry)
    return found


def egl_device_for_cuda(cuda_index: int) -> int:
    """The EGL device index of CUDA device ``cuda_index`` (``EGL_CUDA_DEVICE_NV``).

    Raises:
        RuntimeError: when no EGL device reports that CUDA ordinal (no NVIDIA EGL driver, or one without
            ``EGL_NV_device_cuda``): pass the EGL index explicitly then (``egl_devices()`` lists them).
    """
    handles = _egl().devices()
    for index, handle in enumerate(handles):
        if _device_queries(handle)['cuda_device'] == int(cuda_index):
            return index
    raise RuntimeError(f'no EGL device reports CUDA device {cuda_index} (EGL_NV_device_cuda): found '
                       f'{len(handles)} EGL device(s); pass an EGL device index instead (see egl_devices())')
