"""The thread after the backend: scoring/filter stages, then the sharded writer, beside the backend's next call.

Items arrive in any order (drops skip the backend, finished samples wait for their batch); each shard is
committed as soon as all of its source indices are accounted for. A write error removes the shard's temporary
directory and stops the run (:class:`~posedreamer_mm.generation.writer.ShardWriteError`); an exception in a stage
fails only that sample, counted under ``<stage>:<exception type>``.
"""
from __future__ import annotations

import collections
import contextlib
import queue
import threading
import time
from typing import Any

from .writer import ShardBuilder, ShardedDatasetWriter, ShardWriteError

_STOP = object()


class ShardSink:
    """Runs post-backend stages and writes shards in a background thread.

    Args:
        writer: The dataset writer.
        root: Output directory.
        shards: The shards this process writes (others belong to other ranks or are complete).
        num_samples: Total source indices of the run (the last shard may be short).
        stages: Post-backend transforms (``mmcv`` ``BaseTransform``\\ s; ``None`` drops the sample).
        max_queue: Items waiting before :meth:`put` blocks (backpressure on the backend loop).
    """

    def __init__(self, writer: ShardedDatasetWriter, root: str, shards: list[int], num_samples: int,
                 stages: list, max_queue: int = 64) -> None:
        self.writer, self.root, self.num_samples, self.stages = writer, root, num_samples, list(stages)
        self.shards = set(shards)
        self.open: dict[int, ShardBuilder] = {}
        self.queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self.error: BaseException | None = None
        self.timings: dict[str, float] = collections.defaultdict(float)
        self.counts = dict(written=0, dropped=0, failed=0)
        self.dropped: collections.Counter = collections.Counter()
        self.failed: collections.Counter = collections.Counter()
        self.committed: list[int] = []
        self._thread = threading.Thread(target=self._run, name='shard-sink', daemon=True)

    def start(self) -> ShardSink:
        self._thread.start()
        return self

    def put(self, index: int, status: str, payload: Any) -> None:
        """Hands one item over: ``('ok', results)``, ``('drop' | 'fail', (id, reason key, message))``.

        Raises:
            ShardWriteError: if the thread has stopped on a write error.
        """
        while True:
            self.raise_if_failed()
            try:
                self.queue.put((index, status, payload), timeout=0.5)
                return
            except queue.Full:
                continue

    def raise_if_failed(self) -> None:
        if self.error is not None:
            raise ShardWriteError(f'writing the dataset to {self.root} failed: {type(self.error).__name__}: '
                                  f'{self.error}. The shard being written was removed; complete shards are kept and '
                                  'the same command resumes after the cause is fixed.') from self.error

    def close(self) -> None:
        """Waits for every queued item to be written; raises the thread's write error if there was one."""
        if self._thread.is_alive():
            while self._thread.is_alive():
                try:
                    self.queue.put(_STOP, timeout=0.5)
                    break
                except queue.Full:
                    continue
            self._thread.join()
        self.raise_if_failed()
        if self.open:
            raise RuntimeError(f'shards {sorted(self.open)} did not receive all of their samples')

    def cancel(self) -> None:
        """Stops the thread without writing what is still queued and removes open shards' temporaries."""
        with contextlib.suppress(queue.Empty):
            while True:
                self.queue.get_nowait()
        if self._thread.is_alive():
            self.queue.put(_STOP)
            self._thread.join(timeout=120)
        self.abort()

    def abort(self) -> None:
        """Removes the temporary directories of open shards (after an error elsewhere)."""
        for builder in self.open.values():
            builder.abort()
        self.open.clear()

    # --- the thread ---------------------------------------------------------------------------------------------
    def _builder(self, index: int) -> ShardBuilder:
        shard = index // self.writer.shard_size
        if shard not in self.shards:
            raise ValueError(f'index {index} belongs to shard {shard}, which this process does not write')
        if shard not in self.open:
            self.open[shard] = self.writer.open_shard(self.root, shard, self.num_samples)
        return self.open[shard]

    def _stages(self, results: dict) -> tuple[str, Any]:
        for stage in self.stages:
            name = type(stage).__name__
            t = time.perf_counter()
            try:
                out = stage(results)
            except Exception as err:
                return 'fail', (results['id'], f'{name}:{type(err).__name__}', f'{type(err).__name__}: {err}')
            self.timings[name] += time.perf_counter() - t
            if out is None:
                return 'drop', (results['id'], results.get('drop_reason') or f'{name}:unspecified', '')
            results = out
        return 'ok', results

    def _handle(self, index: int, status: str, payload: Any) -> None:
        if status == 'ok':
            status, payload = self._stages(payload)
        builder = self._builder(index)
        t = time.perf_counter()
        if status == 'ok':
            builder.add(index, payload)
            self.counts['written'] += 1
        else:
            sid, key, message = payload
            if status == 'drop':
                builder.drop(index, sid, key)
                self.dropped[key] += 1
                self.counts['dropped'] += 1
            else:
                builder.fail(index, sid, f'{key}: {message}' if message else key)
                self.failed[key] += 1
                self.counts['failed'] += 1
        if builder.done:
            builder.commit()
            self.committed.append(builder.shard)
            del self.open[builder.shard]
        self.timings['write'] += time.perf_counter() - t

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            if item is _STOP:
                return
            try:
                self._handle(*item)
            except BaseException as err:  # a write error: no half shard may stay visible or be committed
                self.error = err
                self.abort()
                return
