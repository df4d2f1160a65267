"""Is the backend ever waiting? Images/s of the DatasetGenerator and the fraction of wall time the backend is busy.

The backend here is a stand-in made the bottleneck on purpose: ``SleepBackend`` sleeps ``--sleep-ms`` per image
(as a denoiser on a GPU would keep the device busy) and returns a seeded noise image. Everything else is the real
job: procedural source, SMPL-X stand-in forward, crop camera, PNCC + skeleton (+ depth) renders in spawn worker
processes, prompts, the writer thread encoding JPEGs and PNG controls into shards. If rendering and writing are
hidden, wall time ~= backend busy time.

Two figures, both printed:

- **total**: from the start of ``run()``, including spawning the workers and filling the pipeline (the first
  batch cannot start before its samples are rendered) and draining it (the last shard is written after the last
  batch);
- **steady**: from the backend's first call after the workers took over (after the warm start) to the end, with
  the backend time of that span: what a long run converges to.

Target (issue 7): on CPU with the backend made the bottleneck, wall <= 1.10x busy; on a GPU node >= 95 % busy.
Usage: python benchmarks/bench_generate.py [--num-samples 160] [--workers 2] [--sleep-ms 250] [--crop 256]
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from posedreamer_mm.generation.backends.base import BaseGenerationBackend  # noqa: E402


class SleepBackend(BaseGenerationBackend):
    """Benchmark stand-in: ``sleep_ms`` per image, then a noise image seeded by the sample (no model)."""

    name = 'sleep_benchmark_stub'

    def __init__(self, batch_size: int = 4, sleep_ms: float = 60.0) -> None:
        super().__init__(batch_size)
        self.sleep_ms = float(sleep_ms)

    def generate(self, batch: list[dict]) -> list[np.ndarray]:
        h, w = self.check_batch(batch)
        time.sleep(self.sleep_ms * len(batch) / 1000.0)
        return [np.random.default_rng(int(r['seed']) % 2 ** 63).integers(0, 256, (h, w, 3), dtype=np.uint8)
                for r in batch]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--num-samples', type=int, default=160)
    parser.add_argument('--workers', type=int, default=2, help='spawn processes rendering beside the backend')
    parser.add_argument('--sleep-ms', type=float, default=250.0, help="backend time per image")
    parser.add_argument('--batch-size', type=int, default=4)
    parser.add_argument('--crop', type=int, default=256)
    parser.add_argument('--controls', default='pncc,skeleton', help='pncc,skeleton,depth')
    parser.add_argument('--no-warm-start', action='store_true',
                        help='do not prepare samples in the main process while the workers start')
    parser.add_argument('--out', help='output directory (default: a temporary one, deleted)')
    args = parser.parse_args(argv)
    os.environ.setdefault('OMP_NUM_THREADS', '1')
    from posedreamer_mm.body.standin import write_standin_smplx
    from posedreamer_mm.registry import GENERATORS
    from posedreamer_mm.utils import register_all_modules
    register_all_modules()
    renderers = dict(pncc='PNCCRenderer', skeleton='SkeletonRenderer', depth='DepthRenderer')
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = osp.join(tmp, 'standin')
        write_standin_smplx(model_dir)
        generator = GENERATORS.build(dict(
            type='DatasetGenerator', body_model=dict(type='SMPLXBodyModel', model_path=model_dir),
            source=dict(type='AugmentedSource', source=dict(type='ProceduralPoseSource',
                                                            num_samples=args.num_samples, seed=0), seed=0),
            pipeline=[dict(type='BodyForward'), dict(type='BodyCropCamera', size=args.crop),
                      dict(type='RenderControls', controls=[dict(type=renderers[c])
                                                            for c in args.controls.split(',')]),
                      dict(type='COCO17Visibility'), dict(type='SamplePrompt')],
            backend=SleepBackend(args.batch_size, args.sleep_ms),
            writer=dict(shard_size=50, image_format='jpg'),
            num_samples=args.num_samples, num_workers=args.workers,
            warm_start=not args.no_warm_start, progress=False))
        out = args.out or osp.join(tmp, 'out')
        summary = generator.run(out)
    run = summary['this_run']
    busy, wall, steady = run['backend_busy_s'], run['wall_s'], run['steady_wall_s']
    busy_steady = run['backend_busy_steady_s']
    print(f'samples {args.num_samples}, workers {args.workers}, crop {args.crop}, controls {args.controls}, '
          f'backend {args.sleep_ms:g} ms/image in batches of {args.batch_size}, warm start {not args.no_warm_start}, '
          f'cpus {os.cpu_count()}, '
          f'load {os.getloadavg()[0]:.1f}')
    print(f'written {summary["written"]}, dropped {summary["dropped"]}, failed {summary["failed"]}')
    print(f'images/s            total {run["written"] / wall:7.2f}   (backend alone: {1000 / args.sleep_ms:.2f})')
    print(f'backend busy        total {busy / wall:7.1%}')
    print(f'wall / backend busy total {wall / busy:7.3f}x   (target <= 1.10x)')
    if steady > 0 and busy_steady > 0:
        print(f'steady state        busy {busy_steady / steady:7.1%}   wall / busy {steady / busy_steady:7.3f}x')
    else:  # the workers took over only at the end (a loaded machine): the warm start prepared everything
        print('steady state        none: the workers never took over before the end (raise --num-samples, or the '
              'machine is loaded)')
    print('per-sample ms (summed over workers): ' + ', '.join(f'{k} {v:.1f}' for k, v in
                                                              summary['timings_ms_per_sample'].items()))
    return summary


if __name__ == '__main__':
    main()
