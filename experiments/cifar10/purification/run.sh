#!/usr/bin/env bash
# DiffPure / SSNI on CIFAR-10 (JPEG) with the project's t <= 0.2 model and the shared ResNet-56, under the standard
# attack ensemble (steps 20, EOT 4, full-gradient steps 10), l_inf 8/255, 20 evaluation draws. CPU-sized: N images
# (default 16) x SEEDS (default 0); 64 x 3 is the target on a faster machine. Writes reports/cifar10/purification/.
# usage: N=16 SEEDS=0 experiments/cifar10/purification/run.sh [ROW...]   rows: diffpure ssni-n ssni-l
set -euo pipefail
cd "$(dirname "$0")/../../.."
OUT=reports/cifar10/purification
mkdir -p "$OUT" runs/cifar10-purification
M=zoo/cifar10-ddpm-tiny-t0.2.safetensors
D="model=$M,t=0.1,steps=20,checkpoint=true"
declare -A SPEC=([diffpure]="diffpure:$D" [ssni-n]="ssni:$D,mode=N" [ssni-l]="ssni:$D,mode=L")
rows=("$@"); [ ${#rows[@]} -eq 0 ] && rows=(diffpure)
for row in "${rows[@]}"; do
  spec=${SPEC[$row]:?unknown row $row}
  echo "== $row: $spec $(date +%T)"
  OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} .venv/bin/advpure eval --dataset cifar10 --data-dir ../shared/data/cifar10-jpeg.tar.gz \
    --classifier resnet56:../shared/models/resnet56-4bfd9763.th --defense "$spec" \
    --attack "standard:eps=8/255,steps=20,eot=4,full_steps=10" --n "${N:-16}" --batch-size 16 --seeds "${SEEDS:-0}" \
    --no-sanity --no-progress --out "$OUT/$row.json" --journal "runs/cifar10-purification/$row.jsonl" > "$OUT/$row.md"
done
echo "done $(date +%T)"
