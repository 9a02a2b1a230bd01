#!/usr/bin/env bash
# Purification-model study (issue 17): train the t <= 0.2 model (preset cifar10-purify: cifar10-tiny's widths with one
# attention head of dimension 64; 3/4 of each batch on t <= 0.1), resumable across sessions, and measure
# eps-prediction MSE at t = 0.02/0.05/0.1/0.2 on 1,000 test images (and, without SKIP_ACC, DiffPure's clean accuracy on
# 500 test images) next to zoo/cifar10-ddpm-tiny-t0.2. Outputs: reports/cifar10/purification-model/<name>.json.
# usage: experiments/cifar10/purification-model/run.sh train [STEPS]   # (re)starts or resumes the training run
#        experiments/cifar10/purification-model/run.sh export STEP      # EMA weights of the state at STEP, then study
#        experiments/cifar10/purification-model/run.sh baseline         # the same study on zoo/cifar10-ddpm-tiny-t0.2
#        experiments/cifar10/purification-model/run.sh sweep            # where the clean accuracy goes: zoo/cifar10-purify-t0.2
#            at t* = 0.025/0.05/0.075 (reverse SDE, dt 1e-3) and DDIM from t* = 0.1 (100, 10, 1 steps), each paired
#            with the same images and noise at DiffPure's default (reports/.../paired-zoo-purify-t0.2.json); sweep/*.json
set -euo pipefail
cd "$(dirname "$0")/../../.."
D=../shared/data/cifar10-jpeg.tar.gz
OUT=reports/cifar10/purification-model
TRAIN=(--dataset cifar10 --data-dir "$D" --preset cifar10-purify --t-max 0.2 --t-focus 0.1:0.75 --batch-size 64
       --lr 1e-3 --save-every 250 --name cifar10-purify-t0.2)
acc=(); [ -n "${SKIP_ACC:-}" ] && acc=(--skip-acc)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$OUT" runs/cifar-purify
case ${1:-} in
  train)
    r=(); [ -f runs/cifar-purify/cifar10-purify-t0.2.state.pt ] && r=(--resume)
    .venv/bin/advpure train diffusion "${TRAIN[@]}" --steps "${2:-20000}" --out runs/cifar-purify "${r[@]}" ;;
  export)
    s=${2:?STEP}; d=runs/cifar-purify-$s
    mkdir -p "$d" && cp runs/cifar-purify/cifar10-purify-t0.2.state.pt "$d/"
    .venv/bin/advpure train diffusion "${TRAIN[@]}" --steps "$s" --out "$d" --resume
    .venv/bin/python experiments/cifar10/purification-model/study.py --model "$d/cifar10-purify-t0.2.safetensors" \
      --out "$OUT/cifar10-purify-t0.2-step$s.json" "${acc[@]}" ;;
  baseline)
    .venv/bin/python experiments/cifar10/purification-model/study.py --model zoo/cifar10-ddpm-tiny-t0.2.safetensors \
      --out "$OUT/cifar10-ddpm-tiny-t0.2.json" "${acc[@]}" ;;
  sweep)
    M=zoo/cifar10-purify-t0.2.safetensors; ref=$OUT/paired-zoo-purify-t0.2.json; mkdir -p "$OUT/sweep"
    [ -f "$ref" ] || .venv/bin/python experiments/cifar10/purification-model/study.py --model $M --skip-mse --out "$ref"
    for cfg in "sde 0.025 25" "sde 0.05 50" "sde 0.075 75" "ddim 0.1 100" "ddim 0.1 10" "ddim 0.1 1"; do
      set -- $cfg; f="$OUT/sweep/$1-t$2-n$3.json"
      [ -f "$f" ] || .venv/bin/python experiments/cifar10/purification-model/study.py --model $M --skip-mse \
        --sampler "$1" --t-star "$2" --steps "$3" --pair "$ref" --out "$f"
    done ;;
  *) echo "usage: $0 train [STEPS] | export STEP | baseline | sweep" >&2; exit 2 ;;
esac
