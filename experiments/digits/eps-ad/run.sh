#!/usr/bin/env bash
# EPS-AD on digits (Zhang et al. 2023): EPS deep kernel trained with the corrected deep-kernel formula, AUROC and
# TPR at 5% FPR per attack and budget on 200 test images. Writes reports/digits/eps-ad/.
set -euo pipefail
cd "$(dirname "$0")/../../.."
OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} .venv/bin/advpure eps-ad --dataset digits --classifier zoo/digits-small-cnn.safetensors \
  --eps 0.02,0.05,0.1,0.2,0.3 --l2-eps 0.5,1.0,2.0 --threads 1 --out reports/digits/eps-ad
