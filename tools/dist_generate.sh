#!/usr/bin/env bash
# Distributed generation with torchrun: bash tools/dist_generate.sh CONFIG GPUS [generate.py args...]
# Rank r writes the shards s with s % world_size == r; any number of ranks writes the same dataset. Without CUDA
# the processes run on the CPU (gloo). NNODES/NODE_RANK/MASTER_ADDR/PORT for multi-node. Slurm: srun ...
# python tools/generate.py CONFIG --launcher slurm.
set -euo pipefail
CONFIG=$1
GPUS=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON=${PYTHON:-python}
PYTHONPATH="$ROOT:${PYTHONPATH:-}" OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} \
"$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" --master_port="$PORT" \
    "$ROOT/tools/generate.py" "$CONFIG" --launcher pytorch "${@:3}"
