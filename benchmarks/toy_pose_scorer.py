"""A tiny 2D pose scorer for the DPO method at toy scale: an mmpose top-down heatmap model trained on stand-in renders.

MediaPipe finds the people of sharp 96 px renders but not the blurry images a tiny diffusion model draws. This
trains a small mmpose model (``configs/dpo/toy/``: ResNet-18 of width 16, heatmap head) with mmpose's own training
loop (``tools/train.py``, the mmengine Runner) on the COCO export of stand-in renders, with blur and colour
augmentation, and hands back the ``MMPoseScorer`` arguments that score with it (``docs/dpo_toy_scorer.md``).

1. **Renders**: ``bench_control_learning.make_pairs`` (the pair set-up of the control and DPO benchmarks: procedural
   poses of the SMPL-X stand-in, random betas, yaw and distance, crop camera with 10 % margin) at ``size`` px, or a
   given generated dataset (``images_root``).
2. **COCO export** (``generation/coco_export.py``) with each box set to the whole image: ``MMPoseScorer`` without a
   detector scores the whole image as one person box, so training and scoring see the same crop. With
   ``target='shaded'`` the images are the rows' shaded controls (the grey Lambert body) instead of the render.
3. **Training**: ``tools/train.py <config> --work-dir <work_dir>/train`` in a subprocess (its own RNG, threads and
   logging; ``OMP_NUM_THREADS=threads``) with the data and iterations as ``--cfg-options``.

A finished model is reused when ``<work_dir>/settings.json`` records the same settings.

Usage (figures in docs/dpo_toy_scorer.md)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/toy_pose_scorer.py --work-dir /tmp/toy_scorer

trains at the defaults and prints the training time and the scorer's mean OKS / unmatched share on held-out renders
(another seed), sharp, blurred and noised, next to MediaPipe's on the same images.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import os.path as osp
import resource
import subprocess
import sys
import time

import numpy as np

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join(REPO, 'configs', 'dpo', 'toy', 'td-hm_res18-w16_1xb32-1500it_toy-renders-64x64.py')
#: Training renders use their own seed stream (``seed + RENDER_SEED``), so the scorer never saw the DPO benchmark's
#: pairs (seed ``seed``) nor its held-out controls (``seed + 7919``).
RENDER_SEED = 1000
#: Bump when the data preparation changes: a cached model of another version is retrained.
VERSION = 1

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))


def _sha(path: str) -> str:
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


def render_dataset(out: str, num: int, size: int, seed: int, model_dir: str) -> str:
    """``num`` stand-in renders at ``size`` px (the control benchmarks' set-up); resumes a finished run."""
    import bench_control_learning as bcl

    from posedreamer_mm.body.standin import write_standin_smplx
    from posedreamer_mm.utils import register_all_modules
    register_all_modules()
    if not osp.isfile(osp.join(model_dir, 'SMPLX_NEUTRAL.npz')):
        write_standin_smplx(model_dir)
    bcl.make_pairs(out, num, size, seed, model_dir)
    return out


def whole_image_coco(images_root: str, out_file: str, target: str = 'render', limit: int | None = None) -> dict:
    """The COCO keypoints export of a generated dataset with every box the whole image.

    Args:
        images_root: a generated dataset (``docs/dataset_format.md``) whose manifest records its body model.
        out_file: the json to write; its ``file_name``\\ s are relative to ``images_root``.
        target: ``'render'`` (the row's image) or ``'shaded'`` (its stored shaded control).
        limit: keep the first ``limit`` rows (all when ``None``).

    Returns:
        ``num_images`` and the path.
    """
    from posedreamer_mm.generation.coco_export import coco_keypoints_dict
    from posedreamer_mm.generation.reader import GeneratedDataReader
    from posedreamer_mm.utils.fileio import atomic_write_text
    reader = GeneratedDataReader(images_root)
    coco = coco_keypoints_dict(reader)
    images, anns = coco['images'][:limit], coco['annotations'][:limit]
    for row, (img, ann) in enumerate(zip(images, anns)):
        if target == 'shaded':
            controls = reader.meta(row).get('controls') or {}
            if 'shaded' not in controls:
                raise KeyError(f'{images_root}, row {row}: no stored shaded control (target="shaded" needs the '
                               'generator to render and save ShadedRenderer controls)')
            img['file_name'] = controls['shaded']
        ann['bbox'] = [0.0, 0.0, float(img['width']), float(img['height'])]
    coco.update(images=images, annotations=anns)
    atomic_write_text(out_file, json.dumps(coco))
    return dict(path=out_file, num_images=len(images))


def train_toy_scorer(work_dir: str, images_root: str | None = None, *, size: int = 96, target: str = 'render',
                     n_train: int = 1024, iters: int = 1500, seed: int = 0, threads: int = 1,
                     config: str = CONFIG) -> dict:
    """Trains (or reuses) the toy pose model and returns the ``MMPoseScorer`` arguments that score with it.

    Args:
        work_dir: where the renders, the COCO export, the training run and ``settings.json`` go.
        images_root: a generated dataset to train on; ``None`` renders ``n_train`` stand-in bodies at ``size`` px
            under seed ``seed + RENDER_SEED``.
        size: render size, pixels (only when ``images_root`` is ``None``).
        target: ``'render'`` (clothed, lit body over a background) or ``'shaded'`` (grey Lambert body).
        n_train: training images (at most; the first rows of ``images_root``).
        iters: training iterations (batch 32).
        seed: training seed (the Runner's ``randomness.seed``) and render seed offset.
        threads: torch threads of the training process.
        config: the mmpose config to train.

    Returns:
        ``dict(pose_config=<the config the run dumped>, pose_checkpoint=<.pth>, det_config=None, device='cpu')``.
    """
    if target not in ('render', 'shaded'):
        raise ValueError(f"target must be 'render' or 'shaded', got {target!r}")
    work_dir = osp.abspath(work_dir)
    os.makedirs(work_dir, exist_ok=True)
    settings = dict(version=VERSION, config=osp.relpath(config, REPO) if config.startswith(REPO) else config,
                    config_sha=_sha(config), images_root=osp.abspath(images_root) if images_root else None,
                    size=size if images_root is None else None, target=target, n_train=n_train, iters=iters,
                    seed=seed, threads=threads)
    settings_file = osp.join(work_dir, 'settings.json')
    result_file = osp.join(work_dir, 'scorer.json')
    if osp.isfile(settings_file) and osp.isfile(result_file):
        with open(settings_file) as f:
            old = json.load(f)
        with open(result_file) as f:
            done = json.load(f)
        if old == settings and osp.isfile(done['scorer']['pose_checkpoint']):
            print(f'toy pose scorer: reusing {done["scorer"]["pose_checkpoint"]}', flush=True)
            return dict(done['scorer'])
    t0, c0 = time.time(), _cpu()
    if images_root is None:
        images_root = render_dataset(osp.join(work_dir, f'renders_{size}_{n_train}_s{seed + RENDER_SEED}'), n_train,
                                     size, seed + RENDER_SEED, osp.join(work_dir, 'smplx_standin'))
    images_root = osp.abspath(images_root)
    t_render = time.time() - t0
    ann = whole_image_coco(images_root, osp.join(work_dir, f'coco_whole_image_{target}.json'), target, n_train)
    t_data, c_data = time.time() - t0, _cpu() - c0
    run_dir = osp.join(work_dir, 'train')
    cmd = [sys.executable, osp.join(REPO, 'tools', 'train.py'), config, '--work-dir', run_dir, '--cfg-options',
           f'data_root={images_root}/', f'ann_file={ann["path"]}', f'max_iters={int(iters)}',
           f'randomness.seed={int(seed)}']
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    t1, c1 = time.time(), _cpu()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f'toy pose scorer training failed ({" ".join(cmd)}):\n{proc.stderr[-4000:]}')
    t_train, c_train = time.time() - t1, _cpu() - c1
    ckpt = osp.join(run_dir, f'iter_{int(iters)}.pth')
    dumped = osp.join(run_dir, osp.basename(config))
    for path in (ckpt, dumped):
        if not osp.isfile(path):
            raise FileNotFoundError(f'the training run {run_dir} did not write {path}')
    scorer = dict(pose_config=dumped, pose_checkpoint=ckpt, det_config=None, device='cpu')
    timing = dict(data_wall_s=round(t_data, 1), render_wall_s=round(t_render, 1), data_cpu_s=round(c_data, 1),
                  train_wall_s=round(t_train, 1), train_cpu_s=round(c_train, 1), num_images=ann['num_images'])
    with open(result_file, 'w') as f:
        json.dump(dict(scorer=scorer, timing=timing), f, indent=1)
    with open(settings_file, 'w') as f:
        json.dump(settings, f, indent=1)
    print(f'toy pose scorer: {ann["num_images"]} images ({t_data:.0f} s data), {iters} iterations in '
          f'{t_train:.0f} s wall, {c_train:.0f} s CPU -> {ckpt}', flush=True)
    return dict(scorer)


