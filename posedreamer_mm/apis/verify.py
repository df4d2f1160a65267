"""What ``tools/verify_dataset.py`` calls: check a generated dataset completely, shard by shard.

::

    python tools/verify_dataset.py outputs/run [--shards 0 3 5-7] [--workers 4] [--no-progress]

Every shard folder (or the ``--shards`` chosen) goes through
:func:`posedreamer_mm.generation.reader.verify_shard`: every sha256 listed in its ``shard.json`` (files are
hashed in 1 MiB blocks, shards in parallel threads; hashlib releases the GIL), no unlisted or missing file,
counts, index coverage, ``meta.jsonl`` rows against ``labels.npz`` ids, and the manifest's record of the shard.
A shard folder without ``shard.json`` is reported as incomplete. One line per shard is printed; the exit status is
1 when any shard or the dataset as a whole has a problem (or the directory is no generated dataset), else 0.
The dataset is only read.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import os
import os.path as osp
import sys
import time

from tqdm import tqdm

from posedreamer_mm.generation.reader import ShardCheck, dataset_problems, verify_shard
from posedreamer_mm.generation.writer import SHARDS_DIR, OutputConflictError, read_manifest, shard_name
from posedreamer_mm.utils.fileio import TMP_MARKER
from posedreamer_mm.utils.output_lock import LOCK_NAME, describe_holder, read_holder


def parse_shards(specs: list[str]) -> list[int]:
    """``['3', '000005', '7-9']`` -> ``[3, 5, 7, 8, 9]``.

    Raises:
        ValueError: naming a spec that is neither a number nor a range ``a-b``.
    """
    out: set[int] = set()
    for spec in specs:
        for part in str(spec).split(','):
            lo, sep, hi = part.strip().partition('-')
            if not lo.isdigit() or (sep and not hi.isdigit()):
                raise ValueError(f'--shards {part!r}: expected a shard number (3, 000003) or a range (5-7)')
            out.update(range(int(lo), int(hi if sep else lo) + 1))
    return sorted(out)


def verify_dataset(root: str, shards: list[int] | None = None, workers: int = 4, progress: bool = True,
                   report=None) -> dict:
    """Verifies ``root``; returns ``dict(checks=[ShardCheck], problems=[...], notes=[...], ok=bool, ...)``.

    Args:
        root: The generator's output directory.
        shards: Shard numbers to check (default: every shard folder, plus the dataset-level checks).
        workers: Threads hashing shards in parallel.
        progress: Show a progress bar (stderr).
        report: Called with each finished :class:`ShardCheck`, in shard order.

    Raises:
        posedreamer_mm.generation.writer.OutputConflictError: ``root`` is no generated dataset.
    """
    root = osp.abspath(root)
    manifest = read_manifest(root)
    shards_dir = osp.join(root, SHARDS_DIR)
    names = sorted(n for n in os.listdir(shards_dir) if n.isdigit()) if osp.isdir(shards_dir) else []
    problems, notes = [], []
    if shards is None:
        problems += dataset_problems(root, manifest)
    else:
        wanted = [shard_name(s) for s in shards]
        absent = [n for n in wanted if n not in names]
        if absent:
            problems.append(f'shards {absent} are not in {shards_dir}')
        names = [n for n in wanted if n in names]
    if manifest.get('status') != 'complete':
        notes.append(f'manifest status is {manifest.get("status")!r}: the dataset is not (yet) complete; a re-run '
                     'of the generate command adds the missing shards')
    holder = read_holder(osp.join(root, LOCK_NAME)) if osp.exists(osp.join(root, LOCK_NAME)) else None
    if holder is not None or osp.exists(osp.join(root, LOCK_NAME)):
        notes.append(f'{osp.join(root, LOCK_NAME)} exists: a run may be writing this dataset now '
                     f'({describe_holder(holder)}), or ended without releasing it')
    temporaries = [n for n in (os.listdir(shards_dir) if osp.isdir(shards_dir) else []) if TMP_MARKER in n]
    if temporaries:
        notes.append(f'{len(temporaries)} temporary shard folders (being written, or left by a killed run; never '
                     f'read): {temporaries[:3]}')
    start = time.perf_counter()
    checks: list[ShardCheck] = []
    bar = tqdm(total=len(names), unit='shard', desc='verify', disable=not progress, file=sys.stderr)
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, int(workers))) as pool:
        for check in pool.map(lambda n: verify_shard(root, n, manifest), names):
            checks.append(check)
            bar.update(1)
            bar.set_postfix(bad=sum(not c.ok for c in checks), MB=f'{sum(c.bytes for c in checks) / 1e6:.0f}',
                            refresh=False)
            if report is not None:
                report(check)
    bar.close()
    return dict(root=root, checks=checks, problems=problems, notes=notes, seconds=time.perf_counter() - start,
                ok=not problems and all(c.ok for c in checks))


def format_check(check: ShardCheck) -> str:
    head = (f'{check.name}  {"ok " if check.ok else "BAD"}  {check.samples} samples, {check.files} files, '
            f'{check.bytes / 1e6:.1f} MB')
    return '\n'.join([head] + [f'        {p}' for p in check.problems])


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Verify a generated dataset: every checksum, row and id, per shard '
                                                 '(exit 1 if anything is wrong)')
    parser.add_argument('dataset', help='the generator output directory (with manifest.json)')
    parser.add_argument('--shards', nargs='+', help='only these shards: numbers or ranges (3 000005 7-9)')
    parser.add_argument('--workers', type=int, default=min(8, os.cpu_count() or 1), help='hashing threads')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    """``tools/verify_dataset.py``; returns the exit status."""
    args = parse_args(argv)

    def say(text: str) -> None:
        tqdm.write(text, file=sys.stdout)

    try:
        shards = parse_shards(args.shards) if args.shards else None
        result = verify_dataset(args.dataset, shards, args.workers, progress=not args.no_progress,
                                report=lambda c: say(format_check(c)))
    except (OutputConflictError, ValueError) as err:
        print(f'verify_dataset: {err}', file=sys.stderr)
        return 1
    for problem in result['problems']:
        say(f'dataset BAD  {problem}')
    for note in result['notes']:
        say(f'note: {note}')
    checks = result['checks']
    bad = [c.name for c in checks if not c.ok]
    say(f'{"OK" if result["ok"] else "FAILED"}: {len(checks) - len(bad)} of {len(checks)} shards ok'
        f'{f", bad: {bad[:20]}" if bad else ""}{", dataset problems above" if result["problems"] else ""} '
        f'({sum(c.samples for c in checks)} samples, {sum(c.bytes for c in checks) / 1e6:.1f} MB hashed in '
        f'{result["seconds"]:.1f} s) - {result["root"]}')
    return 0 if result['ok'] else 1
