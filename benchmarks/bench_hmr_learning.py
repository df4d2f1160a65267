"""Learning check of the HMR model: a tiny ViT (width 32, depth 2) trained from scratch for 1600 CPU iterations
(about 4 minutes on one core) on shaded renders of the SMPL-X stand-in must cut held-out PVE by at least 50 % of
its initial value, and should bring the limbs closer than the training renders' mean pose does.

The data are made here, independent of the dataset pipeline: procedural poses (``ProceduralPoseSource``,
truncated normal, as the generation configs sample them) varied around the A-pose (``--pose-centre A``, arms
lowered as people mostly stand; ``T`` varies them around SMPL-X's T-pose, the model's initial pose), any heading
(+-180 degrees, as the reference augmentation ``BodyAugment`` draws it), random shape, distance and position in
the frame, rendered with :class:`~posedreamer_mm.render.ShadedRenderer` at the full-image camera (albedo: the
canonical PNCC colours, which tell the mannequin's sides apart as clothing would), cropped around the projected
mesh (aspect 3:4, 25 % margin) and packed as ``PackHMRInputs`` does (``testing.vit.pack_hmr_sample``), so the
full-frame (CLIFF) camera path is exercised. The model is ``HMREstimator`` with the ViT-L config's losses and
weights and, as the configs, the head's learned position embedding of the patch grid (``--no-pos-embed`` drops it),
trained with AdamW (one-cycle). Errors (:func:`evaluate`): PVE and MPJPE as the metric computes them, plus the
root-rotation error and the PVE left under the true root rotation, on the held-out renders and on as many
training renders, which show what was learned besides the heading; and (:func:`mean_pose_pve`) the same
error for the training renders' mean pose, which a model that learned no limb would reach.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_hmr_learning.py              # ~5 min on one core
    .venv/bin/python benchmarks/bench_hmr_learning.py --no-pos-embed --out-dir outputs/bench_hmr_learning

Prints the initial and final held-out PVE / MPJPE and the relative reduction; exits 1 below ``--target``.
With ``--out-dir`` it also writes ``overlay.png``: held-out renders with the predicted meshes drawn over them.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import torch


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--train', type=int, default=1920, help='training renders')
    p.add_argument('--test', type=int, default=64, help='held-out renders')
    p.add_argument('--iters', type=int, default=1600, help='training iterations')
    p.add_argument('--batch', type=int, default=32)
    p.add_argument('--lr', type=float, default=3e-3, help='peak learning rate (one-cycle)')
    p.add_argument('--clip', type=float, default=5.0, help='gradient norm clip')
    p.add_argument('--input-size', type=int, nargs=2, default=(96, 128), metavar=('W', 'H'))
    p.add_argument('--patch-size', type=int, default=16, help="the tiny ViT's patch side")
    p.add_argument('--vit-dims', type=int, default=32, help="the tiny ViT's width")
    p.add_argument('--vit-layers', type=int, default=2, help="the tiny ViT's depth")
    p.add_argument('--head-dims', type=int, default=32, help="the head's width")
    p.add_argument('--head-layers', type=int, default=1, help="the head's decoder layers")
    p.add_argument('--head-heads', type=int, default=2, help="the head's attention heads")
    p.add_argument('--no-pos-embed', action='store_true',
                   help="no learned position embedding on the head's memory (HMR 2.0's head exactly)")
    p.add_argument('--pose-centre', choices=('T', 'A'), default='A',
                   help="rest pose the procedural joint angles vary around: SMPL-X's T-pose (as the generation "
                        "configs sample) or the A-pose (arms lowered 55 degrees, as people mostly stand)")
    p.add_argument('--target', type=float, default=0.5, help='required relative PVE reduction')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--config', default=os.path.join(os.path.dirname(__file__), '..', 'configs', 'hmr',
                                                     'hmr_vitl_posedreamer_bedlam.py'),
                   help="config whose losses (and weights) are trained; the model is the tiny ViT")
    p.add_argument('--eval-every', type=int, default=200, help='print the held-out PVE every N iterations')
    p.add_argument('--out-dir', default=None, help='write overlay.png of held-out predictions here')
    return p.parse_args(argv)


IMG_WH, FOCAL = (256, 256), 300.0


def make_samples(body, num: int, seed: int, input_wh, pose_centre: str = 'T') -> tuple[list[dict], list[np.ndarray]]:
    """``num`` packed samples of shaded stand-in renders and their full images."""
    from posedreamer_mm.body.body_model import canonical_body_pose
    from posedreamer_mm.body.camera import (
        bbox_from_points,
        crop_image,
        project_points,
        square_crop_box,
        upright_global_orient,
    )
    from posedreamer_mm.body.joint_maps import smplx_to_coco17
    from posedreamer_mm.body.rotations import axis_angle_to_matrix, matrix_to_axis_angle
    from posedreamer_mm.body.sources import ProceduralPoseSource
    from posedreamer_mm.render import ShadedRenderer, canonical_pncc_colors
    from posedreamer_mm.testing.vit import pack_hmr_sample

    rng = np.random.default_rng(seed)
    poses = ProceduralPoseSource(num, seed=seed, sampling='truncnorm', std_fraction=0.25)
    # Albedo: the canonical PNCC colours (a fixed colour per body surface point, like clothing), so the left/right
    # and front/back of the near-symmetric mannequin are visible; shading adds the surface orientation.
    renderer = ShadedRenderer(size=None, vertex_colors=canonical_pncc_colors(body))
    focal, princpt = np.array([FOCAL, FOCAL]), np.array([(IMG_WH[0] - 1) / 2, (IMG_WH[1] - 1) / 2])
    centre = axis_angle_to_matrix(canonical_body_pose(pose_centre).reshape(21, 3))
    samples, images = [], []
    for i in range(num):
        local = axis_angle_to_matrix(torch.as_tensor(np.asarray(poses[i].body_pose, np.float32).reshape(21, 3)))
        body_pose = matrix_to_axis_angle(centre @ local).reshape(63).numpy().astype(np.float32)
        params = dict(global_orient=upright_global_orient(rng.uniform(-np.pi, np.pi)).numpy(), body_pose=body_pose,
                      betas=rng.normal(0, 0.7, 10).astype(np.float32))
        with torch.no_grad():
            rest = body(**{k: torch.as_tensor(v)[None] for k, v in params.items()})
        depth = rng.uniform(5.0, 8.0)
        pelvis = np.array([rng.uniform(-0.25, 0.25) * depth, rng.uniform(-0.1, 0.1) * depth, depth])
        params['transl'] = (pelvis - rest.joints[0, 0].numpy()).astype(np.float32)
        verts = rest.vertices[0].numpy() + params['transl']
        joints = rest.joints[0].numpy() + params['transl']
        image = renderer.render(verts, body.faces, focal, princpt, img_size=IMG_WH)['image']
        box = bbox_from_points(project_points(verts, focal, princpt)).numpy()
        side = square_crop_box(box, margin=0.25).numpy()
        w = side[3] * input_wh[0] / input_wh[1]  # crop of the input's aspect, the square's height
        crop_box = np.array([side[0] + (side[2] - w) / 2, side[1], w, side[3]])
        crop = crop_image(image, crop_box, tuple(input_wh))
        kp = project_points(smplx_to_coco17(joints), focal, princpt).numpy()
        samples.append(pack_hmr_sample(crop, [box[0], box[1], box[0] + box[2], box[1] + box[3]], focal, princpt,
                                       IMG_WH[::-1], crop_box, params=params, joints_3d=joints, keypoints_full=kp,
                                       sample_id=f'bench_{seed}_{i}'))
        images.append(image)
    return samples, images


def evaluate(model, body, samples: list[dict], batch: int = 32) -> dict[str, float]:
    """Held-out errors of the model's predictions against the labels' bodies.

    ``pve_mm``: all vertices, pelvis-aligned (``evaluation.functional.mesh.pve_mm``); ``mpjpe_mm``: the 22 body
    joints, pelvis-aligned; ``orient_deg``: angle between predicted and true root rotations; ``pve_local_mm``: PVE
    of the predicted body pose and shape under the *true* root rotation (what the heading leaves).
    """
    from mmengine.dataset import pseudo_collate

    from posedreamer_mm.body.rotations import axis_angle_to_matrix
    from posedreamer_mm.evaluation.functional.mesh import mpjpe_mm, pve_mm
    j_regressor = body.smplx.J_regressor.numpy()
    model.eval()
    out = dict(pve_mm=[], mpjpe_mm=[], orient_deg=[], pve_local_mm=[])
    with torch.no_grad():
        for start in range(0, len(samples), batch):
            chunk = samples[start:start + batch]
            preds = [p.pred_instances for p in model.test_step(pseudo_collate(chunk))]
            gt = {k: torch.as_tensor(np.concatenate([s['data_samples'].gt_instances[f'smplx_{k}'] for s in chunk]))
                  for k in ('global_orient', 'body_pose', 'betas')}
            pred = {k: torch.as_tensor(np.concatenate([p[f'smplx_{k}'] for p in preds])) for k in gt}
            ref = body(**gt)
            gv, gj = ref.vertices.numpy(), ref.joints.numpy()
            pv = np.concatenate([p['vertices'] for p in preds])
            pj = np.concatenate([p['joints_3d'] for p in preds])
            out['pve_mm'] += list(pve_mm(pv, gv, j_regressor))
            out['mpjpe_mm'] += list(mpjpe_mm(pj[:, :22], gj[:, :22], pj[:, 0], gj[:, 0]))
            rel = (axis_angle_to_matrix(pred['global_orient']).transpose(1, 2)
                   @ axis_angle_to_matrix(gt['global_orient']))
            cos = ((rel.diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2).clamp(-1, 1)
            out['orient_deg'] += list(np.degrees(torch.arccos(cos).numpy()))
            local = body(global_orient=gt['global_orient'], body_pose=pred['body_pose'], betas=pred['betas'])
            out['pve_local_mm'] += list(pve_mm(local.vertices.numpy(), gv, j_regressor))
    model.train()
    return {k: float(np.mean(v)) for k, v in out.items()}


def mean_pose_pve(body, train: list[dict], test: list[dict]) -> float:
    """Held-out PVE of the training renders' mean body pose (axis-angle mean) under the true root rotation and
    shape: what a model that learned the heading, the shape and the mean pose, but no limb, would score on
    ``pve_local_mm``."""
    from posedreamer_mm.evaluation.functional.mesh import pve_mm

    def stack(samples, key):
        return torch.as_tensor(np.concatenate([s['data_samples'].gt_instances[f'smplx_{key}'] for s in samples]))

    gt = {k: stack(test, k) for k in ('global_orient', 'body_pose', 'betas')}
    mean = stack(train, 'body_pose').mean(0, keepdim=True).expand(len(test), -1)
    with torch.no_grad():
        ref, pred = body(**gt), body(**{**gt, 'body_pose': mean})
    return float(np.mean(pve_mm(pred.vertices.numpy(), ref.vertices.numpy(), body.smplx.J_regressor.numpy())))


def save_overlay(path: str, body, model, samples: list[dict], images: list[np.ndarray], num: int = 8) -> None:
    import cv2
    from mmengine.dataset import pseudo_collate

    from posedreamer_mm.body.camera import crop_image
    from posedreamer_mm.visualization.mesh_overlay import render_mesh_overlay
    model.eval()
    with torch.no_grad():
        preds = model.test_step(pseudo_collate(samples[:num]))
    tiles = []
    for p, img in zip(preds, images[:num]):
        meta = p.metainfo
        over = render_mesh_overlay(img, p.pred_instances.vertices, body.faces, meta['focal'], meta['princpt'],
                                   alpha=0.6)
        # The person's region (its box enlarged 1.5 times, 3:4), so the small figures of the 256x256 frames show.
        x0, y0, x1, y1 = np.asarray(p.gt_instances.bboxes, np.float64).reshape(4)
        h = 1.5 * max(y1 - y0, (x1 - x0) * 4 / 3)
        region = np.array([(x0 + x1) / 2 - 3 * h / 8, (y0 + y1) / 2 - h / 2, 3 * h / 4, h])
        tiles.append(np.concatenate([crop_image(img, region, (192, 256)), crop_image(over, region, (192, 256))], 0))
    cv2.imwrite(path, cv2.cvtColor(np.concatenate(tiles, 1), cv2.COLOR_RGB2BGR))


def main(argv=None) -> int:
    args = parse_args(argv)
    from mmengine.config import Config
    from mmengine.dataset import pseudo_collate

    import posedreamer_mm  # noqa: F401  (compat fixes before mmpose/mmpretrain load)
    from posedreamer_mm.body.body_model import SMPLXBodyModel
    from posedreamer_mm.body.standin import write_standin_smplx
    from posedreamer_mm.registry import MODELS
    from posedreamer_mm.testing.vit import tiny_hmr_model
    from posedreamer_mm.utils import register_all_modules

    register_all_modules()
    from mmengine.logging import MMLogger
    MMLogger.get_current_instance().setLevel('WARNING')  # init_weights logs every parameter at INFO
    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        write_standin_smplx(tmp)
        body = SMPLXBodyModel(tmp)
        t0 = time.time()
        train, _ = make_samples(body, args.train, args.seed + 1, args.input_size, args.pose_centre)
        test, test_images = make_samples(body, args.test, args.seed + 1000, args.input_size, args.pose_centre)
        t_data = time.time() - t0
        w, h = args.input_size
        # The ViT's patch grid (16-pixel patches padded by 2, as ViTPose): the head's position embedding size.
        grid = tuple((side + 4 - args.patch_size) // args.patch_size + 1 for side in (h, w))
        cfg = tiny_hmr_model(tmp, img_size=(h, w), patch_size=args.patch_size, vit_dims=args.vit_dims,
                             vit_layers=args.vit_layers, embed_dims=args.head_dims,
                             num_layers=args.head_layers, num_heads=args.head_heads,
                             feedforward_channels=2 * args.head_dims,
                             pos_embed_size=None if args.no_pos_embed else grid)
        cfg['losses'] = Config.fromfile(args.config).model.losses
        model = MODELS.build(cfg)
        model.init_weights()
        before = evaluate(model, body, test)
        optim = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.OneCycleLR(optim, max_lr=args.lr, total_steps=args.iters, pct_start=0.1)
        rng = np.random.default_rng(args.seed)
        t0 = time.time()
        for it in range(args.iters):
            idx = rng.choice(len(train), args.batch, replace=False)
            data = model.data_preprocessor(pseudo_collate([train[i] for i in idx]), True)
            losses = model(**data, mode='loss')
            loss = sum(losses.values())
            optim.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
            optim.step()
            sched.step()
            if (it + 1) % args.eval_every == 0 or it == 0:
                print(f'iter {it + 1:4d}/{args.iters}  loss {loss.item():.4f}  '
                      + '  '.join(f'{k[5:]} {v.item():.4f}' for k, v in losses.items())
                      + f'  | held-out PVE {evaluate(model, body, test)["pve_mm"]:.1f} mm', flush=True)
        t_train = time.time() - t0
        after = evaluate(model, body, test)
        seen = evaluate(model, body, train[:len(test)])
        baseline = mean_pose_pve(body, train, test)
        if args.out_dir:
            os.makedirs(args.out_dir, exist_ok=True)
            save_overlay(os.path.join(args.out_dir, 'overlay.png'), body, model, test, test_images)
    cut = 1.0 - after['pve_mm'] / before['pve_mm']
    print(f'data: {args.train} train + {args.test} held-out shaded stand-in renders ({IMG_WH[0]}x{IMG_WH[1]}, '
          f'crops {w}x{h}) in {t_data:.1f} s; training: {args.iters} iterations x batch {args.batch} in '
          f'{t_train:.1f} s ({t_train / args.iters * 1000:.0f} ms/iter, {torch.get_num_threads()} threads)')
    print(f'held-out PVE   initial {before["pve_mm"]:.1f} mm -> final {after["pve_mm"]:.1f} mm  '
          f'(reduction {cut * 100:.1f} %, target >= {args.target * 100:.0f} %)')
    print(f'held-out MPJPE initial {before["mpjpe_mm"]:.1f} mm -> final {after["mpjpe_mm"]:.1f} mm')
    print(f'root rotation error initial {before["orient_deg"]:.1f} deg -> final {after["orient_deg"]:.1f} deg; '
          f'PVE under the true root rotation initial {before["pve_local_mm"]:.1f} mm -> final '
          f'{after["pve_local_mm"]:.1f} mm')
    print(f'the training mean pose under the true root rotation and shape (no limb learned): held-out PVE '
          f'{baseline:.1f} mm; the model, under the true root rotation: {after["pve_local_mm"]:.1f} mm')
    print(f'training renders (as many): PVE {seen["pve_mm"]:.1f} mm, PVE under the true root rotation '
          f'{seen["pve_local_mm"]:.1f} mm, root rotation error {seen["orient_deg"]:.1f} deg')
    ok = cut >= args.target
    print('PASS' if ok else 'FAIL')
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
