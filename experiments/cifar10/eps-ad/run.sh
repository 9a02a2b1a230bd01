#!/usr/bin/env bash
# EPS-AD on CIFAR-10 (JPEG) (Zhang et al. 2023) with the corrected deep kernel (Liu et al. 2020 Eq. 5), the shared
# ResNet-56 and the project's purification model zoo/cifar10-purify-t0.2 for the EPS: kernel trained on PGD 4/255
# (200 train images, 100 epochs), 200 reference and 200 calibration images, AUROC and TPR at 5% FPR per attack and
# budget on 100 clean + 100 attacked test images. Writes reports/cifar10/eps-ad/ (the table: eps-ad.md).
set -euo pipefail
cd "$(dirname "$0")/../../.."
mkdir -p reports/cifar10/eps-ad
OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} .venv/bin/advpure eps-ad --dataset cifar10 --data-dir ../shared/data/cifar10-jpeg.tar.gz \
  --classifier resnet56:../shared/models/resnet56-4bfd9763.th --model zoo/cifar10-purify-t0.2.safetensors \
  --train-eps 4/255 --n-train 200 --n-ref 200 --n-calib 200 --n-test 100 --epochs 100 --eps 2/255,4/255,8/255 \
  --l2-eps 0.5 --threads 1 --out reports/cifar10/eps-ad > reports/cifar10/eps-ad/eps-ad.md
