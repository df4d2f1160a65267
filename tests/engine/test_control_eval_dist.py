"""evaluate_control_sliced in two real processes (gloo): the gathered figures equal one process's, and a failure
on one rank makes both ranks raise instead of leaving one waiting in the gather."""
import json
import multiprocessing as mp
import os
import socket

import numpy as np
import pytest

from posedreamer_mm.apis.control_eval import evaluate_control, load_held_out

from .control_fixtures import RecordingScorer, build_trainer, write_control_dataset, write_tiny_parts

BACKEND = dict(num_inference_steps=2, guidance_scale=1.0)


class FailingOnRank1:
    """A backend whose generation raises on rank 1 only."""

    def __init__(self, inner):
        self.inner = inner

    def generate(self, batch):
        import torch.distributed as dist
        if dist.get_rank() == 1:
            raise RuntimeError('out of memory (simulated)')
        return self.inner.generate(batch)


def _worker(rank: int, port: int, parts: dict, data_root: str, out_dir: str) -> None:
    """Evaluates once normally, then once with rank 1 failing; writes both outcomes."""
    import torch.distributed as dist

    from posedreamer_mm.apis.control_eval import evaluate_control_sliced, pipeline_backend
    from posedreamer_mm.utils import register_all_modules
    register_all_modules()
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=2)
    try:
        held = load_held_out(data_root, 5, ['pncc'])
        model = build_trainer(parts).eval()
        gen = pipeline_backend(model.build_pipeline(), ['pncc'], BACKEND)
        res = evaluate_control_sliced(gen, held, RecordingScorer(miss_every=0), keep_images=3)
        out = dict(oks=res.oks.tolist(), images=[img.tolist() for img in res.images])
        try:
            evaluate_control_sliced(FailingOnRank1(gen), held, RecordingScorer(miss_every=0))
        except RuntimeError as err:
            out['error'] = str(err)
        with open(os.path.join(out_dir, f'rank{rank}.json'), 'w') as f:
            json.dump(out, f)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def run_two(parts, data_root, out_dir, worker=None):
    """Runs ``worker(rank, port, parts, data_root, out_dir)`` (default: this file's) as two spawned gloo ranks and
    returns what each wrote to ``out_dir/rank<r>.json``."""
    ctx = mp.get_context('spawn')
    port = _free_port()
    procs = [ctx.Process(target=worker or _worker, args=(r, port, parts, str(data_root), str(out_dir)))
             for r in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    alive = [p for p in procs if p.is_alive()]
    for p in alive:
        p.kill()
    assert not alive, 'a rank was still waiting after 120 s (deadlock)'
    assert [p.exitcode for p in procs] == [0, 0]
    return [json.loads((out_dir / f'rank{r}.json').read_text()) for r in (0, 1)]


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp('dist')
    return write_tiny_parts(root / 'parts'), write_control_dataset(root / 'data', num=5)


def test_two_ranks_gather_the_single_process_figures_and_fail_together(tmp_path, setup):
    parts, data_root = setup
    ranks = run_two(parts, data_root, tmp_path)
    held = load_held_out(data_root, 5, ['pncc'])
    single = evaluate_control(build_trainer(parts).eval().build_pipeline(), held,
                              RecordingScorer(miss_every=0), backend=BACKEND)
    for out in ranks:
        np.testing.assert_allclose(out['oks'], single.oks, atol=1e-6)
        assert len(out['images']) == 3
        for img, ref in zip(out['images'], single.images[:3]):
            assert np.abs(np.asarray(img, np.int64) - ref).max() <= 1
        assert 'control evaluation failed on rank 1: RuntimeError: out of memory (simulated)' in out['error']
