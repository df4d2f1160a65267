"""OKS throughput: the vectorised ``keypoint_oks`` against a per-sample loop and against pycocotools.

Scores ``N`` samples, each with ``G`` detected people (the ground-truth side) against ``D`` label people
(the prediction side), COCO-17. Three ways, same numbers (their agreement is printed too):

- ``vectorised``: one ``keypoint_oks`` call on ``(N, G, 17, 3)`` / ``(N, D, 17, 2)`` arrays;
- ``per-sample loop``: one ``keypoint_oks`` call per sample (what a filter transform does per image);
- ``pycocotools``: ``COCOeval.computeOks`` per sample (its own loops over people).

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_oks.py [--samples 20000] [--people 3] [--labels 1]
"""
from __future__ import annotations

import argparse
import platform
import time

import numpy as np
from pycocotools.cocoeval import COCOeval

from posedreamer_mm.evaluation.functional import keypoint_oks


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--samples', type=int, default=20000)
    p.add_argument('--people', type=int, default=3, help='detections per image (ground-truth side)')
    p.add_argument('--labels', type=int, default=1, help='label people per image (prediction side)')
    p.add_argument('--repeats', type=int, default=3, help='best of this many timings')
    return p.parse_args()


def make_data(n: int, g: int, d: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    gt = np.concatenate([rng.uniform(0, 512, (n, g, 17, 2)), rng.choice([0.0, 2.0], (n, g, 17, 1), p=[.2, .8])], -1)
    areas = rng.uniform(1e3, 1e5, (n, g))
    boxes = np.concatenate([rng.uniform(0, 256, (n, g, 2)), rng.uniform(10, 256, (n, g, 2))], -1)
    dt = gt[:, rng.integers(0, g, d), :, :2] + rng.normal(0, 8, (n, d, 17, 2))
    return gt, areas, boxes, dt


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def pycocotools_oks(gt, areas, boxes, dt):
    ev = COCOeval(iouType='keypoints')
    out = []
    for i in range(len(gt)):
        ev._gts[i, 1] = [dict(keypoints=k.reshape(-1).tolist(), area=float(a), bbox=b.tolist())
                         for k, a, b in zip(gt[i], areas[i], boxes[i])]
        ev._dts[i, 1] = [dict(keypoints=np.concatenate([k, np.ones((17, 1))], 1).reshape(-1).tolist(),
                              score=float(len(dt[i]) - j)) for j, k in enumerate(dt[i])]
        out.append(ev.computeOks(i, 1))
    return np.asarray(out)


def main():
    args = parse_args()
    gt, areas, boxes, dt = make_data(args.samples, args.people, args.labels)
    n = args.samples
    vec = keypoint_oks(gt, areas, dt, gt_bboxes=boxes)
    loop = np.stack([keypoint_oks(gt[i], areas[i], dt[i], gt_bboxes=boxes[i]) for i in range(n)])
    n_ref = min(n, 2000)
    ref = pycocotools_oks(gt[:n_ref], areas[:n_ref], boxes[:n_ref], dt[:n_ref])
    t_vec = best_time(lambda: keypoint_oks(gt, areas, dt, gt_bboxes=boxes), args.repeats)
    t_loop = best_time(lambda: [keypoint_oks(gt[i], areas[i], dt[i], gt_bboxes=boxes[i]) for i in range(n)],
                       args.repeats)
    t_ref = best_time(lambda: pycocotools_oks(gt[:n_ref], areas[:n_ref], boxes[:n_ref], dt[:n_ref]), 1) * n / n_ref
    print(f'# bench_oks  {platform.processor() or platform.machine()}  numpy {np.__version__}  '
          f'{n} samples x {args.people} detections x {args.labels} label(s), COCO-17')
    print(f'max |vectorised - loop| = {np.abs(vec - loop).max():.1e}   '
          f'max |vectorised - pycocotools| = {np.abs(vec[:n_ref] - ref).max():.1e} (first {n_ref})')
    print(f'{"method":<18}{"total s":>10}{"us/sample":>12}{"vectorised speed-up":>22}')
    for name, t in (('vectorised', t_vec), ('per-sample loop', t_loop), ('pycocotools', t_ref)):
        print(f'{name:<18}{t:>10.3f}{t / n * 1e6:>12.2f}{t / t_vec:>21.1f}x')

if __name__ == '__main__':
    main()
