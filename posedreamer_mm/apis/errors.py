"""How the tools end on a user error: the message, not a Python traceback (``PDM_TRACEBACK=1`` shows it).

A user error is one the project raises on purpose with the file, key or sample named and what to do: a bad config
or override, a missing or corrupt body-model file, weights of the wrong layout or shape, an output another run
holds or another config wrote, a damaged dataset, a run stopped by failures or by a dead worker. Anything else is a
bug and keeps its traceback.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any


def user_errors() -> tuple[type[BaseException], ...]:
    """The project's user-error classes (imported here, not at module import: the tools load them anyway)."""
    from posedreamer_mm.apis.checkpoint import CheckpointMismatchError
    from posedreamer_mm.apis.image_quality import ImageSetError
    from posedreamer_mm.apis.overrides import ConfigError
    from posedreamer_mm.body.body_model import BodyModelFileError
    from posedreamer_mm.evaluation.inception import InceptionWeightsError
    from posedreamer_mm.generation.backends.weights import WeightsLayoutError
    from posedreamer_mm.generation.reader import DatasetIntegrityError
    from posedreamer_mm.generation.sink import GenerationError
    from posedreamer_mm.generation.writer import OutputConflictError, ShardWriteError
    from posedreamer_mm.mining.errors import MiningError
    from posedreamer_mm.utils.pool import WorkerError
    return (ConfigError, BodyModelFileError, WeightsLayoutError, CheckpointMismatchError, OutputConflictError,
            ShardWriteError, DatasetIntegrityError, GenerationError, WorkerError, ImageSetError, InceptionWeightsError,
            MiningError)


def run_tool(main: Callable[[], Any]) -> Any:
    """Runs a tool's ``main``; a user error ends the process with ``error: <Type>: <message>`` on stderr and exit
    status 1 (as an uncaught exception would, without the traceback). Returns what ``main`` returns."""
    try:
        return main()
    except user_errors() as err:
        if os.environ.get('PDM_TRACEBACK', '') not in ('', '0'):
            raise
        print(f'error: {type(err).__name__}: {err}', file=sys.stderr, flush=True)
        sys.exit(1)
