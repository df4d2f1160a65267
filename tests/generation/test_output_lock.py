"""One writer per output (posedreamer_mm/utils/output_lock.py through ShardedDatasetWriter.prepare_output), shards
published only complete, incomplete shard folders regenerated, and one owner rank per shard."""
import json
import multiprocessing
import os
import signal
import socket
import time
from pathlib import Path

import numpy as np
import pytest

from posedreamer_mm.generation.reader import GeneratedDataReader
from posedreamer_mm.generation.writer import (
    OutputConflictError,
    OutputLockedError,
    ShardedDatasetWriter,
    ShardWriteError,
    shards_of_rank,
)
from posedreamer_mm.utils import output_lock
from tests.generation.test_writer_reader import _sample, _write

ROOT = Path(__file__).resolve().parents[2]
HEADER = dict(fingerprint='f1', config=dict(seed=0), num_samples=4)

FORK = multiprocessing.get_context('fork')  # real processes that need not import the package again


@pytest.fixture(autouse=True)
def _release_locks():
    yield
    for key in list(output_lock._HELD):
        output_lock.release(key)


def _hold(root, locked):
    ShardedDatasetWriter(shard_size=2).prepare_output(root, HEADER)
    locked.set()
    time.sleep(120)


def _holder(root):
    """A real second process that takes the output's lock and keeps it."""
    locked = FORK.Event()
    proc = FORK.Process(target=_hold, args=(str(root), locked), daemon=True)
    proc.start()
    assert locked.wait(60)
    return proc


def _add(shard, i):
    img = np.random.default_rng(i).integers(0, 255, (8, 6, 3), dtype=np.uint8)
    shard.add(i, dict(sample=_sample(i), img=img, seed=i, controls={'pncc': img}))


def test_a_second_run_is_refused_while_a_live_process_holds_the_output_and_a_killed_one_is_replaced(tmp_path):
    root = tmp_path / 'out'
    proc = _holder(root)
    try:
        with pytest.raises(OutputLockedError) as err:
            ShardedDatasetWriter(shard_size=2).prepare_output(str(root), HEADER)
        msg = str(err.value)
        assert str(root) in msg and f'pid {proc.pid}' in msg and repr(socket.gethostname()) in msg
        assert 'started 20' in msg and 'choose another --out' in msg
        assert (root / 'writer.lock').is_file()
    finally:
        proc.kill()  # SIGKILL
        proc.join()
    # Its holder is dead (same host, pid not running): the lock is taken over at once, with a warning.
    with pytest.warns(UserWarning, match=f'process {proc.pid} on this host is not running'):
        ShardedDatasetWriter(shard_size=2).prepare_output(str(root), HEADER)
    assert json.loads((root / 'writer.lock').read_text())['pid'] == os.getpid()


def test_the_same_process_may_take_its_lock_again_and_release_removes_it(tmp_path):
    writer = ShardedDatasetWriter(shard_size=2)
    writer.prepare_output(str(tmp_path), HEADER)
    run_id = json.loads((tmp_path / 'writer.lock').read_text())['run_id']
    ShardedDatasetWriter(shard_size=2).prepare_output(str(tmp_path), HEADER)  # e.g. a second run() in one process
    assert json.loads((tmp_path / 'writer.lock').read_text())['run_id'] == run_id
    writer.release_output(str(tmp_path))
    assert not (tmp_path / 'writer.lock').exists()
    writer.release_output(str(tmp_path))  # not held: no-op
    # A lock file this process left behind under another run id (no release) is re-acquirable too.
    (tmp_path / 'writer.lock').write_text(json.dumps(dict(host=socket.gethostname(), pid=os.getpid(),
                                                          pid_namespace=output_lock._pid_namespace(), run_id='x')))
    writer.prepare_output(str(tmp_path), HEADER)


def test_another_hosts_lock_is_live_until_its_heartbeat_is_older_than_lock_stale_s(tmp_path):
    os.makedirs(tmp_path / 'out')
    lock = tmp_path / 'out' / 'writer.lock'
    lock.write_text(json.dumps(dict(host='node-b', pid=1, run_id='r1', started='2026-01-01T00:00:00+00:00',
                                    command='tools/generate.py cfg.py --out x')))
    writer = ShardedDatasetWriter(shard_size=2, lock_stale_s=30)
    with pytest.raises(OutputLockedError, match=r"host 'node-b', pid 1.*30 s after its last heartbeat"):
        writer.prepare_output(str(tmp_path / 'out'), HEADER)
    assert not (tmp_path / 'out' / 'manifest.json').exists()  # refused before touching anything
    os.utime(lock, (time.time() - 29, time.time() - 29))
    with pytest.raises(OutputLockedError):
        writer.prepare_output(str(tmp_path / 'out'), HEADER)
    os.utime(lock, (time.time() - 31, time.time() - 31))
    with pytest.warns(UserWarning, match=r'heartbeat is 3\d s old'):
        writer.prepare_output(str(tmp_path / 'out'), HEADER)
    assert json.loads(lock.read_text())['host'] == socket.gethostname()


