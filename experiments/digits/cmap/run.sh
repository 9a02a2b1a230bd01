#!/usr/bin/env bash
# CMAP on digits (zoo/digits-cm, K = 4 latents, 30 latent-optimisation iterations, lambda 3) under the standard
# attack ensemble at the reduced strength of the digits study (steps 20, EOT 4, full-gradient steps 10; l_inf 0.2):
# BPDA-EOT, full-gradient APGD-CE-EOT and PGD-EOT through the unrolled latent optimisation (checkpointed), and the
# consistency-disruption attack (Zhang et al.), worst case per image; 20 fresh evaluation draws. Rows: vote (the
# majority vote over the K samples, --votes 1, the paper's classifier) and best (the lowest-loss sample).
# Writes reports/digits/cmap/<row>-n<N>-seeds<S>.{json,md}; resumable (journals in runs/digits-cmap/).
# usage: N=32 SEEDS=0 PROCS=2 BATCH=8 experiments/digits/cmap/run.sh [ROW...]
set -euo pipefail
cd "$(dirname "$0")/../../.."
source experiments/lib/eval_row.sh
OUT=reports/digits/cmap
mkdir -p "$OUT" runs/digits-cmap
N=${N:-32}; SEEDS=${SEEDS:-0}
sfx="-n$N-seeds${SEEDS//,/_}"
rows=("$@"); [ ${#rows[@]} -eq 0 ] && rows=(vote)
for row in "${rows[@]}"; do
  case $row in
    vote) votes=1 ;;
    best) votes=0 ;;
    *) echo "unknown row $row (rows: vote best)" >&2; exit 2 ;;
  esac
  echo "== $row $(date +%T)"
  eval_row "$OUT/$row$sfx.md" --dataset digits --classifier zoo/digits-small-cnn.safetensors \
    --defense cmap:checkpoint=true --votes "$votes" --attack "standard:eps=0.2,steps=20,eot=4,full_steps=10" \
    --n "$N" --batch-size "${BATCH:-16}" --seeds "$SEEDS" --no-sanity --no-progress \
    --out "$OUT/$row$sfx.json" --journal "runs/digits-cmap/$row$sfx.jsonl"
done
echo "done $(date +%T)"
