#!/usr/bin/env bash
# Sets up .venv on first use (tools/setup_env.sh, idempotent), then runs the test suite.
# Extra arguments go to pytest, e.g. `bash tools/run_tests.sh tests/body -x` or `--run-slow`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/tools/setup_env.sh"
VENV="${PDM_VENV:-$ROOT/.venv}"
cd "$ROOT"
exec "$VENV/bin/python" -m pytest "$@"
