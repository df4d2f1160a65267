"""Evaluate a checkpoint: ``python tools/test.py CONFIG CHECKPOINT [--work-dir D] [--dump preds.pkl]``.

The checkpoint is loaded strictly (``posedreamer_mm/apis/checkpoint.py``): one of another architecture or head size
stops the run with ``CheckpointMismatchError`` naming the file and the mismatched keys, before any metric.
"""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import posedreamer_mm  # noqa: E402,F401  (compat fixes before mmpose/mmdet load)
from posedreamer_mm.apis.checkpoint import build_strict_test_runner  # noqa: E402
from posedreamer_mm.apis.errors import run_tool  # noqa: E402
from posedreamer_mm.apis.launch import (  # noqa: E402
    common_parser,
    load_config,
    merge_test_args,
    parse_tool_args,
    shutdown_distributed,
)
from posedreamer_mm.utils import register_all_modules  # noqa: E402


def parse_args(argv=None):
    parser = common_parser('Test (evaluate) a posedreamer_mm / OpenMMLab model')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--dump', type=str, help='dump predictions to this pickle file')
    return parse_tool_args(parser, argv)


def main(argv=None):
    args = parse_args(argv)
    register_all_modules(init_default_scope=False)
    cfg = merge_test_args(load_config(args.config, args.cfg_options), args)
    # Strict: a checkpoint whose weight names or shapes differ from the config's model stops here (naming the
    # file and the keys) instead of being evaluated with layers left at their random initialisation.
    metrics = build_strict_test_runner(cfg).test()
    shutdown_distributed(args.launcher)  # every rank finished: end the group before interpreter exit
    return metrics


if __name__ == '__main__':
    run_tool(main)
