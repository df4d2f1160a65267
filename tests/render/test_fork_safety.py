"""Renderers across fork and pickle, each scenario in a fresh interpreter with a timeout (a hang fails); spawn,
forkserver and DataLoader workers are in test_threads_and_workers.py.

mmengine's dataloader workers default to ``fork``: a child forked after the parent rendered must get its own
context (never the parent's) and must not deadlock in ``glReadPixels`` waiting for llvmpipe threads that were
not forked. Measured on Mesa 22.3.6 llvmpipe; a GPU driver's fork behaviour is not covered here.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name('fork_worker.py')
#: Every test here starts processes: none may hang the suite (the module fixture runs two scenarios of 180 s max).
pytestmark = pytest.mark.timeout(420)


def _run(scenario: str, lp_threads: str | None, timeout: float = 180.0) -> dict:
    env = {k: v for k, v in os.environ.items() if k != 'LP_NUM_THREADS'}
    if lp_threads is not None:
        env['LP_NUM_THREADS'] = lp_threads
    try:
        proc = subprocess.run([sys.executable, str(WORKER), scenario], env=env, capture_output=True, text=True,
                              timeout=timeout, cwd=Path(__file__).parents[2])
    except subprocess.TimeoutExpired as err:
        pytest.fail(f'{scenario} (LP_NUM_THREADS={lp_threads}) hung for {timeout} s: {err.stderr}')
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope='module')
def fork_runs():
    """The ``fork`` scenario (parent renders, pickles, forks a child that forks a grandchild), per llvmpipe mode."""
    return {lp: _run('fork', lp) for lp in (None, '0')}


@pytest.mark.parametrize('lp_threads', [None, '0'], ids=['llvmpipe-threads', 'LP_NUM_THREADS=0'])
def test_forked_child_renders_with_its_own_context(fork_runs, lp_threads):
    res = fork_runs[lp_threads]
    child = res['child']
    assert 'error' not in child, child
    # Same images from the renderers the parent had used and from new ones, on the child's own context.
    assert child['used'] == res['parent'] and child['fresh'] == res['parent']
    assert child['ctx_pid'] == child['pid'] != res['parent_pid']
    assert child['display'] == 'surfaceless'  # the parent's display is left alone
    assert res['parent_after'] == res['parent']


def test_grandchild_with_llvmpipe_threads_gets_a_clear_error_not_a_hang(fork_runs):
    grandchild = fork_runs[None]['child']['grandchild']
    assert grandchild['error'] == 'ForkedContextError'
    assert 'spawn' in grandchild['message'] and "mp_start_method='spawn'" in grandchild['message']


def test_grandchild_without_llvmpipe_threads_renders(fork_runs):
    res = fork_runs['0']
    grandchild = res['child']['grandchild']
    assert 'error' not in grandchild, grandchild
    assert grandchild['used'] == res['parent'] and grandchild['fresh'] == res['parent']
    assert grandchild['ctx_pid'] == grandchild['pid'] != res['child']['pid']


def test_used_renderers_pickle_in_process(fork_runs):
    assert fork_runs[None]['copy'] == fork_runs[None]['parent']
