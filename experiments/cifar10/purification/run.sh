#!/usr/bin/env bash
# DiffPure / SSNI on CIFAR-10 (JPEG) with the project's t <= 0.2 purification model (zoo/cifar10-purify-t0.2) and the
# shared ResNet-56, under the standard attack ensemble at a reduced strength (steps 20, EOT 4, full-gradient steps 10;
# the default is 50/8/20), l_inf 8/255, 20 reverse steps inside attack and evaluation, 20 evaluation draws, no sanity
# checks (time). CPU-sized: N images (default 16) x SEEDS (default 0); 64 x 3 at the default strength is the target
# on a faster machine. Writes reports/cifar10/purification/<row>[-nN-seedsS].{json,md}; resumable (journals in runs/).
# PROCS=2 shards the (seed, batch) tasks over 2 processes (experiments/lib/eval_row.sh); BATCH (default 16) images
# per task.
# usage: N=16 SEEDS=0 PROCS=2 BATCH=8 experiments/cifar10/purification/run.sh [ROW...]   rows: diffpure ssni-n ssni-l
set -euo pipefail
cd "$(dirname "$0")/../../.."
source experiments/lib/eval_row.sh
OUT=reports/cifar10/purification
mkdir -p "$OUT" runs/cifar10-purification
M=zoo/cifar10-purify-t0.2.safetensors
D="model=$M,t=0.1,steps=20,checkpoint=true"
declare -A SPEC=([diffpure]="diffpure:$D" [ssni-n]="ssni:$D,mode=N" [ssni-l]="ssni:$D,mode=L")
rows=("$@"); [ ${#rows[@]} -eq 0 ] && rows=(diffpure)
N=${N:-16}; SEEDS=${SEEDS:-0}
sfx="-n$N-seeds${SEEDS//,/_}"
for row in "${rows[@]}"; do
  spec=${SPEC[$row]:?unknown row $row (rows: ${!SPEC[*]})}
  echo "== $row: $spec $(date +%T)"
  eval_row "$OUT/$row$sfx.md" --dataset cifar10 --data-dir ../shared/data/cifar10-jpeg.tar.gz \
    --classifier resnet56:../shared/models/resnet56-4bfd9763.th --defense "$spec" \
    --attack "standard:eps=8/255,steps=20,eot=4,full_steps=10" --n "$N" --batch-size "${BATCH:-16}" --seeds "$SEEDS" \
    --no-sanity --no-progress --out "$OUT/$row$sfx.json" --journal "runs/cifar10-purification/$row$sfx.jsonl"
done
echo "done $(date +%T)"
