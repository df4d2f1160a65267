"""Compatibility fixes for the OpenMMLab stack on a current torch / transformers / numpy.

Applied once by ``import posedreamer_mm`` (:func:`apply_all`), before any mmpose/mmdet/mmpretrain module
loads. Each fix is idempotent, checks whether it is needed, and has its own test (tests/utils/test_compat.py).
The facts behind them are in ``docs/install.md``.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys

_APPLIED: dict[str, bool] = {}


# --- 1. mmcv-lite: a fallback mmcv.ops ---------------------------------------------------------------------
def mmcv_has_compiled_ops() -> bool:
    """Whether the installed mmcv carries its compiled extension (full mmcv, not mmcv-lite)."""
    try:
        return importlib.util.find_spec('mmcv._ext') is not None
    except (ImportError, ValueError):
        return False


class _FallbackOpsFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves ``mmcv.ops`` and every ``mmcv.ops.*`` submodule from :mod:`.mmcv_ops_fallback`."""

    def find_spec(self, fullname, path, target=None):
        if fullname == 'mmcv.ops' or fullname.startswith('mmcv.ops.'):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        from . import mmcv_ops_fallback
        module = mmcv_ops_fallback.FallbackOpsModule(spec.name, mmcv_ops_fallback.__doc__)
        module.__path__ = []
        module.__file__ = mmcv_ops_fallback.__file__
        module.IS_POSEDREAMER_FALLBACK = True
        module.MissingMMCVOpError = mmcv_ops_fallback.MissingMMCVOpError
        return module

    def exec_module(self, module):
        pass


def install_mmcv_ops_fallback(force: bool = False) -> bool:
    """Serves a fallback ``mmcv.ops`` when mmcv has no compiled ops.

    Args:
        force: install even if full mmcv is present (tests only).

    Returns:
        Whether the fallback is installed.
    """
    if not force and (importlib.util.find_spec('mmcv') is None or mmcv_has_compiled_ops()):
        return False
    if not any(isinstance(f, _FallbackOpsFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _FallbackOpsFinder())
    # A failed earlier import of the real mmcv.ops may have left a half-initialised module behind.
    mod = sys.modules.get('mmcv.ops')
    if mod is not None and not getattr(mod, 'IS_POSEDREAMER_FALLBACK', False):
        for name in [n for n in sys.modules if n == 'mmcv.ops' or n.startswith('mmcv.ops.')]:
            del sys.modules[name]
    return True


# --- 2. mmpretrain 1.2 + transformers 5 --------------------------------------------------------------------
def disable_mmpretrain_multimodal() -> bool:
    """Turns off mmpretrain's multimodal models when they cannot import under transformers >= 5.

    mmpretrain 1.2 guards its BLIP/Flamingo/... models on ``WITH_MULTIMODAL``, computed from whether
    ``transformers`` imports; with transformers 5 the guarded import half-succeeds and leaves
    ``PreTrainedModel = None``, so ``import mmpretrain.models`` (and mmdet.models, which imports it) dies.
    Setting the flag before ``mmpretrain.models`` loads skips those models; nothing in this project uses them.

    Returns:
        Whether the switch was applied.
    """
    if importlib.util.find_spec('mmpretrain') is None:
        return False
    try:
        import transformers
        major = int(transformers.__version__.split('.')[0])
    except ImportError:
        return False
    if major < 5:
        return False
    from mmpretrain.utils import dependency
    dependency.WITH_MULTIMODAL = False
    return True


# --- 3. torch >= 2.6 weights_only loading of the Runner's own checkpoints --------------------------------
def allow_runner_checkpoint_types() -> list[str]:
    """Lets ``torch.load(weights_only=True)`` read checkpoints written by an mmengine Runner.

    torch >= 2.6 loads with ``weights_only=True`` by default, and a Runner checkpoint holds a few non-tensor
    objects (``mmengine.logging.HistoryBuffer`` in ``message_hub``, numpy scalars/arrays/dtypes in the log
    buffers), so ``--resume`` failed with ``UnpicklingError``. Rather than turning safe loading off, the exact
    types the Runner writes are added to torch's allow-list: any checkpoint made only of those (and tensors)
    loads; anything else (a pickled arbitrary object in a downloaded file) still fails safely.

    ``HistoryBuffer.__getstate__`` also pickled its class-level statistics functions through
    ``getattr`` (which no safe loader may allow: it reaches any attribute). They are registered by code at
    import time and restored by ``__setstate__`` anyway, so the patched ``__getstate__`` leaves them out; the
    file stays loadable by an unpatched mmengine (its ``__setstate__`` defaults the missing key to ``{}``).
    Checkpoints written before this fix still hold ``getattr``: load those, if you trust them, with
    ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``.

    Returns:
        The qualified names allowed.
    """
    import numpy as np
    import torch
    from mmengine.logging import HistoryBuffer

    if not hasattr(torch.serialization, 'add_safe_globals'):
        return []
    if not getattr(HistoryBuffer.__getstate__, '_posedreamer_patched', False):
        def __getstate__(self) -> dict:
            return {k: v for k, v in self.__dict__.items() if k != 'statistics_methods'}

        __getstate__._posedreamer_patched = True
        HistoryBuffer.__getstate__ = __getstate__
    allowed: list = [HistoryBuffer, np.ndarray, np.dtype]
    # numpy pickles arrays and scalars through these reconstructors; their module moved in numpy 2.
    for modname in ('numpy._core.multiarray', 'numpy.core.multiarray'):
        try:
            mod = importlib.import_module(modname)
        except ImportError:
            continue
        allowed += [getattr(mod, '_reconstruct'), getattr(mod, 'scalar')]
        break
    # np.dtype(...) pickles as the concrete dtype class (numpy.dtypes.Float64DType, ...).
    allowed += [type(np.dtype(t)) for t in ('float16', 'float32', 'float64', 'int32', 'int64', 'uint8', 'bool')]
    torch.serialization.add_safe_globals(allowed)
    return [f'{getattr(a, "__module__", "?")}.{getattr(a, "__qualname__", a)}' for a in allowed]


def silence_pinned_setuptools_warning() -> None:
    """Hides setuptools' "pkg_resources is deprecated" warning that mmengine triggers on every import.

    The pin ``setuptools<81`` (requirements/constraints.txt) is deliberate: mmengine needs ``pkg_resources``
    for package-scoped configs. The warning tells a user nothing they can act on.
    """
    import warnings
    warnings.filterwarnings('ignore', message='pkg_resources is deprecated as an API', category=UserWarning)


def apply_all() -> dict[str, bool]:
    """Applies every fix once; returns which ones took effect."""
    if not _APPLIED:
        silence_pinned_setuptools_warning()
        _APPLIED['mmcv_ops_fallback'] = install_mmcv_ops_fallback()
        _APPLIED['mmpretrain_multimodal_off'] = disable_mmpretrain_multimodal()
        _APPLIED['runner_checkpoint_types'] = bool(allow_runner_checkpoint_types())
    return dict(_APPLIED)
