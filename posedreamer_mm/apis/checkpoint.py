"""Strict checkpoint loading for evaluation, scoring and inference: names AND shapes must match the model.

mmengine loads weights non-strictly by default (``Runner.load_checkpoint``, ``load_checkpoint``, and through them
mmpose's ``init_model`` and mmdet's ``init_detector``): a checkpoint of another architecture only logs a warning,
the layers it does not fit keep their random initialisation, and the numbers computed with them are noise. Every
place in the project that loads weights to *use* them goes through :func:`check_state_dict`:

- ``tools/test.py`` builds its Runner with :func:`build_strict_test_runner` (the Runner's ``load_from`` load is
  strict);
- ``apis/inference.py``'s ``init_hmr_model`` calls :func:`load_checkpoint_strict`;
- ``scoring/mmpose_scorer.py`` checks the detector's and the pose model's checkpoints with :func:`check_checkpoint`
  after mmdet's/mmpose's own loaders (which also read the checkpoint's ``dataset_meta``).

The one key kind that may be absent is a BatchNorm's ``num_batches_tracked`` counter (mmengine skips it too): it
only steers the running-average momentum during training and is not used at evaluation.
"""
from __future__ import annotations

import os
import os.path as osp
from collections import OrderedDict

import torch

#: How many keys of each kind an error names.
_SHOWN = 5


class CheckpointMismatchError(RuntimeError):
    """A checkpoint that does not fit the model it is loaded into (missing, unexpected or mis-shaped tensors)."""


def read_checkpoint(filename: str | os.PathLike, map_location: str = 'cpu') -> dict:
    """Reads a local ``.pth`` (a Runner checkpoint or a bare state dict).

    Raises:
        FileNotFoundError: naming the file, when it does not exist.
        CheckpointMismatchError: naming the file, when torch cannot read it.
    """
    from mmengine.runner import CheckpointLoader
    path = os.fspath(filename)
    if not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint {path} does not exist (expected a .pth written by tools/train.py or a '
                                'state dict)')
    try:
        ckpt = CheckpointLoader.load_checkpoint(path, map_location=map_location)
    except Exception as err:  # torch raises many kinds for a truncated or foreign file
        raise CheckpointMismatchError(f'cannot read checkpoint {path}: {type(err).__name__}: {err}') from err
    if not isinstance(ckpt, dict):
        raise CheckpointMismatchError(f'checkpoint {path} holds a {type(ckpt).__name__}, not a state dict')
    return ckpt


def checkpoint_state_dict(ckpt: dict, filename: str | os.PathLike = '<checkpoint>') -> OrderedDict:
    """The model weights of a checkpoint: its ``state_dict`` (or the dict itself), with a DDP ``module.`` prefix
    removed (as mmengine's default ``revise_keys``)."""
    state = ckpt.get('state_dict', ckpt)
    if not isinstance(state, dict) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointMismatchError(f'checkpoint {os.fspath(filename)} has no state dict of tensors (keys: '
                                      f'{sorted(map(str, ckpt))[:_SHOWN]})')
    return OrderedDict((k[len('module.'):] if k.startswith('module.') else k, v) for k, v in state.items())


