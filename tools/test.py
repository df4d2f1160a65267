"""Evaluate a checkpoint: ``python tools/test.py CONFIG CHECKPOINT [--work-dir D] [--dump preds.pkl]``."""
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import posedreamer_mm  # noqa: E402,F401
from posedreamer_mm.engine.launch import common_parser, load_config, merge_test_args  # noqa: E402
from posedreamer_mm.utils import register_all_modules  # noqa: E402


def parse_args(argv=None):
    parser = common_parser('Test (evaluate) a posedreamer_mm / OpenMMLab model')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--dump', type=str, help='dump predictions to this pickle file')
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def main(argv=None):
    args = parse_args(argv)
    register_all_modules(init_default_scope=False)
    cfg = load_config(args.config, args.cfg_options)
    cfg = merge_test_args(cfg, args)
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    return runner.test()


if __name__ == '__main__':
    main()
