"""Curriculum against uniform sampling: the same tiny HMR model trained twice on the same renders, once drawing
with ``HardSampleSampler`` fed by the model's own per-sample errors, once uniformly; held-out PVE on all renders and
on the hardest quartile.

Set-up as ``benchmarks/bench_hmr_learning.py`` (its renders, model and losses: shaded stand-in renders of
procedural poses, the tiny ViT, the ViT-L config's losses, AdamW one-cycle), with epochs drawn by a sampler:

- ``uniform``: ``HardSampleSampler`` with ``max_mix=0``, i.e. mmengine's ``DefaultSampler`` (each render once per
  epoch, shuffled);
- ``curriculum``: ``HardSampleSampler(curriculum=dict(by='epoch', begin, end, max_mix, power))``; after every
  epoch the table is updated as ``DifficultyHook`` does (EMA, ``--momentum``, of each render's
  ``HMREstimator.per_sample_error``: body MPJPE in mm, measured on the training batches as they are drawn).

Both runs start from the same weights and draw their first ``begin`` epochs identically. **Hardest quartile**: the
held-out renders whose PVE under the *uniform* model is in its top 25 % (the mining regressor is not used, so the
benchmark stands alone); the same renders are scored for both models. It reports what it measures; there is no
target (a curriculum can help the hard quartile and cost the rest).

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_curriculum.py        # ~4.5 CPU-minutes on one core
    .venv/bin/python benchmarks/bench_curriculum.py --iters 200 --train 256  # a quick look
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--train', type=int, default=1024, help='training renders')
    p.add_argument('--test', type=int, default=128, help='held-out renders')
    p.add_argument('--iters', type=int, default=640, help='training iterations per run')
    p.add_argument('--batch', type=int, default=32)
    p.add_argument('--lr', type=float, default=3e-3, help='peak learning rate (one-cycle)')
    p.add_argument('--input-size', type=int, nargs=2, default=(96, 128), metavar=('W', 'H'))
    p.add_argument('--begin', type=float, default=2, help='curriculum: last uniform epoch')
    p.add_argument('--end', type=float, default=8, help='curriculum: epoch reaching max_mix')
    p.add_argument('--max-mix', type=float, default=0.5, help='curriculum: final share of difficulty-focused draws')
    p.add_argument('--power', type=float, default=1.0, help='curriculum: sharpening of the difficulty')
    p.add_argument('--momentum', type=float, default=0.5, help="the table's EMA weight of an epoch's errors")
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--config', default=os.path.join(os.path.dirname(__file__), '..', 'configs', 'hmr',
                                                     'hmr_vitl_posedreamer_bedlam.py'),
                   help='config whose losses (and weights) are trained; the model is the tiny ViT')
    return p.parse_args(argv)


class Renders(list):
    """The packed training renders, named as a dataset so the sampler can key their difficulty."""
    dataset_name = 'renders'


def per_sample_pve(model, body, samples: list[dict], batch: int = 32) -> np.ndarray:
    """``(N,)`` pelvis-aligned PVE (mm) of the model's predictions on ``samples``."""
    from mmengine.dataset import pseudo_collate

    from posedreamer_mm.evaluation.functional.mesh import pve_mm
    j_regressor = body.smplx.J_regressor.numpy()
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(samples), batch):
            chunk = samples[start:start + batch]
            preds = [p.pred_instances for p in model.test_step(pseudo_collate(chunk))]
            gt = {k: torch.as_tensor(np.concatenate([s['data_samples'].gt_instances[f'smplx_{k}'] for s in chunk]))
                  for k in ('global_orient', 'body_pose', 'betas')}
            pv = np.concatenate([p['vertices'] for p in preds])
            out += list(pve_mm(pv, body(**gt).vertices.numpy(), j_regressor))
    model.train()
    return np.asarray(out)


