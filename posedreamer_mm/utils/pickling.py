"""Pickling objects that hold a lock and per-process state (spawn workers, DataLoader workers, copied configs).

A ``threading.Lock`` does not pickle, and what an object builds lazily in one process (GL objects, a mediapipe
graph, torch models on a device) must not travel to another: the copy rebuilds it on first use.
:class:`PicklesWithoutLocalState` is the one definition of that rule, used by ``render/rasterizer.py``'s
``MeshRasterizer`` and the scorers (``scoring/mmpose_scorer.py``, ``scoring/mediapipe_scorer.py``).
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, ClassVar


class PicklesWithoutLocalState:
    """Mixin: pickles without the attributes of :attr:`_process_local` and with a fresh lock in ``_lock``.

    A subclass names its lazily built state in ``_process_local``: attribute name -> a zero-argument factory of the
    value an unpickled copy starts with (``dict`` for an empty cache), or ``None`` for ``None`` (built on first
    use). The pickled state leaves those attributes and ``_lock`` out; ``__setstate__`` sets them back from the
    factories and gives the copy its own ``threading.Lock``.
    """

    _process_local: ClassVar[dict[str, Callable[[], Any] | None]] = {}

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != '_lock' and k not in self._process_local}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        for name, factory in self._process_local.items():
            setattr(self, name, None if factory is None else factory())
        self._lock = threading.Lock()


__all__ = ['PicklesWithoutLocalState']
