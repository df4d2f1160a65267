"""One writer per output directory, across processes and across nodes that share a filesystem.

``<dir>/writer.lock`` is created atomically: a complete temporary file is hard-linked to the lock's name, which
fails when the lock exists (``os.link`` is atomic on local filesystems and NFS; where links are unsupported,
``O_CREAT | O_EXCL`` is used). It holds the holder's host, pid namespace, pid, process start tick, start time, run
id and command line. While the lock is held, a daemon thread refreshes its mtime every ``heartbeat_s`` seconds
(the heartbeat) and notes when the file stops naming this run.

A lock is stale, and is taken over with a warning, when

- its holder runs on this host (same host name and pid namespace) and its pid is not running, or runs another
  program (pid reused: its start tick differs): a crashed or killed run is replaced at once; or
- its heartbeat is older than ``stale_s`` seconds (another node that died, or a holder stopped that long). Ages are
  measured against the filesystem's own clock (the mtime of a file touched now), so clocks that differ between
  nodes do not matter.

A holder whose lock was taken over (its heartbeat stalled past ``stale_s``) finds out at :meth:`OutputLock.check`,
which writers call before publishing anything. A process may acquire a lock it already holds (same host and pid).
Locks still held at interpreter exit are released (``atexit``); a SIGKILL leaves the file, which is then stale.
"""
from __future__ import annotations

import atexit
import contextlib
import datetime
import json
import os
import os.path as osp
import random
import socket
import sys
import tempfile
import threading
import time
import uuid
import warnings

from .fileio import TMP_MARKER

#: File name of the lock inside the locked directory.
LOCK_NAME = 'writer.lock'


class LockHeldError(RuntimeError):
    """Another live run holds the lock."""


class LockLostError(RuntimeError):
    """This run's lock was taken over by another run (its heartbeat had stalled)."""


