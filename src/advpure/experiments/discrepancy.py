"""Histograms (one PNG) of MMD^2_u between a clean reference set and random subsets of clean, PGD and
diffusion-generated inputs, on EPS features (``advpure discrepancy``)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from ..data import DEFAULT_LINF_EPS
from .common import frozen_classifier, frozen_diffusion
from .eps_ad import make_attack


def discrepancy(*, dataset: str = "digits", classifier: str, model: str | None = None, data_dir: str | None = None,
                kernel: str | None = None, eps: float = DEFAULT_LINF_EPS["digits"], subset: int = 50,
                n_subsets: int = 100, n_pool: int = 200, n_ref: int = 400, sample_steps: int = 1000, seed: int = 0,
                out: str | Path = "discrepancy") -> dict:
    """MMD^2_u between a clean reference set and random size-``subset`` draws from pools of clean test images,
    PGD-linf(eps) test images and diffusion samples, on (scaled) EPS features; one PNG of three histograms.

    Kernel: an EPS-AD kernel saved by ``advpure eps-ad`` (``--kernel``; its sidecar's ``eps_scale`` and
    ``t_levels`` are used), else a Gaussian kernel with the median-heuristic bandwidth of the reference.
    Each of the ``n_subsets`` draws pairs ``subset`` pool points with ``subset`` random reference points.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..data import load_dataset
    from ..detect.eps import DEFAULT_T_LEVELS
    from ..detect.eps_ad import eps_features
    from ..detect.kernels import GaussianKernel, load_kernel, median_sq_dist
    from ..detect.mmd import mmd2_unbiased
    from ..diffusion.samplers import sample

    t0 = time.time()
    net, sched, meta = frozen_diffusion(model, dataset)
    clf = frozen_classifier(classifier)
    train = load_dataset(dataset, "train", data_dir=data_dir)
    test = load_dataset(dataset, "test", data_dir=data_dir)
    if n_pool > len(test) or n_ref > len(train):
        raise ValueError(f"discrepancy: n_pool={n_pool} / n_ref={n_ref} exceed the test ({len(test)}) / train "
                         f"({len(train)}) splits")
    if subset > n_pool or subset > n_ref or subset < 2:
        raise ValueError(f"discrepancy: subset size must be in 2..min(n_pool, n_ref), got {subset}")
    levels, scale = DEFAULT_T_LEVELS, None
    k = None
    if kernel:
        k = load_kernel(kernel, input_shape=train.shape)
        side = k.sidecar
        levels, scale = tuple(side.get("t_levels", DEFAULT_T_LEVELS)), float(side["eps_scale"])
    g = torch.Generator().manual_seed(seed)
    xr, _ = train.batch(torch.randperm(len(train), generator=g)[:n_ref])
    xt, yt = test.subset(n_pool, seed).tensors()
    xa = make_attack("pgd", eps, seed=seed)(clf, xt, yt)
    with torch.no_grad():
        gen = (sample(net, (n_pool, *train.shape), schedule=sched, n_steps=sample_steps, method="ddpm",
                      generator=torch.Generator().manual_seed(seed)).clamp(-1, 1) + 1) / 2
        gen_pred = clf(gen).softmax(1).amax(1)
    ge = torch.Generator().manual_seed(seed + 1)
    feats = {name: eps_features(net, x, schedule=sched, t_levels=levels, generator=ge)
             for name, x in (("reference", xr), ("clean", xt), ("adversarial (PGD)", xa), ("generated", gen))}
    if scale is None:
        scale = float(feats["reference"].std())
    feats = {n_: f / scale for n_, f in feats.items()}
    if k is None:
        sigma2 = float(median_sq_dist(feats["reference"].flatten(1)))
        k = GaussianKernel(bandwidth=(sigma2 / 2) ** 0.5)
        kname = f"Gaussian, median-heuristic bandwidth sigma^2={sigma2 / 2:.3g} (on scaled EPS)"
    else:
        kname = f"EPS-AD deep kernel {kernel}"
    gs = torch.Generator().manual_seed(seed + 2)
    mmds: dict[str, list[float]] = {}
    with torch.no_grad():
        for name in ("clean", "adversarial (PGD)", "generated"):
            vals = []
            for _ in range(n_subsets):
                i = torch.randperm(n_pool, generator=gs)[:subset]
                j = torch.randperm(n_ref, generator=gs)[:subset]
                a, r = feats[name][i], feats["reference"][j]
                K = k(torch.cat([a, r]), torch.cat([a, r]))
                vals.append(float(mmd2_unbiased(K[:subset, :subset], K[subset:, subset:], K[:subset, subset:])))
            mmds[name] = vals
    o = Path(out)
    o.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4))
    lo = min(min(v) for v in mmds.values())
    hi = max(max(v) for v in mmds.values())
    bins = torch.linspace(lo, hi, 60).tolist()
    for name, v in mmds.items():
        ax.hist(v, bins=bins, alpha=0.55, label=f"{name} (mean {sum(v) / len(v):.3g})")
    ax.set_xlabel("MMD$^2_u$ to the clean reference (EPS features)")
    ax.set_ylabel(f"count over {n_subsets} subsets of {subset}")
    ax.set_title(f"{dataset}: PGD linf {eps:g}, DDPM samples ({sample_steps} steps)", fontsize=10)
    ax.legend(fontsize=8)
    fig.text(0.01, 0.01, kname, fontsize=6)
    fig.tight_layout()
    fig.savefig(o / "discrepancy.png", dpi=120)
    plt.close(fig)
    summ = {n_: {"mean": sum(v) / len(v), "min": min(v), "max": max(v)} for n_, v in mmds.items()}
    result = {"command": "advpure " + " ".join(sys.argv[1:]), "dataset": dataset, "kernel": kname,
              "eps": eps, "subset": subset, "n_subsets": n_subsets, "n_pool": n_pool, "n_ref": n_ref,
              "t_levels": list(levels), "scale": scale, "sample_steps": sample_steps,
              "generated_mean_classifier_confidence": float(gen_pred.mean()),
              "summary": summ, "mmd2": mmds, "seconds": time.time() - t0}
    (o / "discrepancy.json").write_text(json.dumps(result, indent=1) + "\n")
    return result
