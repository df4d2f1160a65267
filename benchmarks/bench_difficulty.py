"""How well the difficulty regressor predicts OKS from SMPL-X parameters on the project's own data.

1. Generates ``--num-samples`` render-backend images (the demo generator, configs/demo/render_standin_procedural.py:
   procedural poses with random betas, yaw, distance; the open SMPL-X stand-in) at ``--crop`` pixels into
   ``WORK/data`` (a re-run resumes it);
2. scores every image with the offline ``MediaPipeScorer`` through the filter API (one ``ScorePose`` stage, no
   filter, so every row keeps its OKS; ``WORK/data/filter/scores.jsonl``);
3. trains the regressor (the reference's LightGBM settings, ``tools/mine_hard.py``'s code) on the SMPL-X parameters
   of the labels, held-out split grouped by pose, for the reference layout and a few others, over ``--seeds``
   split seeds, and prints the held-out Spearman rho and R^2, the measured OKS of the predicted-hardest quarter,
   a learning curve, a diagnostic on the label's 2D keypoints and two single-number baselines;
4. renders the first ``--retest`` poses again with another generator seed (same pose, shape and camera; new
   background, colours, lighting), scores them and prints how well one render's OKS predicts the other's: the
   ceiling of any predictor that sees only the pose.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_difficulty.py --work-dir /tmp/bench_difficulty \
        [--num-samples 2400] [--crop 192] [--seeds 3] [--retest 1200]
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import os.path as osp
import time

import numpy as np


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--work-dir', required=True)
    p.add_argument('--num-samples', type=int, default=2400)
    p.add_argument('--crop', type=int, default=192, help='image size of the generated crops, pixels')
    p.add_argument('--num-workers', type=int, default=0, help='generator / filter worker processes')
    p.add_argument('--seeds', type=int, default=3, help='split seeds the held-out figures are averaged over')
    p.add_argument('--retest', type=int, default=1200, metavar='N',
                   help='render the first N poses again with another generator seed (new background, skin, clothing '
                        'colours, lighting; same pose, shape and camera), score them, and print how well the first '
                        "render's OKS predicts the second's: the ceiling of any predictor that sees only the pose")
    return p.parse_args()


def generate(out: str, num: int, crop: int, workers: int, generator_seed: int | None = None) -> float:
    from posedreamer_mm.apis.generate import build_generator
    from posedreamer_mm.apis.launch import load_config
    root = osp.dirname(osp.dirname(osp.abspath(__file__)))
    options = {'crop_size': crop, **({} if generator_seed is None else {'generator.seed': generator_seed})}
    cfg = load_config(osp.join(root, 'configs', 'demo', 'render_standin_procedural.py'), options)
    t0 = time.time()
    summary = build_generator(cfg, num_samples=num, num_workers=workers, progress=True).run(out)
    count = {k: sum(v.values()) if isinstance(v, dict) else v for k, v in summary.items()
             if k in ('written', 'dropped', 'failed')}
    print(f'# generated {count["written"]} images at {crop} px (dropped {count["dropped"]}, failed '
          f'{count["failed"]}) in {time.time() - t0:.0f} s')
    return time.time() - t0


def score(data: str, workers: int) -> float:
    from posedreamer_mm.apis.filter import run_filter
    t0 = time.time()
    summary = run_filter(data, osp.join(data, 'filter'), stages=[dict(type='ScorePose',
                                                                      scorer=dict(type='MediaPipeScorer'))],
                         num_workers=workers, batch_size=8)
    print(f'# scored {summary["num_scored"]} images with MediaPipeScorer in {time.time() - t0:.0f} s '
          f'(failed {summary["num_failed"]})')
    return time.time() - t0


#: Feature layouts compared: the reference's, 6D rotations, with camera placement, body articulation and root only.
REFERENCE_PARTS = ('global_orient', 'body_pose', 'betas', 'left_hand_pose', 'right_hand_pose', 'jaw_pose', 'expression')
LAYOUTS = {
    'reference (axis-angle, 179)': dict(parts=REFERENCE_PARTS),
    'rot6d': dict(parts=REFERENCE_PARTS, representation='rot6d'),
    '+ transl + camera': dict(parts=REFERENCE_PARTS + ('transl', 'camera')),
    'global_orient + body_pose': dict(parts=('global_orient', 'body_pose')),
    'global_orient only': dict(parts=('global_orient',)),
}


def facing_cosine(global_orient: np.ndarray) -> np.ndarray:
    """Cosine between the body's forward axis (SMPL-X +z) and the direction towards the camera (-z camera)."""
    from scipy.spatial.transform import Rotation
    forward = Rotation.from_rotvec(np.asarray(global_orient, np.float64)).apply([0.0, 0.0, 1.0])
    return -forward[:, 2]


