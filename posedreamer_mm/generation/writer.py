"""The generated dataset on disk: sharded, resumable, written atomically (format: docs/dataset_format.md).

Layout of an output directory::

    <root>/manifest.json                 format, version, config fingerprint and config, shard plan; at the end
                                         the shard list with counts and checksums
    <root>/summary.json                  written / dropped / failed per reason, timings (docs/generation.md)
    <root>/shards/<shard:06d>/           one finished shard (source indices [shard * size, (shard + 1) * size))
        images/<id>.<jpg|png>            the generated images, RGB
        controls/<control_type>/<id>.png the control images (optional)
        labels.npz                       every label of the shard, stacked (row r = line r of meta.jsonl)
        meta.jsonl                       one JSON line per sample: id, index, seed, prompt, backend, scores, files
        shard.json                       index range, counts, drop/fail reasons, sha256 of every file
    <root>/shards/.<shard:06d>.tmp-*/    a shard being written (never read; removed on resume)
    <root>/writer.lock                   the run writing this output (one writer per output, utils/output_lock.py)

A shard is built in a temporary directory and becomes visible only by one ``os.rename`` once all of its source
indices are accounted for (written, dropped or failed) and its ``shard.json`` is written, after every file it lists
was checked to be there, so a kill at any moment leaves complete shards and at most one temporary directory per
writer. A shard folder without its ``shard.json`` (an interrupted copy) or with listed files missing is not
complete: a re-run regenerates it. Files inside the temporary directory need no atomic writes of their own;
``manifest.json`` and ``summary.json`` go through :func:`posedreamer_mm.utils.fileio.atomic_write_text`.
"""
from __future__ import annotations

import hashlib
import json
import os
import os.path as osp
import shutil
import tempfile
import uuid
import warnings
from typing import Any

import cv2
import numpy as np

from posedreamer_mm.body.sample import BodySample, validate_sample_id
from posedreamer_mm.utils import output_lock
from posedreamer_mm.utils.fileio import TMP_MARKER, atomic_write_text, file_sha256, is_temporary, safe_join

FORMAT_NAME = 'posedreamer_mm.generated_dataset'
FORMAT_VERSION = 1
MANIFEST = 'manifest.json'
SUMMARY = 'summary.json'
SHARDS_DIR = 'shards'
SHARD_INFO = 'shard.json'
LABELS = 'labels.npz'
META = 'meta.jsonl'


class OutputConflictError(RuntimeError):
    """The output directory holds a dataset made with another config or seed, or something that is no dataset."""


class OutputLockedError(OutputConflictError):
    """Another live run writes the output directory (its lock names the run's host, pid and start time)."""


class ShardWriteError(RuntimeError):
    """Writing a shard failed; the shard's temporary directory was removed (nothing half-written is visible)."""


def shard_name(shard: int) -> str:
    return f'{int(shard):06d}'


