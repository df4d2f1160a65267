"""Hard-sample mining for the next generation round: train the difficulty regressor on a scored dataset, score a
pose pool, write the K hardest (with a diversity guard) as a pose list for ``PoseListSource`` (docs/mining.md).

    python tools/mine_hard.py DATA_ROOT --out DIR [--scores FILE | --errors FILE] [--pool CONFIG] [--num K]
    python tools/mine_hard.py --model DIR/difficulty_model.txt --out DIR --pool CONFIG [--num K]

``DATA_ROOT`` is a generated dataset scored by ``tools/filter.py`` (its ``filter/scores.jsonl`` is read by
default). ``CONFIG`` is a python config whose ``pool_source`` (or, for a generation config, ``generator.source``) is a
``POSE_SOURCES`` dict: AMASS, BEDLAM, procedural, augmented... ``--cfg-options`` overrides that config's keys as in
every tool (``num_samples=100000 seed=1``: give the pool another seed than the scored data's). Prints the held-out
Spearman rho and R^2 and writes ``difficulty_model.txt`` (+ ``.features.json``), ``heldout.png``,
``pool_predictions.jsonl``, ``hard_poses.npz`` and ``summary.json`` to ``--out``; ``--predict DATASET`` also
writes ``difficulty_<name>.npz``, the curriculum sampler's initial difficulty for an HMR run on that dataset.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import posedreamer_mm  # noqa: E402,F401  (compat fixes before mmpose/mmdet load)
from posedreamer_mm.apis.errors import run_tool  # noqa: E402


def parse_args(argv=None):
    from mmengine.config import DictAction

    from posedreamer_mm.mining import ALL_PARTS
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('data_root', nargs='?', help='scored generated dataset to train on')
    parser.add_argument('--out', required=True, help='output directory')
    target = parser.add_mutually_exclusive_group()
    target.add_argument('--scores', help='scores.jsonl of tools/filter.py (default: DATA_ROOT/filter/scores.jsonl, '
                                         'else the oks in DATA_ROOT/meta.jsonl)')
    target.add_argument('--errors', help='an HMR model\'s per-sample errors: .json {id: error} or .jsonl lines')
    parser.add_argument('--error-key', default='error', help='the error\'s key in a .jsonl errors file')
    parser.add_argument('--model', help='a saved difficulty model (skip training)')
    parser.add_argument('--pool', help='config with `pool_source` (or `generator.source`): the candidate poses')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override keys of the --pool config, k=v, as if written in it')
    parser.add_argument('--num', type=int, default=1000, help='poses to select (K)')
    parser.add_argument('--min-distance-deg', type=float, default=10.0,
                        help='diversity guard: minimum mean per-joint angle between selected poses (0: off)')
    parser.add_argument('--use-global-orient', action='store_true', help='the root rotation counts in the distance')
    parser.add_argument('--predict', nargs='+', default=[], metavar='DATASET',
                        help='write difficulty_<name>.npz (ids, difficulty) for these generated datasets: the initial '
                             'difficulty_file of HardSampleSampler')
    parser.add_argument('--max-pool', type=int, help='score only the first N pool poses')
    parser.add_argument('--max-samples', type=int, help='train on the first N dataset rows only')
    parser.add_argument('--parts', nargs='+', choices=ALL_PARTS, help='feature parts (default: the reference\'s)')
    parser.add_argument('--representation', choices=('axis_angle', 'rot6d'), help='rotation features')
    parser.add_argument('--test-fraction', type=float, default=0.2, help='held-out share of poses')
    parser.add_argument('--valid-fraction', type=float, default=0.1, help='early-stopping share of poses')
    parser.add_argument('--seed', type=int, default=42, help='split seed')
    parser.add_argument('--lgb-options', nargs='+', action=DictAction,
                        help='override LightGBM settings, k=v (num_threads=4, min_data_in_leaf=5)')
    parser.add_argument('--no-progress', action='store_true', help='no progress bars')
    args = parser.parse_args(argv)
    if args.data_root is None and args.model is None:
        parser.error('give DATA_ROOT (a scored dataset to train on) or --model')
    if args.data_root is not None and args.model is not None:
        parser.error('give DATA_ROOT or --model, not both')
    if args.model is not None and args.pool is None and not args.predict:
        parser.error('--model without --pool or --predict has nothing to do')
    return args


def pool_config(path: str, cfg_options: dict | None) -> dict:
    """The pool source dict of a config file: ``pool_source``, else a generation config's ``generator.source``."""
    from posedreamer_mm.apis.launch import load_config
    from posedreamer_mm.apis.overrides import ConfigError
    cfg = load_config(path, cfg_options, runtime_keys=('custom_imports',))
    if 'pool_source' in cfg:
        pool = cfg.pool_source
    elif 'generator' in cfg and 'source' in cfg.generator:
        pool = cfg.generator.source
    else:
        raise ConfigError(f'{path} has neither `pool_source = dict(type=..., ...)` nor `generator.source`')
    return pool.to_dict() if hasattr(pool, 'to_dict') else dict(pool)


def main(argv=None):
    args = parse_args(argv)
    from posedreamer_mm.apis.mine import run_mine
    from posedreamer_mm.utils import register_all_modules
    register_all_modules()
    pool = pool_config(args.pool, args.cfg_options) if args.pool else None
    return run_mine(args.out, data_root=args.data_root, model_path=args.model, scores=args.scores,
                    errors=args.errors, error_key=args.error_key, pool_cfg=pool, num=args.num,
                    min_distance_deg=args.min_distance_deg, use_global_orient=args.use_global_orient,
                    parts=args.parts, representation=args.representation, lgb_params=args.lgb_options,
                    test_fraction=args.test_fraction, valid_fraction=args.valid_fraction, seed=args.seed,
                    max_samples=args.max_samples, max_pool=args.max_pool, predict=args.predict,
                    progress=not args.no_progress)


if __name__ == '__main__':
    run_tool(main)
