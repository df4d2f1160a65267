"""The main job on its embedded default: python tools/demo.py [--config C] [--out DIR] [--num-samples N].

Today it runs the stages that exist: pose source + augmentation -> SMPL-X forward -> control images with
labels, a contact sheet and a summary. With no ``body_model_dir`` it writes and uses the open SMPL-X stand-in
(not SMPL-X; see docs/bodies.md).
"""
import argparse
import json
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import posedreamer_mm  # noqa: E402,F401
from posedreamer_mm.apis.launch import load_config  # noqa: E402
from posedreamer_mm.generation.pipeline import run_demo  # noqa: E402
from posedreamer_mm.utils import register_all_modules  # noqa: E402

DEFAULT_CONFIG = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'configs', 'demo',
                          'controls_standin_procedural.py')


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--config', default=DEFAULT_CONFIG, help='demo config')
    parser.add_argument('--out', default='outputs/demo', help='output directory')
    parser.add_argument('--num-samples', type=int, help='override the number of samples')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config keys, k=v')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    register_all_modules()
    cfg = load_config(args.config, args.cfg_options)
    summary = run_demo(cfg, args.out, num_samples=args.num_samples)
    print(json.dumps({k: v for k, v in summary.items() if k != 'skipped_samples'}, indent=2))
    return summary


if __name__ == '__main__':
    main()
