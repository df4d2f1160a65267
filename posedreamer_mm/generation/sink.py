"""The thread after the backend: scoring/filter stages, then the sharded writer, beside the backend's next call.

Items arrive in any order (drops skip the backend, finished samples wait for their batch); each shard is
committed as soon as all of its source indices are accounted for. A write error removes the shard's temporary
directory and stops the run (:class:`~posedreamer_mm.generation.writer.ShardWriteError`); an exception in a stage
fails only that sample, counted under ``<stage>:<exception type>`` — unless failures pile up: a shard whose
samples all failed or were dropped with at least one failure (zero written) is not committed, and more than
``max_failure_rate`` of the samples failing (after ``failure_rate_min_samples``) stops the run; both raise
:class:`GenerationError` with the first failure's traceback, so a broken config is never marked complete.
"""
from __future__ import annotations

import contextlib
import queue
import threading
import time

from .steps import StepCounts, StepOutcome, StepRunner
from .writer import ShardBuilder, ShardedDatasetWriter, ShardWriteError

_STOP = object()


class GenerationError(RuntimeError):
    """The run cannot continue (a missing body-model file, a broken backend, a dead worker, failing samples)."""


class ShardSink:
    """Runs post-backend stages and writes shards in a background thread.

    Args:
        writer: The dataset writer.
        root: Output directory.
        shards: The shards this process writes (others belong to other ranks or are complete).
        num_samples: Total source indices of the run (the last shard may be short).
        stages: Post-backend transforms (``mmcv`` ``BaseTransform``\\ s; ``None`` drops the sample).
        max_queue: Items waiting before :meth:`put` blocks (backpressure on the backend loop).
        max_failure_rate: Stop when more than this fraction of the samples handled so far failed (``None``: never).
        failure_rate_min_samples: Samples handled before the rate is checked.
    """

    def __init__(self, writer: ShardedDatasetWriter, root: str, shards: list[int], num_samples: int,
                 stages: list, max_queue: int = 64, max_failure_rate: float | None = 0.5,
                 failure_rate_min_samples: int = 50) -> None:
        self.writer, self.root, self.num_samples = writer, root, num_samples
        self.runner = StepRunner(stages)
        self.shards = set(shards)
        self.max_failure_rate, self.failure_rate_min_samples = max_failure_rate, int(failure_rate_min_samples)
        self.open: dict[int, ShardBuilder] = {}
        self.queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self.error: BaseException | None = None
        self.stats = StepCounts()
        self.committed: list[int] = []
        self._thread = threading.Thread(target=self._run, name='shard-sink', daemon=True)

    @property
    def counts(self) -> dict[str, int]:
        """``written``, ``dropped``, ``failed``: what the committed and open shards hold."""
        c = self.stats.counts
        return dict(written=c['ok'], dropped=c['drop'], failed=c['fail'])

    def start(self) -> ShardSink:
        self._thread.start()
        return self

    def put(self, index: int, outcome: StepOutcome) -> None:
        """Hands one source index's outcome over (``'ok'``: its results dict with ``img``; a drop or failure).

        Raises:
            ShardWriteError, GenerationError: if the thread has stopped (a write error, too many failures).
        """
        while True:
            self.raise_if_failed()
            try:
                self.queue.put((index, outcome), timeout=0.5)
                return
            except queue.Full:
                continue

    def raise_if_failed(self) -> None:
        if self.error is None:
            return
        if isinstance(self.error, GenerationError):
            raise self.error
        raise ShardWriteError(f'writing the dataset to {self.root} failed: {type(self.error).__name__}: '
                              f'{self.error}. The shard being written was removed; complete shards are kept and '
                              'the same command resumes after the cause is fixed.') from self.error

    def close(self) -> None:
        """Waits for every queued item to be written; raises the thread's error if there was one."""
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

    def _handle(self, index: int, outcome: StepOutcome) -> None:
        if outcome.status == 'ok':
            outcome = self.runner(outcome.results)
            self.stats.add_timings(outcome.timings)
        builder = self._builder(index)
        sid = str(outcome.results.get('id', f'<index {index}>'))
        t = time.perf_counter()
        status, reason = outcome.status, outcome.reason
        detail = f'sample {sid!r} (index {index}), {reason}:\n{outcome.traceback or outcome.message}'
        if status == 'ok':
            builder.add(index, outcome.results)
            if index in builder.failed:  # the writer refused it (a duplicate id): counted as the shard counts it
                status, reason = 'fail', 'writer:duplicate_id'
                detail = f'sample {sid!r} (index {index}): {builder.failed[index][1]}'
        elif status == 'drop':
            builder.drop(index, sid, reason)
        else:
            builder.fail(index, sid, f'{reason}: {outcome.message}' if outcome.message else reason)
        self.stats.add(status, reason, detail)
        if builder.done:
            if not builder.rows and builder.failed:
                raise GenerationError(
                    f'every sample of shard {builder.shard} (source indices {builder.indices.start}-'
                    f'{builder.indices.stop - 1}) failed or was dropped, {len(builder.failed)} failed: the shard is '
                    f'not written and the dataset is not complete. First failure: {self.stats.first_failure}')
            builder.commit()
            self.committed.append(builder.shard)
            del self.open[builder.shard]
        self.stats.timings['write'] += time.perf_counter() - t
        handled, failed = self.stats.handled, self.stats.counts['fail']
        if (self.max_failure_rate is not None and handled >= self.failure_rate_min_samples
                and failed > self.max_failure_rate * handled):
            raise GenerationError(
                f'{failed} of {handled} samples failed, more than max_failure_rate={self.max_failure_rate}: the run '
                'stops (complete shards are kept; the dataset is not marked complete). First failure: '
                f'{self.stats.first_failure}')

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            if item is _STOP:
                return
            try:
                self._handle(*item)
            except BaseException as err:  # no half shard may stay visible or be committed
                self.error = err
                self.abort()
                return
