"""One spawn worker pool for the package: the generator's pre-backend preparation and ``tools/filter.py``'s scoring.

::

    with SpawnPool(4, run_chunk, initializer=init_worker, initargs=(cfg,), describe=lambda c: f'rows {c}') as pool:
        for result in pool.imap(chunks):        # in task order, at most ``max_in_flight`` tasks ahead
            ...

Workers start with ``spawn`` (a forked child must not reuse the parent's GL contexts or torch threads,
docs/rendering.md). Each worker has its own pipe, so the pool knows which task each worker holds: a worker that
dies (the OOM killer's SIGKILL, a segfault) is noticed at the next wait for a result (waits poll every second)
and :meth:`SpawnPool.imap` raises :class:`WorkerDiedError` naming the worker, its signal and the task it held,
instead of waiting forever for a result that will never come (``multiprocessing.Pool`` loses such a task and
hangs). An exception raised by ``fn`` in a worker is raised again in the caller with the worker's traceback as its
``__cause__``; an initializer that raises stops the pool with :class:`WorkerSetupError`.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import signal
import traceback
from collections.abc import Callable, Iterable, Iterator
from multiprocessing.connection import wait
from typing import Any


class WorkerError(RuntimeError):
    """Base of the pool's own errors."""


class WorkerDiedError(WorkerError):
    """A worker process ended while the pool was in use (killed by a signal, e.g. the OOM killer's SIGKILL)."""


class WorkerSetupError(WorkerError):
    """A worker's initializer raised (the message holds its traceback)."""


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker, attached as ``__cause__`` of the re-raised exception."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return f'\n\n(in the worker process)\n{self.tb}'


def exit_description(exitcode: int | None) -> str:
    """``'killed by SIGKILL'`` for a negative exit code, else ``'exited with code N'``."""
    if exitcode is not None and exitcode < 0:
        try:
            return f'killed by {signal.Signals(-exitcode).name}'
        except ValueError:
            return f'killed by signal {-exitcode}'
    return f'exited with code {exitcode}'


def _worker_main(conn, fn: Callable, initializer: Callable | None, initargs: tuple) -> None:
    """A worker's loop: initializer, then ``(task id, argument)`` in, ``(task id, ok, result)`` out."""
    try:
        if initializer is not None:
            initializer(*initargs)
    except BaseException:  # noqa: B902 - reported to the parent, which stops the pool
        conn.send(('setup_error', traceback.format_exc()))
        return
    conn.send(('ready', os.getpid()))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the parent is gone
            return
        if message is None:
            return
        task_id, argument = message
        try:
            reply = (task_id, True, fn(argument))
        except BaseException as err:  # noqa: B902 - re-raised in the parent
            try:
                pickle.dumps(err)
                error = err
            except Exception:  # an exception that cannot cross processes: its text does
                error = RuntimeError(f'{type(err).__name__}: {err}')
            reply = (task_id, False, (error, traceback.format_exc()))
        conn.send(reply)


class _Worker:
    def __init__(self, process, conn) -> None:
        self.process, self.conn = process, conn
        self.ready = False
        self.tasks: list[int] = []  # task ids sent and not answered, in order (the first one is running)


