#!/usr/bin/env bash
# Multi-GPU (or multi-process CPU) evaluation with torchrun, MMSeg style:
#   bash tools/dist_test.sh CONFIG NUM_PROCS [tools/test.py options...]
CONFIG=$1
NPROC=$2
shift 2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
PYTHONPATH="$(dirname "$0")/..":${PYTHONPATH:-} \
torchrun --nnodes="$NNODES" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$NPROC" --master_port="$PORT" \
    "$(dirname "$0")/test.py" "$CONFIG" --launcher pytorch "$@"
