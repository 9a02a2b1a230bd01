#!/usr/bin/env bash
# Which surrogate attack is strongest on digits DiffPure (docs/RESULTS.md, "Which surrogate"): each candidate alone,
# seed 0, 32 test images, 20 evaluation draws. usage: experiments/digits/attack-strength/run.sh [NAME...]
set -euo pipefail
cd "$(dirname "$0")/../../.."
mkdir -p reports/digits/attack-strength
names=("$@")
[ ${#names[@]} -eq 0 ] && names=(one-ce-50x8 one-ce-100x16 one-ce-200x32 one-dlr-100x16 one-cw-100x16 ddim2-ce-100x16
                                   ddim3-ce-100x16)
for w in "${names[@]}"; do
  echo "== $w $(date +%T)"
  OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} .venv/bin/python experiments/digits/attack-strength/study.py "$w" | tail -1
done
