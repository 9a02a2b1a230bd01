"""Purification-model study (issue 17): eps-prediction MSE at t = 0.02/0.05/0.1/0.2 on 1,000 CIFAR-10 test
images, and DiffPure's clean accuracy (t* = 0.1, 100 reverse-SDE steps, one draw per image) on 500 test images
for the project's classifier and the shared ResNet-56, against undefended; 95% Wilson intervals.

    python experiments/cifar10/purification-model/study.py --model zoo/X.safetensors --out reports/.../X.json
        [--mse-n 1000] [--acc-n 500] [--skip-acc] [--skip-mse] [--seed 0] [--pair OTHER.json]
        [--t-star 0.1] [--steps N] [--sampler sde|ddim] [--classifier NAME=SPEC ...]

``--t-star``, ``--steps`` (default DiffPure's own: ``ceil(t*/dt)``, dt = 1e-3) and ``--sampler`` (``ddim``: deterministic DDIM
from t*, one step = Tweedie's one-step estimate) change the purification measured, to locate where the clean accuracy
is lost; the defaults are DiffPure's (t* = 0.1, 100 reverse-SDE steps).

MSE protocol: ``advpure.train.diffusion.denoising_error`` (mean over pixels of ||eps_theta(x_t, t) - eps||^2),
4 noise draws per image, a fresh generator seeded per t, EMA weights, fp32; a fixed subset of ``--mse-n`` test
images (``subset(n, 0)``).
Accuracy protocol: the test subset ``load_dataset(...).subset(acc_n, 0)`` (the runner's subset), purified once
per image with a seeded generator, the same purified images classified by both classifiers. The JSON keeps each
image's 0/1 correctness (``correct``), so two models run with the same ``--seed`` and ``--acc-n`` (the same images
and the same noise draws) are compared image by image: ``--pair OTHER.json`` adds the paired difference (this model
minus OTHER, ``advpure.eval.metrics.paired_difference``) of DiffPure's clean accuracy for each classifier.
``--classifier NAME=SPEC`` (repeatable) measures these classifiers instead of the two defaults; every classifier after
the first is also paired with the first on the same purified images (``paired_vs_first``: this minus the first,
undefended and purified).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from advpure.data import load_dataset
from advpure.defenses.diffpure import DiffPure
from advpure.diffusion import load_denoiser
from advpure.eval.metrics import interval95, paired_difference
from advpure.models import load_classifier
from advpure.train.diffusion import denoising_error

DATA = "../shared/data/cifar10-jpeg.tar.gz"
CLASSIFIERS = {"fastnet (project)": "zoo/cifar10-fastnet.safetensors",
               "ResNet-56 (shared)": "resnet56:../shared/models/resnet56-4bfd9763.th"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--mse-n", type=int, default=1000)
    ap.add_argument("--acc-n", type=int, default=500)
    ap.add_argument("--skip-acc", action="store_true")
    ap.add_argument("--skip-mse", action="store_true")
    ap.add_argument("--pair", default=None, help="a study JSON of another model (same --seed/--acc-n) to pair with")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--t-star", type=float, default=0.1)
    ap.add_argument("--steps", type=int, default=None, help="reverse steps (default DiffPure's: ceil(t*/1e-3))")
    ap.add_argument("--sampler", choices=("sde", "ddim"), default="sde")
    ap.add_argument("--classifier", action="append", default=[], metavar="NAME=SPEC",
                    help="a classifier to measure (repeatable; replaces the defaults: " + ", ".join(CLASSIFIERS) + ")")
    a = ap.parse_args()
    named = dict(CLASSIFIERS)
    if a.classifier:
        bad = [c for c in a.classifier if "=" not in c]
        if bad:
            raise SystemExit(f"--classifier {bad[0]!r}: expected NAME=SPEC")
        named = dict(c.split("=", 1) for c in a.classifier)
    from tqdm.auto import tqdm

    eps_model, meta = load_denoiser(a.model)
    eps_model.eval()
    data = load_dataset("cifar10", "test", data_dir=DATA)
    rec: dict = {"model": a.model, "sha256": (meta or {}).get("sha256"), "training_steps": (meta or {}).get("training_steps"),
                 "mse_n": a.mse_n, "seed": a.seed}
    x, _ = data.subset(a.mse_n, 0).tensors()
    x0 = x * 2 - 1
    t0 = time.perf_counter()
    mse = {}
    other = json.loads(Path(a.pair).read_text()) if a.pair else None
    if other is not None and ("correct" not in other or other.get("acc_n") != a.acc_n or other.get("seed") != a.seed):
        raise SystemExit(f"--pair {a.pair}: needs a study JSON with per-image 'correct' at acc_n {a.acc_n}, seed {a.seed}")
    for t in () if a.skip_mse else (0.02, 0.05, 0.1, 0.2):
        g = torch.Generator().manual_seed(a.seed * 1000 + int(t * 1000))
        tot = 0.0
        for i in range(0, x0.shape[0], a.batch):
            xb = x0[i:i + a.batch]
            tot += denoising_error(eps_model, xb, t, generator=g, repeats=4) * xb.shape[0]
        mse[str(t)] = round(tot / x0.shape[0], 5)
        print(f"MSE t={t}: {mse[str(t)]}", flush=True)
    rec["mse"] = mse or None
    rec["mse_seconds"] = round(time.perf_counter() - t0, 1)
    if not a.skip_acc:
        sub = data.subset(a.acc_n, 0)
        xs, ys = sub.tensors()
        clfs = {k: load_classifier(v).eval() for k, v in named.items()}
        dp = DiffPure(eps_model, t=a.t_star, n_steps=a.steps, sampler=a.sampler).eval()
        steps = dp.n_steps
        g = torch.Generator().manual_seed(a.seed)
        purified = []
        t1 = time.perf_counter()
        with torch.no_grad():
            for i in tqdm(range(0, xs.shape[0], a.batch), desc="purify"):
                purified.append(dp(xs[i:i + a.batch], generator=g))
        xp = torch.cat(purified)
        rec["purify_seconds"] = round(time.perf_counter() - t1, 1)
        acc, correct = {}, {}
        with torch.no_grad():
            for k, c in clfs.items():
                clean = torch.cat([c(xs[i:i + a.batch]).argmax(1) for i in range(0, xs.shape[0], a.batch)]) == ys
                pur = torch.cat([c(xp[i:i + a.batch]).argmax(1) for i in range(0, xs.shape[0], a.batch)]) == ys
                acc[k] = {"undefended": interval95(clean.float().tolist()), "diffpure": interval95(pur.float().tolist()),
                          "loss_points": round(100 * float(clean.float().mean() - pur.float().mean()), 1)}
                correct[k] = {"undefended": clean.int().tolist(), "diffpure": pur.int().tolist()}
                first = next(iter(correct))
                if k != first:
                    acc[k]["paired_vs_first"] = {"first": first, **{w: paired_difference(
                        correct[first][w], correct[k][w]) for w in ("undefended", "diffpure")}}
                if other is not None and k in other["correct"]:
                    acc[k]["paired_vs_other"] = {"other": a.pair, **paired_difference(
                        other["correct"][k]["diffpure"], correct[k]["diffpure"])}
                print(k, json.dumps(acc[k]), flush=True)
        rec["classifiers"] = named
        rec["accuracy"] = acc
        rec["correct"] = correct
        rec["acc_n"] = a.acc_n
        solver = "reverse-SDE steps (Euler-Maruyama)" if a.sampler == "sde" else "deterministic DDIM steps (eta 0)"
        rec["diffpure"] = f"t*={a.t_star:g}, {steps} {solver}, one draw per image"
        rec["purification"] = {"t_star": a.t_star, "steps": steps, "sampler": a.sampler}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(rec, indent=1))
    print("wrote", a.out)


if __name__ == "__main__":
    main()