def _proc_start(pid: int) -> int | None:
    """Start tick of ``pid`` (Linux ``/proc/<pid>/stat`` field 22); ``None`` where unknown."""
    try:
        with open(f'/proc/{pid}/stat', 'rb') as f:
            stat = f.read().decode(errors='replace')
        return int(stat[stat.rindex(')') + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _pid_namespace() -> str | None:
    try:
        return os.readlink('/proc/self/ns/pid')
    except OSError:
        return None


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def fs_now(directory: str) -> float:
    """The current time by the clock of the filesystem holding ``directory`` (mtime of a file created now)."""
    fd, path = tempfile.mkstemp(prefix=f'.clock{TMP_MARKER}', dir=directory)
    try:
        return os.fstat(fd).st_mtime
    finally:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def read_holder(path: str) -> dict | None:
    """The lock file's content, or ``None`` when it is unreadable (being written, or damaged)."""
    try:
        with open(path) as f:
            holder = json.load(f)
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def describe_holder(holder: dict | None) -> str:
    if holder is None:
        return 'an unreadable lock (being created, or damaged)'
    return (f"host {holder.get('host')!r}, pid {holder.get('pid')}, started {holder.get('started')}, run id "
            f"{holder.get('run_id')}, command: {holder.get('command')!r}")


class OutputLock:
    """The lock of one directory (see the module docstring); :func:`acquire` is the usual entry point.

    Args:
        directory: The directory to lock (created if missing).
        stale_s: Heartbeat age (seconds) after which a holder on another host is presumed dead.
        heartbeat_s: Seconds between heartbeats (must be well below ``stale_s``).
    """

    def __init__(self, directory: str, stale_s: float = 120.0, heartbeat_s: float = 5.0) -> None:
        if not 0 < heartbeat_s < stale_s:
            raise ValueError(f'need 0 < heartbeat_s < stale_s, got heartbeat_s={heartbeat_s}, stale_s={stale_s}')
        self.directory = osp.abspath(directory)
        self.path = osp.join(self.directory, LOCK_NAME)
        self.stale_s, self.heartbeat_s = float(stale_s), float(heartbeat_s)
        self.info: dict | None = None
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def held(self) -> bool:
        return self.info is not None

    # --- acquiring ----------------------------------------------------------------------------------------------
    def _new_info(self) -> dict:
        return dict(host=socket.gethostname(), pid_namespace=_pid_namespace(), pid=os.getpid(),
                    proc_start=_proc_start(os.getpid()), run_id=uuid.uuid4().hex,
                    started=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
                    command=' '.join(sys.argv)[:1000])

    def _same_host(self, holder: dict) -> bool:
        return holder.get('host') == socket.gethostname() and holder.get('pid_namespace') == _pid_namespace()

    def _create(self, info: dict) -> bool:
        """Creates the lock file with ``info`` unless it exists; whether it was created."""
        data = json.dumps(info, indent=1, sort_keys=True).encode()
        fd, tmp = tempfile.mkstemp(prefix=f'.{LOCK_NAME}{TMP_MARKER}', dir=self.directory)
        try:
            with os.fdopen(fd, 'wb') as f:
                f.write(data)
            os.chmod(tmp, 0o644)
            try:
                os.link(tmp, self.path)
                return True
            except FileExistsError:
                return False
            except OSError:  # no hard links here (some FUSE/object stores): exclusive create instead
                try:
                    fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                except FileExistsError:
                    return False
                with os.fdopen(fd, 'wb') as f:
                    f.write(data)
                return True
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def staleness(self, holder: dict | None, mtime: float) -> str | None:
        """Why the lock described by ``holder`` (file mtime ``mtime``) is stale, or ``None`` if it is live."""
        age = fs_now(self.directory) - mtime
        if holder is not None and self._same_host(holder):
            pid = holder.get('pid') if isinstance(holder.get('pid'), int) else -1
            if pid > 0 and not _pid_running(pid):
                return f'its process {pid} on this host is not running'
            start = _proc_start(pid)
            if holder.get('proc_start') is not None and start is not None and start != holder['proc_start']:
                return f'pid {pid} on this host now belongs to another process'
        if age > self.stale_s:
            return f'its last heartbeat is {age:.0f} s old (stale after {self.stale_s:.0f} s)'
        return None

    def acquire(self) -> OutputLock:
        """Takes the lock (taking over a stale one with a warning).

        Raises:
            LockHeldError: a live run holds it; the message names the directory, the holder and what to do.
        """
        os.makedirs(self.directory, exist_ok=True)
        info = self._new_info()
        for _ in range(50):
            if self._create(info):
                self._start(info)
                return self
            try:
                mtime = os.stat(self.path).st_mtime
            except FileNotFoundError:
                continue  # released meanwhile
            holder = read_holder(self.path)
            if holder is not None and self._same_host(holder) and holder.get('pid') == os.getpid():
                # This process already holds it (an earlier run() in the same interpreter): take it again.
                self._replace(info)
                self._start(info)
                return self
            reason = self.staleness(holder, mtime)
            if reason is None:
                age = fs_now(self.directory) - mtime
                raise LockHeldError(
                    f'output directory {self.directory} is being written by another run ({describe_holder(holder)}; '
                    f'last heartbeat {age:.0f} s ago; lock file {self.path}). Two runs into one output delete each '
                    'other\'s shards, so this run stops before touching anything. Wait for that run to finish, stop '
                    'it, or choose another --out. A dead run\'s lock is taken over automatically: at once on its own '
                    f'host, from any other host {self.stale_s:.0f} s after its last heartbeat. Delete the lock file '
                    'by hand only if you are sure no run writes to this directory.')
            warnings.warn(f'taking over the stale lock of {self.directory} ({reason}; it was held by '
                          f'{describe_holder(holder)}): the run that held it is presumed dead', stacklevel=2)
            self._break(holder)
        raise LockHeldError(f'could not take the lock {self.path}: other runs are taking it at the same time')

    def _replace(self, info: dict) -> None:
        fd, tmp = tempfile.mkstemp(prefix=f'.{LOCK_NAME}{TMP_MARKER}', dir=self.directory)
        with os.fdopen(fd, 'w') as f:
            json.dump(info, f, indent=1, sort_keys=True)
        os.chmod(tmp, 0o644)
        os.replace(tmp, self.path)

    def _break(self, stale: dict | None) -> None:
        """Removes the stale lock ``stale`` under a take-over guard, unless it changed meanwhile.

        Only one process at a time breaks a lock (the guard is created exclusively), and it removes the lock only
        if the file still names the stale run, so contenders for a dead run's lock end with one holder.
        """
        guard = osp.join(self.directory, f'.{LOCK_NAME}{TMP_MARKER}takeover')
        try:
            os.close(os.open(guard, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        except FileExistsError:
            with contextlib.suppress(FileNotFoundError):
                if fs_now(self.directory) - os.stat(guard).st_mtime > 30:  # left by a process killed here
                    os.unlink(guard)
            time.sleep(random.uniform(0.05, 0.2))  # another process is taking over: look again after it
            return
        try:
            current = read_holder(self.path)
            if (current or {}).get('run_id') != (stale or {}).get('run_id'):
                return  # replaced or released meanwhile
            aside = osp.join(self.directory, f'.{LOCK_NAME}{TMP_MARKER}stale-{uuid.uuid4().hex[:8]}')
            try:
                os.rename(self.path, aside)
            except FileNotFoundError:
                return
            moved = read_holder(aside)
            if (moved or {}).get('run_id') != (stale or {}).get('run_id'):
                with contextlib.suppress(OSError):
                    os.link(aside, self.path)  # a fresh lock created in between: put it back
            with contextlib.suppress(FileNotFoundError):
                os.unlink(aside)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(guard)

    # --- holding ------------------------------------------------------------------------------------------------
    def _start(self, info: dict) -> None:
        self._stop_thread()
        self.info, self.lost = info, None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f'lock-heartbeat:{self.directory}', daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            problem = self._problem()
            if problem:
                self.lost = problem
                return
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def _problem(self) -> str | None:
        if self.info is None:
            return 'the lock is not held'
        holder = read_holder(self.path)
        if holder is None and not osp.exists(self.path):
            return f'{self.path} was deleted'
        if holder is not None and holder.get('run_id') != self.info['run_id']:
            return f'{self.path} now names another run ({describe_holder(holder)})'
        return None

    def check(self) -> None:
        """Raises :class:`LockLostError` unless the lock file still names this run."""
        problem = self.lost or self._problem()
        if problem:
            raise LockLostError(
                f'this run (run id {self.info and self.info["run_id"]}) no longer holds the lock of '
                f'{self.directory}: {problem}. Another run took it over, presumably because this run stalled for '
                f'more than {self.stale_s:.0f} s; this run stops without publishing more.')

    def _stop_thread(self) -> None:
        if self._thread is not None:
            self._stop.set()
            if self._thread is not threading.current_thread():
                self._thread.join(timeout=5)
            self._thread = None

    def release(self) -> None:
        """Stops the heartbeat and deletes the lock file if it still names this run (no-op if not held)."""
        self._stop_thread()
        if self.info is not None and self._problem() is None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        self.info = None


_HELD: dict[str, OutputLock] = {}
_HELD_MUTEX = threading.Lock()


def _key(directory: str) -> str:
    return osp.realpath(osp.abspath(directory))


def acquire(directory: str, stale_s: float = 120.0, heartbeat_s: float = 5.0) -> tuple[OutputLock, bool]:
    """Takes the lock of ``directory`` for this process; returns it and whether this call took it.

    A lock this process already holds (and still owns) is returned as is.

    Raises:
        LockHeldError: another live run holds it.
    """
    key = _key(directory)
    with _HELD_MUTEX:
        lock = _HELD.get(key)
        if lock is not None and lock.held and lock.lost is None and lock._problem() is None:
            return lock, False
        lock = OutputLock(directory, stale_s, heartbeat_s).acquire()
        _HELD[key] = lock
        return lock, True


def held(directory: str) -> OutputLock | None:
    """The lock of ``directory`` if this process took it (and has not released it)."""
    lock = _HELD.get(_key(directory))
    return lock if lock is not None and lock.held else None


def release(directory: str) -> None:
    """Releases this process's lock of ``directory`` (no-op if it holds none)."""
    with _HELD_MUTEX:
        lock = _HELD.pop(_key(directory), None)
    if lock is not None:
        lock.release()


@atexit.register
def _release_all() -> None:
    for key in list(_HELD):
        with contextlib.suppress(Exception):
            release(key)
