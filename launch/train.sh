#!/usr/bin/env bash
# Launch a recipe on one machine with a named accelerate config.
#   launch/train.sh RECIPE [--set key=value ...] [--resume]
#   CONFIG=ddp NPROC=8 launch/train.sh recipes/nemotron8b_lora.yaml
#   CONFIG=zero3 NPROC=8 launch/train.sh recipes/nemotron8b_grpo.yaml --set training.max_steps=10
# CONFIG: a name in configs/accelerate/ (single, ddp, zero2, zero3, zero3_offload) or a file.
set -euo pipefail
RECIPE=${1:?usage: launch/train.sh RECIPE [--set key=value ...] [--resume]}
shift
CONFIG=${CONFIG:-zero3}
NPROC=${NPROC:-8}
[[ -f $CONFIG ]] || CONFIG=configs/accelerate/${CONFIG}.yaml

accelerate launch --config_file "$CONFIG" --num_processes "$NPROC" -m rewardbridge.cli train "$RECIPE" "$@"