def test_the_heartbeat_keeps_a_held_lock_fresh(tmp_path):
    ShardedDatasetWriter(shard_size=2, lock_stale_s=2.0, lock_heartbeat_s=0.1).prepare_output(str(tmp_path), HEADER)
    lock = tmp_path / 'writer.lock'
    os.utime(lock, (time.time() - 100, time.time() - 100))
    time.sleep(0.5)
    assert time.time() - lock.stat().st_mtime < 1.0


def test_a_run_whose_lock_was_taken_over_publishes_nothing(tmp_path):
    writer = ShardedDatasetWriter(shard_size=2)
    writer.prepare_output(str(tmp_path), HEADER)
    shard = writer.open_shard(str(tmp_path), 0, 4)
    _add(shard, 0)
    _add(shard, 1)
    # Another run took the lock over (this run's heartbeat had stalled past lock_stale_s).
    (tmp_path / 'writer.lock').write_text(json.dumps(dict(host='node-b', pid=7, run_id='other')))
    with pytest.raises(ShardWriteError, match="no longer holds the lock.*host 'node-b'"):
        shard.commit()
    assert not (tmp_path / 'shards' / '000000').exists()


def test_commit_refuses_a_shard_whose_files_were_deleted(tmp_path):
    """What a second run's clean-up did to the first run's temporary directory (issue: 544 of 642 files gone)."""
    writer = ShardedDatasetWriter(shard_size=2)
    writer.prepare_output(str(tmp_path), HEADER)
    shard = writer.open_shard(str(tmp_path), 0, 4)
    _add(shard, 0)
    os.remove(os.path.join(shard.tmp_dir, 'images', 'smp_000.jpg'))
    _add(shard, 1)  # the writer goes on in a directory that lost files
    with pytest.raises(ShardWriteError, match=r"shard 0: 1 of its files are missing.*\['images/smp_000.jpg'\]"):
        shard.commit()
    assert not (tmp_path / 'shards' / '000000').exists()
    assert writer.complete_shards(str(tmp_path)) == set()


def test_a_shard_folder_without_shard_json_is_regenerated(tmp_path):
    """An interrupted copy: the folder has its name but not its shard.json (today: 'Directory not empty')."""
    writer = ShardedDatasetWriter(shard_size=2, image_format='png')
    _write(tmp_path, writer, 4)
    folder = tmp_path / 'shards' / '000001'
    (folder / 'shard.json').unlink()
    (folder / 'labels.npz').unlink()
    assert writer.complete_shards(str(tmp_path)) == {0}
    # Re-running shard 1 (the generator calls remove_partial on the shards it redoes, then commits them).
    shard = writer.open_shard(str(tmp_path), 1, 4)
    _add(shard, 2)
    _add(shard, 3)
    with pytest.warns(UserWarning, match=r'000001 has no shard.json'):
        shard.commit()
    assert writer.complete_shards(str(tmp_path)) == {0, 1}
    assert writer.finalize(str(tmp_path), 4)['status'] == 'complete'
    assert GeneratedDataReader(tmp_path, verify=True).ids == [f'smp_{i:03d}' for i in range(4)]
    # The same through remove_partial, as DatasetGenerator.run does before generating.
    (folder / 'shard.json').unlink()
    with pytest.warns(UserWarning, match=r'000001 has no shard.json'):
        assert writer.remove_partial(str(tmp_path), {1}) == 1
    assert not folder.exists() and not [n for n in os.listdir(tmp_path / 'shards') if n.startswith('.')]


def test_a_committed_shard_with_files_missing_is_not_complete_and_is_redone(tmp_path):
    writer = ShardedDatasetWriter(shard_size=2, image_format='png')
    _write(tmp_path, writer, 4)
    os.remove(tmp_path / 'shards' / '000001' / 'images' / 'smp_003.png')
    assert writer.complete_shards(str(tmp_path)) == {0}
    with pytest.warns(UserWarning, match='not whole'):
        manifest = writer.finalize(str(tmp_path), 4)
    assert manifest['status'] == 'partial' and [s['name'] for s in manifest['shards']] == ['000000']
    assert manifest['damaged_shards'] == [dict(name='000001', missing=['images/smp_003.png'])]
    with pytest.warns(UserWarning, match=r"000001 lists files that are missing: \['images/smp_003.png'\]"):
        assert writer.remove_partial(str(tmp_path), {1}) == 1
    assert not (tmp_path / 'shards' / '000001').exists()


def _killed_at_publication(root, report):
    real = os.rename

    def rename(src, dst):
        if '.tmp-' in src and os.path.basename(dst) == '000001':
            with open(report, 'w') as f:
                f.write(str(sorted(n for n in os.listdir(src) if n.endswith(('.npz', '.jsonl', '.json')))))
            os.kill(os.getpid(), signal.SIGKILL)
        return real(src, dst)

    os.rename = rename
    _write(root, ShardedDatasetWriter(shard_size=2, image_format='png'), 6)


