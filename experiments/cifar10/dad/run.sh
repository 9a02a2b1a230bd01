#!/usr/bin/env bash
# DAD on CIFAR-10 (JPEG), shared ResNet-56, kernel and denoiser trained with the corrected deep kernel
# (Liu et al. 2020, Eq. 5): every attack advpure has for DAD, batch and per-sample mode, test-split reference,
# 3 seeds x 100 test images, batches of 50. Writes reports/cifar10/dad/dad-attacks-{batch,sample}-mode/.
# `run.sh train-reference`: the same in batch mode with the reference drawn from 200 training images (clean, oblivious
# and the authors' adaptive attack), reports/cifar10/dad/dad-attacks-train-reference/.
# The kernel and denoiser: see `train` below (reports/cifar10/mmd-opt-kernel-resnet56.*, reports/cifar10/dad/).
set -euo pipefail
cd "$(dirname "$0")/../../.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
D=../shared/data/cifar10-jpeg.tar.gz
C=resnet56:../shared/models/resnet56-4bfd9763.th
K=reports/cifar10/mmd-opt-kernel-resnet56.safetensors
N=reports/cifar10/dad/dad-denoiser-resnet56.safetensors
if [ "${1:-}" = train ]; then
  .venv/bin/advpure train kernel --dataset cifar10 --data-dir $D --classifier $C --out $K --threads 1
  .venv/bin/advpure train denoiser --dataset cifar10 --data-dir $D --classifier $C --kernel $K --out $N \
    --n-adv 1000 --epochs 20 --n-test 500 --threads 1
  exit 0
fi
if [ "${1:-}" = train-reference ]; then  # the reference drawn from 200 training images instead (batch mode)
  .venv/bin/advpure dad-attacks --dataset cifar10 --data-dir $D --classifier $C --kernel $K --denoiser $N --eps 8/255 \
    --n 100 --batch-size 50 --seeds 0,1,2 --steps 10 --eot 2 --reference-split train --mode batch \
    --attacks none,pgd-oblivious,dad-adaptive --threads 1 --out reports/cifar10/dad/dad-attacks-train-reference
  exit 0
fi
for mode in batch sample; do
  .venv/bin/advpure dad-attacks --dataset cifar10 --data-dir $D --classifier $C --kernel $K --denoiser $N --eps 8/255 \
    --n 100 --batch-size 50 --seeds 0,1,2 --steps 10 --eot 2 --reference-split test --mode $mode \
    --attacks none,pgd-oblivious,dad-adaptive,detector-aware,dad-denoiser --threads 1 \
    --out reports/cifar10/dad/dad-attacks-$mode-mode
done
