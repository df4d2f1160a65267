"""tools/generate.py with real processes into one --out: a run SIGKILLed between writing a shard's shard.json and
publishing it, an interrupted copy of a shard, a second run while the first is still writing."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from posedreamer_mm.apis.verify import verify_dataset
from posedreamer_mm.generation.reader import GeneratedDataReader

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / 'configs' / 'demo' / 'render_standin_procedural.py'
ARGS = ['--num-samples', '24', '--no-progress', '--cfg-options', 'crop_size=64']  # 3 shards of 8

KILLED_AT_PUBLICATION = """
import os, signal, sys
sys.path.insert(0, sys.argv[1])
real = os.rename
def rename(src, dst):
    if '.tmp-' in src and os.path.basename(dst) == '000001':  # shard 1, complete in its temporary folder
        print('KILLED with', sorted(os.listdir(src)), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    return real(src, dst)
os.rename = rename
from posedreamer_mm.apis.generate import run_generate
run_generate(sys.argv[2:])
"""


def _env(tmp):
    env = {**os.environ, 'PYTHONPATH': str(ROOT), 'OMP_NUM_THREADS': '1', 'PDM_STANDIN_DIR': str(tmp / 'standin')}
    return {k: v for k, v in env.items() if k not in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK')}


def _stopped(pid: int, timeout: float = 30.0) -> None:
    """Waits until ``pid`` is in the stopped state: ``kill(SIGSTOP)`` returns before the kernel stops a process that
    is running on another core, which may still publish a shard in between."""
    end = time.time() + timeout
    while time.time() < end:
        with open(f'/proc/{pid}/stat') as f:
            if f.read().rsplit(')', 1)[1].split()[0] in ('T', 't'):
                return
        time.sleep(0.01)
    raise AssertionError(f'process {pid} did not stop within {timeout} s of SIGSTOP')


def _writing(out, skip, proc, timeout=300):
    """Waits until ``proc`` has a shard in a temporary folder of its own (not one of ``skip``)."""
    end = time.time() + timeout
    while time.time() < end:
        assert proc.poll() is None, f'the first run ended (rc {proc.returncode}) before it was caught writing'
        names = os.listdir(out / 'shards') if (out / 'shards').is_dir() else []
        if any('.tmp-' in n and 'incomplete' not in n and n not in skip for n in names):
            return
        time.sleep(0.02)
    raise AssertionError('the first run wrote no shard in time')


@pytest.mark.timeout(900)
def test_killed_at_publication_then_a_run_that_a_second_run_cannot_disturb(tmp_path):
    out, env = tmp_path / 'out', _env(tmp_path)
    command = [str(CONFIG), '--out', str(out), *ARGS]
    # 1. SIGKILL after shard 1's shard.json is written, before its folder is published.
    res = subprocess.run([sys.executable, '-c', KILLED_AT_PUBLICATION, str(ROOT), *command], capture_output=True,
                         text=True, env=env, timeout=600)
    assert res.returncode == -signal.SIGKILL, res.stdout[-2000:] + res.stderr[-3000:]
    assert "'labels.npz', 'meta.jsonl', 'shard.json'" in res.stdout
    leftovers = {n for n in os.listdir(out / 'shards') if n.startswith('.')}
    assert [n[:12] for n in leftovers] == ['.000001.tmp-'] and (out / 'writer.lock').is_file()
    # 2. An interrupted copy of shard 0: its folder without shard.json (today: 'Directory not empty' on re-runs).
    shard0 = out / 'shards' / '000000'
    files0 = json.loads((shard0 / 'shard.json').read_text())['files']
    (shard0 / 'shard.json').unlink()
    # 3. Run A: takes over the dead run's lock, regenerates shards 0-2. Stopped (SIGSTOP) while writing a shard.
    log_a = open(tmp_path / 'a.log', 'w+')
    run_a = subprocess.Popen([sys.executable, str(ROOT / 'tools' / 'generate.py'), *command], env=env,
                             stdout=log_a, stderr=subprocess.STDOUT)
    try:
        _writing(out, leftovers, run_a)
        run_a.send_signal(signal.SIGSTOP)
        _stopped(run_a.pid)
        lock = json.loads((out / 'writer.lock').read_text())
        assert lock['pid'] == run_a.pid
        written_by_a = sorted(os.listdir(out / 'shards'))
        # 4. Run B, the same command while A still runs: refused before touching anything.
        res = subprocess.run([sys.executable, str(ROOT / 'tools' / 'generate.py'), *command], capture_output=True,
                             text=True, env=env, timeout=600)
        assert res.returncode != 0
        assert f'output directory {out} is being written by another run' in res.stderr
        assert f"host {socket.gethostname()!r}, pid {run_a.pid}, started {lock['started']}" in res.stderr
        assert 'Wait for that run to finish, stop it, or choose another --out' in res.stderr
        assert sorted(os.listdir(out / 'shards')) == written_by_a
    finally:
        run_a.send_signal(signal.SIGCONT)
    # 5. A completes, intact.
    assert run_a.wait(timeout=600) == 0, (tmp_path / 'a.log').read_text()[-4000:]
    log = (tmp_path / 'a.log').read_text()
    assert f"taking over the stale lock of {out} (its process" in log and 'not running' in log
    assert '000000 has no shard.json' in log
    assert 'rank 0/1: 3 shards owned, 0 already complete' in log
    result = verify_dataset(str(out), progress=False)
    assert result['ok'], [c.problems for c in result['checks']] + result['problems']
    manifest = json.loads((out / 'manifest.json').read_text())
    assert manifest['status'] == 'complete' and len(GeneratedDataReader(out)) == manifest['counts']['written']
    # The regenerated shard 0 has the bytes of the first run's (a sample depends only on its index).
    assert json.loads((shard0 / 'shard.json').read_text())['files'] == files0
    assert not (out / 'writer.lock').exists()  # released at A's exit
    assert not [n for n in os.listdir(out / 'shards') if n.startswith('.')]