def state_dict_mismatch(model: torch.nn.Module, state: dict) -> dict[str, list]:
    """What keeps ``state`` from loading strictly into ``model``.

    Returns:
        ``missing`` (model keys absent from ``state``, BatchNorm ``num_batches_tracked`` exempt), ``unexpected``
        (``state`` keys the model does not have) and ``shape`` (``(key, checkpoint shape, model shape)``), each
        sorted by the model's key order.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.endswith('num_batches_tracked')]
    unexpected = [k for k in state if k not in own]
    shape = [(k, tuple(state[k].shape), tuple(v.shape)) for k, v in own.items()
             if k in state and hasattr(v, 'shape') and tuple(getattr(state[k], 'shape', ())) != tuple(v.shape)]
    return dict(missing=missing, unexpected=unexpected, shape=shape)


def check_state_dict(model: torch.nn.Module, state: dict, filename: str | os.PathLike, what: str = 'model') -> None:
    """Raises :class:`CheckpointMismatchError` naming the file and the first offending keys of each kind, unless
    ``state`` fits ``model`` exactly (names and shapes)."""
    bad = state_dict_mismatch(model, state)
    if not any(bad.values()):
        return
    parts = []
    if bad['shape']:
        shown = ', '.join(f'{k}: checkpoint {list(c)} vs model {list(m)}' for k, c, m in bad['shape'][:_SHOWN])
        parts.append(f'{len(bad["shape"])} with another shape ({shown})')
    if bad['missing']:
        parts.append(f'{len(bad["missing"])} missing from the checkpoint ({", ".join(bad["missing"][:_SHOWN])})')
    if bad['unexpected']:
        parts.append(f'{len(bad["unexpected"])} not in the model ({", ".join(bad["unexpected"][:_SHOWN])})')
    raise CheckpointMismatchError(f'checkpoint {os.fspath(filename)} does not fit the {what} of the config: '
                                  f'{"; ".join(parts)}. Is it the checkpoint of another model or config?')


def check_checkpoint(model: torch.nn.Module, filename: str | os.PathLike, what: str = 'model') -> dict:
    """Reads ``filename`` and :func:`check_state_dict` against ``model`` (which is left unchanged); returns the
    checkpoint."""
    ckpt = read_checkpoint(filename)
    check_state_dict(model, checkpoint_state_dict(ckpt, filename), filename, what)
    return ckpt


def load_state_dict_strict(model: torch.nn.Module, ckpt: dict, filename: str | os.PathLike,
                           what: str = 'model') -> None:
    """Loads an already read checkpoint into ``model`` (unwrapped from DDP) after :func:`check_state_dict`."""
    from mmengine.model import is_model_wrapper
    model = model.module if is_model_wrapper(model) else model
    state = checkpoint_state_dict(ckpt, filename)
    check_state_dict(model, state, filename, what)
    model.load_state_dict(state, strict=False)  # every name and shape checked; only num_batches_tracked may lack


def load_checkpoint_strict(model: torch.nn.Module, filename: str | os.PathLike, map_location: str = 'cpu',
                           what: str = 'model') -> dict:
    """Reads ``filename`` and loads it into ``model``, refusing any mismatch; returns the checkpoint dict."""
    ckpt = read_checkpoint(filename, map_location)
    load_state_dict_strict(model, ckpt, filename, what)
    return ckpt


def _strict_runner_class(base: type) -> type:
    """``base`` (a Runner class) whose ``load_checkpoint`` is strict, whatever the caller asks."""

    def load_checkpoint(self, filename, map_location='cpu', strict=False, revise_keys=None):
        # As Runner.load_checkpoint (hooks see the checkpoint first: EMAHook swaps its weights in), then strict.
        checkpoint = read_checkpoint(filename, map_location)
        self.call_hook('after_load_checkpoint', checkpoint=checkpoint)
        load_state_dict_strict(self.model, checkpoint, filename)
        self._has_loaded = True
        self.logger.info(f'Load checkpoint from {filename} (strict: every weight name and shape matched)')
        return checkpoint

    return type(f'Strict{base.__name__}', (base,), dict(load_checkpoint=load_checkpoint,
                                                         __module__=__name__, __doc__=base.__doc__))


def build_strict_test_runner(cfg):
    """The config's Runner (``runner_type`` or mmengine's) whose ``load_from`` checkpoint loads strictly.

    mmengine's Runner loads ``load_from`` inside ``test()`` (after the ``before_run`` hooks) with
    ``strict=False``; here that load refuses a checkpoint whose weight names or shapes differ from the model's
    (:class:`CheckpointMismatchError` naming the file and the keys), so no metric is ever computed with layers
    left at their random initialisation.
    """
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    base = RUNNERS.get(cfg.runner_type) if 'runner_type' in cfg else Runner
    if base is None:
        raise KeyError(f'runner_type {cfg.runner_type!r} is not a registered Runner')
    return _strict_runner_class(base).from_cfg(cfg)


__all__ = ['CheckpointMismatchError', 'read_checkpoint', 'checkpoint_state_dict', 'state_dict_mismatch',
           'check_state_dict', 'check_checkpoint', 'load_state_dict_strict', 'load_checkpoint_strict',
           'build_strict_test_runner']
