"""Mutation loop: mutmut 2.5's own mutant generator, a forking test runner with the heavy imports done once.

Each mutant: the mutated source is written to the worktree file (as `mutmut run` does), a child forked from a
parent that has imported only third-party packages (and posedreamer_mm's root for its compat fixes) runs
pytest.main on the selected tests, importing the project's modules fresh from disk; the file is restored after.

A development tool (docs/testing.md, "Mutation testing"): mutmut 2.5 is not a project requirement; install it into
the virtualenv to use this. Run it in a scratch git worktree, never in a checkout with uncommitted work.

usage: python tools/misc/mutation_loop.py ROOT REL_FILE OUT.json [--only i,j] [--lines a-b,c] -- <pytest args>
(results are appended to OUT.json, so an interrupted run resumes; MUT_TIMEOUT seconds per mutant, default 240)
"""
import json
import os
import signal
import sys
import time

sys.dont_write_bytecode = True
os.environ.setdefault('OMP_NUM_THREADS', '1')
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')

argv = sys.argv[1:]
sep = argv.index('--')
opts, pytest_args = argv[:sep], argv[sep + 1:]
root, rel, out = opts[0], opts[1], opts[2]
only = None
if '--only' in opts:
    only = {int(i) for i in opts[opts.index('--only') + 1].split(',')}
lines = None
if '--lines' in opts:
    lines = set()
    for part in opts[opts.index('--lines') + 1].split(','):
        a, _, b = part.partition('-')
        lines.update(range(int(a), int(b or a) + 1))
timeout = float(os.environ.get('MUT_TIMEOUT', '240'))

os.chdir(root)
sys.path.insert(0, root)
from mutmut import ALL, Context, list_mutations, mutate  # noqa: E402

path = os.path.join(root, rel)
with open(path) as f:
    original = f.read()
ids = list_mutations(Context(source=original, filename=rel, mutation_id=ALL))
print(f'{len(ids)} mutants of {rel}', flush=True)

# Warm imports: the package root first (its compat fixes must precede mmpose/mmdet/mmpretrain), then third party.
import posedreamer_mm  # noqa: E402,F401

for name in ('numpy', 'scipy.sparse', 'torch', 'torch.nn.functional', 'pytest', 'mmengine', 'mmengine.dataset',
             'mmengine.runner', 'mmcv', 'mmcv.transforms', 'mmpose', 'mmpose.datasets', 'mmpose.models',
             'mmpretrain', 'mmdet', 'mmdet.models', 'diffusers', 'diffusers.training_utils', 'transformers', 'peft',
             'torchmetrics', 'torchmetrics.image', 'cv2', 'smplx'):
    try:
        __import__(name)
    except Exception as err:  # noqa: BLE001
        print(f'preimport {name}: {err!r}', flush=True)
modname = rel[:-3].replace('/', '.')
assert modname not in sys.modules, f'{modname} imported by the parent'
print('parent imports done', flush=True)


def pyc_clear():
    d = os.path.join(os.path.dirname(path), '__pycache__')
    base = os.path.basename(path)[:-3]
    if os.path.isdir(d):
        for n in os.listdir(d):
            if n.startswith(base + '.'):
                os.remove(os.path.join(d, n))


def run_tests():
    t0 = time.time()
    pid = os.fork()
    if pid == 0:
        os.setpgid(0, 0)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        try:
            import pytest
            rc = pytest.main(list(pytest_args))
        except BaseException:  # noqa: BLE001
            rc = 99
        os._exit(int(rc))
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status), time.time() - t0
        if time.time() - t0 > timeout:
            os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return 'timeout', time.time() - t0
        time.sleep(0.05)


results = {}
if os.path.exists(out):
    with open(out) as f:
        results = json.load(f)
try:
    pyc_clear()
    if 'baseline' not in results:
        rc, dt = run_tests()
        print(f'baseline rc={rc} {dt:.1f}s', flush=True)
        assert rc == 0, 'the tests fail without a mutation'
        results['baseline'] = dt
    for k, mid in enumerate(ids, 1):
        if (only is not None and k not in only) or (only is None and str(k) in results):
            continue
        if lines is not None and mid.line_number + 1 not in lines:
            continue
        mutated, n = mutate(Context(source=original, filename=rel, mutation_id=mid))
        assert n == 1
        with open(path, 'w') as f:
            f.write(mutated)
        pyc_clear()
        rc, dt = run_tests()
        with open(path, 'w') as f:
            f.write(original)
        status = 'timeout' if rc == 'timeout' else ('survived' if rc == 0 else 'killed')
        new_lines = [ln for ln in mutated.split('\n') if ln not in original.split('\n')]
        results[str(k)] = dict(status=status, line_number=mid.line_number + 1, line=mid.line.strip(),
                               mutated=' | '.join(x.strip() for x in new_lines), seconds=round(dt, 1), rc=rc)
        print(f'{k}/{len(ids)} {status} {dt:.1f}s L{mid.line_number + 1}: {results[str(k)]["mutated"][:100]}',
              flush=True)
        with open(out, 'w') as f:
            json.dump(results, f, indent=1)
finally:
    with open(path, 'w') as f:
        f.write(original)
    pyc_clear()
    with open(out, 'w') as f:
        json.dump(results, f, indent=1)
counts = {}
for k, v in results.items():
    if k != 'baseline':
        counts[v['status']] = counts.get(v['status'], 0) + 1
print('counts', counts, flush=True)
