#!/usr/bin/env bash
# Sets up .venv on first use (tools/setup_env.sh, idempotent), then runs the main job on its embedded
# default (no downloads): python tools/demo.py --out outputs/demo. Extra arguments go to tools/demo.py.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/tools/setup_env.sh"
VENV="${PDM_VENV:-$ROOT/.venv}"
cd "$ROOT"
exec "$VENV/bin/python" tools/demo.py "$@"
