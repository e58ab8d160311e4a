#!/usr/bin/env bash
# N processes of `neuromas train` under the deepspeed launcher: one node, or the hosts of a hostfile.
#
#   launch/deepspeed.sh NPROC RECIPE [key=value ...] [--deepspeed CONFIG]
#
# One node:     launch/deepspeed.sh 8 recipes/growth/grow-1-3-7.yaml train.questions_per_step=16 --deepspeed zero2
# Several nodes (from the first node; passwordless ssh to every host, same paths everywhere):
#               HOSTFILE=launch/hostfile.example launch/deepspeed.sh 8 recipes/growth/grow-1-3-7.yaml train.questions_per_step=16
# A hostfile line is "hostname slots=N"; with HOSTFILE, NPROC is the processes per host.
set -euo pipefail
if [[ $# -lt 2 ]]; then
    echo "usage: launch/deepspeed.sh NPROC RECIPE [key=value ...]" >&2
    exit 2
fi
nproc=$1
shift
if [[ -n "${HOSTFILE:-}" ]]; then
    hosts=(--hostfile "$HOSTFILE" --num_gpus "$nproc" --master_port "${MASTER_PORT:-29500}")
else
    hosts=(--num_gpus "$nproc" --master_port "${MASTER_PORT:-$("${PYTHON:-python3}" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}")
fi
# A bad recipe fails here, in one line, rather than once per process.
hosts_count=1
if [[ -n "${HOSTFILE:-}" ]]; then
    hosts_count=$(grep -cvE '^[[:space:]]*(#|$)' "$HOSTFILE")
fi
"${PYTHON:-python3}" -m neuromas train --dry-run --processes $((nproc * hosts_count)) "$@"
exec deepspeed "${hosts[@]}" --no_local_rank --module neuromas train "$@"
