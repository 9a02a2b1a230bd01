#!/usr/bin/env bash
# CIFAR-10 (JPEG) CMAP experiments with the CPU-trained consistency model (distilled from zoo/cifar10-ddpm-tiny).
# usage: reports/cifar10/cmap/run.sh JOB...   (jobs in the case statement; outputs in reports/cifar10/cmap/JOB/)
# THREADS (default 1) sets OMP_NUM_THREADS; N (default 16) the number of test images.
set -u
cd "$(dirname "$0")/../../.."
export OMP_NUM_THREADS=${THREADS:-1}
A=.venv/bin/advpure
CM=${CM:-zoo/cifar10-cm-cd-tiny.safetensors}
T=${T:-zoo/cifar10-ddpm-tiny-t0.2.safetensors}
D=${D:-../shared/data/cifar10-jpeg.tar.gz}
R56=resnet56:../shared/models/resnet56-4bfd9763.th
O=reports/cifar10/cmap
N=${N:-16}
C="--dataset cifar10 --data-dir $D --model $CM --classifier $R56 --eps 8/255 --seed 0"
run() {  # name, then cmap-ablation options
  local name=$1; shift
  echo "== $name $(date +%T)"
  $A cmap-ablation $C "$@" --out $O/$name > $O/$name.log 2>&1; echo "   rc=$? $(date +%T)"
}
IT=${IT:-100}  # latent-optimisation iterations on CIFAR-10 (digits default 30 reconstructs too little here)
for job in "$@"; do case $job in
  ablation) run ablation --n $N --k 4 --curve-iterations 150 --every 25 --iterations $IT --ks 1,2,4 ;;
  attacks) run attacks --attacks --n $N --iterations $IT --parts cmap,diffpure --teacher $T --steps 3 --eot 2 \
             --full-steps 3 --disruption-steps 10 --diffpure-t 0.1 --diffpure-steps 20 ;;
  full) run full --attacks --n 8 --iterations $IT --parts full --full-steps 2 --eot 1 ;;
  cost) echo "== cost $(date +%T)"; .venv/bin/python benchmarks/cmap_cost.py --dataset cifar10 --data-dir $D --cm $CM \
          --ddpm $T --n $N --iterations $IT --reps 1 > $O/cost.txt 2>&1; echo "   rc=$?" ;;
  checks) echo "== checks $(date +%T)"; .venv/bin/python reports/scripts/cifar10_cm_checks.py $D > $O/checks.log 2>&1
          echo "   rc=$?" ;;
  *) echo "unknown job $job"; exit 2 ;;
esac; done
