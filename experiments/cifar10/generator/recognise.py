"""Are a CIFAR-10 generator's samples objects? One-step samples of a consistency model (--cm) or DDPM samples of a
diffusion model (--teacher, ancestral sampling from t = 1 with --steps steps), judged by the project's fastnet (90%)
and the shared ResNet-56: the share classified with confidence > 0.9, the mean confidence, the class histogram, and the
same classifier on real JPEG test images (a classifier's confidence on samples means something only against its
confidence on real images: fastnet is trained with label smoothing). Writes OUT.json and OUT.png (64 samples).

usage: python experiments/cifar10/generator/recognise.py --cm CM.safetensors --out OUT.json [--n 1000]
       python experiments/cifar10/generator/recognise.py --teacher MODEL.safetensors --steps 100 --n 256 --out OUT.json
"""
import argparse
import json
import time
from pathlib import Path

import torch

from advpure.data import load_dataset
from advpure.diffusion.consistency import load_consistency_model
from advpure.diffusion.models import load_denoiser
from advpure.diffusion.samplers import sample
from advpure.diffusion.schedule import VPSchedule
from advpure.models import load_classifier
from advpure.train.consistency import confidence_summary, one_step_samples
from advpure.train.diffusion import save_grid

CLASSIFIERS = {"fastnet": "zoo/cifar10-fastnet.safetensors", "resnet56": "resnet56:../shared/models/resnet56-4bfd9763.th"}
DATA = "../shared/data/cifar10-jpeg.tar.gz"


@torch.no_grad()
def draw(a: argparse.Namespace) -> torch.Tensor:
    """``a.n`` samples in [0, 1], in batches of 250 (one-step CM) or 64 (DDPM), from ``torch.Generator`` seed ``a.seed``."""
    if a.cm:
        cm, _ = load_consistency_model(a.cm, image_shape=(3, 32, 32))
        return one_step_samples(cm.eval(), a.n, seed=a.seed)
    g = torch.Generator().manual_seed(a.seed)
    out = []
    model, meta = load_denoiser(a.teacher, image_shape=(3, 32, 32))
    if float(meta.get("t_max", 1.0)) < 1.0:
        raise SystemExit(f"recognise.py: {a.teacher} is trained on t <= {meta['t_max']}; it cannot generate from "
                         "t = 1 (pass a full-range model)")
    model.eval()
    for i in range(0, a.n, 64):
        out.append(sample(model, (min(64, a.n - i), 3, 32, 32), schedule=VPSchedule(), n_steps=a.steps,
                          method="ddpm", generator=g))
        print(f"sampled {min(i + 64, a.n)}/{a.n}", flush=True)
    return ((torch.cat(out) + 1) / 2).clamp(0, 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--cm", help="consistency model (.safetensors + sidecar)")
    src.add_argument("--teacher", help="full-range diffusion eps-model (.safetensors + sidecar)")
    p.add_argument("--steps", type=int, default=100, help="DDPM steps for --teacher (default 100)")
    p.add_argument("--n", type=int, default=1000, help="samples (default 1000)")
    p.add_argument("--n-real", type=int, default=1000, help="real JPEG test images (default 1000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="OUT.json (the grid goes to OUT.png)")
    a = p.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    x = draw(a)
    seconds = time.perf_counter() - t0
    real = load_dataset("cifar10", "test", data_dir=DATA).subset(a.n_real, a.seed).tensors()[0]
    res = {"model": a.cm or a.teacher, "kind": "consistency model, one step" if a.cm else f"DDPM, {a.steps} steps",
           "n": a.n, "seed": a.seed, "sampling_seconds": round(seconds, 1), "classifiers": {}}
    for name, spec in CLASSIFIERS.items():
        clf = load_classifier(spec).eval()
        with torch.no_grad():
            s, r = confidence_summary(clf, x), confidence_summary(clf, real)
        res["classifiers"][name] = {"samples": s, f"real_test_images_{a.n_real}": r,
                                    "mean_confidence_ratio": s["mean_confidence"] / r["mean_confidence"]}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1) + "\n")
    save_grid(x[:64], out.with_suffix(".png"), title=f"{Path(res['model']).name}: {res['kind']}")
    print(json.dumps({k: {"confident": v["samples"]["confident_fraction"], "ratio": round(v["mean_confidence_ratio"], 3),
                          "hist": v["samples"]["class_histogram"]} for k, v in res["classifiers"].items()}))


if __name__ == "__main__":
    main()
