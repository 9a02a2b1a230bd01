#!/usr/bin/env bash
# DAD on digits under every attack advpure has for it (batch mode, 3 seeds x 150 test images, batches of 50), with the
# zoo kernel/denoiser trained with the deep kernel of Liu et al. (2020) Eq. 5. Writes reports/digits/dad/.
set -euo pipefail
cd "$(dirname "$0")/../../.."
mkdir -p reports/digits/dad
OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} .venv/bin/advpure dad-attacks --dataset digits --classifier zoo/digits-small-cnn.safetensors \
  --kernel zoo/digits-dad-kernel.safetensors --denoiser zoo/digits-dad-denoiser.safetensors \
  --attacks none,pgd-oblivious,dad-adaptive,detector-aware,dad-denoiser --margin 0.5 --threads 1 \
  --out reports/digits/dad
