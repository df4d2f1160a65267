"""An HTML report of a generated dataset: counts, filter outcome, pose diversity, shape and camera, samples.

    python tools/report.py DATA_ROOT [--out DIR] [--filter-dir DIR] [--reference IMAGE_DIR] [--hmr-work-dir DIR]

Writes ``index.html`` with its PNGs and ``report.json`` to ``--out`` (default ``DATA_ROOT/report``); open
``index.html`` in a browser. The filter outcome is read from ``DATA_ROOT/filter`` (``tools/filter.py``'s default
output) or ``--filter-dir``; ``--reference`` adds FID/KID against a folder of images; ``--hmr-work-dir`` adds the
loss curve and test metrics of an HMR run on the data. The dataset is only read (docs/quickstart.md).
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import posedreamer_mm  # noqa: E402,F401  (compat fixes before mmpose/mmdet load)
from posedreamer_mm.apis.errors import run_tool  # noqa: E402
from posedreamer_mm.apis.report import run_report  # noqa: E402
from posedreamer_mm.utils import register_all_modules  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('data_root', help='generated dataset (the generator output directory)')
    parser.add_argument('--out', help='report directory (default: DATA_ROOT/report)')
    parser.add_argument('--filter-dir', help="tools/filter.py's output (default: DATA_ROOT/filter, if present)")
    parser.add_argument('--reference', help='folder of reference images: FID/KID of the dataset against it')
    parser.add_argument('--hmr-work-dir', help='work dir of an HMR run (tools/train.py, tools/test.py) to show')
    parser.add_argument('--sheet-samples', type=int, default=6,
                        help='kept (and as many rejected) samples on the contact sheet')
    parser.add_argument('--pool-samples', type=int, default=1000, help='pose-source poses to compare with')
    args = parser.parse_args(argv)
    for name in ('filter_dir', 'reference', 'hmr_work_dir'):
        value = getattr(args, name)
        if value is not None and not osp.isdir(value):
            parser.error(f'--{name.replace("_", "-")} {value}: no such directory')
    return args


def main(argv=None):
    args = parse_args(argv)
    register_all_modules()
    return run_report(args.data_root, out_dir=args.out, filter_dir=args.filter_dir, reference=args.reference,
                      hmr_work_dir=args.hmr_work_dir, sheet_samples=args.sheet_samples,
                      pool_samples=args.pool_samples)


if __name__ == '__main__':
    run_tool(main)
