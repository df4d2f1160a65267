#!/usr/bin/env bash
# Sets up .venv on first use (tools/setup_env.sh, idempotent), then runs the main job on its embedded default (no
# downloads): python tools/demo.py --out outputs/demo -> a real dataset written by the rendering-baseline backend,
# outputs/demo/contact_sheet.png (images with their label skeletons) and coco_keypoints.json. Extra arguments go
# to tools/demo.py (e.g. --num-samples 64 --num-workers 2).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/tools/setup_env.sh"
VENV="${PDM_VENV:-$ROOT/.venv}"
cd "$ROOT"
exec "$VENV/bin/python" tools/demo.py "$@"
