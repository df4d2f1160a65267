"""Renderers in worker pools after the parent ran torch, for test_threads_and_workers.py (a hang is a timeout).

Usage: ``python tests/render/pool_worker.py STANDIN_DIR SCENARIO...`` with scenarios ``fork``, ``forkserver``,
``spawn`` (``multiprocessing.Pool`` of each start method) and ``dataloader`` (torch ``DataLoader`` workers, fork
by default). Prints one JSON line: the parent's image digests and, per scenario, the workers' (or an error).
"""
import json
import multiprocessing as mp
import sys

import numpy as np
import torch

from posedreamer_mm.body.body_model import SMPLXBodyModel
from posedreamer_mm.render import DepthRenderer, PNCCRenderer, SkeletonRenderer

POSES = 3


def bodies(model: SMPLXBodyModel) -> list[tuple[np.ndarray, np.ndarray]]:
    """Three posed bodies 3 m in front of the camera (vertices, joints), float32."""
    rng = np.random.default_rng(0)
    with torch.no_grad():
        out = model(body_pose=torch.as_tensor(rng.normal(0, 0.2, (POSES, 63)), dtype=torch.float32),
                    global_orient=torch.tensor([[np.pi, 0.0, 0.0]] * POSES),
                    transl=torch.tensor([[0.0, 0.3, 3.0]] * POSES))
    return list(zip(out.vertices.numpy(), out.joints.numpy()))


def render(args) -> list[int]:
    renderers, faces, (verts, joints) = args
    return [int(np.asarray(r(verts, faces, 500.0, (256.0, 256.0), (512, 512), joints=joints), np.int64).sum())
            for r in renderers]


class RenderDataset(torch.utils.data.Dataset):
    def __init__(self, renderers, faces, items):
        self.renderers, self.faces, self.items = renderers, faces, items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return torch.tensor(render((self.renderers, self.faces, self.items[i])))


def run(scenario: str, renderers, faces, items) -> list[list[int]]:
    if scenario == 'dataloader':
        loader = torch.utils.data.DataLoader(RenderDataset(renderers, faces, items), batch_size=None, num_workers=2,
                                             timeout=120)
        return [t.tolist() for t in loader]
    with mp.get_context(scenario).Pool(2 if scenario == 'fork' else 1) as pool:  # fewer interpreters to start
        return pool.map_async(render, [(renderers, faces, it) for it in items]).get(timeout=120)


def main(standin_dir: str, scenarios: list[str]) -> dict:
    torch.set_num_threads(2)  # the parent's torch thread pool is up when the workers start
    model = SMPLXBodyModel(standin_dir)
    items = bodies(model)
    faces = model.faces
    result = {}
    for scenario in scenarios:  # renderers built here but first used in the workers
        renderers = make_renderers(standin_dir)
        if scenario == 'spawn':  # renderers that already rendered pickle too (GL objects left out, rebuilt)
            render((renderers, faces, items[0]))
        try:
            result[scenario] = run(scenario, renderers, faces, items)
        except Exception as err:  # noqa: BLE001 - reported to the test
            result[scenario] = dict(error=repr(err))
    result['parent'] = [render((make_renderers(standin_dir), faces, it)) for it in items]
    return result


def make_renderers(standin_dir: str) -> list:
    return [PNCCRenderer(body_model=standin_dir, size=64), DepthRenderer(size=64), SkeletonRenderer(size=64)]


if __name__ == '__main__':
    print(json.dumps(main(sys.argv[1], sys.argv[2:])), flush=True)
