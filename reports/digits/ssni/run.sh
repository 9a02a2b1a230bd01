#!/usr/bin/env bash
# SSNI vs DiffPure on digits: adaptive full-gradient PGD-EOT (linf 0.2, 5 steps of 0.1, EOT 4), 3 seeds, 32 images.
# usage: run.sh SPEC...   (each spec evaluated in turn)
set -u
cd "$(dirname "$0")/../.."
A="pgd:eps=0.2,steps=5,step_size=0.1,eot=4"
common="--dataset digits --classifier zoo/digits-small-cnn.safetensors --attack $A --n 32 --batch-size 32 --seeds 0,1,2 --sanity-n 8 --sanity-queries 100 --no-progress"
for spec in "$@"; do
  name=$(echo "$spec" | tr ':,=' '___')
  echo "== $spec $(date +%T)"
  OMP_NUM_THREADS=1 .venv/bin/advpure eval $common --defense "$spec" --out runs/ssni/$name.json --journal runs/ssni/$name.jsonl > runs/ssni/$name.md 2>&1
done
echo "done $(date +%T)"