def shards_of_rank(num_shards: int, rank: int, world_size: int) -> list[int]:
    """The shards rank ``rank`` of ``world_size`` writes: ``shard % world_size == rank`` (each shard one rank)."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f'need 0 <= rank < world_size, got rank {rank}, world_size {world_size}')
    return list(range(rank, num_shards, world_size))


def missing_files(shard_dir: str, files: dict[str, str]) -> list[str]:
    """The paths listed in ``files`` (relative to ``shard_dir``) that are not there, by directory listings."""
    present = set()
    for dirpath, _, names in os.walk(shard_dir):
        rel = osp.relpath(dirpath, shard_dir)
        present.update(n if rel == '.' else f'{rel}/{n}'.replace(os.sep, '/') for n in names)
    return sorted(set(files) - present)


def stack_labels(samples: list[BodySample]) -> dict[str, np.ndarray]:
    """Stacks labels into one dict of ``(N, ...)`` arrays (see docs/dataset_format.md, "labels.npz").

    ``meta`` numpy arrays become JSON lists inside ``meta_json`` (their shapes may differ between samples).

    Raises:
        ValueError: if samples disagree on a field's shape (e.g. different numbers of betas or joints).
    """
    rows = []
    for s in samples:
        plain = s.copy()
        plain.meta = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in s.meta.items()}
        rows.append(plain.to_dict())
    keys = list(rows[0])
    out = {}
    for key in keys:
        missing = [r['id'] for r in rows if key not in r]
        if missing:
            raise ValueError(f'label field {key!r} is missing in samples {missing[:3]} but present in others')
        values = [np.asarray(r[key]) for r in rows]
        shapes = {v.shape for v in values}
        if len(shapes) != 1:
            raise ValueError(f'label field {key!r} has different shapes across samples {sorted(shapes)}; one shard '
                             'stacks them: build the source with one num_betas / joint set')
        out[key] = np.stack(values)
    return out


class ShardedDatasetWriter:
    """Writes generated samples into shards of ``shard_size`` source indices (docs/dataset_format.md).

    Args:
        shard_size: Source indices per shard (a shard holds at most this many samples; fewer when some are
            dropped). 1000 suits 500K+ sample runs: a few hundred directories of a few thousand files each.
        image_format: ``'jpg'`` or ``'png'`` for the generated images.
        jpeg_quality: JPEG quality (1-100) when ``image_format='jpg'``.
        save_controls: Also store each sample's control images (PNG, lossless).
        lock_stale_s: Seconds without a heartbeat after which another host's lock of the output is taken over
            (a lock of a dead process on this host is taken over at once; utils/output_lock.py).
        lock_heartbeat_s: Seconds between refreshes of this run's lock.
    """

    def __init__(self, shard_size: int = 1000, image_format: str = 'jpg', jpeg_quality: int = 95,
                 save_controls: bool = True, lock_stale_s: float = 120.0, lock_heartbeat_s: float = 5.0) -> None:
        if shard_size < 1:
            raise ValueError(f'shard_size must be >= 1, got {shard_size}')
        if image_format not in ('jpg', 'png'):
            raise ValueError(f"image_format must be 'jpg' or 'png', got {image_format!r}")
        if not 1 <= int(jpeg_quality) <= 100:
            raise ValueError(f'jpeg_quality must be in [1, 100], got {jpeg_quality}')
        self.shard_size, self.image_format = int(shard_size), image_format
        self.jpeg_quality, self.save_controls = int(jpeg_quality), bool(save_controls)
        if not 0 < lock_heartbeat_s < lock_stale_s:
            raise ValueError(f'need 0 < lock_heartbeat_s < lock_stale_s, got {lock_heartbeat_s}, {lock_stale_s}')
        self.lock_stale_s, self.lock_heartbeat_s = float(lock_stale_s), float(lock_heartbeat_s)

    def content_config(self) -> dict:
        """The settings that change what is written (part of the config fingerprint)."""
        return dict(shard_size=self.shard_size, image_format=self.image_format, jpeg_quality=self.jpeg_quality,
                    save_controls=self.save_controls)

    # --- the output directory -----------------------------------------------------------------------------------
    def num_shards(self, num_samples: int) -> int:
        return (num_samples + self.shard_size - 1) // self.shard_size

    def shard_range(self, shard: int, num_samples: int) -> range:
        """The source indices of ``shard``."""
        return range(shard * self.shard_size, min((shard + 1) * self.shard_size, num_samples))

    def prepare_output(self, root: str, header: dict) -> None:
        """Takes the output's lock, then creates ``root`` with its manifest or checks that an existing one was
        made by the same config.

        Call on one process (rank 0) before any shard is written; the others call :meth:`check_output` after.
        The lock (``<root>/writer.lock``, :mod:`posedreamer_mm.utils.output_lock`) is held until
        :meth:`release_output` or the end of the process; this process may take it again.

        Args:
            root: Output directory.
            header: ``fingerprint`` (str), ``config`` (dict), ``num_samples``... stored in the manifest.

        Raises:
            OutputLockedError: another live run writes ``root`` (the message names its host, pid, start time).
            OutputConflictError: ``root`` holds another config's dataset (or files that are not a dataset).
        """
        path = osp.join(root, MANIFEST)
        if osp.exists(root) and not osp.isdir(root):
            raise OutputConflictError(f'output {root} exists and is not a directory; choose another --out')
        if not osp.isfile(path):
            self._check_empty(root)
        try:
            _, taken = output_lock.acquire(root, self.lock_stale_s, self.lock_heartbeat_s)
        except output_lock.LockHeldError as err:
            raise OutputLockedError(str(err)) from None
        try:  # under the lock: what another run did before we took it is settled
            if osp.isfile(path):
                self.check_output(root, header)
                return
            self._check_empty(root)
            # The manifest first: a run arriving meanwhile sees a dataset (or only the lock), never a foreign dir.
            manifest = dict(format=FORMAT_NAME, version=FORMAT_VERSION, status='in_progress', **header,
                            writer=self.content_config())
            atomic_write_text(path, json.dumps(manifest, indent=1, sort_keys=True))
            os.makedirs(osp.join(root, SHARDS_DIR), exist_ok=True)
        except BaseException:
            if taken:
                output_lock.release(root)
            raise

    @staticmethod
    def _check_empty(root: str) -> None:
        names = os.listdir(root) if osp.isdir(root) else []
        if MANIFEST in names and osp.isfile(osp.join(root, MANIFEST)):
            # a run that took the lock since the caller looked made it a dataset (manifest first, then shards/):
            # the lock and check_output decide, not a 'not a dataset' error
            return
        if any(not is_temporary(n) and n != output_lock.LOCK_NAME for n in names):
            raise OutputConflictError(
                f'output directory {root} is not empty and has no {MANIFEST}: it is not a generated dataset; '
                'choose an empty or new --out')

    def release_output(self, root: str) -> None:
        """Releases the lock :meth:`prepare_output` took on ``root`` (no-op if this process holds none)."""
        output_lock.release(root)

    def check_output(self, root: str, header: dict) -> dict:
        """Checks ``root``'s manifest against this run's ``header``; returns the manifest.

        Raises:
            OutputConflictError: missing/unreadable manifest, or another fingerprint (the message names the
                config keys that differ).
        """
        manifest = read_manifest(root)
        if manifest.get('fingerprint') != header['fingerprint']:
            old, new = manifest.get('config', {}), header.get('config', {})
            differ = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise OutputConflictError(
                f'output directory {root} was generated with a different config or seed (fingerprint '
                f'{manifest.get("fingerprint")} there, {header["fingerprint"]} now; differing keys: {differ}). '
                'A dataset is never mixed from two configs: choose another --out, or delete the old output to '
                'regenerate it.')
        return manifest

    def shard_problem(self, root: str, shard: int) -> str | None:
        """Why the folder of ``shard`` is not a complete shard (``None`` if it is, or if it does not exist).

        Complete means: ``shard.json`` readable and every file it lists present (directory listings, no hashing;
        checksums are :func:`posedreamer_mm.generation.reader.verify_shard`'s job).
        """
        folder = osp.join(root, SHARDS_DIR, shard_name(shard))
        if not osp.isdir(folder):
            return None
        info_path = osp.join(folder, SHARD_INFO)
        if not osp.isfile(info_path):
            return f'{folder} has no {SHARD_INFO} (an interrupted copy or write)'
        try:
            with open(info_path) as f:
                files = json.load(f)['files']
        except (OSError, ValueError, KeyError, TypeError) as err:
            return f'{info_path} is unreadable ({type(err).__name__}: {err})'
        missing = missing_files(folder, files)
        if missing:
            return f'{folder} lists files that are missing: {missing[:5]}{" ..." if len(missing) > 5 else ""}'
        return None

    def complete_shards(self, root: str) -> set[int]:
        """Shards that were committed and are still whole (:meth:`shard_problem` finds nothing)."""
        shards_dir = osp.join(root, SHARDS_DIR)
        if not osp.isdir(shards_dir):
            return set()
        return {int(n) for n in os.listdir(shards_dir) if n.isdigit() and self.shard_problem(root, int(n)) is None}

    def remove_partial(self, root: str, shards: set[int]) -> int:
        """Deletes what is left of ``shards`` by killed runs, before they are redone; returns how many folders.

        That is their temporary directories, and folders under their final name that are not complete shards
        (no ``shard.json``, or files missing: :meth:`shard_problem`), with a warning naming the folder.
        """
        shards_dir = osp.join(root, SHARDS_DIR)
        names = {f'.{shard_name(s)}{TMP_MARKER}' for s in shards}
        n = 0
        for entry in os.listdir(shards_dir) if osp.isdir(shards_dir) else []:
            if any(entry.startswith(prefix) for prefix in names):
                shutil.rmtree(osp.join(shards_dir, entry), ignore_errors=True)
                n += 1
        for s in sorted(shards):
            problem = self.shard_problem(root, s)
            if problem:
                _discard(osp.join(shards_dir, shard_name(s)), problem)
                n += 1
        return n

    def open_shard(self, root: str, shard: int, num_samples: int) -> ShardBuilder:
        return ShardBuilder(self, root, shard, self.shard_range(shard, num_samples))

    def finalize(self, root: str, num_samples: int, extra: dict | None = None) -> dict:
        """Writes the final manifest: every complete shard with its counts and the sha256 of its ``shard.json``.

        ``status`` is ``'complete'`` when every shard of the plan is present and whole, else ``'partial'``;
        shard folders that are not whole are listed under ``damaged_shards`` (a re-run regenerates them).

        Raises:
            ShardWriteError: this process held the output's lock and another run took it over.
        """
        lock = output_lock.held(root)
        if lock is not None:
            try:
                lock.check()
            except output_lock.LockLostError as err:
                raise ShardWriteError(f'not finalizing {root}: {err}') from None
        manifest = read_manifest(root)
        shards, damaged, totals = [], [], dict(written=0, dropped=0, failed=0)
        shards_dir = osp.join(root, SHARDS_DIR)
        names = sorted(n for n in os.listdir(shards_dir) if n.isdigit()) if osp.isdir(shards_dir) else []
        for name in names:
            info_path = osp.join(shards_dir, name, SHARD_INFO)
            try:
                with open(info_path) as f:
                    info = json.load(f)
                missing = missing_files(osp.join(shards_dir, name), info['files'])
            except (OSError, ValueError, KeyError, TypeError) as err:
                damaged.append(dict(name=name, problem=f'{SHARD_INFO}: {type(err).__name__}: {err}'))
                continue
            if missing:
                damaged.append(dict(name=name, missing=missing))
                continue
            shards.append(dict(name=name, written=info['written'], dropped=len(info['dropped']),
                               failed=len(info['failed']), shard_json_sha256=file_sha256(info_path)))
            totals['written'] += info['written']
            totals['dropped'] += len(info['dropped'])
            totals['failed'] += len(info['failed'])
        if damaged:
            warnings.warn(f'{root}: shard folders that are not whole (a re-run regenerates them): {damaged[:5]}',
                          stacklevel=2)
        manifest.update(shards=shards, counts=totals, damaged_shards=damaged, **(extra or {}),
                        status='complete' if len(shards) == self.num_shards(num_samples) else 'partial')
        atomic_write_text(osp.join(root, MANIFEST), json.dumps(manifest, indent=1, sort_keys=True))
        return manifest

    def encode_image(self, img: np.ndarray, fmt: str) -> bytes:
        """RGB uint8 ``(H, W, 3)`` -> encoded bytes (``fmt`` 'jpg' or 'png')."""
        img = np.asarray(img)
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f'an image must be (H, W, 3) uint8 RGB, got {img.shape} {img.dtype}')
        params = [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality] if fmt == 'jpg' else []
        ok, buf = cv2.imencode(f'.{fmt}', cv2.cvtColor(img, cv2.COLOR_RGB2BGR), params)
        if not ok:
            raise ValueError(f'cv2 could not encode a {img.shape} image as {fmt}')
        return buf.tobytes()

    def __repr__(self) -> str:
        return f'{type(self).__name__}({self.content_config()})'


def _discard(folder: str, problem: str) -> None:
    """Moves an incomplete shard folder out of the way (one rename), then deletes it; warns naming it."""
    warnings.warn(f'{problem}: not a complete shard; removed, the shard is regenerated', stacklevel=3)
    parent, name = osp.split(folder)
    aside = osp.join(parent, f'.{name}{TMP_MARKER}incomplete-{uuid.uuid4().hex[:8]}')
    try:
        os.rename(folder, aside)
    except FileNotFoundError:
        return
    shutil.rmtree(aside, ignore_errors=True)


def read_manifest(root: str) -> dict:
    """``<root>/manifest.json``, checked for format and version.

    Raises:
        OutputConflictError: naming the file when it is missing, unreadable or of another format.
    """
    path = osp.join(root, MANIFEST)
    try:
        with open(path) as f:
            manifest = json.load(f)
    except FileNotFoundError:
        raise OutputConflictError(f'{path} not found: {root} is not a generated dataset (expected the layout of '
                                  'docs/dataset_format.md)') from None
    except (OSError, json.JSONDecodeError) as err:
        raise OutputConflictError(f'{path} is unreadable ({err}); expected the JSON manifest of '
                                  'docs/dataset_format.md') from err
    if manifest.get('format') != FORMAT_NAME or manifest.get('version') != FORMAT_VERSION:
        raise OutputConflictError(f'{path} is format {manifest.get("format")!r} version {manifest.get("version")!r}; '
                                  f'this code reads {FORMAT_NAME!r} version {FORMAT_VERSION}')
    return manifest


class ShardBuilder:
    """One shard being written into a temporary directory; :meth:`commit` makes it visible atomically.

    Every source index of the shard must be reported once: :meth:`add` (a finished sample), :meth:`drop`
    (a transform returned ``None``) or :meth:`fail` (an error). :attr:`done` turns true when all are in.
    """

    def __init__(self, writer: ShardedDatasetWriter, root: str, shard: int, indices: range) -> None:
        self.writer, self.root, self.shard, self.indices = writer, root, shard, indices
        shards_dir = osp.join(root, SHARDS_DIR)
        os.makedirs(shards_dir, exist_ok=True)
        self.final_dir = osp.join(shards_dir, shard_name(shard))
        self.tmp_dir = tempfile.mkdtemp(prefix=f'.{shard_name(shard)}{TMP_MARKER}', dir=shards_dir)
        self.rows: dict[int, tuple[BodySample, dict]] = {}
        self.dropped: dict[int, tuple[str, str]] = {}
        self.failed: dict[int, tuple[str, str]] = {}
        self.files: dict[str, str] = {}

    @property
    def done(self) -> bool:
        return len(self.rows) + len(self.dropped) + len(self.failed) == len(self.indices)

    def _check_index(self, index: int) -> None:
        if index not in self.indices:
            raise ValueError(f'index {index} is not in shard {self.shard} ({self.indices})')
        if index in self.rows or index in self.dropped or index in self.failed:
            raise ValueError(f'index {index} was reported twice to shard {self.shard}')

    def _write(self, rel: str, data: bytes) -> str:
        path = safe_join(self.tmp_dir, *rel.split('/'))
        os.makedirs(osp.dirname(path), exist_ok=True)
        with open(path, 'wb') as f:
            f.write(data)
        self.files[rel] = hashlib.sha256(data).hexdigest()
        return f'{SHARDS_DIR}/{shard_name(self.shard)}/{rel}'

    def add(self, index: int, results: dict[str, Any]) -> None:
        """Writes one finished sample: ``results`` holds ``sample``, ``img`` and the keys of the record."""
        self._check_index(index)
        sample: BodySample = results['sample']
        sid = validate_sample_id(sample.id)
        if any(s.id == sid for s, _ in self.rows.values()):
            self.failed[index] = (sid, f'duplicate id {sid!r} in the source')
            return
        fmt = self.writer.image_format
        image = self._write(f'images/{sid}.{fmt}', self.writer.encode_image(results['img'], fmt))
        controls = {}
        if self.writer.save_controls:
            for ctype, cimg in results.get('controls', {}).items():
                validate_sample_id(ctype)  # a control type names a folder
                controls[ctype] = self._write(f'controls/{ctype}/{sid}.png', self.writer.encode_image(cimg, 'png'))
        record = dict(id=sid, index=int(index), seed=int(results['seed']), prompt=results.get('prompt', ''),
                      negative_prompt=results.get('negative_prompt', ''),
                      prompt_attributes=results.get('prompt_attributes', {}), backend=results.get('backend', ''),
                      control_types=list(results.get('controls', {})), scores=results.get('scores', {}),
                      image=image, controls=controls)
        # DPO candidates (the generator's candidates_per_sample): the pose id and the candidate's number.
        record.update({k: results[k] for k in ('group', 'candidate') if k in results})
        self.rows[index] = (sample, record)

    def drop(self, index: int, sample_id: str, reason: str) -> None:
        self._check_index(index)
        self.dropped[index] = (sample_id, reason)

    def fail(self, index: int, sample_id: str, reason: str) -> None:
        self._check_index(index)
        self.failed[index] = (sample_id, reason)

    def commit(self) -> dict:
        """Writes labels, metadata and ``shard.json``, checks that every listed file is there, then renames the
        directory to its final name (publication: ``shard.json`` is in the folder before it becomes visible).

        A folder already under the final name that is not a complete shard (no ``shard.json``: an interrupted copy)
        is removed with a warning first.

        Returns:
            The shard's ``shard.json`` content.

        Raises:
            ShardWriteError: files of the shard disappeared from its temporary directory (another process deleted
                them), this process's lock of the output was taken over by another run, or a complete shard of the
                same number exists. Nothing is published.
        """
        if not self.done:
            raise RuntimeError(f'shard {self.shard} is not complete ({len(self.rows)} written, {len(self.dropped)} '
                               f'dropped, {len(self.failed)} failed of {len(self.indices)})')
        order = sorted(self.rows)
        if order:
            labels = stack_labels([self.rows[i][0] for i in order])
            path = osp.join(self.tmp_dir, LABELS)
            with open(path, 'wb') as f:
                np.savez(f, **labels)
            self.files[LABELS] = file_sha256(path)
        meta = ''.join(json.dumps(dict(self.rows[i][1], row=r), sort_keys=True) + '\n' for r, i in enumerate(order))
        self._write(META, meta.encode())
        info = dict(shard=self.shard, indices=[self.indices.start, self.indices.stop], written=len(order),
                    dropped=[dict(index=i, id=s, reason=r) for i, (s, r) in sorted(self.dropped.items())],
                    failed=[dict(index=i, id=s, reason=r) for i, (s, r) in sorted(self.failed.items())],
                    files=dict(sorted(self.files.items())))
        with open(osp.join(self.tmp_dir, SHARD_INFO), 'w') as f:
            json.dump(info, f, indent=1)
        missing = missing_files(self.tmp_dir, self.files)
        if missing:
            raise ShardWriteError(
                f'shard {self.shard}: {len(missing)} of its files are missing from its temporary directory '
                f'{self.tmp_dir} just before publication: {missing[:5]}. Another process deleted them (a second run '
                'into the same output?); the shard is not published.')
        lock = output_lock.held(self.root)
        if lock is not None:
            try:
                lock.check()
            except output_lock.LockLostError as err:
                raise ShardWriteError(f'shard {self.shard} not published: {err}') from None
        os.chmod(self.tmp_dir, 0o755)
        if osp.isdir(self.final_dir):
            problem = self.writer.shard_problem(self.root, self.shard)
            if problem is None:
                raise ShardWriteError(f'shard {self.shard} not published: {self.final_dir} already holds a complete '
                                      'shard (written by another run into the same output?)')
            _discard(self.final_dir, problem)
        os.rename(self.tmp_dir, self.final_dir)
        return info

    def abort(self) -> None:
        """Removes the temporary directory (after an error)."""
        shutil.rmtree(self.tmp_dir, ignore_errors=True)
