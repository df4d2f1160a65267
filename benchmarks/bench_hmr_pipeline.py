"""HMR training data pipeline throughput: samples/s on one CPU core for 256x192 crops.

Writes a small PoseDreamer-format dataset (stand-in renders from ``posedreamer_mm/testing/hmr_fixtures.py``,
upscaled to ``--img-size`` with texture noise so JPEG decoding costs what a real photo does), then runs the full
training pipeline (load JPEG -> flip -> box centre/scale -> box augmentation incl. rotation -> crop + camera roll
-> colour jitter -> pack) in one process with one thread (``OMP_NUM_THREADS=1``, ``cv2.setNumThreads(1)``,
``torch.set_num_threads(1)``), which is what one DataLoader worker per core gets. Prints samples per second of
process CPU time (the per-core rate, robust to other processes on the machine), the wall-clock rate, and the share
of each transform.

The images are stored at a multiple of the labels' resolution, so ``LoadHMRImage`` also rescales the 2D labels
(a few numpy operations per sample; the real cost is decoding).

Target: >= 60 samples/s per core, so 16 cores feed a ViT-L at its measured 738 samples/s on one H100.

``--sheet PATH`` also writes a contact sheet of packed crops: the packed COCO-17 labels (coloured skeleton) and,
as white dots, the packed SMPL-X body's COCO-17 joints projected with the packed full-image camera and
``crop_trans``; they coincide when flips, box augmentation and camera rolls kept the labels consistent.

Usage::

    python benchmarks/bench_hmr_pipeline.py [--img-size 1280 1024] [--iters 300] [--sheet sheet.png]
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


def write_sheet(path: str, packed: list[dict], model_dir: str) -> None:
    """Grid of packed crops with their keypoint labels and the projected packed body (see the module doc)."""
    from posedreamer_mm.body.body_model import SMPLXBodyModel
    from posedreamer_mm.body.camera import project_points
    from posedreamer_mm.body.joint_maps import smplx_to_coco17
    from posedreamer_mm.visualization.draw import draw_coco17
    model = SMPLXBodyModel(model_dir)
    names = ('global_orient', 'body_pose', 'left_hand_pose', 'right_hand_pose', 'jaw_pose', 'betas', 'expression',
             'transl')
    tiles = []
    for item in packed:
        gt, meta = item['data_samples'].gt_instances, item['data_samples'].metainfo
        img = np.ascontiguousarray(item['inputs'].numpy().transpose(1, 2, 0))
        kpts = np.concatenate([gt.keypoints[0].numpy(), 2 * gt.keypoints_visible[0].numpy()[:, None]], 1)
        img = draw_coco17(img, kpts, radius=2)
        with torch.no_grad():
            joints = model(**{n: gt[f'smplx_{n}'] for n in names}).joints[0]
        uv = project_points(smplx_to_coco17(joints), meta['focal'], meta['princpt']).numpy()
        uv = uv @ meta['crop_trans'][:, :2].T + meta['crop_trans'][:, 2]
        for x, y in uv:
            cv2.circle(img, (int(round(x)), int(round(y))), 1, (255, 255, 255), -1)
        cv2.putText(img, f"{'flip ' if meta['flip'] else ''}rot {meta['bbox_rotation']:.0f}", (3, 12),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(img)
    cols = 8
    rows = [np.concatenate(tiles[r:r + cols] + [np.zeros_like(tiles[0])] * (cols - len(tiles[r:r + cols])), 1)
            for r in range(0, len(tiles), cols)]
    cv2.imwrite(path, cv2.cvtColor(np.concatenate(rows, 0), cv2.COLOR_RGB2BGR))
    print(f'wrote {path}')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--img-size', type=int, nargs=2, default=(1280, 1024), metavar=('W', 'H'))
    parser.add_argument('--input-size', type=int, nargs=2, default=(192, 256), metavar=('W', 'H'))
    parser.add_argument('--num-images', type=int, default=16)
    parser.add_argument('--iters', type=int, default=300)
    parser.add_argument('--sheet', help='also write a contact sheet of 16 packed crops to this PNG')
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
        start, cpu_start = time.perf_counter(), time.process_time()
        for i in range(args.iters):
            results = ds.get_data_info(i % len(ds))
            results['test_mode'] = False
            for t in transforms:
                t0 = time.perf_counter()
                results = t(results)
                per_transform[type(t).__name__] += time.perf_counter() - t0
        total, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        if args.sheet:
            write_sheet(args.sheet, [ds[i % len(ds)] for i in range(16)], paths['smplx_model_dir'])
    w, h = args.img_size
    print(f'HMR train pipeline, {w}x{h} JPEG -> {args.input_size[1]}x{args.input_size[0]} crops, 1 thread, '
          f'{args.iters} samples')
    print(f'  {args.iters / cpu:.1f} samples/s per CPU core: samples per second of process CPU time '
          f'({1000 * cpu / args.iters:.2f} ms/sample; target >= 60)')
    print(f'  {args.iters / total:.1f} samples/s wall clock ({100 * cpu / total:.0f} % of a core was ours: on a busy '
          'machine the CPU-time figure is the per-core rate)')
    for name, sec in per_transform.items():
        print(f'  {name:24s} {1000 * sec / args.iters:6.2f} ms  ({100 * sec / total:4.1f} %)')


if __name__ == '__main__':
    main()
