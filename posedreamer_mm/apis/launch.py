"""Config loading and argument merging for the train/test tools (mmpose ``tools/train.py`` shape).

The tools stay thin (parse -> :func:`merge_train_args` -> ``Runner.from_cfg``); the logic lives here so it is
tested and reusable from notebooks.
"""
from __future__ import annotations

import argparse
import logging
import os
import os.path as osp
import re
import shutil
import subprocess
from collections.abc import Iterable, MutableMapping

import torch
from mmengine.config import Config, ConfigDict, DictAction
from mmengine.logging import print_log

from .overrides import RUNNER_KEYS, ConfigError, load_with_overrides

#: MASTER_PORT of a Slurm launch that sets none (mmengine's ``init_dist('slurm')`` default).
SLURM_MASTER_PORT = '29500'


def slurm_first_host(nodelist: str) -> str:
    """The first host of a Slurm hostlist: ``node[01-04,07],gpu5`` -> ``node01``, ``r[1-2]-n[3-4]`` -> ``r1-n3``.

    The first entry at bracket depth 0, each ``[...]`` range replaced by its first value (zero padding kept), as
    ``scontrol show hostnames`` lists it first.
    """
    depth, end = 0, len(nodelist)
    for i, ch in enumerate(nodelist):
        depth += (ch == '[') - (ch == ']')
        if ch == ',' and depth == 0:
            end = i
            break
    return re.sub(r'\[([^\]]*)\]', lambda m: re.split(r'[,-]', m.group(1))[0], nodelist[:end].strip())


