"""A user error ends a tool with its message and exit status 1, not a Python traceback (PDM_TRACEBACK=1 shows it)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from posedreamer_mm.apis.errors import run_tool
from posedreamer_mm.apis.overrides import ConfigError
from posedreamer_mm.generation.writer import OutputLockedError

ROOT = Path(__file__).resolve().parents[2]
DEMO = str(ROOT / 'configs' / 'demo' / 'render_standin_procedural.py')


def test_a_tool_ends_a_bad_override_with_one_line(tmp_path):
    res = subprocess.run([sys.executable, str(ROOT / 'tools' / 'generate.py'), DEMO, '--out', str(tmp_path / 'out'),
                          '--cfg-options', 'sed=3'], capture_output=True, text=True, timeout=300,
                         env={**os.environ, 'PYTHONPATH': str(ROOT)})
    assert res.returncode == 1 and 'Traceback' not in res.stderr, res.stderr[-2000:]
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ConfigError: --cfg-options sed: ") and "did you mean ['seed']" in last, last
    assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('error', [ConfigError('bad key x'), OutputLockedError('out is held by host h pid 1')])
def test_run_tool_prints_a_user_error_and_exits_1(error, capsys, monkeypatch):
    monkeypatch.delenv('PDM_TRACEBACK', raising=False)

    def main():
        raise error
    with pytest.raises(SystemExit) as info:
        run_tool(main)
    assert info.value.code == 1
    assert capsys.readouterr().err == f'error: {type(error).__name__}: {error}\n'


def test_pdm_traceback_reraises_and_other_errors_keep_their_traceback(monkeypatch):
    def bad_config():
        raise ConfigError('bad key x')

    def bug():
        raise ZeroDivisionError('a bug')
    monkeypatch.setenv('PDM_TRACEBACK', '1')
    with pytest.raises(ConfigError, match='bad key x'):
        run_tool(bad_config)
    monkeypatch.delenv('PDM_TRACEBACK')
    with pytest.raises(ZeroDivisionError):
        run_tool(bug)
    assert run_tool(lambda: 7) == 7
