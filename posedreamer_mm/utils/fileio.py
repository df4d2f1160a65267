"""Files a later run trusts: atomic writes and paths that cannot leave their root.

Every writer in the project (labels, stand-in body models, shards, manifests, summaries) goes through
:func:`atomic_write` so a file is either absent or complete: it is written to a hidden temporary name in the
same directory and renamed over the target only after a successful close (``os.replace`` is atomic on POSIX
within one filesystem). A failure (exception, SIGKILL) leaves at most a ``.<name>.tmp-*`` file, which readers
never open and :func:`remove_stale_temporaries` clears.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import os.path as osp
import tempfile
from collections.abc import Iterator
from typing import IO

#: Temporary files are named ``.<target name>.tmp-<random>`` beside the target.
TMP_MARKER = '.tmp-'


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = 'wb', fsync: bool = False) -> Iterator[IO]:
    """Opens a temporary file beside ``path``; on a clean exit renames it to ``path``, else deletes it.

    Args:
        path: The target file (its directory is created).
        mode: ``'wb'`` or ``'w'`` (text, UTF-8).
        fsync: flush to disk before the rename (durability across power loss, not needed for kill -9).

    Yields:
        The open temporary file.
    """
    if mode not in ('wb', 'w'):
        raise ValueError(f"atomic_write mode must be 'wb' or 'w', got {mode!r}")
    path = os.fspath(path)
    directory = osp.dirname(osp.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{osp.basename(path)}{TMP_MARKER}', dir=directory)
    try:
        with os.fdopen(fd, mode, **({} if 'b' in mode else {'encoding': 'utf-8'})) as f:
            yield f
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    with atomic_write(path, 'wb') as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Writes ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_write`)."""
    with atomic_write(path, 'w') as f:
        f.write(text)


def is_temporary(name: str) -> bool:
    """Whether a file name is one of :func:`atomic_write`'s temporaries."""
    return osp.basename(name).startswith('.') and TMP_MARKER in osp.basename(name)


def remove_stale_temporaries(directory: str | os.PathLike) -> int:
    """Deletes leftover temporaries of interrupted writes directly in ``directory``; returns how many."""
    n = 0
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(directory):
            if entry.is_file(follow_symlinks=False) and is_temporary(entry.name):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    n += 1
    return n


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """The hex SHA-256 of a file's bytes, read in ``chunk``-byte blocks (a shard's files, a pairs file, weights)."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(chunk), b''):
            digest.update(block)
    return digest.hexdigest()


def iter_id_records(path: str | os.PathLike, error: type[Exception] = ValueError, prefix: str = '',
                    unique: bool = True) -> Iterator[tuple[int, dict]]:
    """``(line number, record)`` of a JSON-lines file of id-keyed records (``tools/filter.py``'s
    ``manifest_filtered.jsonl`` and ``scores.jsonl``, per-sample error files), in file order, streamed a line at a
    time (a caller keeping only part of each record holds no more); blank lines are skipped.

    Args:
        path: the file (UTF-8).
        error: the exception class raised (the caller's: ``MiningError``, ``PairsFileError`` ...).
        prefix: put before every message (``'GeneratedHMRDataset: scores '``).
        unique: refuse an id that occurs twice.

    Raises:
        error: ``<prefix><path>, line <n>: ...`` for a line that is no JSON, a record that is no object with a
            string ``id``, or (``unique``) a repeated id; ``<prefix>cannot read <path> (...)`` for an unreadable
            file.
    """
    path = os.fspath(path)
    first: dict[str, int] = {}
    try:
        with open(path, encoding='utf-8') as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as err:
                    raise error(f'{prefix}{path}, line {n}: not valid JSON ({err.msg}); expected one JSON object '
                                'per line') from None
                if not isinstance(rec, dict) or not isinstance(rec.get('id'), str):
                    raise error(f'{prefix}{path}, line {n}: expected a JSON object with a string "id", got '
                                f'{line.rstrip()[:80]!r}')
                if unique and rec['id'] in first:
                    raise error(f'{prefix}{path}, line {n}: sample id {rec["id"]!r} appears twice (first on line '
                                f'{first[rec["id"]]})')
                first.setdefault(rec['id'], n)
                yield n, rec
    except (OSError, UnicodeDecodeError) as err:
        if isinstance(err, error):   # the caller's own class (one of OSError's) raised above: as it is
            raise
        raise error(f'{prefix}cannot read {path} ({type(err).__name__}: {err})') from err


def read_id_records(path: str | os.PathLike, error: type[Exception] = ValueError, prefix: str = '',
                    unique: bool = True) -> list[tuple[int, dict]]:
    """:func:`iter_id_records` as a list."""
    return list(iter_id_records(path, error, prefix, unique))


def safe_join(root: str | os.PathLike, *parts: str) -> str:
    """``root/part/...``, refusing any result outside ``root`` (``..``, absolute parts, symlinked escapes).

    Raises:
        ValueError: naming the parts and the root they would leave.
    """
    root_real = osp.realpath(os.fspath(root))
    for part in parts:
        if not part or osp.isabs(part) or '\x00' in part:
            raise ValueError(f'path part {part!r} is empty, absolute or has a NUL byte (root {root_real})')
    target = osp.realpath(osp.join(root_real, *parts))
    if osp.commonpath([root_real, target]) != root_real:
        raise ValueError(f'path {osp.join(*parts)!r} leaves its root directory {root_real}')
    return target
