#!/usr/bin/env bash
# DiffPure / SSNI on CIFAR-10 (JPEG) with the project's t <= 0.2 purification model (zoo/cifar10-purify-t0.2) and the
# shared ResNet-56, under the standard attack ensemble at a reduced strength (steps 20, EOT 4, full-gradient steps 10;
# the default is 50/8/20), l_inf 8/255, 20 reverse steps inside attack and evaluation, 20 evaluation draws, no sanity
# checks (time). CPU-sized: N images (default 16) x SEEDS (default 0); 64 x 3 at the default strength is the target
# on a faster machine. Writes reports/cifar10/purification/<row>[-nN-seedsS].{json,md}; resumable (journals in runs/).
# PROCS=2 shards the (seed, batch) tasks over 2 processes (experiments/lib/eval_row.sh); BATCH (default 16) images
# per task.
# Rows without an attack (one process, one draw; no journal: eval refuses it there): corr-diffpure-CLF and
# corr-dt-CLF (the 5 noise/blur/JPEG corruptions at severity 5 on 64 test images, with and without DiffPure or the
# distribution-transfer purifier, t* = 0.1, 20 steps) and certify-CLF (one-shot denoised randomized smoothing, sigma
# 0.25, n0 50, n 500, 25 images), CLF = r56 (shared ResNet-56) or fastnet (zoo/cifar10-fastnet, ours).
# Attacked rows: diffpure ssni-n ssni-l dt (distribution transfer, scale 100) on the ResNet-56; diffpure-fastnet and
# dt-fastnet on zoo/cifar10-fastnet; diffpure-fastnet-pure on zoo/cifar10-fastnet-purified (fastnet fine-tuned on
# DiffPure-purified train images: experiments/cifar10/purified-classifier); tweedie-fastnet and tweedie-fastnet-fresh:
# one-step purification (diffuse to t* = 0.1, then Tweedie's estimate, DDIM 1 step: random through the diffusion noise
# only) on fastnet and on fastnet fine-tuned on fresh draws of that estimate (runs/tweedie/cifar10-fastnet-tweedie,
# made by experiments/cifar10/purified-classifier/run.sh train-fresh, 38 min; not in the zoo);
# diffpure-l2 ssni-n-l2 ssni-l-l2 (t* = 0.075, l_2 0.5, same reduced strength);
# gdmp (t = 0.036, 4 rounds of 9 guided DDPM steps, SSIM guidance, scale 100) and gnsp (the 8 default stages with 5
# reverse steps each), both on the ResNet-56 with fewer steps than the authors' (36 per round; 470 in all) for time;
# cmap: CMAP with the CPU-distilled consistency model zoo/cifar10-cm-cd-tiny (K = 4 latents, 100 latent-optimisation
# iterations, as 30 reconstruct too little at 32x32x3: reports/cifar10/cmap/ablation; lambda 3), the majority vote over
# the K samples (--votes 1, the paper's classifier), on the ResNet-56; its ensemble adds the consistency-disruption
# attack (Zhang et al.); about 1,060 s per image on one process, so BATCH=4 keeps the journal's tasks short.
# ROW-x2 (e.g. diffpure-x2, diffpure-fastnet-x2; l_inf rows): the convergence check of ROW, every member with 2x steps and 2x EOT
# (standard:eps=8/255,steps=40,eot=8,full_steps=20, about the default strength 50/8/20); compare image by image with
# ROW on the same N (experiments/lib/paired.py).
# usage: N=16 SEEDS=0 PROCS=2 BATCH=8 experiments/cifar10/purification/run.sh [ROW...]
#        experiments/cifar10/purification/run.sh corr-diffpure-r56 corr-dt-r56 corr-diffpure-fastnet ... certify-r56
set -euo pipefail
cd "$(dirname "$0")/../../.."
source experiments/lib/eval_row.sh
OUT=reports/cifar10/purification
mkdir -p "$OUT" runs/cifar10-purification
M=zoo/cifar10-purify-t0.2.safetensors
P="model=$M,t=0.1,steps=20"  # the purifier; attacked rows add checkpointing (memory flat in the steps)
D="$P,checkpoint=true"
D2="model=$M,t=0.075,steps=20,checkpoint=true"  # DiffPure's l_2 setting (t* = 0.075)
declare -A SPEC=([diffpure]="diffpure:$D" [ssni-n]="ssni:$D,mode=N" [ssni-l]="ssni:$D,mode=L"
                 [diffpure-fastnet]="diffpure:$D" [diffpure-fastnet-pure]="diffpure:$D" [dt]="distribution-transfer:$D" [dt-fastnet]="distribution-transfer:$D"
                 [tweedie-fastnet]="diffpure:model=$M,t=0.1,steps=1,sampler=ddim"
                 [tweedie-fastnet-fresh]="diffpure:model=$M,t=0.1,steps=1,sampler=ddim"
                 [diffpure-l2]="diffpure:$D2" [ssni-n-l2]="ssni:$D2,mode=N" [ssni-l-l2]="ssni:$D2,mode=L"
                 [gdmp]="gdmp:model=$M,t=0.036,steps=9,iterations=4,checkpoint=true"
                 [gnsp]="gnsp:model=$M,steps=5,checkpoint=true"
                 [cmap]="cmap:model=zoo/cifar10-cm-cd-tiny.safetensors,iterations=100,checkpoint=true")