class SpawnPool:
    """``num_workers`` spawn processes running ``fn`` over tasks; a dead worker is an error, not a hang.

    Args:
        num_workers: Worker processes (>= 1).
        fn: Module-level function ``fn(task) -> result`` (picklable by reference).
        initializer: Module-level function run once per worker before its first task, with ``initargs``.
        initargs: Picklable arguments of ``initializer``.
        describe: ``describe(task) -> str`` for error messages (e.g. ``'source indices [4, 5] (shard 1)'``).
        tasks_per_worker: Tasks sent to a worker ahead of its results (2 keeps it busy while a result travels).
        name: What the workers do, for messages (``'preparation'``, ``'filter'``).
    """

    def __init__(self, num_workers: int, fn: Callable, initializer: Callable | None = None, initargs: tuple = (),
                 describe: Callable[[Any], str] = repr, tasks_per_worker: int = 2, name: str = 'spawn') -> None:
        if int(num_workers) < 1:
            raise ValueError(f'SpawnPool needs num_workers >= 1, got {num_workers}')
        self.num_workers, self.fn, self.initializer, self.initargs = int(num_workers), fn, initializer, initargs
        self.describe, self.tasks_per_worker, self.name = describe, max(1, int(tasks_per_worker)), name
        self._workers: list[_Worker] = []
        self._tasks: dict[int, Any] = {}
        self._results: dict[int, Any] = {}
        self._next_id = 0

    # --- life cycle -----------------------------------------------------------------------------------------------
    def __enter__(self) -> SpawnPool:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> SpawnPool:
        ctx = mp.get_context('spawn')
        for _ in range(self.num_workers):
            parent_conn, child_conn = ctx.Pipe(duplex=True)
            process = ctx.Process(target=_worker_main, args=(child_conn, self.fn, self.initializer, self.initargs),
                                  daemon=True, name=f'{self.name}-worker')
            process.start()
            child_conn.close()
            self._workers.append(_Worker(process, parent_conn))
        return self

    def close(self, timeout: float = 5.0) -> None:
        """Asks the workers to stop, then terminates (and at last kills) those still running."""
        workers, self._workers = self._workers, []
        for w in workers:
            try:
                w.conn.send(None)
            except (OSError, ValueError):
                pass
        for w in workers:
            w.process.join(timeout if not w.tasks else 0.1)
            if w.process.is_alive():
                w.process.terminate()
                w.process.join(timeout)
            if w.process.is_alive():
                w.process.kill()
                w.process.join()
            w.conn.close()

    @property
    def pids(self) -> list[int]:
        return [w.process.pid for w in self._workers]

    # --- use ------------------------------------------------------------------------------------------------------
    def any_ready(self) -> bool:
        """Whether some worker has finished its initializer (never blocks)."""
        self._poll(0)
        return any(w.ready for w in self._workers)

    def imap(self, tasks: Iterable[Any], max_in_flight: int | None = None) -> Iterator[Any]:
        """Results of ``fn(task)`` in task order, with at most ``max_in_flight`` tasks sent and not yet yielded.

        Raises:
            WorkerDiedError: a worker ended (the message names it, its signal and the task it held).
            WorkerSetupError: a worker's initializer raised.
            Exception: what ``fn`` raised in a worker (its traceback as ``__cause__``).
        """
        tasks = list(tasks)
        limit = max(1, int(max_in_flight or 2 * self.tasks_per_worker * self.num_workers))
        ids: list[int] = []
        sent = done = 0
        while done < len(tasks):
            while sent < len(tasks) and sent - done < limit:
                worker = min(self._workers, key=lambda w: len(w.tasks))
                if len(worker.tasks) >= self.tasks_per_worker:
                    break
                ids.append(self._send(worker, tasks[sent]))
                sent += 1
            if ids[done] in self._results:
                self._tasks.pop(ids[done])
                yield self._results.pop(ids[done])
                done += 1
                continue
            self._poll(1.0)

    def _send(self, worker: _Worker, task: Any) -> int:
        task_id, self._next_id = self._next_id, self._next_id + 1
        self._tasks[task_id] = task
        worker.tasks.append(task_id)
        worker.conn.send((task_id, task))
        return task_id

    def _poll(self, timeout: float) -> None:
        """Reads every message that has arrived; checks that no worker has ended."""
        waitables = [w.conn for w in self._workers] + [w.process.sentinel for w in self._workers]
        ready = set(wait(waitables, timeout)) if waitables else set()
        for w in self._workers:
            if w.conn in ready or w.process.sentinel in ready:
                self._read(w)

    def _read(self, w: _Worker) -> None:
        try:
            while w.conn.poll():
                self._handle(w, w.conn.recv())
        except (EOFError, OSError):
            pass  # the pipe closed: the worker ended, reported below
        if w.process.is_alive():
            return
        w.process.join()
        held = [self.describe(self._tasks[t]) for t in w.tasks]
        doing = f'while working on {held[0]}' + (f' (also queued: {"; ".join(held[1:])})' if held[1:] else '') \
            if held else 'while idle'
        hint = ('. A SIGKILL usually means the out-of-memory killer: use fewer workers or less memory per worker'
                if w.process.exitcode == -signal.SIGKILL else '')
        raise WorkerDiedError(f'{self.name} worker process {w.process.pid} {exit_description(w.process.exitcode)} '
                              f'{doing}{hint}')

    def _handle(self, w: _Worker, message: tuple) -> None:
        if message[0] == 'ready':
            w.ready = True
            return
        if message[0] == 'setup_error':
            raise WorkerSetupError(f'a {self.name} worker process failed to start:\n{message[1]}')
        task_id, ok, payload = message
        w.tasks.remove(task_id)
        if ok:
            self._results[task_id] = payload
            return
        error, tb = payload
        raise error from RemoteTraceback(tb)
