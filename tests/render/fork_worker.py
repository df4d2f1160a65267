"""Fork/spawn scenarios for test_fork_safety.py, run as a script in a fresh interpreter (so a hang is a timeout).

Usage: ``python tests/render/fork_worker.py SCENARIO`` prints one JSON line with the results.
"""
import json
import multiprocessing as mp
import os
import pickle
import sys

import numpy as np

from posedreamer_mm.render import DepthRenderer, ForkedContextError, PNCCRenderer, get_context
from posedreamer_mm.testing.reference_rasterizer import uv_sphere

VERTS, FACES = uv_sphere(center=(0.05, -0.02, 3.0), radius=0.5)
CAM = dict(focal=(300.0, 300.0), princpt=(64.0, 48.0), img_size=(128, 96))
COLORS = (VERTS - VERTS.min(0)) / (VERTS.max(0) - VERTS.min(0))


def renderers():
    return [PNCCRenderer(colors=COLORS, size=None), DepthRenderer(size=96)]


def draw(rs) -> list[np.ndarray]:
    return [r(VERTS, FACES, **CAM) for r in rs]


def digest(images) -> list[int]:
    return [int(np.asarray(im, np.int64).sum()) for im in images]


def child(used, queue, grandchild: bool) -> None:
    """Renders with the parent's (used) renderers and with new ones; optionally forks once more."""
    try:
        out = dict(pid=os.getpid(), used=digest(draw(used)), fresh=digest(draw(renderers())),
                   ctx_pid=get_context().extra['pid'], display=get_context().extra['display'])
        if grandchild:
            sub = mp.get_context('fork').Queue()
            p = mp.get_context('fork').Process(target=child, args=(used, sub, False))
            p.start()
            p.join(60)
            out['grandchild'] = sub.get(timeout=5) if p.exitcode == 0 else dict(error=f'exit {p.exitcode}')
        queue.put(out)
    except ForkedContextError as err:
        queue.put(dict(error='ForkedContextError', message=str(err)))
    except Exception as err:  # noqa: BLE001 - reported to the test
        queue.put(dict(error=repr(err)))


def main(scenario: str) -> dict:
    """``fork``: pickle copies, then a forked child that forks a grandchild; ``spawn``: a spawned child."""
    used = renderers()
    parent = digest(draw(used))
    result = dict(parent=parent, parent_pid=os.getpid(), parent_ctx_pid=get_context().extra['pid'])
    ctx = mp.get_context(scenario)
    if scenario == 'fork':
        result['copy'] = digest(draw(pickle.loads(pickle.dumps(used))))
    queue = ctx.Queue()
    p = ctx.Process(target=child, args=(used, queue, scenario == 'fork'))
    p.start()
    p.join(120)
    result['child'] = queue.get(timeout=5) if p.exitcode == 0 else dict(error=f'exit {p.exitcode}')
    result['parent_after'] = digest(draw(used))  # the parent's GL state is untouched by its children
    return result


if __name__ == '__main__':
    print(json.dumps(main(sys.argv[1])), flush=True)
