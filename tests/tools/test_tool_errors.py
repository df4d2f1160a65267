"""A user error ends a tool with its message and exit status 1, not a Python traceback (PDM_TRACEBACK=1 shows it)."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEMO = str(ROOT / 'configs' / 'demo' / 'render_standin_procedural.py')


def _run(tool, *args, **env):
    return subprocess.run([sys.executable, str(ROOT / 'tools' / tool), *map(str, args)], capture_output=True,
                          text=True, timeout=300, env={**os.environ, 'PYTHONPATH': str(ROOT), **env})


@pytest.mark.parametrize('tool, args, message', [
    ('generate.py', [DEMO, '--cfg-options', 'sed=3'], "error: ConfigError: --cfg-options sed: .* did you mean"),
    ('train.py', [DEMO.replace('render_standin_procedural', 'nothing_here')], 'error: ConfigError: Config file not'),
    ('export_coco.py', ['{tmp}/nothing_here'], r'error: OutputConflictError: .*nothing_here is not a generated'),
])
def test_a_user_error_is_one_message_without_a_traceback(tool, args, message, tmp_path):
    args = [a.replace('{tmp}', str(tmp_path)) for a in args]
    res = _run(tool, *args)
    assert res.returncode == 1, res.stderr[-2000:]
    assert 'Traceback' not in res.stderr, res.stderr[-2000:]
    assert re.search(message, res.stderr.strip().splitlines()[-1]), res.stderr[-2000:]  # the last line says it
    assert not (tmp_path / 'out').exists()


def test_pdm_traceback_shows_the_traceback():
    res = _run('generate.py', DEMO, '--cfg-options', 'sed=3', PDM_TRACEBACK='1')
    assert res.returncode == 1 and 'Traceback' in res.stderr and 'ConfigError' in res.stderr