def test_shard_json_is_in_the_folder_before_it_is_published(tmp_path):
    """A SIGKILL between writing shard.json and the rename leaves a temporary folder that a re-run removes."""
    root, child_out = tmp_path / 'out', tmp_path / 'child.txt'
    proc = FORK.Process(target=_killed_at_publication, args=(str(root), str(child_out)))
    proc.start()
    proc.join(120)
    assert proc.exitcode == -signal.SIGKILL
    assert child_out.read_text() == "['labels.npz', 'meta.jsonl', 'shard.json']"  # complete in its temporary folder
    writer = ShardedDatasetWriter(shard_size=2, image_format='png')
    assert writer.complete_shards(str(root)) == {0}
    assert [n[:12] for n in os.listdir(root / 'shards') if n.startswith('.')] == ['.000001.tmp-']
    # The holder was SIGKILLed on this host: its lock is taken over at once, and the re-run redoes shard 1.
    with pytest.warns(UserWarning, match='not running'):
        _write(root, writer, 6, resume=True)
    assert sorted(os.listdir(root / 'shards')) == ['000000', '000001', '000002']
    assert len(GeneratedDataReader(root, verify=True)) == 6


@pytest.mark.parametrize('world', [1, 2, 3, 4])
@pytest.mark.parametrize('num_samples,shard_size', [(1, 3), (7, 3), (10, 3), (12, 3), (5, 1), (2, 5)])
def test_every_shard_has_exactly_one_rank_and_every_index_one_shard(world, num_samples, shard_size):
    writer = ShardedDatasetWriter(shard_size=shard_size)
    n = writer.num_shards(num_samples)
    assert n == -(-num_samples // shard_size)  # ceil
    owners = {}
    for rank in range(world):
        for s in shards_of_rank(n, rank, world):
            assert s not in owners, f'shard {s} owned by ranks {owners[s]} and {rank}'
            owners[s] = rank
            assert s % world == rank  # the documented rule (docs/dataset_format.md)
    assert sorted(owners) == list(range(n))
    indices = [i for s in range(n) for i in writer.shard_range(s, num_samples)]
    assert indices == list(range(num_samples))  # each source index in exactly one shard, in order


def test_shards_of_rank_on_hand_computed_cases():
    assert shards_of_rank(7, 0, 3) == [0, 3, 6] and shards_of_rank(7, 1, 3) == [1, 4]
    assert shards_of_rank(7, 2, 3) == [2, 5] and shards_of_rank(2, 3, 4) == []
    with pytest.raises(ValueError, match='rank 4, world_size 4'):
        shards_of_rank(7, 4, 4)


def _contender(root, start, results, hold):
    import warnings
    warnings.simplefilter('ignore')
    start.wait()
    try:
        ShardedDatasetWriter(shard_size=2).prepare_output(root, HEADER)
        results.put(('won', os.getpid(), ''))
        hold.wait(60)  # keep the lock live while the others try
    except OutputLockedError as err:
        results.put(('refused', os.getpid(), str(err)))
    except BaseException as err:  # any other error fails the test, not the wait
        results.put(('error', os.getpid(), repr(err)))


def test_a_dataset_made_between_the_manifest_look_and_the_emptiness_check_is_no_conflict(tmp_path):
    # the race a contender lost in CI: it saw no manifest, then the lock's new holder wrote manifest.json and
    # shards/, and the emptiness check called the folder 'not a generated dataset' instead of the lock refusing
    (tmp_path / 'manifest.json').write_text('{}')
    (tmp_path / 'shards').mkdir()
    ShardedDatasetWriter._check_empty(str(tmp_path))
    (tmp_path / 'manifest.json').unlink()
    with pytest.raises(OutputConflictError, match='is not empty and has no manifest.json'):
        ShardedDatasetWriter._check_empty(str(tmp_path))


def test_processes_racing_for_a_dead_runs_lock_end_with_one_holder(tmp_path):
    import multiprocessing
    ctx = multiprocessing.get_context('fork')
    for round_ in range(3):
        root = tmp_path / f'r{round_}'
        root.mkdir()
        (root / 'writer.lock').write_text(json.dumps(dict(host='node-b', pid=1, run_id='dead')))
        os.utime(root / 'writer.lock', (time.time() - 1000, time.time() - 1000))
        start, hold, results = ctx.Event(), ctx.Event(), ctx.Queue()
        procs = [ctx.Process(target=_contender, args=(str(root), start, results, hold)) for _ in range(4)]
        for p in procs:
            p.start()
        start.set()
        got = [results.get(timeout=60) for _ in procs]
        hold.set()
        for p in procs:
            p.join(timeout=60)
        winners = [pid for status, pid, _ in got if status == 'won']
        assert len(winners) == 1 and not [g for g in got if g[0] == 'error'], got
        assert all(f'pid {winners[0]}' in msg for status, _, msg in got if status == 'refused'), got
        assert not [n for n in os.listdir(root) if n.startswith('.')]  # no guard or aside file left
