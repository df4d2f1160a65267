"""Renders are byte-identical in any thread, and workers of every start method render after the parent ran torch.

Policy (docs/rendering.md, "Threads and processes"): a GL context per thread and EGL device; a renderer or
rasteriser may be shared by a thread pool. Worker processes: fork, forkserver, spawn and DataLoader workers
all work; the PNCC colours are computed when the renderer is built, and a forked child runs torch on one thread.
"""
import json
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from posedreamer_mm.render import DepthRenderer, NormalRenderer, PNCCRenderer, SkeletonRenderer, egl
from posedreamer_mm.render.rasterizer import MeshRasterizer
from posedreamer_mm.testing.reference_rasterizer import uv_sphere

VERTS, FACES = uv_sphere(center=(0.05, -0.02, 3.0), radius=0.5, rings=24, segments=48)
JOINTS = VERTS[::40][:18]
CAM = dict(focal=300.0, princpt=(64.0, 48.0), img_size=(128, 96))
WORKER = Path(__file__).with_name('pool_worker.py')


def make_renderers():
    colors = (VERTS - VERTS.min(0)) / np.ptp(VERTS, 0)
    return [PNCCRenderer(colors=colors, size=96), DepthRenderer(size=None), NormalRenderer(size=64),
            SkeletonRenderer(size=96)]


def draw(renderers, shift: float = 0.0) -> list[np.ndarray]:
    v = VERTS + np.float32(shift)
    return [r(v, FACES, joints=JOINTS + np.float32(shift), **CAM) for r in renderers]


@pytest.mark.timeout(120)
@pytest.mark.parametrize('shared', [True, False], ids=['one-renderer-shared', 'renderer-per-thread'])
def test_thread_pool_renders_equal_the_main_thread_byte_for_byte(shared):
    # Before: every thread but the context's creator read back uninitialised memory, without an error.
    main_renderers = make_renderers()
    shifts = [0.0, 0.01, -0.02, 0.03] * 3
    expected = [draw(main_renderers, s) for s in shifts]

    def job(s):
        return draw(main_renderers if shared else make_renderers(), s)

    with ThreadPoolExecutor(4) as pool:  # concurrent: before, two threads at once 'cannot create vertex array'
        got = list(pool.map(job, shifts))
    for want, have in zip(expected, got):
        for a, b in zip(want, have):
            assert a.dtype == b.dtype and a.shape == b.shape
            assert a.tobytes() == b.tobytes()
    assert draw(main_renderers)[0].tobytes() == expected[0][0].tobytes()  # the main thread is unaffected


@pytest.mark.timeout(60)
def test_each_thread_gets_its_own_context_and_can_release_it():
    rast = MeshRasterizer()
    ref = rast.render(VERTS, FACES, **CAM, outputs=('depth',))['depth']
    seen = {}

    def worker():
        first = rast.render(VERTS, FACES, **CAM, outputs=('depth',))['depth']
        seen['ctx'] = egl.get_context()
        assert egl.release_thread_context() == 1
        again = rast.render(VERTS, FACES, **CAM, outputs=('depth',))['depth']  # a fresh context, rebuilt objects
        seen['equal'] = first.tobytes() == again.tobytes() == ref.tobytes()
        seen['new_ctx'] = egl.get_context() is not seen['ctx']
        egl.release_thread_context()

    t = threading.Thread(target=worker)
    t.start()
    t.join(50)
    assert seen == dict(ctx=seen['ctx'], equal=True, new_ctx=True)
    assert seen['ctx'] is not egl.get_context()


@pytest.fixture(scope='module')
def pool_runs(standin_model_dir):
    env = {k: v for k, v in os.environ.items() if k not in ('OMP_NUM_THREADS', 'LP_NUM_THREADS')}
    try:
        proc = subprocess.run([sys.executable, str(WORKER), str(standin_model_dir), 'fork', 'forkserver', 'spawn',
                               'dataloader'], env=env, capture_output=True, text=True, timeout=400,
                              cwd=Path(__file__).parents[2])
    except subprocess.TimeoutExpired as err:
        pytest.fail(f'a worker pool hung: {err.stderr}')
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.timeout(450)
@pytest.mark.parametrize('scenario', ['fork', 'forkserver', 'spawn', 'dataloader'])
def test_workers_render_after_the_parent_ran_torch(pool_runs, scenario):
    # Before: a fork (or forkserver) Pool worker hung forever in the PNCC colours' torch forward. The spawn
    # workers get renderers that already rendered in the parent (pickled without their GL objects).
    assert pool_runs[scenario] == pool_runs['parent'], pool_runs[scenario]