def _cpu() -> float:
    """CPU seconds of this process and its finished children."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


# --- figures ------------------------------------------------------------------------------------------------------
def degrade(images: list[np.ndarray], kind: str, seed: int = 0) -> list[np.ndarray]:
    """``sharp``, ``blurS`` (Gaussian, sigma S px), ``noise`` (Gaussian, std 15 grey levels) or ``scrambled`` (the
    pixels randomly permuted: the image's colours without a person, what a scorer finds where there is nobody)."""
    import cv2
    if kind == 'sharp':
        return list(images)
    if kind.startswith('blur'):
        s = float(kind[4:])
        return [cv2.GaussianBlur(im, (0, 0), sigmaX=s, sigmaY=s) for im in images]
    if kind == 'noise':
        rng = np.random.default_rng(seed)
        return [np.clip(im + rng.normal(0, 15, im.shape), 0, 255).astype(np.uint8) for im in images]
    if kind == 'scrambled':
        rng = np.random.default_rng(seed)
        return [im.reshape(-1, im.shape[-1])[rng.permutation(im.shape[0] * im.shape[1])].reshape(im.shape)
                for im in images]
    raise ValueError(kind)


def facing_front(label: np.ndarray) -> bool:
    """Whether the body faces the camera: the person's left shoulder appears right of the right one."""
    return bool(label[5, 0] > label[6, 0])


def swap_rate(detections, held) -> float:
    """Share of scored images whose detection lies nearer the left/right-swapped label than the label itself."""
    from posedreamer_mm.body.joint_maps import COCO17_FLIP_PAIRS
    flip = np.arange(17)
    for a, b in COCO17_FLIP_PAIRS:
        flip[a], flip[b] = b, a
    n = swapped = 0
    for d, s in zip(detections, held):
        if len(d) == 0:
            continue
        lab = s.keypoints[:, :2]
        err = np.linalg.norm(d.keypoints[0] - lab, axis=-1).mean()
        err_swap = np.linalg.norm(d.keypoints[0] - lab[flip], axis=-1).mean()
        n, swapped = n + 1, swapped + int(err_swap < err)
    return swapped / max(n, 1)


class MeanPoseScorer:
    """A reference, not a scorer: "finds" the training set's mean pose in every image, with its keypoints' extent as
    its box (as ``MMPoseScorer`` without a detector reports). Its OKS is what a pose-blind guess scores."""

    name = 'mean_pose'

    def __init__(self, coco_file: str):
        with open(coco_file) as f:
            coco = json.load(f)
        kp = np.array([a['keypoints'] for a in coco['annotations']], np.float64).reshape(-1, 17, 3)
        seen = kp[..., 2] > 0
        self.size = (coco['images'][0]['width'], coco['images'][0]['height'])
        self.mean = (kp[..., :2] * seen[..., None]).sum(0) / np.maximum(seen.sum(0), 1)[:, None] / self.size

    def predict_batch(self, images):
        from posedreamer_mm.scoring.base import PoseDetections
        out = []
        for im in images:
            k = self.mean * (im.shape[1], im.shape[0])
            box = np.clip(np.r_[k.min(0), k.max(0)], 0, [im.shape[1], im.shape[0]] * 2)
            out.append(PoseDetections(k[None], np.ones((1, 17)), box[None], [1.0], (im.shape[1], im.shape[0]),
                                      self.name))
        return out


def label_box_oks(detections, held, matches, keypoint_thr: float = 0.3) -> np.ndarray:
    """The matched detections' OKS with the label's box area as the scale (0 where unmatched).

    The project's OKS takes the detection's box as the scale (``detection_as_ground_truth``): the keypoints' extent
    for a scorer without a detector, the landmarks' extent for MediaPipe. This one scale for every scorer makes them
    comparable.
    """
    from posedreamer_mm.evaluation.functional.oks import keypoint_oks
    from posedreamer_mm.generation.coco_export import clipped_bbox
    out = np.zeros(len(held))
    for i, (d, s, m) in enumerate(zip(detections, held, matches)):
        if m.index is None:
            continue
        h, w = next(iter(s.controls.values())).shape[:2]
        sx, sy = w / s.sample.img_size[0], h / s.sample.img_size[1]
        _, _, bw, bh = clipped_bbox(s.sample.bbox, s.sample.img_size)
        vis = np.where(d.keypoint_scores[m.index] >= keypoint_thr, 2.0, 0.0)
        gt = np.concatenate([d.keypoints[m.index], vis[:, None]], -1)
        out[i] = keypoint_oks(gt[None], np.array([bw * sx * bh * sy]), s.keypoints[None, :, :2],
                              gt_bboxes=np.array([[0, 0, w, h]], np.float64))[0, 0]
    return out


KINDS = ('sharp', 'blur1', 'blur2', 'noise', 'scrambled')


def measure(scorers: dict, images: list, held: list, kinds=KINDS) -> list[dict]:
    """One row per (image kind, scorer): mean OKS (the project's scoring path, ``score_images``), its s.e., the
    unmatched share, the mean OKS at the label's box scale, front/back means and the left/right swap rate."""
    from posedreamer_mm.apis.control_eval import score_images
    front = np.array([facing_front(s.keypoints) for s in held])
    rows = []
    for kind in kinds:
        imgs = degrade(images, kind)
        for name, scorer in scorers.items():
            t = time.time()
            res = score_images(imgs, held, scorer)
            oks = res.oks
            dets = scorer.predict_batch(imgs)
            tight = label_box_oks(dets, held, res.matches)
            rows.append(dict(scorer=name, images=kind, mean_oks=float(oks.mean()),
                             se=float(oks.std(ddof=1) / np.sqrt(len(oks))), unmatched=float((oks == 0).mean()),
                             oks_label_box=float(tight.mean()),
                             front=float(oks[front].mean()) if front.any() else float('nan'),
                             back=float(oks[~front].mean()) if (~front).any() else float('nan'),
                             lr_swapped=swap_rate(dets, held), score_s=round(time.time() - t, 1)))
            r = rows[-1]
            print(f'  {name:9s} {kind:6s} mean OKS {r["mean_oks"]:.3f} +- {r["se"]:.3f}  unmatched '
                  f'{100 * r["unmatched"]:3.0f} %  at the label box {r["oks_label_box"]:.3f}  front {r["front"]:.3f} '
                  f'back {r["back"]:.3f}  l/r swapped {100 * r["lr_swapped"]:.0f} %', flush=True)
    return rows


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--work-dir', required=True)
    p.add_argument('--size', type=int, default=96)
    p.add_argument('--target', choices=['render', 'shaded'], default='render')
    p.add_argument('--n-train', type=int, default=1024)
    p.add_argument('--iters', type=int, default=1500)
    p.add_argument('--test', type=int, default=64, help='held-out renders (seed + 7919)')
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--no-mediapipe', action='store_true')
    return p.parse_args()


def main() -> None:
    args = parse_args()
    import torch
    torch.set_num_threads(args.threads)
    import bench_control_learning as bcl

    from posedreamer_mm.apis.control_eval import load_held_out, select_indices
    from posedreamer_mm.registry import SCORERS
    from posedreamer_mm.scoring.mmpose_scorer import MMPoseScorer
    from posedreamer_mm.utils import register_all_modules
    register_all_modules()
    t0, c0 = time.time(), _cpu()
    kwargs = train_toy_scorer(args.work_dir, size=args.size, target=args.target, n_train=args.n_train,
                              iters=args.iters, seed=args.seed, threads=args.threads)
    wall, cpu = time.time() - t0, _cpu() - c0
    with open(osp.join(args.work_dir, 'scorer.json')) as f:
        timing = json.load(f)['timing']
    print(f'trained: {json.dumps(timing)}; this call {wall:.0f} s wall, {cpu:.0f} s CPU', flush=True)
    test_root = render_dataset(osp.join(args.work_dir, f'held_out_{args.size}_{args.test + 12}_s{args.seed + 7919}'),
                               args.test + 12, args.size, args.seed + 7919, osp.join(args.work_dir, 'smplx_standin'))
    held = load_held_out(test_root, args.test, ['pncc'], size=args.size)
    pairs = bcl.load_pairs(test_root, args.target)
    images = [pairs['image'][i].permute(1, 2, 0).numpy().copy() for i in select_indices(len(pairs['image']),
                                                                                         args.test)]
    scorers = dict(toy=MMPoseScorer(**kwargs),
                   mean_pose=MeanPoseScorer(osp.join(args.work_dir, f'coco_whole_image_{args.target}.json')))
    if not args.no_mediapipe:
        scorers['mediapipe'] = SCORERS.build(dict(type='MediaPipeScorer', min_detection_confidence=0.5))
    print(f'held-out: {len(held)} renders ({args.target}, {args.size} px, seed {args.seed + 7919}); front-facing '
          f'{sum(facing_front(s.keypoints) for s in held)}', flush=True)
    rows = measure(scorers, images, held)
    out = dict(args=vars(args), timing=timing, rows=rows, load=os.getloadavg())
    with open(osp.join(args.work_dir, 'figures.json'), 'w') as f:
        json.dump(out, f, indent=1)
    print(json.dumps(out))


if __name__ == '__main__':
    main()
