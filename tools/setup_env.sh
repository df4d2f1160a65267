#!/usr/bin/env bash
# Creates (or refreshes) the project's virtual environment in .venv, idempotently.
#
# Re-running is cheap: a stamp holding the hash of requirements/*.txt and setup.py skips everything when
# nothing changed. Set PDM_VENV to put the environment elsewhere, PDM_PYTHON to choose the interpreter.
# Needs: python3.11 with venv, gcc (xtcocotools builds from source), and Mesa's EGL libraries for headless
# rendering (installed through apt-get when run as root and missing).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${PDM_VENV:-$ROOT/.venv}"
PY="${PDM_PYTHON:-python3}"
STAMP="$VENV/.posedreamer_mm_stamp"
HASH="$(cat "$ROOT"/requirements/*.txt "$ROOT/setup.py" "$ROOT/tools/setup_env.sh" | sha256sum | cut -d' ' -f1)"

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$HASH" ]]; then
  exit 0
fi
start=$(date +%s)
log() { echo "[setup_env] $*" >&2; }

# --- system libraries for headless OpenGL (EGL + Mesa's software/hardware drivers) --------------------------
need_apt=()
ldconfig -p | grep -q 'libEGL.so.1 ' || need_apt+=(libegl1)
ldconfig -p | grep -q 'libEGL_mesa.so.0' || need_apt+=(libegl-mesa0)
ls /usr/lib/*/dri/swrast_dri.so >/dev/null 2>&1 || need_apt+=(libgl1-mesa-dri)
ldconfig -p | grep -q 'libglib-2.0.so.0' || need_apt+=(libglib2.0-0)
if (( ${#need_apt[@]} )); then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    log "apt-get install ${need_apt[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    log "WARNING: missing system libraries ${need_apt[*]} (needed for headless rendering); install them with" \
        "your package manager (Debian/Ubuntu: apt-get install ${need_apt[*]})."
  fi
fi

# --- python environment ------------------------------------------------------------------------------------
if [[ ! -x "$VENV/bin/python" ]]; then
  log "creating $VENV"
  "$PY" -m venv "$VENV"
fi
PIP=(pip_install)
pip_install() {
  # Drops pip's "Location ... is ignored" noise (from a local index config some machines carry), keeps errors.
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q -c "$ROOT/requirements/constraints.txt" "$@" \
    2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
}
log "torch + torchvision"
"${PIP[@]}" -r "$ROOT/requirements/torch.txt"
log "build tools"
"${PIP[@]}" "setuptools<81" wheel cython numpy
log "xtcocotools (from source: the wheel is built against numpy 1)"
"${PIP[@]}" --no-binary xtcocotools --no-build-isolation xtcocotools
log "OpenMMLab stack, runtime and test requirements"
"${PIP[@]}" -r "$ROOT/requirements/openmmlab.txt" -r "$ROOT/requirements/runtime.txt" \
  -r "$ROOT/requirements/diffusion.txt" -r "$ROOT/requirements/tests.txt"
log "packages installed without their declared dependencies"
"${PIP[@]}" --no-deps -r "$ROOT/requirements/nodeps.txt"
log "mediapipe extra (offline pose scorer): the wheel without its declared deps, then what it imports"
MP_WHEEL="$(grep -E '^mediapipe==' "$ROOT/requirements/mediapipe.txt")"
"${PIP[@]}" --no-deps "$MP_WHEEL"
# pip then lists mediapipe's unmet declared deps (jax, numpy<2, ...) as conflicts: expected, filtered out.
"${PIP[@]}" -r <(grep -vE '^mediapipe==' "$ROOT/requirements/mediapipe.txt") \
  2> >(grep -vE "^(ERROR: pip's dependency resolver does not currently|mediapipe [0-9.]+ requires )" >&2)
# protobuf<5 (mediapipe) breaks sentencepiece >= 0.2.1 ("cannot import name 'runtime_version'"): pin the last
# compatible release if anything pulled sentencepiece in.
if "$VENV/bin/python" -m pip show -q sentencepiece >/dev/null 2>&1; then
  "${PIP[@]}" "sentencepiece==0.2.0"
fi
log "posedreamer_mm (editable)"
"${PIP[@]}" --no-deps --no-build-isolation -e "$ROOT"
"$VENV/bin/python" -c "import posedreamer_mm, mmpose.models, mmdet.models, mmpretrain.models, transformers, \
diffusers, peft, mediapipe.python.solutions.pose"
echo "$HASH" > "$STAMP"
log "done in $(( $(date +%s) - start )) s"
