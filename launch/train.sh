#!/usr/bin/env bash
# Launch a recipe on one machine. Usage: launch/train.sh RECIPE [--set key=value ...]
#   CONFIG=configs/accelerate/ddp.yaml NPROC=4 launch/train.sh recipes/quickstart.yaml
set -euo pipefail
RECIPE=${1:?usage: launch/train.sh RECIPE [--set key=value ...]}
shift
CONFIG=${CONFIG:-configs/accelerate/zero3.yaml}
NPROC=${NPROC:-8}

accelerate launch --config_file "$CONFIG" --num_processes "$NPROC" -m rewardbridge.cli train "$RECIPE" "$@"
