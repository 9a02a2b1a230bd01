#!/usr/bin/env bash
# CIFAR-10 (JPEG) purification experiments with the project's small-t diffusion model (CPU, 1 thread per job).
# usage: reports/cifar10/diffusion/run.sh JOB...   (jobs listed in the case statement; outputs beside this file)
set -u
cd "$(dirname "$0")/../../.."
export OMP_NUM_THREADS=1
A=.venv/bin/advpure
M=${M:-zoo/cifar10-ddpm-tiny-t0.2.safetensors}
D=${D:-../shared/data/cifar10-jpeg.tar.gz}
R56=resnet56:../shared/models/resnet56-4bfd9763.th
R8=zoo/cifar10-resnet8.safetensors
O=reports/cifar10/diffusion
LINF="pgd:norm=linf,eps=8/255,steps=5,step_size=2/255,eot=2"
L2="pgd:norm=l2,eps=0.5,steps=5,step_size=0.125,eot=2"
C="--dataset cifar10 --data-dir $D --no-progress"
ADV="$C --n 16 --batch-size 16 --seeds 0,1,2 --eval-draws 3"
ev() {  # name, then eval options
  local name=$1; shift
  echo "== $name $(date +%T)"
  # corruptions and certify do not journal (advpure eval refuses --journal with them)
  local j=(--journal $O/$name.jsonl); case " $* " in *" --threat "*) j=() ;; esac
  $A eval "$@" --out $O/$name.json "${j[@]}" > $O/$name.md 2>&1; echo "   rc=$? $(date +%T)"
}
for job in "$@"; do case $job in
  ref) $A eps reference --dataset cifar10 --data-dir $D --model $M --n 500 --seed 0 ;;
  observe) $A eps observe --dataset cifar10 --data-dir $D --model $M --classifier $R56 \
             --eps 0,2/255,4/255,8/255,16/255 --n 200 --steps 10 --t 0.1 --out $O/eps-observe ;;
  clean56) ev clean-diffpure-resnet56 $C --classifier $R56 --defense "diffpure:model=$M,t=0.1" --attack none --n 200 --batch-size 50 --seeds 0 --eval-draws 1 ;;
  clean8) ev clean-diffpure-resnet8 $C --classifier $R8 --defense "diffpure:model=$M,t=0.1" --attack none --n 200 --batch-size 50 --seeds 0 --eval-draws 1 ;;
  dp56) ev diffpure-linf-resnet56 $ADV --classifier $R56 --defense "diffpure:model=$M,t=0.1,steps=20,checkpoint=true" --attack $LINF --sanity-n 8 --sanity-queries 50 ;;
  dp8) ev diffpure-linf-resnet8 $ADV --classifier $R8 --defense "diffpure:model=$M,t=0.1,steps=20,checkpoint=true" --attack $LINF --no-sanity ;;
  none56) ev none-linf-resnet56 $ADV --classifier $R56 --attack $LINF --no-sanity ;;
  none8) ev none-linf-resnet8 $ADV --classifier $R8 --attack $LINF --no-sanity ;;
  ssniN) ev ssniN-linf-resnet56 $ADV --classifier $R56 --defense "ssni:model=$M,mode=N,t=0.1,steps=20,checkpoint=true" --attack $LINF --no-sanity ;;
  ssniL) ev ssniL-linf-resnet56 $ADV --classifier $R56 --defense "ssni:model=$M,mode=L,t=0.1,steps=20,checkpoint=true" --attack $LINF --no-sanity ;;
  dpl2) ev diffpure-l2-resnet56 $ADV --classifier $R56 --defense "diffpure:model=$M,t=0.075,steps=20,checkpoint=true" --attack $L2 --no-sanity ;;
  ssniNl2) ev ssniN-l2-resnet56 $ADV --classifier $R56 --defense "ssni:model=$M,mode=N,t=0.075,steps=20,checkpoint=true" --attack $L2 --no-sanity ;;
  ssniLl2) ev ssniL-l2-resnet56 $ADV --classifier $R56 --defense "ssni:model=$M,mode=L,t=0.075,steps=20,checkpoint=true" --attack $L2 --no-sanity ;;
  dt56) ev dt-linf-resnet56 $ADV --classifier $R56 --defense "distribution-transfer:model=$M,t=0.1,steps=20,checkpoint=true" --attack $LINF --no-sanity ;;
  corr56) ev corruptions-resnet56 $C --threat corruptions --classifier $R56 --corruptions gaussian_noise,glass_blur,impulse_noise,jpeg_compression,shot_noise --severities 5 --n 64 --batch-size 64 --defense "diffpure:model=$M,t=0.1,steps=20" ;;
  corrdt56) ev corruptions-dt-resnet56 $C --threat corruptions --classifier $R56 --corruptions gaussian_noise,glass_blur,impulse_noise,jpeg_compression,shot_noise --severities 5 --n 64 --batch-size 64 --defense "distribution-transfer:model=$M,t=0.1,steps=20" ;;
  corr8) ev corruptions-resnet8 $C --threat corruptions --classifier $R8 --corruptions gaussian_noise,glass_blur,impulse_noise,jpeg_compression,shot_noise --severities 5 --n 64 --batch-size 64 --defense "diffpure:model=$M,t=0.1,steps=20" ;;
  corrdt8) ev corruptions-dt-resnet8 $C --threat corruptions --classifier $R8 --corruptions gaussian_noise,glass_blur,impulse_noise,jpeg_compression,shot_noise --severities 5 --n 64 --batch-size 64 --defense "distribution-transfer:model=$M,t=0.1,steps=20" ;;
  certify) ev certify-denoised-resnet56 $C --threat certify --classifier $R56 --model $M --sigma 0.25 --n0 50 --n-mc 500 --n 25 --batch-size 100 ;;
  epsad) $A eps-ad --dataset cifar10 --data-dir $D --classifier $R56 --model $M --train-eps 4/255 --n-train 200 --n-ref 200 \
           --n-calib 200 --n-test 100 --epochs 100 --eps 2/255,4/255,8/255 --l2-eps 0.5 --threads 1 --out $O/eps-ad ;;
  dp56strong) ev diffpure-linf-resnet56-pgd20eot4 $C --n 16 --batch-size 16 --seeds 0 --eval-draws 3 --classifier $R56 --defense "diffpure:model=$M,t=0.1,steps=20,checkpoint=true" --attack "pgd:norm=linf,eps=8/255,steps=20,step_size=1/255,eot=4" --no-sanity ;;
  ssniNstrong) ev ssniN-linf-resnet56-pgd20eot4 $C --n 16 --batch-size 16 --seeds 0 --eval-draws 3 --classifier $R56 --defense "ssni:model=$M,mode=N,t=0.1,steps=20,checkpoint=true" --attack "pgd:norm=linf,eps=8/255,steps=20,step_size=1/255,eot=4" --no-sanity ;;
  dadsample) $A dad-attacks --dataset cifar10 --data-dir $D --classifier $R56 --kernel reports/cifar10/mmd-opt-kernel-resnet56.safetensors \
               --denoiser reports/cifar10/dad/dad-denoiser-resnet56.safetensors --eps 8/255 --n 100 --batch-size 50 \
               --seeds 0,1,2 --steps 10 --eot 2 --reference-split test --mode sample --threads 1 --out reports/cifar10/dad/dad-attacks-sample-mode ;;
  *) echo "unknown job $job"; exit 2 ;;
esac; done
echo "done $(date +%T)"
