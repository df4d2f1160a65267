"""Pose scorers: speed per image, and how often they find the person in generated images.

1. Speed on ``skimage.data.astronaut()`` (512x512): ``MediaPipeScorer`` (the bundled model), and ``MMPoseScorer``
   with the RTMDet-tiny + RTMPose-t architectures from the installed mmdet/mmpose configs at **random weights**
   and their own test settings (timing only: no real weights ship offline; the number of random boxes that pass
   the detector's own threshold, capped at 4, is printed), and RTMPose-t alone on one whole-image box.
2. With ``--data ROOT`` (a generated dataset, e.g. from the render backend): per scorer, the fraction of images
   where it finds a person, where the label matches a detection (>= 4 keypoints scoring >= 0.3), the mean OKS
   and the fraction with OKS >= 0.85; split by the label's facing (front / back by its nose visibility).

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_scorers.py [--data outputs/render_gen] [--seconds 3]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data', help='generated dataset to measure detection rates on')
    p.add_argument('--make-render-data', type=int, metavar='N',
                   help='first write N render-backend samples to --data (the demo generator, '
                        'configs/demo/render_standin_procedural.py)')
    p.add_argument('--max-samples', type=int, default=None)
    p.add_argument('--seconds', type=float, default=3.0, help='time budget per speed measurement')
    p.add_argument('--device', default='cpu')
    p.add_argument('--skip-mmpose', action='store_true')
    args = p.parse_args()
    if args.make_render_data and not args.data:
        p.error('--make-render-data N needs --data DIR (where to write the dataset)')
    return args


def rate(fn, seconds: float) -> float:
    fn()
    n, t0 = 0, time.perf_counter()
    while n < 3 or time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return (time.perf_counter() - t0) / n


def random_weight_mmpose(device: str, tmp: str):
    """MMPoseScorer on RTMDet-tiny + RTMPose-t configs with random weights written to ``tmp``."""
    import torch
    from mmengine.registry import DefaultScope

    from posedreamer_mm.registry import SCORERS
    from posedreamer_mm.scoring.mmpose_scorer import _load_config
    det_cfg = 'mmdet::rtmdet/rtmdet_tiny_8xb32-300e_coco.py'
    pose_cfg = 'mmpose::body_2d_keypoint/rtmpose/coco/rtmpose-t_8xb256-420e_coco-256x192.py'
    for name, cfg, scope in (('det', det_cfg, 'mmdet'), ('pose', pose_cfg, 'mmpose')):
        cfg = _load_config(cfg, None, name)
        cfg.model.backbone.init_cfg = None
        with DefaultScope.overwrite_default_scope(scope):
            from mmengine.registry import MODELS
            model = MODELS.build(cfg.model)
        torch.save(dict(state_dict=model.state_dict()), os.path.join(tmp, f'{name}.pth'))
    full = SCORERS.build(dict(type='MMPoseScorer', det_config=det_cfg, det_checkpoint=os.path.join(tmp, 'det.pth'),
                              pose_config=pose_cfg, pose_checkpoint=os.path.join(tmp, 'pose.pth'), device=device,
                              det_score_thr=0.0, max_people=4))
    pose_only = SCORERS.build(dict(type='MMPoseScorer', pose_config=pose_cfg,
                                   pose_checkpoint=os.path.join(tmp, 'pose.pth'), device=device))
    return full, pose_only


def make_render_dataset(out: str, num: int) -> str:
    """Writes a generated dataset of ``num`` source indices to ``out`` with the demo generator
    (configs/demo/render_standin_procedural.py: procedural bodies -> controls at the crop camera ->
    ``RenderBackend`` -> ``ShardedDatasetWriter``; what ``python tools/demo.py --out OUT --num-samples NUM`` writes,
    a re-run resumes it). Returns ``out``."""
    from pathlib import Path

    from posedreamer_mm.apis.generate import build_generator
    from posedreamer_mm.apis.launch import load_config
    config = Path(__file__).resolve().parents[1] / 'configs' / 'demo' / 'render_standin_procedural.py'
    summary = build_generator(load_config(str(config)), num_samples=num).run(out)
    print(f'# wrote {summary["written"]} render-backend images to {out} (dropped {summary["dropped"]}, failed '
          f'{summary["failed"]})')
    return out


def detection_rates(scorer, data: str, max_samples: int | None) -> dict:
    from tqdm import tqdm

    from posedreamer_mm.generation.reader import GeneratedDataReader
    from posedreamer_mm.scoring.matching import match_label
    reader = GeneratedDataReader(data)
    n = len(reader) if max_samples is None else min(len(reader), max_samples)
    rows = []
    for i in tqdm(range(n), desc=scorer.name, leave=False):
        label = np.asarray(reader.sample(i).keypoints_coco17, np.float64)
        det = scorer(reader.load_image(i))
        m = match_label(det, label)
        rows.append((len(det) > 0, m.index is not None, m.oks, label[0, 2] >= 2))
    found, matched, oks, front = (np.array(c) for c in zip(*rows))
    out = {}
    for name, sel in (('all', np.ones(n, bool)), ('front (nose visible)', front), ('back/side', ~front)):
        if sel.any():
            out[name] = dict(n=int(sel.sum()), found=found[sel].mean(), matched=matched[sel].mean(),
                             mean_oks=oks[sel].mean(), oks_ge_085=(oks[sel] >= 0.85).mean())
    return out


def main():
    args = parse_args()
    import posedreamer_mm  # noqa: F401
    from posedreamer_mm.utils import register_all_modules
    register_all_modules()
    from skimage.data import astronaut

    from posedreamer_mm.registry import SCORERS
    img = astronaut()
    scorers = [SCORERS.build(dict(type='MediaPipeScorer'))]
    print(f'# bench_scorers  torch threads {__import__("torch").get_num_threads()}  device {args.device}')
    print(f'{"scorer":<44}{"ms / 512x512 image":>20}')
    per_call_ms = rate(lambda: scorers[0](img), args.seconds) * 1e3
    print(f'{"MediaPipeScorer (BlazePose full, bundled)":<44}{per_call_ms:>20.1f}')
    if not args.skip_mmpose:
        with tempfile.TemporaryDirectory() as tmp:
            full, pose_only = random_weight_mmpose(args.device, tmp)
            people = len(full(img))
            t = rate(lambda: full(img), args.seconds)
            print(f'{f"MMPoseScorer RTMDet-tiny+RTMPose-t ({people} boxes)":<44}{t * 1e3:>20.1f}')
            t4 = rate(lambda: full.predict_batch([img] * 4), args.seconds) / 4
            print(f'{"  same, batches of 4 images":<44}{t4 * 1e3:>20.1f}')
            t = rate(lambda: pose_only(img), args.seconds)
            print(f'{"MMPoseScorer RTMPose-t alone, 1 box":<44}{t * 1e3:>20.1f}')
    if args.make_render_data:
        make_render_dataset(args.data, args.make_render_data)
    if args.data:
        print(f'\n# detection on {args.data} (label matched = a detection with >= 4 keypoints scoring >= 0.3)')
        print(f'{"scorer":<18}{"subset":<22}{"n":>5}{"found":>8}{"matched":>9}{"mean OKS":>10}{"OKS>=.85":>10}')
        for s in scorers:
            for subset, r in detection_rates(s, args.data, args.max_samples).items():
                print(f'{s.name:<18}{subset:<22}{r["n"]:>5}{r["found"]:>8.2f}{r["matched"]:>9.2f}'
                      f'{r["mean_oks"]:>10.3f}{r["oks_ge_085"]:>10.2f}')


if __name__ == '__main__':
    main()
