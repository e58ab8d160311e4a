#!/usr/bin/env bash
# N processes of `neuromas train` under torchrun: one node, or (with NNODES) one of several.
#
#   launch/torchrun.sh NPROC RECIPE [key=value ...] [--deepspeed CONFIG]
#
# One node:     launch/torchrun.sh 8 recipes/growth/grow-1-3-7.yaml train.questions_per_step=16
# Several nodes (run the same line on every node; MASTER_ADDR is the first node):
#               NNODES=2 MASTER_ADDR=node0 launch/torchrun.sh 8 recipes/growth/grow-1-3-7.yaml train.questions_per_step=16
# Each process takes one GPU (by LOCAL_RANK), or shares the CPU (gloo) when there is none.
set -euo pipefail
if [[ $# -lt 2 ]]; then
    echo "usage: launch/torchrun.sh NPROC RECIPE [key=value ...]" >&2
    exit 2
fi
nproc=$1
shift
if [[ "${NNODES:-1}" -gt 1 ]]; then
    : "${MASTER_ADDR:?set MASTER_ADDR to the address of the first node}"
    rendezvous=(--nnodes "$NNODES" --rdzv_backend c10d --rdzv_endpoint "$MASTER_ADDR:${MASTER_PORT:-29500}"
                --rdzv_id "${RUN_ID:-neuromas}")
else
    rendezvous=(--standalone)
fi
# A bad recipe fails here, in one line, rather than once per process.
"${PYTHON:-python3}" -m neuromas train --dry-run --processes $((nproc * ${NNODES:-1})) "$@"
exec torchrun "${rendezvous[@]}" --nproc_per_node "$nproc" -m neuromas train "$@"
