"""Score and filter an existing generated dataset, without regenerating it.

    python tools/filter.py DATA_ROOT [CONFIG] [--out DIR] [--max-samples N] [--batch-size B] [--num-workers W]

``CONFIG`` is a python config whose ``filter_stages`` list holds the stages (the registered transforms of
``posedreamer_mm/datasets/transforms/filters.py``, as a generation config's stages); without it, the offline
default runs (``MediaPipeScorer``, OKS >= 0.85, head pose, image quality; docs/scoring.md). Writes
``scores.jsonl``, ``manifest_filtered.jsonl``, ``summary.json`` and ``report.png`` to ``--out`` (default
``DATA_ROOT/filter``); the dataset's own files are never changed or deleted.
"""
import argparse
import json
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import posedreamer_mm  # noqa: E402,F401  (compat fixes before mmpose/mmdet load)
from posedreamer_mm.apis.errors import run_tool  # noqa: E402
from posedreamer_mm.apis.filter import run_filter  # noqa: E402
from posedreamer_mm.apis.launch import load_config  # noqa: E402
from posedreamer_mm.utils import register_all_modules  # noqa: E402


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('data_root', help='generated dataset (the generator output directory)')
    parser.add_argument('config', nargs='?', help='config with a `filter_stages` list (default: offline stages)')
    parser.add_argument('--out', help='output directory (default: DATA_ROOT/filter)')
    parser.add_argument('--max-samples', type=int, help='score only the first N samples')
    parser.add_argument('--batch-size', type=int, default=8, help='images per scorer call')
    parser.add_argument('--num-workers', type=int, default=0,
                        help='score in N spawned processes (one scorer and one torch thread each); 0: in this one')
    parser.add_argument('--report-samples', type=int, default=12, help='tiles per contact sheet')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config keys, k=v')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    register_all_modules()
    stages, imports = None, []
    if args.config:
        cfg = load_config(args.config, args.cfg_options)
        if 'filter_stages' not in cfg:
            raise SystemExit(f'{args.config} has no `filter_stages` list (the scoring/filter transforms to run)')
        stages = cfg.filter_stages
        imports = list((cfg.get('custom_imports') or {}).get('imports', []))
    out = args.out or osp.join(args.data_root, 'filter')
    summary = run_filter(args.data_root, out, stages=stages, max_samples=args.max_samples,
                         batch_size=args.batch_size, report_samples=args.report_samples, num_workers=args.num_workers,
                         progress=not args.no_progress, custom_imports=imports)
    print(json.dumps({k: v for k, v in summary.items() if k != 'stages'}, indent=1))
    print(f'[filter] outputs in {out}')
    return summary


if __name__ == '__main__':
    run_tool(main)
