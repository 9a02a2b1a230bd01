#!/usr/bin/env bash
# Full-range generator and its consistency model (issue 17, item 4), trained on the CPU across sessions.
# The teacher is the cifar10-purify UNet (cifar10-tiny's widths, one attention head of dimension 64) trained on all
# noise levels (t_max = 1); the consistency model F (same UNet) is distilled from it. Both runs resume from their
# state in runs/cifar-gen/ (written every 250 steps), so a killed run loses at most 250 steps and continues exactly.
# usage: experiments/cifar10/generator/run.sh teacher [STEPS]   # (re)starts or resumes the teacher run (1 thread)
#        experiments/cifar10/generator/run.sh export STEP       # the teacher's EMA weights (a copy of the state; STEP = its
#                                                                 # step, saved every 250: a smaller one is refused)
#        experiments/cifar10/generator/run.sh cm TEACHER [STEPS] # (re)starts or resumes the distillation from TEACHER
#        experiments/cifar10/generator/run.sh recognise CM OUT.json  # one-step samples judged by fastnet and ResNet-56
set -euo pipefail
cd "$(dirname "$0")/../../.."
D=../shared/data/cifar10-jpeg.tar.gz
R=runs/cifar-gen
T=(--dataset cifar10 --data-dir "$D" --preset cifar10-purify --t-max 1 --batch-size 64 --lr 1e-3 --save-every 250
   --name cifar10-ddpm-full)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$R" reports/cifar10/generator
case ${1:-} in
  teacher)
    r=(); [ -f "$R/cifar10-ddpm-full.state.pt" ] && r=(--resume)
    .venv/bin/advpure train diffusion "${T[@]}" --steps "${2:-20000}" --out "$R" "${r[@]}" ;;
  export)
    s=${2:?STEP}; d=$R-teacher-$s
    mkdir -p "$d" && cp "$R/cifar10-ddpm-full.state.pt" "$d/"
    .venv/bin/advpure train diffusion "${T[@]}" --steps "$s" --out "$d" --resume ;;
  cm)
    t=${2:?TEACHER.safetensors}; r=(); [ -f "$R/cifar10-cm.state.pt" ] && r=(--resume)
    .venv/bin/advpure train consistency --dataset cifar10 --data-dir "$D" --mode cd --teacher "$t" \
      --preset cifar10-purify --steps "${3:-4000}" --batch-size 64 --out "$R" --name cifar10-cm "${r[@]}" ;;
  recognise)
    .venv/bin/python experiments/cifar10/generator/recognise.py --cm "${2:?CM.safetensors}" --out "${3:?OUT.json}" ;;
  *) echo "usage: $0 teacher [STEPS] | export STEP | cm TEACHER [STEPS] | recognise CM OUT.json" >&2; exit 2 ;;
esac
