"""HMR training data pipeline throughput: samples/s on one CPU core for 256x192 crops.

Writes a small PoseDreamer-format dataset (stand-in renders from ``posedreamer_mm/testing/hmr_fixtures.py``,
upscaled to ``--img-size`` with texture noise so JPEG decoding costs what a real photo does), then runs the full
training pipeline (load JPEG -> flip -> box centre/scale -> box augmentation incl. rotation -> crop + camera roll
-> colour jitter -> pack) in one process with one thread (``OMP_NUM_THREADS=1``, ``cv2.setNumThreads(1)``,
``torch.set_num_threads(1)``), which is what one DataLoader worker per core gets. Prints samples/s and the share
of each transform.

The images are stored at a multiple of the labels' resolution, so ``LoadHMRImage`` also rescales the 2D labels
(a few numpy operations per sample; the real cost is decoding).

Target: >= 60 samples/s per core, so 16 cores feed a ViT-L at its measured 738 samples/s on one H100.

Usage::

    python benchmarks/bench_hmr_pipeline.py [--img-size 1280 1024] [--iters 300]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections import defaultdict

os.environ.setdefault('OMP_NUM_THREADS', '1')

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


def _make_dataset(root: str, img_wh: tuple[int, int], num: int) -> dict:
    from posedreamer_mm.testing.hmr_fixtures import IMG_WH, write_hmr_fixtures
    paths = write_hmr_fixtures(root, num=num)
    scale = img_wh[0] / IMG_WH[0]
    if abs(img_wh[1] / IMG_WH[1] - scale) > 1e-6:
        raise SystemExit(f'--img-size must keep the fixtures\' aspect ratio {IMG_WH[0]}:{IMG_WH[1]}')
    rng = np.random.default_rng(0)
    label_root = paths['posedreamer']['label_root']
    for name in sorted(os.listdir(label_root)):
        if name.endswith('.jpg'):
            path = os.path.join(label_root, name)
            img = cv2.resize(cv2.imread(path), img_wh, interpolation=cv2.INTER_CUBIC)
            noise = cv2.GaussianBlur(rng.normal(0, 12, img.shape).astype(np.float32), (0, 0), 1.5)
            cv2.imwrite(path, np.clip(img + noise, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 95])
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--img-size', type=int, nargs=2, default=(1280, 1024), metavar=('W', 'H'))
    parser.add_argument('--input-size', type=int, nargs=2, default=(192, 256), metavar=('W', 'H'))
    parser.add_argument('--num-images', type=int, default=16)
    parser.add_argument('--iters', type=int, default=300)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    from posedreamer_mm.registry import DATASETS
    from posedreamer_mm.testing.hmr_fixtures import hmr_dataset_cfgs
    from posedreamer_mm.utils import register_all_modules
    register_all_modules()
    with tempfile.TemporaryDirectory() as tmp:
        paths = _make_dataset(tmp, tuple(args.img_size), args.num_images)
        bm = dict(type='SMPLXBodyModel', model_path=paths['smplx_model_dir'])
        pipeline = [dict(type='LoadHMRImage'), dict(type='HMRRandomFlip', prob=0.5, body_model=bm),
                    dict(type='HMRBBoxCenterScale', padding=1.25), dict(type='HMRRandomBBoxTransform'),
                    dict(type='HMRTopdownAffine', input_size=tuple(args.input_size), body_model=bm),
                    dict(type='HMRColorJitter'), dict(type='PackHMRInputs')]
        ds = DATASETS.build(hmr_dataset_cfgs(paths, pipeline=pipeline)['posedreamer'])
        transforms = ds.pipeline.transforms
        for i in range(10):  # warm-up (page cache, lazy imports)
            ds[i % len(ds)]
        per_transform: dict[str, float] = defaultdict(float)
        start = time.perf_counter()
        for i in range(args.iters):
            results = ds.get_data_info(i % len(ds))
            results['test_mode'] = False
            for t in transforms:
                t0 = time.perf_counter()
                results = t(results)
                per_transform[type(t).__name__] += time.perf_counter() - t0
        total = time.perf_counter() - start
    w, h = args.img_size
    print(f'HMR train pipeline, {w}x{h} JPEG -> {args.input_size[1]}x{args.input_size[0]} crops, 1 thread, '
          f'{args.iters} samples')
    print(f'  {args.iters / total:.1f} samples/s per CPU core ({1000 * total / args.iters:.2f} ms/sample; '
          f'target >= 60)')
    for name, sec in per_transform.items():
        print(f'  {name:24s} {1000 * sec / args.iters:6.2f} ms  ({100 * sec / total:4.1f} %)')


if __name__ == '__main__':
    main()
