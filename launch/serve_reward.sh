#!/usr/bin/env bash
# Serve a reward model on this node for trainers elsewhere. Usage: launch/serve_reward.sh MODEL [--option k=v ...]
#   HOST=0.0.0.0 PORT=8000 launch/serve_reward.sh nvidia/Llama-3.1-Nemotron-70B-Reward-HF
#   NPROC=8 launch/serve_reward.sh nvidia/Llama-3.1-Nemotron-70B-Reward-HF   # ZeRO-3 across 8 GPUs
# Set REWARDBRIDGE_API_KEY to require 'Authorization: Bearer <key>' (always do when HOST is not 127.0.0.1).
set -euo pipefail
MODEL=${1:?usage: launch/serve_reward.sh MODEL [--option key=value ...]}
shift
HOST=${HOST:-127.0.0.1}
PORT=${PORT:-8000}
NPROC=${NPROC:-1}
MAX_BATCH_SIZE=${MAX_BATCH_SIZE:-64}
MAX_WAIT_MS=${MAX_WAIT_MS:-5}

if [ "$NPROC" -gt 1 ]; then
  # Rank 0 serves HTTP; every rank holds a ZeRO-3 shard and scores each batch in lockstep.
  exec torchrun --standalone --nproc_per_node "$NPROC" -m rewardbridge.cli serve "$MODEL" --option zero3=true \
    --host "$HOST" --port "$PORT" --max-batch-size "$MAX_BATCH_SIZE" --max-wait-ms "$MAX_WAIT_MS" "$@"
fi
exec rewardbridge serve "$MODEL" --host "$HOST" --port "$PORT" --max-batch-size "$MAX_BATCH_SIZE" --max-wait-ms "$MAX_WAIT_MS" "$@"
