"""EPS-AD (:mod:`advpure.detect.eps_ad`) trained on a dataset, with AUROC / TPR at 5% FPR against PGD, APGD-CE,
C&W-l2 and FGSM at several budgets (``advpure eps-ad``; JSON + markdown table).

Data split (the dataset's train split, seeded permutation): ``n_train`` clean images for the kernel, ``n_train``
other images attacked for its adversarial side, ``n_ref`` clean reference images, ``n_calib`` clean images for
the threshold. Test: ``n_test`` images of the test split, clean vs their attacked versions.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import torch

from .common import frozen_classifier, frozen_diffusion

log = logging.getLogger(__name__)


def make_attack(name: str, budget: float, *, seed: int = 0):
    """The attacks of the EPS-AD table: pgd (20 steps, 2.5 eps/20), apgd (APGD-CE, 100 steps), fgsm (PGD with
    one step of size eps from x), cw (C&W-l2, 100 steps x 5 binary steps, eps = l2 budget), and ``noise``
    (random signs of size eps, a non-adversarial control)."""
    from ..attacks import APGD, CWL2, PGD

    if name == "pgd":
        return PGD(norm="linf", eps=budget, steps=20, step_size=2.5 * budget / 20, seed=seed)
    if name == "apgd":
        return APGD(norm="linf", eps=budget, steps=100, loss="ce", seed=seed)
    if name == "fgsm":
        return PGD(norm="linf", eps=budget, steps=1, step_size=budget, random_start=False, seed=seed)
    if name == "cw":
        return CWL2(eps=budget, steps=100, binary_steps=5, c_init=1.0, lr=0.05, seed=seed)
    if name == "noise":  # a non-adversarial control: random signs of size eps (is detection attack-specific?)
        return _SignNoise(budget, seed=seed)
    raise ValueError(f"attack: expected pgd, apgd, fgsm, cw or noise, got {name!r}")


class _SignNoise:
    """x + eps * random signs, clipped to [0, 1]: same linf size as FGSM, no gradient information."""

    def __init__(self, eps: float, *, seed: int = 0) -> None:
        self.eps, self.seed = eps, seed

    def __call__(self, model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed)
        return (x + self.eps * torch.randint(0, 2, x.shape, generator=g).to(x).mul(2).sub(1)).clamp(0, 1)


def run_eps_ad(*, dataset: str = "digits", classifier: str, model: str | None = None, data_dir: str | None = None,
               t_levels: list[float] | None = None, train_eps: float = 0.1, n_train: int = 300, n_ref: int = 400,
               n_calib: int = 300, n_test: int = 200, epochs: int = 300, lr: float = 1e-3, fpr: float = 0.05,
               linf_budgets: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3), l2_budgets: tuple[float, ...] = (1.0, 2.0),
               attacks: tuple[str, ...] = ("pgd", "apgd", "cw", "fgsm", "noise"), seed: int = 0,
               out: str | Path | None = None, progress: bool = True) -> dict:
    from ..data import load_dataset
    from ..detect.eps import DEFAULT_T_LEVELS
    from ..detect.eps_ad import (
        EPSAD,
        auroc,
        build_eps_kernel,
        conformal_threshold,
        eps_features,
        tpr_at,
        train_eps_kernel,
    )
    from ..detect.kernels import save_kernel

    t0 = time.time()
    levels = tuple(t_levels) if t_levels else DEFAULT_T_LEVELS
    net, sched, meta = frozen_diffusion(model, dataset)
    clf = frozen_classifier(classifier)
    train = load_dataset(dataset, "train", data_dir=data_dir)
    test = load_dataset(dataset, "test", data_dir=data_dir)
    need = 2 * n_train + n_ref + n_calib
    if need > len(train):
        raise ValueError(f"eps-ad: 2*n_train + n_ref + n_calib = {need} exceeds the {len(train)} training images")
    if n_test > len(test):
        raise ValueError(f"eps-ad: n_test={n_test} exceeds the {len(test)} test images")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(train), generator=g)
    xk, _ = train.batch(idx[:n_train])
    xs, ys = train.batch(idx[n_train:2 * n_train])
    xr, _ = train.batch(idx[2 * n_train:2 * n_train + n_ref])
    xc, _ = train.batch(idx[2 * n_train + n_ref:need])
    x_adv_train = make_attack("pgd", train_eps, seed=seed)(clf, xs, ys)
    ge = torch.Generator().manual_seed(seed + 1)
    feat = lambda x: eps_features(net, x, schedule=sched, t_levels=levels, generator=ge)  # noqa: E731
    fk, fa, fr = feat(xk), feat(x_adv_train), feat(xr)
    scale = float(fk.std())
    fk, fa, fr = fk / scale, fa / scale, fr / scale
    torch.manual_seed(seed)
    kernel = build_eps_kernel(train.shape)
    hist = train_eps_kernel(kernel, fk, fa, epochs=epochs, lr=lr, seed=seed, progress=progress)
    det = {s: EPSAD(net, kernel, fr, schedule=sched, adv_reference=fa, scale=scale, t_levels=levels, statistic=s)
           for s in ("mmd", "witness")}
    fc = feat(xc) / scale
    thr = {s: conformal_threshold(d.score_features(fc), fpr) for s, d in det.items()}
    for s, d in det.items():
        d.threshold = thr[s]
    sub = test.subset(n_test, seed)
    xt, yt = sub.tensors()
    ft = feat(xt) / scale
    clean_scores = {s: d.score_features(ft) for s, d in det.items()}
    with torch.no_grad():
        clean_acc = float((clf(xt).argmax(1) == yt).float().mean())
    rows = []
    for a in attacks:
        budgets = l2_budgets if a == "cw" else linf_budgets
        for b in budgets:
            xa = make_attack(a, b, seed=seed)(clf, xt, yt)
            with torch.no_grad():
                fooled = clf(xa).argmax(1) != yt
            changed = (xa - xt).flatten(1).abs().amax(1) > 0
            fa_t = feat(xa) / scale
            row = {"attack": a, "norm": "l2" if a == "cw" else "linf", "budget": b,
                   "classifier_accuracy": 1 - float(fooled.float().mean()), "n_adv": int(xa.shape[0]),
                   "n_success": int((fooled & changed).sum())}
            for s, d in det.items():
                sc = d.score_features(fa_t)
                ok = fooled & changed
                row[s] = {"auroc": auroc(clean_scores[s], sc), "tpr": tpr_at(sc, thr[s]),
                          "auroc_success": auroc(clean_scores[s], sc[ok]), "tpr_success": tpr_at(sc[ok], thr[s])}
            rows.append(row)
            log.info("eps-ad %s %.3g: %s", a, b, row)
    result = {
        "command": "advpure " + " ".join(sys.argv[1:]), "dataset": dataset, "classifier": classifier,
        "diffusion_model": meta.get("source"), "diffusion_sha256": meta.get("sha256"),
        "t_levels": list(levels), "train_attack": {"name": "pgd-linf", "eps": train_eps, "steps": 20},
        "sizes": {"n_train_pairs": n_train, "n_ref": n_ref, "n_calib": n_calib, "n_test": n_test},
        "kernel": {"epochs": epochs, "lr": lr, "J_first": hist.objective[0], "J_last": hist.objective[-1],
                   "scale": scale},
        "fpr_target": fpr, "thresholds": thr,
        "clean_fpr_test": {s: tpr_at(clean_scores[s], thr[s]) for s in det},
        "clean_classifier_accuracy": clean_acc, "rows": rows, "seconds": time.time() - t0,
    }
    if out is not None:
        o = Path(out)
        o.mkdir(parents=True, exist_ok=True)
        (o / "eps-ad.json").write_text(json.dumps(result, indent=2) + "\n")
        save_kernel(kernel, o / "eps-ad-kernel.safetensors", dataset=dataset, eps_scale=scale,
                    t_levels=list(levels), diffusion_sha256=meta.get("sha256"), result={"J_last": hist.objective[-1]})
    return result


def eps_ad_table(r: dict) -> str:
    lines = [f"EPS-AD on {r['dataset']} (t levels {r['t_levels'][0]:.3g}..{r['t_levels'][-1]:.3g}, "
             f"{len(r['t_levels'])} levels; kernel trained on {r['sizes']['n_train_pairs']} clean/PGD-"
             f"{r['train_attack']['eps']:.3g} pairs; ref {r['sizes']['n_ref']}, calib {r['sizes']['n_calib']}, "
             f"test {r['sizes']['n_test']} clean + {r['sizes']['n_test']} attacked)",
             f"clean FPR on test at the calibrated threshold: mmd {r['clean_fpr_test']['mmd']:.3f}, "
             f"witness {r['clean_fpr_test']['witness']:.3f}",
             "",
             "| attack | budget | clf acc | MMD AUROC | MMD TPR@5% | witness AUROC | witness TPR@5% | "
             "n success | MMD AUROC (success) | witness AUROC (success) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in r["rows"]:
        m, w = row["mmd"], row["witness"]
        lines.append(f"| {row['attack']} | {row['norm']} {row['budget']:.3g} | {row['classifier_accuracy']:.3f} | "
                     f"{m['auroc']:.3f} | {m['tpr']:.3f} | {w['auroc']:.3f} | {w['tpr']:.3f} | {row['n_success']} | "
                     f"{m['auroc_success']:.3f} | {w['auroc_success']:.3f} |")
    return "\n".join(lines)
