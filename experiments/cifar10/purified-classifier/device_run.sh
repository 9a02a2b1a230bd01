#!/usr/bin/env bash
# The fresh-draws recipe with DiffPure's own purifier, on one accelerator (issue 17's clean-accuracy goal).
#
# On the CPU (run.sh train-fresh) fastnet fine-tuned on fresh draws of Tweedie's one-step estimate at t* = 0.1 gains
# 5.0 +- 2.9 points on unseen Tweedie-purified test images (loss 5.0 points) but nothing under DiffPure's 100-step
# reverse SDE (-0.8 +- 2.7): what it learns is tied to the purifier it saw. Training on DiffPure's own outputs (100
# reverse-SDE steps per purified image, fresh draws every step) is 100x the purification cost, about 7 hours per
# epoch on one CPU thread; on an accelerator it is minutes. This script runs it:
#   advpure train classifier --init zoo/cifar10-fastnet --purify-aug "diffpure:...,t=0.1,steps=100" --purify-frac 0.5
#   (3 epochs, the settings of run.sh train-fresh), writing the classifier and its sidecar to $OUT.
# Then, here: .venv/bin/python experiments/cifar10/purification-model/study.py ... --classifier NAME=$OUT/... (the
# 500-image study of run.sh study-fresh) and, if it meets the goal, run.sh's attacked row on it.
#
# Prepare once here: .venv/bin/python benchmarks/device_prepare.py (the data to runs/device/, the diffusers wheel to
# .whl/). Run there with the device tool: carry [".whl", "runs/device/cifar10-jpeg.tar.gz"], timeout_s 590, command
#   bash experiments/cifar10/purified-classifier/device_run.sh
# The trainer is stopped at LIMIT seconds (default 500); a resume file is written after each epoch into $OUT.
# CPU check (the test runs it; PY picks the interpreter): OUT=/tmp/x DEVICE=cpu SMOKE=1 bash experiments/cifar10/purified-classifier/device_run.sh
set -euo pipefail
cd "$(dirname "$0")/../../.."
source experiments/cifar10/purified-classifier/recipe.sh
OUT=${OUT:?set OUT to the output folder (the device tool sets it)}
DEVICE=${DEVICE:-cuda}
STEPS=${STEPS:-100}
LIMIT=${LIMIT:-500}
DATA=${DATA:-runs/device/cifar10-jpeg.tar.gz}
[ -f "$DATA" ] || DATA=../shared/data/cifar10-jpeg.tar.gz
extra=()
if [ -n "${SMOKE:-}" ]; then STEPS=2; extra=(--epochs 1 --batch-size 16 --train-subset 32); fi
if [ -n "${PY:-}" ]; then :
elif [ -x .venv/bin/python ]; then
  PY=.venv/bin/python
else  # the device machine: torch is installed, advpure runs from src/, diffusers from the prepared wheel
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:src ADVPURE_CACHE=/tmp/advpure-cache
  PY=python3
  nvidia-smi -L || true
fi
mkdir -p "$OUT"
start=$(date +%s)
PYTHONUNBUFFERED=1 timeout "$LIMIT" "$PY" -m advpure.cli train classifier --dataset cifar10 --data-dir "$DATA" \
  --device "$DEVICE" "${FT_OPTS[@]}" "${extra[@]}" \
  --purify-aug "diffpure:model=zoo/cifar10-purify-t0.2.safetensors,t=0.1,steps=$STEPS" --purify-frac 0.5 \
  --out "$OUT/cifar10-fastnet-diffpure$STEPS.safetensors" \
  2>&1 | tr '\r' '\n' | grep -v '^\s*$' | awk 'NR % 25 == 1 || /train loss|saved|Error|error/'
echo "device_run: $(( $(date +%s) - start )) s"
