#!/usr/bin/env bash
# DiffPure vs SSNI on digits under the standard attack ensemble (worst case per image over: PGD-EOT on the one-step,
# DDIM-5 and SDE-5 surrogates, BPDA-EOT, full-gradient APGD-CE-EOT and PGD-EOT), l_inf 0.2, 32 test images x seeds
# 0,1,2, 20 fresh evaluation draws, sanity checks on 32 images (their more-iterations check, 2x steps and 2x EOT,
# is the convergence evidence). Writes reports/digits/ssni/<row>.{json,md}; resumable (journals in runs/).
# Rows ending in -strong use the ensemble's default strength (steps 50, EOT 8, full-gradient steps 20) without the
# sanity checks (time); the others use steps 20, EOT 4, full-gradient steps 10 with the sanity checks. SEEDS=0 runs
# one seed (the -strong rows were run so on the 2-core machine); outputs are named after the row and the seeds.
# usage: experiments/digits/ssni/run.sh [ROW...]
#   rows: diffpure ssni-n ssni-n-diff ssni-l ssni-l-diff ssni-l-ref, diffpure-strong ssni-n-strong ssni-l-strong, and
#   ssni-l-nosanity (the reduced SSNI-L row without the sanity checks, as reported, written to ssni-l.json), and the
#   convergence check diffpure-x2 ssni-n-x2 (the -strong rows with 2x steps and 2x EOT for every member; compare
#   image by image with experiments/lib/paired.py), and the other purifiers at the default strength: gdmp-strong
#   (GDMP, SSIM guidance at scale 100, 4 rounds to DiffPure's t = 0.1 with 5 guided DDPM steps each = 20 network
#   calls as DiffPure; the authors' CIFAR-10 setting, t = 0.036 for an 8/255 budget, leaves digits' 0.2 in place) and
#   gnsp-strong (GNSP, the default 8 stages 30x4, 50x2, 125x2 with 5 reverse steps each = 40 calls; the authors run
#   the stage's DDPM steps: 470 calls), with its convergence check gnsp-x2 and the control diffpure-t125-strong
#   (DiffPure to GNSP's largest noise level, t* = 0.125, 25 steps: the same step size as the t* = 0.1 rows)
# Reported runs: experiments/digits/ssni/run.sh diffpure ssni-l-nosanity; PROCS=2 BATCH=16
#   experiments/digits/ssni/run.sh diffpure-strong ssni-n-strong (the standard ensemble with the DDIM-2 surrogate);
#   SEEDS=0 PROCS=2 BATCH=16 experiments/digits/ssni/run.sh diffpure-x2 ssni-n-x2; SEEDS=0 PROCS=2 BATCH=16
#   experiments/digits/ssni/run.sh gdmp-strong gnsp-strong gnsp-x2 diffpure-t125-strong; gnsp-strong rerun on
#   2026-11-30 when GNSP got DiffPure's surrogate family (its earlier output, the 1-step surrogate only, is kept as
#   gnsp-strong-list1-seeds0; it and gdmp-strong and gnsp-x2 were run with the lists of commit c6230ca). On 2026-12-01
#   gnsp-strong was rerun with the deviated-reconstruction attack in GNSP's list (the 2026-11-30 output is
#   gnsp-strong-list2-seeds0), gdmp-strong with the 2-step and unguided surrogates (the earlier one is
#   gdmp-strong-list1-seeds0), and diffpure-strong with SEEDS=0 for a journal to pair with (the earlier-list output of
#   that name is diffpure-strong-list0-seeds0; ssni-n-strong-list0-seeds0 likewise); then SEEDS=1,2 PROCS=2 BATCH=16
#   experiments/digits/ssni/run.sh diffpure-strong gnsp-strong for the 3-seed comparison (experiments/lib/paired.py
#   --seeds 0,1,2, docs/RESULTS.md)
set -euo pipefail
cd "$(dirname "$0")/../../.."
OUT=reports/digits/ssni
mkdir -p "$OUT" runs/digits-ssni
A="standard:eps=0.2,steps=20,eot=4,full_steps=10"
A_STRONG="standard:eps=0.2"
A_X2="standard:eps=0.2,steps=100,eot=16,full_steps=40"  # the convergence check: 2x the default steps and EOT
common=(--dataset digits --classifier zoo/digits-small-cnn.safetensors --n 32 --batch-size "${BATCH:-32}"
        --seeds "${SEEDS:-0,1,2}" --no-progress)
# PROCS=2 shards the (seed, batch) tasks over 2 processes (experiments/lib/eval_row.sh); use BATCH=16 with it.
source experiments/lib/eval_row.sh
D="t=0.1,steps=20,checkpoint=true"
declare -A SPEC=(
  [diffpure]="diffpure:$D"
  [ssni-n]="ssni:$D,mode=N"
  [ssni-n-diff]="ssni:$D,mode=N,differentiable=true"
  [ssni-l]="ssni:$D,mode=L"
  [ssni-l-diff]="ssni:$D,mode=L,differentiable=true"
  [ssni-l-ref]="ssni:$D,mode=L-ref"
  [diffpure-strong]="diffpure:$D"
  [ssni-n-strong]="ssni:$D,mode=N"
  [ssni-l-strong]="ssni:$D,mode=L"
  [ssni-l-nosanity]="ssni:$D,mode=L"
  [diffpure-x2]="diffpure:$D"
  [ssni-n-x2]="ssni:$D,mode=N"
  [gdmp-strong]="gdmp:t=0.1,steps=5,iterations=4,checkpoint=true"
  [gnsp-strong]="gnsp:steps=5,checkpoint=true"
  [gnsp-x2]="gnsp:steps=5,checkpoint=true"
  [diffpure-t125-strong]="diffpure:t=0.125,steps=25,checkpoint=true"
)
rows=("$@")
[ ${#rows[@]} -eq 0 ] && rows=(diffpure ssni-n ssni-l)
sfx=""; [ "${SEEDS:-0,1,2}" != "0,1,2" ] && sfx="-seeds${SEEDS//,/_}"
for row in "${rows[@]}"; do
  spec=${SPEC[$row]:?unknown row $row (rows: ${!SPEC[*]})}
  echo "== $row: $spec $(date +%T)"
  out_row=$row
  case $row in
    *-strong) extra=(--attack "$A_STRONG" --no-sanity) ;;
    *-x2) extra=(--attack "$A_X2" --no-sanity) ;;
    *-nosanity) extra=(--attack "$A" --no-sanity); out_row=${row%-nosanity} ;;
    *) extra=(--attack "$A" --sanity-n 32 --sanity-queries 200) ;;
  esac
  eval_row "$OUT/$out_row$sfx.md" "${common[@]}" "${extra[@]}" --defense "$spec" --out "$OUT/$out_row$sfx.json" \
    --journal "runs/digits-ssni/$out_row$sfx.jsonl"
done
echo "done $(date +%T)"