def setup_slurm_env(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Sets torch.distributed's ``env://`` variables from Slurm's for a ``srun`` task that has none.

    Without ``RANK`` (a plain ``srun python tools/x.py --launcher slurm``): ``RANK``, ``WORLD_SIZE`` and
    ``LOCAL_RANK`` from ``SLURM_PROCID``, ``SLURM_NTASKS`` and ``SLURM_LOCALID``. ``MASTER_PORT`` and
    ``MASTER_ADDR`` are kept if set; else the port is 29500 and the address the first host of ``SLURM_NODELIST``
    (``SLURM_JOB_NODELIST``): ``scontrol show hostnames`` names it when ``scontrol`` is on the PATH and answers,
    else :func:`slurm_first_host` reads the hostlist itself; without a node list (one node), ``127.0.0.1``.
    Every task derives the same address, so they meet on the job's first node (mmengine's ``init_dist('slurm')``
    does the same with CUDA).

    Returns:
        The variables set (name -> value); nothing when ``RANK`` was already set (torchrun inside the job).
    """
    env = os.environ if environ is None else environ
    if 'RANK' in env:
        return {}
    out = dict(RANK=env.get('SLURM_PROCID', '0'), WORLD_SIZE=env.get('SLURM_NTASKS', '1'),
               LOCAL_RANK=env.get('SLURM_LOCALID', '0'))
    if 'MASTER_PORT' not in env:
        out['MASTER_PORT'] = SLURM_MASTER_PORT
    if 'MASTER_ADDR' not in env:
        nodes = env.get('SLURM_NODELIST') or env.get('SLURM_JOB_NODELIST')
        addr = ''
        if nodes and shutil.which('scontrol', path=env.get('PATH')):
            try:
                done = subprocess.run(['scontrol', 'show', 'hostnames', nodes], capture_output=True, text=True,
                                      timeout=60, env=dict(env))
                addr = done.stdout.split('\n')[0].strip() if done.returncode == 0 else ''
            except (OSError, subprocess.TimeoutExpired):
                addr = ''
        out['MASTER_ADDR'] = addr or (slurm_first_host(nodes) if nodes else '127.0.0.1')
    env.update(out)
    return out


def load_config(path: str, cfg_options: dict | None = None,
                runtime_keys: Iterable[str] = RUNNER_KEYS) -> Config:
    """Loads a config file, naming the file in every error, with ``--cfg-options`` applied as if written in it.

    An override of a top-level variable is applied where the file (or a base) assigns it, so every value computed
    from it changes (docs/configs.md); a root the config does not assign is refused unless it is in
    ``runtime_keys``.
    """
    if not osp.isfile(path):
        raise ConfigError(f'Config file not found: {path!r} (expected a python config, e.g. '
                          f'configs/smoke/td-hm_vit-tiny_1xb4-20it_tinycoco-64x48.py)')
    try:
        return load_with_overrides(path, cfg_options, runtime_keys)
    except ConfigError:
        raise
    except Exception as e:  # mmengine raises many kinds; the user needs the file named.
        raise ConfigError(f'Could not parse config {path!r}: {type(e).__name__}: {e}') from e


def setup_cpu_distributed(cfg: Config, launcher: str) -> bool:
    """Makes a torchrun/Slurm launch work without GPUs (CPU processes over gloo).

    mmengine's ``init_dist`` calls ``torch.cuda.set_device`` and wraps the model in DDP with
    ``device_ids=[LOCAL_RANK]``; both fail on CPU. Without CUDA this initialises the gloo process group
    itself (mmengine then sees an initialised group and skips ``init_dist``) and clears ``device_ids``.

    Returns:
        Whether the CPU path was taken.
    """
    if launcher == 'none' or torch.cuda.is_available():
        return False
    import torch.distributed as dist
    cfg.setdefault('env_cfg', ConfigDict())
    cfg.env_cfg.setdefault('dist_cfg', ConfigDict())
    cfg.env_cfg.dist_cfg.backend = 'gloo'
    if launcher == 'slurm':
        setup_slurm_env()
    if not dist.is_initialized():
        dist.init_process_group('gloo')
    wrapper = dict(cfg.get('model_wrapper_cfg') or {})
    wrapper.setdefault('type', 'MMDistributedDataParallel')
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper
    print_log(f'No CUDA device: {launcher} launch runs CPU processes over gloo '
              f'(rank {dist.get_rank()}/{dist.get_world_size()}).', logger='current', level=logging.WARNING)
    return True


def _set_work_dir(cfg: Config, args: argparse.Namespace) -> None:
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])


def shutdown_distributed(launcher: str) -> bool:
    """Ends the process groups of a ``launcher`` run (not ``'none'``) once it has finished on this rank.

    Call it after a run that returned normally, never after an exception (its barrier would wait for a rank
    that is gone). Without it each process leaves the group to interpreter finalisation, where gloo's worker
    threads may still hold finished work whose tensors, freed then, take the GIL of an interpreter being torn
    down: the process aborts (SIGABRT, 'terminate called without an active exception') at random, after the run
    succeeded (seen here on 2-process CPU runs of tools/train.py).
    The barrier first keeps a rank from closing its connections while a peer is still in a collective.

    Returns:
        Whether a process group was destroyed.
    """
    import torch.distributed as dist
    if launcher == 'none' or not (dist.is_available() and dist.is_initialized()):
        return False  # a group the caller made itself (a notebook, a test) is the caller's to end
    rank, world = dist.get_rank(), dist.get_world_size()
    dist.barrier()
    dist.destroy_process_group()
    print_log(f'rank {rank}/{world}: process group ended', logger='current')
    return True


def merge_train_args(cfg: Config, args: argparse.Namespace) -> Config:
    """Applies ``tools/train.py`` arguments to ``cfg`` (work dir, resume, AMP, LR scaling, launcher)."""
    cfg.launcher = args.launcher
    _set_work_dir(cfg, args)
    if args.amp:
        optim_wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
        if optim_wrapper == 'AmpOptimWrapper':
            print_log('AMP is already enabled in the config.', logger='current', level=logging.WARNING)
        else:
            if optim_wrapper != 'OptimWrapper':
                raise ConfigError(f'--amp needs optim_wrapper.type OptimWrapper, got {optim_wrapper!r}')
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        if not osp.isfile(args.resume):
            raise ConfigError(f'--resume checkpoint not found: {args.resume!r} (a .pth written by the Runner, '
                              f'or "auto" for the latest in the work dir)')
        cfg.resume = True
        cfg.load_from = args.resume
    if args.auto_scale_lr:
        cfg.setdefault('auto_scale_lr', ConfigDict(base_batch_size=cfg.train_dataloader.batch_size))
        cfg.auto_scale_lr.enable = True
    setup_cpu_distributed(cfg, args.launcher)
    return cfg


def merge_test_args(cfg: Config, args: argparse.Namespace) -> Config:
    """Applies ``tools/test.py`` arguments: work dir, checkpoint, predictions dump, launcher."""
    cfg.launcher = args.launcher
    _set_work_dir(cfg, args)
    if not osp.isfile(args.checkpoint):
        raise ConfigError(f'Checkpoint not found: {args.checkpoint!r} (expected a .pth state dict or a Runner '
                          f'checkpoint)')
    cfg.load_from = args.checkpoint
    if args.dump is not None:
        if not args.dump.endswith(('.pkl', '.pickle')):
            raise ConfigError(f'--dump must be a .pkl file, got {args.dump!r}')
        dump = dict(type='DumpResults', out_file_path=args.dump)
        if isinstance(cfg.test_evaluator, (list, tuple)):
            cfg.test_evaluator = [*cfg.test_evaluator, dump]
        else:
            cfg.test_evaluator = [cfg.test_evaluator, dump]
    setup_cpu_distributed(cfg, args.launcher)
    return cfg


def parse_tool_args(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """Parses a tool's arguments; ``--local-rank`` (torch.distributed.launch) becomes ``LOCAL_RANK``."""
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def build_runner(cfg: Config):
    """The Runner a config asks for (``runner_type``), or mmengine's default."""
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    return Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)


def common_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('config', help='config file path')
    parser.add_argument('--work-dir', help='the directory to save logs, checkpoints and pictures')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config keys, xxx=yyy, as if written in the config file: a top-level '
                        'variable (data_root=..., train_pipeline.1.prob=0.0) changes every value the config '
                        'computes from it (docs/configs.md)')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
                        help='job launcher')
    # torch.distributed.launch passes --local-rank; torchrun sets LOCAL_RANK.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    return parser