def train_run(cfg, train: Renders, args, curriculum: dict | None) -> tuple[object, dict]:
    """One training run; ``curriculum=None`` samples uniformly. Returns the model and what the sampler did."""
    from mmengine.dataset import pseudo_collate

    from posedreamer_mm.datasets.samplers import HardSampleSampler
    from posedreamer_mm.registry import MODELS
    torch.manual_seed(args.seed)
    model = MODELS.build(cfg)
    model.init_weights()
    model.record_sample_errors = True
    sampler = HardSampleSampler(train, seed=args.seed, curriculum=curriculum or dict(max_mix=0.0))
    optim = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(optim, max_lr=args.lr, total_steps=args.iters, pct_start=0.1)
    it, epoch, draws = 0, 0, np.zeros(len(train), np.int64)
    while it < args.iters:
        sampler.set_epoch(epoch)
        order = list(sampler)
        seen_slots, seen_err = [], []
        for start in range(0, len(order) - args.batch + 1, args.batch):
            if it == args.iters:
                break
            idx = order[start:start + args.batch]
            draws[idx] += 1
            data = model.data_preprocessor(pseudo_collate([train[i] for i in idx]), True)
            losses = model(**data, mode='loss')
            errors = model.sample_errors
            seen_slots.append(sampler.slots_of(errors['dataset_name'], errors['sample_idx']))
            seen_err.append(errors['error_mm'])
            loss = sum(losses.values())
            optim.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optim.step()
            sched.step()
            it += 1
        # what DifficultyHook(interval=None) does at the end of an epoch
        sampler.update_difficulty(np.concatenate(seen_slots), np.concatenate(seen_err), args.momentum)
        epoch += 1
    return model, dict(epochs=epoch, draws=draws, difficulty=sampler.difficulty.copy(),
                       mix=sampler.mix_at(epoch - 1))


def main(argv=None) -> int:
    args = parse_args(argv)
    from bench_hmr_learning import make_samples
    from mmengine.config import Config

    import posedreamer_mm  # noqa: F401  (compat fixes before mmpose/mmpretrain load)
    from posedreamer_mm.body.body_model import SMPLXBodyModel
    from posedreamer_mm.body.standin import write_standin_smplx
    from posedreamer_mm.testing.vit import tiny_hmr_model
    from posedreamer_mm.utils import register_all_modules

    register_all_modules()
    from mmengine.logging import MMLogger
    MMLogger.get_current_instance().setLevel('WARNING')
    with tempfile.TemporaryDirectory() as tmp:
        write_standin_smplx(tmp)
        body = SMPLXBodyModel(tmp)
        t0 = time.time()
        train = Renders(make_samples(body, args.train, args.seed + 1, args.input_size, 'A')[0])
        test = make_samples(body, args.test, args.seed + 1000, args.input_size, 'A')[0]
        for i, s in enumerate(train):
            s['data_samples'].set_metainfo(dict(dataset_name=train.dataset_name, sample_idx=i))
        t_data = time.time() - t0
        w, h = args.input_size
        grid = tuple((side + 4 - 16) // 16 + 1 for side in (h, w))
        cfg = tiny_hmr_model(tmp, img_size=(h, w), pos_embed_size=grid)
        cfg['losses'] = Config.fromfile(args.config).model.losses
        curriculum = dict(by='epoch', begin=args.begin, end=args.end, max_mix=args.max_mix, power=args.power)
        results, t_runs = {}, {}
        for name, cur in (('uniform', None), ('curriculum', curriculum)):
            t0 = time.time()
            model, info = train_run(cfg, train, args, cur)
            t_runs[name] = time.time() - t0
            results[name] = (per_sample_pve(model, body, test), info)
    uni, cur = results['uniform'][0], results['curriculum'][0]
    hard = uni >= np.quantile(uni, 0.75)
    print(f'data: {args.train} train + {args.test} held-out renders in {t_data:.1f} s; each run {args.iters} '
          f'iterations x batch {args.batch} ({results["uniform"][1]["epochs"]} epochs): uniform '
          f'{t_runs["uniform"]:.0f} s, curriculum {t_runs["curriculum"]:.0f} s ({torch.get_num_threads()} threads)')
    print(f'curriculum: {curriculum}, EMA momentum {args.momentum}; share of difficulty-focused draws in the last '
          f'epoch {results["curriculum"][1]["mix"]:.2f}')
    draws, diff = results['curriculum'][1]['draws'], results['curriculum'][1]['difficulty']
    top = diff >= np.nanquantile(diff, 0.75)
    print(f'curriculum draws: the training renders in the top quartile of the final difficulty table were drawn '
          f'{draws[top].mean():.2f} times each, the others {draws[~top].mean():.2f} (uniform: '
          f'{results["uniform"][1]["draws"].mean():.2f} each)')
    print(f'{"held-out PVE (mm)":<28}{"uniform":>10}{"curriculum":>12}')
    print(f'{"all renders":<28}{uni.mean():>10.1f}{cur.mean():>12.1f}')
    print(f'{"hardest quartile (uniform)":<28}{uni[hard].mean():>10.1f}{cur[hard].mean():>12.1f}')
    print(f'{"other three quartiles":<28}{uni[~hard].mean():>10.1f}{cur[~hard].mean():>12.1f}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
