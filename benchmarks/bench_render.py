"""Control-rendering throughput: PNCC (+ metric depth) renders per second at 512 and 1024, body forward apart.

The headline is the path generation configs use: a square body crop (``size=512``) from a 1920x1080 camera,
projection, bbox and crop camera included. ``size=None`` (render at the input camera) is listed after it.

Usage (one CPU core, as docs/rendering.md reports it)::

    OMP_NUM_THREADS=1 LP_NUM_THREADS=0 taskset -c 0 .venv/bin/python benchmarks/bench_render.py
    .venv/bin/python benchmarks/bench_render.py --device-index 1        # one EGL device
    .venv/bin/python benchmarks/bench_render.py --device-index cuda:0   # the EGL device of CUDA device 0

EGL device indices are ``eglQueryDevicesEXT`` order, not CUDA's; ``cuda:N`` maps through the NVIDIA driver's
``EGL_NV_device_cuda`` (``egl_devices()`` prints each device's CUDA ordinal where the driver reports it).

``--cpu-core N`` pins the process itself when ``taskset`` is not available. ``LP_NUM_THREADS=0`` makes Mesa's
llvmpipe rasterise in the calling thread (best with one core per process); it must be set before the GL
context exists, so this script sets it (unless already set) when it pins itself to one core.
The body model is the generated SMPL-X stand-in (10,475 vertices, 20,908 faces).
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import tempfile
import time


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--sizes', type=int, nargs='+', default=[512, 1024])
    p.add_argument('--seconds', type=float, default=3.0, help='time budget per measurement')
    p.add_argument('--cpu-core', type=int, default=None, help='pin this process to one core')
    p.add_argument('--device-index', default=None,
                   help="EGL device index or 'cuda:N' to benchmark (default: device 0, then every GPU EGL device)")
    p.add_argument('--batch', type=int, default=16, help='bodies per forward call')
    p.add_argument('--threads', type=int, default=2,
                   help='threads sharing one renderer for the thread-pool line (each gets its own GL context)')
    return p.parse_args()


def _rate(fn, seconds: float, min_iters: int = 5) -> float:
    fn()  # warm-up: shader compile, buffers, framebuffers
    n, t0 = 0, time.perf_counter()
    while n < min_iters or time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return n / (time.perf_counter() - t0)


def setup(args):
    """Pins the process, then builds the mesh (posed stand-in bodies) and the renderers."""
    if args.cpu_core is not None:
        os.sched_setaffinity(0, {args.cpu_core})
    if len(os.sched_getaffinity(0)) == 1:
        os.environ.setdefault('LP_NUM_THREADS', '0')
        os.environ.setdefault('OMP_NUM_THREADS', '1')
    import numpy as np
    import torch
    torch.set_num_threads(int(os.environ.get('OMP_NUM_THREADS', torch.get_num_threads())))
    from posedreamer_mm.body.body_model import SMPLXBodyModel, canonical_body_pose
    from posedreamer_mm.body.standin import write_standin_smplx
    from posedreamer_mm.render import PNCCRenderer, get_context, gl_device_info

    bench = dict(forward=None)
    tmp = tempfile.mkdtemp(prefix='bench_render_')
    write_standin_smplx(tmp)
    model = SMPLXBodyModel(model_path=tmp, gender='neutral', num_betas=10)
    b = args.batch
    gen = torch.Generator().manual_seed(0)
    params = dict(betas=torch.randn(b, 10, generator=gen) * 0.5,
                  global_orient=torch.tensor([[np.pi, 0.0, 0.0]]).repeat(b, 1),
                  body_pose=canonical_body_pose('A').repeat(b, 1) + 0.2 * torch.randn(b, 63, generator=gen),
                  transl=torch.tensor([[0.0, 0.3, 3.5]]).repeat(b, 1))

    def forward():
        with torch.no_grad():
            return model(**params)

    out = forward()
    verts, faces = out.vertices.numpy(), np.asarray(model.faces)
    bench['joints'] = out.joints.numpy()
    bench['forward'] = (forward, b)
    renderer_kw = dict(body_model=model)
    mesh_name = f'SMPL-X stand-in ({verts.shape[1]} vertices, {len(faces)} faces)'
    bench.update(verts=verts, faces=faces, mesh=mesh_name, renderer_kw=renderer_kw,
                 device=gl_device_info(get_context(args.device_index)), PNCCRenderer=PNCCRenderer)
    return bench


def run(args, bench) -> list[str]:
    lines = [f'date: {datetime.datetime.now():%Y-%m-%d %H:%M}  host: {platform.node()}  cpu: {_cpu_name()}',
             f'cores usable: {len(os.sched_getaffinity(0))}  OMP_NUM_THREADS={os.environ.get("OMP_NUM_THREADS")}'
             f'  LP_NUM_THREADS={os.environ.get("LP_NUM_THREADS")}',
             f'GL: {bench["device"]["renderer"]} ({bench["device"]["vendor"]}, {bench["device"]["version"]}),'
             f' gpu={bench["device"]["is_gpu"]}',
             f'mesh: {bench["mesh"]}']
    if bench['forward'] is not None:
        fn, b = bench['forward']
        rate = _rate(fn, args.seconds)
        lines.append(f'body forward (batch {b}): {rate * b:.0f} bodies/s ({1000 / rate:.1f} ms per call)')
    verts, faces = bench['verts'], bench['faces']
    for size in args.sizes:
        crop = bench['PNCCRenderer'](size=size, device_index=args.device_index, **bench['renderer_kw'])
        rate = _rate(lambda: crop.render(verts[0], faces, (1500, 1500), (960, 540), (1920, 1080)), args.seconds)
        lines.append(f'{size}x{size} PNCC + depth, body crop from a 1920x1080 camera: {rate:.1f} renders/s')
    for size in args.sizes:
        focal = (1.6 * size, 1.6 * size)
        princpt = (size / 2, size / 2)
        for with_depth in (True, False):
            r = bench['PNCCRenderer'](size=None, with_depth=with_depth, device_index=args.device_index,
                                      **bench['renderer_kw'])
            i = [0]

            def render():
                r.render(verts[i[0] % len(verts)], faces, focal, princpt, (size, size))
                i[0] += 1

            rate = _rate(render, args.seconds)
            what = 'PNCC + depth + mask' if with_depth else 'PNCC only'
            lines.append(f'{size}x{size} {what} (size=None, input camera): {rate:.1f} renders/s')
    lines += _other_controls(args, bench)
    lines += _threads_and_checks(args, bench)
    return lines


def _threads_and_checks(args, bench) -> list[str]:
    """Thread-pool throughput (one shared renderer, a GL context per thread), renderer build time (the PNCC
    colours are computed then) and the cost of the geometry check every render runs."""
    from concurrent.futures import ThreadPoolExecutor

    from posedreamer_mm.render.geometry import check_render_geometry
    size, verts, faces = args.sizes[0], bench['verts'], bench['faces']
    cam = ((1500, 1500), (960, 540), (1920, 1080))
    t0 = time.perf_counter()
    crop = bench['PNCCRenderer'](size=size, device_index=args.device_index, **bench['renderer_kw'])
    build = time.perf_counter() - t0
    n = args.threads
    with ThreadPoolExecutor(n) as pool:
        def batch():
            list(pool.map(lambda k: crop.render(verts[k % len(verts)], faces, *cam), range(4 * n)))
        rate = _rate(batch, args.seconds) * 4 * n
    check = _rate(lambda: check_render_geometry(verts[0], *cam), min(args.seconds, 1.0))
    return [f'{size}x{size} PNCC + depth, body crop, {n} threads sharing one renderer: {rate:.1f} renders/s',
            f'PNCCRenderer build (colours from the body model, cached per model file): {1000 * build:.1f} ms',
            f'geometry check per render (check_render_geometry, {verts.shape[1]} vertices): {1e6 / check:.0f} us']


def _other_controls(args, bench) -> list[str]:
    """The other control types at the first size, body crop from a 1920x1080 camera."""
    from posedreamer_mm.render import DepthRenderer, NormalRenderer, ShadedRenderer, SkeletonRenderer
    size, lines = args.sizes[0], []
    cam = dict(focal=(1500, 1500), princpt=(960, 540), img_size=(1920, 1080))
    joints = bench.get('joints')
    # The skeleton includes a depth-only rasterisation (face points hidden by the head are not drawn).
    for cls in (DepthRenderer, NormalRenderer, ShadedRenderer, SkeletonRenderer):
        if cls is SkeletonRenderer and joints is None:
            continue
        r = cls(size=size, device_index=args.device_index)
        j = None if joints is None else joints[0]
        rate = _rate(lambda: r.render(bench['verts'][0], bench['faces'], joints=j, **cam), args.seconds)
        lines.append(f'{size}x{size} {cls.__name__}, body crop: {rate:.1f} renders/s')
    return lines


def _cpu_name() -> str:
    try:
        with open('/proc/cpuinfo') as fh:
            for line in fh:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown'


def main():
    args = parse_args()
    bench = setup(args)
    for line in run(args, bench):
        print(line, flush=True)
    if args.device_index is None:
        from posedreamer_mm.render import egl_devices
        devices = egl_devices()
        print('EGL devices: ' + '; '.join(f"{d['index']}: {d['renderer']} ({d['vendor']}, cuda_device="
                                          f"{d['cuda_device']})" for d in devices))
        for d in devices:
            if d['is_gpu']:
                args.device_index = d['index']
                bench['device'] = d
                print(f"--- GPU EGL device {d['index']} ---", flush=True)
                for line in run(args, bench)[2:]:
                    print(line, flush=True)


if __name__ == '__main__':
    main()
