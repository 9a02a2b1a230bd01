"""CIFAR-10 (JPEG) checks of the CPU-trained generative models behind CMAP, written to reports/cifar10/cmap/:

1. ``teacher-samples.png``: 64 DDPM samples (100 ancestral steps) of the full-range teacher ``zoo/cifar10-ddpm-tiny``;
2. how often the shared ResNet-56 is confident (max softmax > 0.9) on real test images, on uniform noise, on the
   consistency model's one-step samples and on the teacher's samples: on CIFAR-10 this classifier is confident on
   noise too, so this number only calibrates what "recognisable" means here;
3. the t_max study of the diffusion issue on CIFAR-10: eps-prediction error at t <= 0.2 of the t <= 0.2 model
   and of the full-range model, trained with the same preset, steps (2,000), batch (64), lr (1e-3) and seed.

usage: OMP_NUM_THREADS=1 python reports/scripts/cifar10_cm_checks.py [DATA]   (DATA: the CIFAR-10 JPEG archive)
"""
import json
import sys

import torch

from advpure.data import load_dataset
from advpure.diffusion.consistency import load_consistency_model
from advpure.diffusion.models import load_denoiser
from advpure.diffusion.samplers import sample
from advpure.diffusion.schedule import VPSchedule
from advpure.models import load_classifier
from advpure.train.consistency import confidence_summary
from advpure.train.diffusion import denoising_error, save_grid

data = sys.argv[1] if len(sys.argv) > 1 else "../shared/data/cifar10-jpeg.tar.gz"
out = "reports/cifar10/cmap"
clf = load_classifier("resnet56:../shared/models/resnet56-4bfd9763.th")
full, _ = load_denoiser("zoo/cifar10-ddpm-tiny.safetensors")
short, _ = load_denoiser("zoo/cifar10-ddpm-tiny-t0.2.safetensors")
cm, _ = load_consistency_model("zoo/cifar10-cm-cd-tiny.safetensors")
x, y = load_dataset("cifar10", "test", data_dir=data).subset(1000, 0).tensors()
res = {}


with torch.no_grad():
    g = torch.Generator().manual_seed(0)
    xs = (sample(full, (64, 3, 32, 32), schedule=VPSchedule(), n_steps=100, method="ddpm", generator=g) + 1) / 2
    save_grid(xs.clamp(0, 1), f"{out}/teacher-samples.png",
              title="zoo/cifar10-ddpm-tiny: 64 DDPM samples (100 ancestral steps)")
    g = torch.Generator().manual_seed(0)
    cms = torch.cat([((cm.sample(250, generator=g) + 1) / 2).clamp(0, 1) for _ in range(4)])
    save_grid(cms[:64], f"{out}/cm-samples.png", title="zoo/cifar10-cm-cd-tiny: one-step samples f(z, 80)")
    noise = torch.rand(1000, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    res["resnet56_confidence"] = {name: confidence_summary(clf, imgs) for name, imgs in (
        ("real_test", x), ("uniform_noise", noise), ("cm_one_step", cms), ("teacher_ddpm_100", xs.clamp(0, 1)))}
    print(json.dumps(res["resnet56_confidence"]), flush=True)
    x0 = 2 * x[:256] - 1
    res["tmax_study"] = {"n": 256, "repeats": 4, "eps_mse": {
        name: {str(t): denoising_error(m, x0, t, generator=torch.Generator().manual_seed(0), repeats=4)
               for t in (0.02, 0.05, 0.1, 0.2)} for name, m in (("t_max=0.2", short), ("t_max=1", full))}}
    print(json.dumps(res["tmax_study"]), flush=True)
with open(f"{out}/checks.json", "w") as f:
    json.dump(res, f, indent=1)
