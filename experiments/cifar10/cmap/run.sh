#!/usr/bin/env bash
# CMAP on CIFAR-10 (JPEG) with the CPU-distilled consistency model zoo/cifar10-cm-cd-tiny (K = 4 latents, 100
# latent-optimisation iterations: 30 reconstruct too little at 32x32x3, reports/cifar10/cmap/ablation; lambda 3) and
# the shared ResNet-56, under the standard attack ensemble at the reduced strength of the CIFAR-10 purification study
# (l_inf 8/255, steps 20, EOT 4, full-gradient steps 10): BPDA-EOT, full-gradient APGD-CE-EOT and PGD-EOT through the
# unrolled latent optimisation (checkpointed), and the consistency-disruption attack (Zhang et al.), worst case per
# image; 20 fresh evaluation draws. Row vote: the majority vote over the K samples (--votes 1, the paper's classifier).
# Writes reports/cifar10/cmap/vote-n<N>-seeds<S>.{json,md}; resumable (journals in runs/cifar10-cmap/).
# usage: N=16 SEEDS=0 PROCS=2 BATCH=4 experiments/cifar10/cmap/run.sh [vote]
set -euo pipefail
cd "$(dirname "$0")/../../.."
source experiments/lib/eval_row.sh
OUT=reports/cifar10/cmap
mkdir -p "$OUT" runs/cifar10-cmap
N=${N:-16}; SEEDS=${SEEDS:-0}
CM=${CM:-zoo/cifar10-cm-cd-tiny.safetensors}
sfx="-n$N-seeds${SEEDS//,/_}"
rows=("$@"); [ ${#rows[@]} -eq 0 ] && rows=(vote)
for row in "${rows[@]}"; do
  case $row in
    vote) votes=1 ;;
    *) echo "unknown row $row (rows: vote)" >&2; exit 2 ;;
  esac
  echo "== $row $(date +%T)"
  eval_row "$OUT/$row$sfx.md" --dataset cifar10 --data-dir ../shared/data/cifar10-jpeg.tar.gz \
    --classifier resnet56:../shared/models/resnet56-4bfd9763.th \
    --defense "cmap:model=$CM,iterations=100,checkpoint=true" --votes "$votes" \
    --attack "standard:eps=8/255,steps=20,eot=4,full_steps=10" \
    --n "$N" --batch-size "${BATCH:-4}" --seeds "$SEEDS" --no-sanity --no-progress \
    --out "$OUT/$row$sfx.json" --journal "runs/cifar10-cmap/$row$sfx.jsonl"
done
echo "done $(date +%T)"
