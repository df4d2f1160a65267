"""What ``tools/generate.py`` and ``tools/demo.py`` call: parse, set up the launcher, build the generator, run.

A generation config holds one ``generator = dict(type='DatasetGenerator', ...)`` and an ``out_dir``; asset paths
are top-level variables (``body_model_dir``), and ``--cfg-options body_model_dir=/data/smplx`` acts as if the file
said it, so it reaches every dict built from it (docs/configs.md). A ``model_path`` left ``None`` means the open
SMPL-X stand-in (docs/bodies.md): ``SMPLXBodyModel`` writes it to ``$PDM_STANDIN_DIR`` on first use.
"""
from __future__ import annotations

import argparse
import os

from mmengine.config import Config, DictAction
from mmengine.logging import print_log

from .launch import ConfigError, load_config, setup_slurm_env, shutdown_distributed


def generate_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('config', help='generation config (configs/generation/, configs/demo/)')
    parser.add_argument('--out', help='output directory (default: the config\'s out_dir)')
    parser.add_argument('--num-samples', type=int, help='source indices to generate, [0, N)')
    parser.add_argument('--num-workers', type=int, help='spawn worker processes for rendering (per rank)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config keys, xxx=yyy, as if written in the config file '
                        '(body_model_dir=/data/smplx reaches every body model; docs/configs.md)')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm'], default='none', help='job launcher')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar (logs only)')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    return parser


def init_generation_dist(launcher: str) -> tuple[int, int]:
    """Initialises the process group for a ``pytorch`` (torchrun) or ``slurm`` launch; returns (rank, world).

    Ranks exchange only small objects (the output check, summaries), so the group is gloo whatever the devices;
    with CUDA each rank's default device is its ``LOCAL_RANK``, which the backend then uses.
    """
    if launcher == 'none':
        return 0, 1
    import torch
    import torch.distributed as dist
    if launcher == 'slurm':
        setup_slurm_env()
    if not dist.is_initialized():
        dist.init_process_group('gloo')
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get('LOCAL_RANK', 0)) % torch.cuda.device_count())
    rank, world = dist.get_rank(), dist.get_world_size()
    print_log(f'{launcher} launch: rank {rank}/{world} (gloo)', logger='current')
    return rank, world


def build_generator(cfg: Config, num_samples: int | None = None, num_workers: int | None = None,
                    progress: bool = True):
    """The config's ``DatasetGenerator`` with the tool's overrides applied."""
    from posedreamer_mm.registry import GENERATORS
    if 'generator' not in cfg:
        raise ConfigError(f'config {cfg.filename!r} has no `generator = dict(type="DatasetGenerator", ...)`')
    gen_cfg = cfg.generator.to_dict()
    if num_samples is not None:
        gen_cfg['num_samples'] = int(num_samples)
    if num_workers is not None:
        gen_cfg['num_workers'] = int(num_workers)
    gen_cfg['progress'] = progress and gen_cfg.get('progress', True)
    imports = (cfg.get('custom_imports') or {}).get('imports', [])
    gen_cfg['custom_imports'] = list(gen_cfg.get('custom_imports') or []) + list(imports)
    return GENERATORS.build(gen_cfg)


def run_generate(argv=None, description: str = 'Generate a labelled image dataset') -> dict:
    """``tools/generate.py``: parse -> load config -> launcher -> build -> run; returns the summary."""
    from posedreamer_mm.utils import register_all_modules
    parser = generate_parser(description)
    args = parser.parse_args(argv)
    register_all_modules()
    # A generation config is no Runner config: only custom_imports may be added to it.
    cfg = load_config(args.config, args.cfg_options, runtime_keys=('custom_imports',))
    out = args.out or cfg.get('out_dir')
    if not out:
        raise ConfigError(f'no output directory: pass --out or set out_dir in {args.config}')
    rank, _ = init_generation_dist(args.launcher)
    generator = build_generator(cfg, args.num_samples, args.num_workers, progress=not args.no_progress and rank == 0)
    summary = generator.run(out)
    shutdown_distributed(args.launcher)  # every rank finished: end the group before interpreter exit
    if rank == 0:
        print_log(f'generated {summary["written"]} samples ({summary["status"]}), dropped {summary["dropped"]}, '
                  f'failed {summary["failed"]}: {out}', logger='current')
    return summary
