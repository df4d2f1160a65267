#!/usr/bin/env bash
# One-command GPU check (issue 20): under 8 minutes on one H100, nothing downloaded.
#
#   benchmarks/gpu_check.sh [--out DIR] [--budget SECONDS]     # on a GPU machine
#   benchmarks/gpu_check.sh --cpu-smoke                         # tiny sizes on CPU: checks every step runs
#
# Steps, each under its own time limit, in this order:
#   1. the CPU-vs-GPU render agreement test (tests/render/test_gpu_agreement.py, marked gpu);
#   2. the render benchmark on the GPU's EGL device (benchmarks/bench_render.py --device-index cuda:0);
#   3. the ViT-L HMR train step from its config, bf16 AMP (benchmarks/bench_hmr_train_step.py, samples/s);
#   4. full-size SD1.5- and SDXL-ControlNet with random weights through the backends, eager and torch.compile
#      (benchmarks/bench_diffusion.py: images/s, s/step, fraction of time the denoiser is busy); a compiled run
#      that would end after the budget (--budget, default 470 s) is skipped and says so: SDXL's compile alone took
#      182 s on an H100, so pass --budget 700 to be sure to get it.
# Prints the card and writes DIR/figures.md (card, date, each step's figures and status), DIR/figures.json (the
# benchmarks' records) and one log per step. Copy the figures into docs/performance.md with the card's name.
set -uo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python
SMOKE=0
OUT=outputs/gpu_check
BUDGET=470
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu-smoke) SMOKE=1 ;;
    --out) OUT=$2; shift ;;
    --budget) BUDGET=$2; shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[ "$SMOKE" = 1 ] && OUT=${OUT%/}_cpu_smoke
mkdir -p "$OUT"
FIG=$OUT/figures.md
JSON=$OUT/figures.json
rm -f "$JSON"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 EGL_PLATFORM=${EGL_PLATFORM:-surfaceless}
START=$(date +%s)

if [ "$SMOKE" = 1 ]; then
  CARD="CPU smoke run ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'))"
else
  CARD=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1)
  [ -n "$CARD" ] || CARD=$("$PY" -c 'import torch; print(torch.cuda.get_device_name(0))' 2>/dev/null)
  if [ -z "$CARD" ]; then
    echo "no CUDA device found (nvidia-smi and torch see none); use --cpu-smoke to check the steps on CPU" >&2
    exit 2
  fi
fi
echo "card: $CARD"
{
  echo "# GPU check figures"
  echo
  echo "- card: $CARD"
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'), host $(hostname), commit $(git rev-parse --short HEAD 2>/dev/null)"
  echo "- torch: $("$PY" -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda)' 2>/dev/null)"
  echo
} > "$FIG"

FAILED=0
# step NAME LIMIT_S GREP_PATTERN CMD...: runs CMD under LIMIT_S, logs it, puts the lines matching GREP_PATTERN
# (the figures) and the exit status into figures.md.
step() {
  local name=$1 limit=$2 pattern=$3 rc
  shift 3
  local used=$(( $(date +%s) - START ))
  echo "== $name (limit ${limit}s, ${used}s used) =="
  timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  grep -E "$pattern" "$OUT/$name.log"
  {
    echo "## $name"
    echo
    echo '```'
    grep -E "$pattern" "$OUT/$name.log"
    echo '```'
    case $rc in
      0) echo "status: ok" ;;
      124|137) echo "status: TIMED OUT after ${limit}s (log: $OUT/$name.log)"; FAILED=1 ;;
      *) echo "status: FAILED, exit $rc (log: $OUT/$name.log)"; FAILED=1 ;;
    esac
    echo
  } >> "$FIG"
  [ $rc = 0 ] || echo "   -> exit $rc, see $OUT/$name.log"
}

remaining() { echo $(( BUDGET - ($(date +%s) - START) )); }

if [ "$SMOKE" = 1 ]; then
  step render_agreement 120 'passed|skipped|failed|SKIPPED' \
    "$PY" -m pytest tests/render/test_gpu_agreement.py -q -rs -p no:cacheprovider
  step render_bench 180 'renders/s|GL:|device' "$PY" benchmarks/bench_render.py --sizes 128 --seconds 0.2
  step hmr_train_step 300 'samples/s' "$PY" benchmarks/bench_hmr_train_step.py --cpu-smoke --out "$JSON"
  step diffusion 600 'images/s|skipped|device:' "$PY" benchmarks/bench_diffusion.py --cpu-smoke --out "$JSON"
else
  step render_agreement 90 'passed|skipped|failed|SKIPPED' \
    "$PY" -m pytest tests/render/test_gpu_agreement.py -q -rs -p no:cacheprovider
  # cuda:0 needs the driver's EGL_NV_device_cuda; without it, every EGL device (the GPU ones after device 0).
  step render_bench 120 'renders/s|GL:|device|---' bash -c "$PY benchmarks/bench_render.py --device-index cuda:0 \
    --seconds 1 || $PY benchmarks/bench_render.py --seconds 1"
  step hmr_train_step 90 'samples/s' "$PY" benchmarks/bench_hmr_train_step.py --batch 64 --steps 20 --out "$JSON"
  LEFT=$(remaining)
  step diffusion "$LEFT" 'images/s|skipped|device:' \
    "$PY" benchmarks/bench_diffusion.py --out "$JSON" --deadline-s "$(( LEFT - 20 ))"
fi

TOTAL=$(( $(date +%s) - START ))
echo "total: ${TOTAL}s (budget ${BUDGET}s)" | tee -a "$FIG"
echo "figures: $FIG ($JSON); logs in $OUT/"
exit $FAILED