LINF="standard:eps=8/255,steps=20,eot=4,full_steps=10"
L2="standard:eps=0.5,norm=l2,steps=20,eot=4,full_steps=10"
X2="standard:eps=8/255,steps=40,eot=8,full_steps=20"  # the convergence check: 2x steps and EOT of every member
rows=("$@"); [ ${#rows[@]} -eq 0 ] && rows=(diffpure)
N=${N:-16}; SEEDS=${SEEDS:-0}
sfx="-n$N-seeds${SEEDS//,/_}"
C=(--dataset cifar10 --data-dir ../shared/data/cifar10-jpeg.tar.gz --no-progress)
declare -A CLF=([r56]=resnet56:../shared/models/resnet56-4bfd9763.th [fastnet]=zoo/cifar10-fastnet.safetensors
               [fastnet-pure]=zoo/cifar10-fastnet-purified.safetensors
               [fastnet-fresh]=runs/tweedie/cifar10-fastnet-tweedie.safetensors)
CORR=(--threat corruptions --corruptions gaussian_noise,glass_blur,impulse_noise,jpeg_compression,shot_noise
      --severities 5 --n 64 --batch-size 64)
for row in "${rows[@]}"; do
  case $row in
    corr-diffpure-*|corr-dt-*|certify-*)
      c=${row##*-}; clf=${CLF[$c]:?unknown classifier $c (r56 or fastnet)}
      case $row in
        corr-diffpure-*) extra=("${CORR[@]}" --defense "diffpure:$P") ;;
        corr-dt-*) extra=("${CORR[@]}" --defense "distribution-transfer:$P") ;;
        certify-*) extra=(--threat certify --model "$M" --sigma 0.25 --n0 50 --n-mc 500 --n 25 --batch-size 100) ;;
      esac
      echo "== $row $(date +%T)"
      PROCS=1 eval_row "$OUT/$row.md" "${C[@]}" --classifier "$clf" "${extra[@]}" --out "$OUT/$row.json"
      continue ;;
  esac
  base=${row%-x2}; spec=${SPEC[$base]:?unknown row $row (rows: ${!SPEC[*]}, each also as ROW-x2)}
  echo "== $row: $spec $(date +%T)"
  clf=${CLF[r56]}; [[ $base == *-fastnet ]] && clf=${CLF[fastnet]}; [[ $base == *-fastnet-pure ]] && clf=${CLF[fastnet-pure]}
  [[ $base == *-fastnet-fresh ]] && clf=${CLF[fastnet-fresh]}
  attack=$LINF; [[ $base == *-l2 ]] && attack=$L2
  if [[ $row == *-x2 ]]; then
    [[ $base == *-l2 ]] && { echo "$row: the 2x check is defined for the l_inf rows" >&2; exit 2; }
    attack=$X2
  fi
  votes=(); [ "$base" = cmap ] && votes=(--votes 1)
  eval_row "$OUT/$row$sfx.md" "${C[@]}" --classifier "$clf" --defense "$spec" "${votes[@]}" \
    --attack "$attack" --n "$N" --batch-size "${BATCH:-16}" --seeds "$SEEDS" \
    --no-sanity --out "$OUT/$row$sfx.json" --journal "runs/cifar10-purification/$row$sfx.jsonl"
done
echo "done $(date +%T)"