def lgb_rho(features: np.ndarray, targets: np.ndarray, groups, seed: int) -> float:
    """Held-out rho of the reference LightGBM settings on arbitrary features (same grouped split as the tool)."""
    import lightgbm as lgb

    from posedreamer_mm.mining import REFERENCE_PARAMS, spearman_rho, split_indices
    train, valid, test = split_indices(len(targets), 0.2, 0.1, seed, groups)
    dtrain = lgb.Dataset(features[train], targets[train])
    booster = lgb.train({**REFERENCE_PARAMS, 'num_threads': 1}, dtrain, 1000,
                        valid_sets=[lgb.Dataset(features[valid], targets[valid], reference=dtrain)],
                        callbacks=[lgb.early_stopping(50, verbose=False)])
    return spearman_rho(targets[test], booster.predict(features[test], num_iteration=booster.best_iteration))


def evaluate(data, seeds: int) -> None:
    from posedreamer_mm.apis.mine import train_on_dataset
    from posedreamer_mm.generation.reader import GeneratedDataReader
    from posedreamer_mm.mining import spearman_rho
    oks = data.targets
    print(f'# {len(oks)} scored rows ({len(set(data.groups))} poses); OKS mean {oks.mean():.3f}, std '
          f'{oks.std():.3f}, quantiles 10/25/50/75/90 % '
          + ' '.join(f'{q:.3f}' for q in np.quantile(oks, [0.1, 0.25, 0.5, 0.75, 0.9]))
          + f'; OKS 0 (no match) {(oks == 0).mean():.3f}')
    reader = GeneratedDataReader(osp.dirname(osp.dirname(data.origin)))
    visible = np.array([(reader.sample(reader.index_of(i)).keypoints_coco17[:, 2] >= 2).sum() for i in data.ids])
    print(f'{"layout":<30}{"rho":>14}{"R^2":>14}{"trees":>8}{"hardest-25% OKS":>17}{"rest OKS":>10}{"s/fit":>7}')
    for name, layout in LAYOUTS.items():
        rhos, r2s, trees, hard, rest, secs = [], [], [], [], [], []
        for seed in range(seeds):
            t0 = time.time()
            model, held = train_on_dataset(data, lgb_params=dict(num_threads=1), seed=seed, **layout)
            secs.append(time.time() - t0)
            rhos.append(held.spearman_rho)
            r2s.append(held.r2)
            trees.append(model.info['best_iteration'])
            top = held.predicted <= np.quantile(held.predicted, 0.25)  # predicted hardest quarter (lowest OKS)
            hard.append(held.measured[top].mean())
            rest.append(held.measured[~top].mean())
        print(f'{name:<30}{np.mean(rhos):>8.3f} ±{np.std(rhos):.3f}{np.mean(r2s):>8.3f} ±{np.std(r2s):.3f}'
              f'{np.mean(trees):>8.0f}{np.mean(hard):>17.3f}{np.mean(rest):>10.3f}{np.mean(secs):>7.1f}')
    print('# learning curve, reference layout (training rows are 70 % of the rows used):')
    rng = np.random.default_rng(0)
    for n in (len(oks) // 4, len(oks) // 2, len(oks)):
        keep = np.sort(rng.permutation(len(oks))[:n])
        sub = dataclasses.replace(data, ids=[data.ids[i] for i in keep], targets=oks[keep],
                                  groups=[data.groups[i] for i in keep],
                                  params={k: v[keep] for k, v in data.params.items()})
        rhos = [train_on_dataset(sub, lgb_params=dict(num_threads=1), seed=seed)[1].spearman_rho
                for seed in range(seeds)]
        print(f'#   {n:>6} rows: held-out rho {np.mean(rhos):.3f} ±{np.std(rhos):.3f}')
    rows = [reader.index_of(i) for i in data.ids]
    kpts = np.stack([reader.sample(r).keypoints_coco17 for r in rows]).astype(np.float64)
    box = np.stack([reader.sample(r).bbox for r in rows]).astype(np.float64)
    kp_feats = np.concatenate([((kpts[..., :2] - box[:, None, :2]) / box[:, None, 2:]).reshape(len(rows), -1),
                               kpts[..., 2]], 1)
    print(f'# diagnostic, not an SMPL-X layout: the label\'s 2D COCO keypoints in its box (34) + visibility (17): '
          f'held-out rho {np.mean([lgb_rho(kp_feats, oks, data.groups, s) for s in range(seeds)]):.3f}')
    print('# single-number baselines on all rows (no training):')
    print(f'#   rho(OKS, visible COCO keypoints of the label)   {spearman_rho(oks, visible):.3f}')
    facing = facing_cosine(data.params["global_orient"])
    print(f'#   rho(OKS, body facing the camera, cosine)         {spearman_rho(oks, facing):.3f}')


def retest(scored, out: str, args) -> None:
    from posedreamer_mm.apis.mine import read_scored_dataset
    from posedreamer_mm.mining import r2_score, spearman_rho
    generate(out, args.retest, args.crop, args.num_workers, generator_seed=1)
    if not osp.isfile(osp.join(out, 'filter', 'scores.jsonl')):
        score(out, args.num_workers)
    again = read_scored_dataset(out, progress=False)
    first = dict(zip(scored.ids, scored.targets))
    common = [i for i in again.ids if i in first]
    a = np.array([first[i] for i in common])
    b = np.array([dict(zip(again.ids, again.targets))[i] for i in common])
    both_hard = np.mean((a <= np.quantile(a, 0.25)) & (b <= np.quantile(b, 0.25)))
    print(f'# retest: {len(common)} poses rendered twice (generator seed 0 and 1): Spearman rho of the two OKS '
          f'{spearman_rho(a, b):.3f}, R^2 of predicting the second by the first {r2_score(b, a):.3f}; mean |diff| '
          f'{np.abs(a - b).mean():.3f}; both renders in their hardest quarter {both_hard:.3f} (0.0625 if '
          'independent)')
    # The same poses with a less noisy target (the mean OKS of the two renders) vs one render's OKS.
    from posedreamer_mm.apis.mine import train_on_dataset
    pos = {i: k for k, i in enumerate(scored.ids)}
    rows = [pos[i] for i in common]
    params = {k: v[rows] for k, v in scored.params.items()}
    for name, target in (('one render', a), ('mean of the two renders', (a + b) / 2)):
        sub = dataclasses.replace(scored, ids=common, targets=target, groups=[scored.groups[r] for r in rows],
                                  params=params)
        rhos = [train_on_dataset(sub, lgb_params=dict(num_threads=1), seed=seed)[1].spearman_rho
                for seed in range(args.seeds)]
        print(f'#   reference layout on these {len(common)} poses, target = {name}: held-out rho '
              f'{np.mean(rhos):.3f} ±{np.std(rhos):.3f}')


def main():
    args = parse_args()
    import posedreamer_mm  # noqa: F401
    from posedreamer_mm.utils import register_all_modules
    register_all_modules()
    from posedreamer_mm.apis.mine import read_scored_dataset
    data = osp.join(args.work_dir, 'data')
    os.makedirs(args.work_dir, exist_ok=True)
    t0 = time.time()
    generate(data, args.num_samples, args.crop, args.num_workers)
    if not osp.isfile(osp.join(data, 'filter', 'scores.jsonl')):
        score(data, args.num_workers)
    print(f'# data ready in {time.time() - t0:.0f} s')
    scored = read_scored_dataset(data, progress=False)
    evaluate(scored, args.seeds)
    if args.retest:
        retest(scored, osp.join(args.work_dir, 'retest'), args)
    print(f'# total {time.time() - t0:.0f} s')


if __name__ == '__main__':
    main()
