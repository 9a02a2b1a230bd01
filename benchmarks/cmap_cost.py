"""CMAP's cost per image next to DiffPure's, measured in the same run (digits models by default).

Prints network evaluations per image (forward passes of the consistency model / the diffusion UNet,
counted by forward hooks; CMAP also runs one backward pass per iteration) and wall-clock seconds per
image, and the ratio CMAP / DiffPure. Usage::

    OMP_NUM_THREADS=1 python benchmarks/cmap_cost.py [--n 32] [--cm zoo/digits-cm.safetensors]
        [--ddpm zoo/digits-ddpm.safetensors] [--k 4] [--iterations 30] [--diffpure-steps 100]
    OMP_NUM_THREADS=1 python benchmarks/cmap_cost.py --dataset cifar10 --data-dir ../shared/data/cifar10-jpeg.tar.gz \
        --cm zoo/cifar10-cm-cd-tiny.safetensors --ddpm zoo/cifar10-ddpm-tiny-t0.2.safetensors

DiffPure runs the paper's setting (t* = 0.1, dt = 1e-3: 100 reverse-SDE steps) unless told otherwise.
"""

from __future__ import annotations

import argparse
import time

import torch


def count_images(module: torch.nn.Module):
    box = {"images": 0}

    def hook(_m, args):
        box["images"] += int(args[0].shape[0])

    return box, module.register_forward_pre_hook(hook)


def timed(fn, reps: int) -> float:
    fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--cm", default="zoo/digits-cm.safetensors")
    ap.add_argument("--ddpm", default="zoo/digits-ddpm.safetensors")
    ap.add_argument("--k", type=int, default=None)
    ap.add_argument("--iterations", type=int, default=None)
    ap.add_argument("--diffpure-steps", type=int, default=100)
    ap.add_argument("--reps", type=int, default=2)
    a = ap.parse_args()

    from advpure.data import load_dataset
    from advpure.defenses.cmap import DEFAULTS, load_cmap
    from advpure.defenses.diffpure import DiffPure
    from advpure.diffusion.models import load_denoiser

    x, _ = load_dataset(a.dataset, "test", data_dir=a.data_dir).subset(a.n, 0).tensors()
    shape = tuple(x.shape[1:])
    cmap = load_cmap(a.cm, image_shape=shape, k=a.k or DEFAULTS["k"], iterations=a.iterations or DEFAULTS["iterations"])
    net, _ = load_denoiser(a.ddpm, image_shape=shape)
    dp = DiffPure(net, t=0.1, n_steps=a.diffpure_steps)
    g = torch.Generator().manual_seed(0)
    rows = []
    for name, pur, inner in (("DiffPure", dp, dp.eps_model.net), ("CMAP", cmap, cmap.cm.net)):
        box, h = count_images(inner)
        with torch.no_grad():
            pur.purify(x, generator=g)
        h.remove()
        nfe = box["images"] / a.n
        with torch.no_grad():
            sec = timed(lambda p=pur: p.purify(x, generator=g), a.reps) / a.n
        params = sum(p.numel() for p in inner.parameters())
        rows.append((name, nfe, sec, params))
        print(f"{name:9s} network evaluations/image {nfe:7.1f} (declared nfe {pur.nfe:g}), "
              f"{sec * 1e3:8.2f} ms/image, network {params / 1e6:.2f}M parameters")
    (_, n_dp, s_dp, _), (_, n_cm, s_cm, _) = rows
    print(f"ratio CMAP / DiffPure: {n_cm / n_dp:.2f}x network evaluations, {s_cm / s_dp:.2f}x seconds "
          f"(CMAP k={cmap.k}, iterations={cmap.iterations}, forward+backward per iteration; "
          f"DiffPure t*=0.1, {dp.n_steps} steps; {a.dataset}, batch {a.n}, torch threads {torch.get_num_threads()})")


if __name__ == "__main__":
    main()
