"""Test-only pipeline steps (stand-ins, not package code); ``stub_steps_registered`` registers them for subprocesses.

``SigkillWorkerAt`` SIGKILLs the worker process that runs it at source index ``$PDM_TEST_SIGKILL_INDEX`` (a real
kill of a real worker, as the out-of-memory killer does); in the main process, or without the variable, it changes
nothing, so a dataset made with it equals one made without it.
"""
from __future__ import annotations

import multiprocessing
import os
import signal

from mmcv.transforms import BaseTransform


class SigkillWorkerAt(BaseTransform):
    """Kills its own (worker) process at one index; otherwise passes the sample on unchanged.

    Required Keys:
        - index: the source index (the dataset row in tools/filter.py)
    """

    def transform(self, results: dict) -> dict:
        target = os.environ.get('PDM_TEST_SIGKILL_INDEX')
        if target is not None and int(results['index']) == int(target) and multiprocessing.parent_process():
            os.kill(os.getpid(), signal.SIGKILL)
        return results
