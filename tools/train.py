"""Train a model from an OpenMMLab config: ``python tools/train.py CONFIG [--work-dir D] [--resume [CKPT]]``.

Same arguments as mmpose's ``tools/train.py``; distributed with ``bash tools/dist_train.sh CONFIG N`` (torchrun)
or ``bash tools/slurm_train.sh PARTITION JOB CONFIG WORK_DIR`` (GPUs if present, CPU processes over gloo
otherwise).
"""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import posedreamer_mm  # noqa: E402,F401  (compat fixes before mmpose/mmdet load)
from posedreamer_mm.apis.errors import run_tool  # noqa: E402
from posedreamer_mm.apis.launch import (  # noqa: E402
    build_runner,
    common_parser,
    load_config,
    merge_train_args,
    parse_tool_args,
    shutdown_distributed,
)
from posedreamer_mm.utils import register_all_modules  # noqa: E402


def parse_args(argv=None):
    parser = common_parser('Train a posedreamer_mm / OpenMMLab model')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from this checkpoint; without a value, from the latest in the work dir')
    parser.add_argument('--amp', action='store_true', help='mixed-precision training (AmpOptimWrapper)')
    parser.add_argument('--auto-scale-lr', action='store_true', help='scale the LR with the total batch size')
    return parse_tool_args(parser, argv)


def main(argv=None):
    args = parse_args(argv)
    register_all_modules(init_default_scope=False)
    cfg = merge_train_args(load_config(args.config, args.cfg_options), args)
    build_runner(cfg).train()
    shutdown_distributed(args.launcher)  # every rank finished: end the group before interpreter exit


if __name__ == '__main__':
    run_tool(main)
