"""Discrepancy-based detection and DAD experiments on the command line.

* ``advpure eps-ad``: train EPS-AD (:mod:`advpure.detect.eps_ad`) on a dataset and report AUROC / TPR at
  5% FPR against PGD, APGD-CE, C&W-l2 and FGSM at several budgets (JSON + markdown table).
* ``advpure dad-attacks``: DAD's robust accuracy under detector-aware adaptive attacks
  (:mod:`advpure.attacks.detector_aware`), mean and std over seeds.
* ``advpure discrepancy``: histograms (one PNG) of MMD^2_u between a clean reference set and random subsets
  of clean, PGD and diffusion-generated inputs, on EPS features.

Data split for ``eps-ad`` (digits train split, seeded permutation): ``n_train`` clean images for the kernel,
``n_train`` other images attacked for its adversarial side, ``n_ref`` clean reference images, ``n_calib``
clean images for the threshold. Test: ``n_test`` images of the test split, clean vs their attacked versions.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch

from .. import threads
from ..contracts import linf_budget, parse_fraction

log = logging.getLogger(__name__)


def _floats(s: str) -> list[float]:
    return [parse_fraction(v) for v in s.split(",") if v.strip()]


def _load_diffusion(model: str | None, dataset: str):
    from ..diffusion.models import load_denoiser
    from ..defenses.diffusion_base import DEFAULT_MODELS
    from ..diffusion.schedule import VPSchedule

    path = Path(model) if model else DEFAULT_MODELS.get(dataset)
    if path is None:
        raise ValueError(f"no default diffusion model for dataset {dataset!r}; pass --model PATH")
    net, meta = load_denoiser(path)
    for p in net.parameters():
        p.requires_grad_(False)
    return net, VPSchedule(), meta


def _load_classifier(spec: str):
    from ..models import load_classifier

    clf = load_classifier(spec)
    for p in clf.parameters():
        p.requires_grad_(False)
    return clf.eval()


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


# --------------------------------------------------------------------------- eps-ad
def run_eps_ad(*, dataset: str = "digits", classifier: str, model: str | None = None, data_dir: str | None = None,
               t_levels: list[float] | None = None, train_eps: float = 0.1, n_train: int = 300, n_ref: int = 400,
               n_calib: int = 300, n_test: int = 200, epochs: int = 300, lr: float = 1e-3, fpr: float = 0.05,
               linf_budgets: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3), l2_budgets: tuple[float, ...] = (1.0, 2.0),
               attacks: tuple[str, ...] = ("pgd", "apgd", "cw", "fgsm", "noise"), seed: int = 0,
               out: str | Path | None = None, progress: bool = True) -> dict:
    from ..data import load_dataset
    from ..detect.eps import DEFAULT_T_LEVELS
    from ..detect.eps_ad import (EPSAD, auroc, build_eps_kernel, conformal_threshold, eps_features, tpr_at,
                                  train_eps_kernel)
    from ..detect.kernels import save_kernel

    t0 = time.time()
    levels = tuple(t_levels) if t_levels else DEFAULT_T_LEVELS
    net, sched, meta = _load_diffusion(model, dataset)
    clf = _load_classifier(classifier)
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


def cmd_eps_ad(args: argparse.Namespace) -> int:
    r = run_eps_ad(dataset=args.dataset, classifier=args.classifier, model=args.model, data_dir=args.data_dir,
                   t_levels=_floats(args.t_levels) if args.t_levels else None, train_eps=args.train_eps,
                   n_train=args.n_train, n_ref=args.n_ref, n_calib=args.n_calib, n_test=args.n_test,
                   epochs=args.epochs, lr=args.lr, fpr=args.fpr, linf_budgets=tuple(_floats(args.linf_budgets)),
                   l2_budgets=tuple(_floats(args.l2_budgets)), attacks=tuple(args.attacks.split(",")),
                   seed=args.seed, out=args.out)
    print(eps_ad_table(r))
    print(f"wrote {args.out}/eps-ad.json ({r['seconds']:.0f} s)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eps-ad", help="EPS-AD: train the EPS deep kernel, report AUROC / TPR@5%%FPR per attack")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--classifier", required=True)
    p.add_argument("--model", default=None, help="diffusion checkpoint (default: the dataset's zoo model)")
    p.add_argument("--t-levels", default=None, help="comma-separated EPS noise levels (default t=1..20/1000)")
    p.add_argument("--train-eps", type=linf_budget, default=0.1,
                   help="PGD-linf budget of the kernel's adversarial training data (EPS-AD: half the headline budget)")
    p.add_argument("--n-train", type=int, default=300)
    p.add_argument("--n-ref", type=int, default=400)
    p.add_argument("--n-calib", type=int, default=300)
    p.add_argument("--n-test", type=int, default=200)
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--fpr", type=float, default=0.05)
    p.add_argument("--linf-budgets", default="0.05,0.1,0.2,0.3")
    p.add_argument("--l2-budgets", default="1.0,2.0")
    p.add_argument("--attacks", default="pgd,apgd,cw,fgsm,noise")
    p.add_argument("--seed", type=int, default=0)
    threads.add_argument(p)
    p.add_argument("--out", default="eps-ad")
    p.set_defaults(func=cmd_eps_ad)
    _register_dad(sub)
    _register_discrepancy(sub)


# --------------------------------------------------------------------------- dad-attacks
def split_reference(dataset: str, *, reference_split: str = "train", n_reference: int = 200, seed: int = 0,
                    data_dir: str | None = None):
    """(clean reference images, the test images left for evaluation).

    ``reference_split="train"``: a seeded train subset (the ``dad`` defense spec's choice); all test images stay
    for evaluation. ``"test"``: the first ``n_reference`` images of a seeded permutation of the test split, and
    evaluation draws from the rest only. Use "test" when the classifier behind a semantic kernel has memorised
    its training set: its features then separate train from test images, and a train-split reference flags
    clean test batches (measured on CIFAR-10 with the shared ResNet-56: 4 of 6 clean batches flagged).
    """
    from ..data import load_dataset
    from ..data.base import ImageSet

    test = load_dataset(dataset, "test", data_dir=data_dir)
    if reference_split == "train":
        train = load_dataset(dataset, "train", data_dir=data_dir)
        idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
        return train.batch(idx[:n_reference])[0], test
    if reference_split != "test":
        raise ValueError(f"reference_split: expected 'train' or 'test', got {reference_split!r}")
    if n_reference >= len(test):
        raise ValueError(f"n_reference {n_reference}: the test split has only {len(test)} images")
    idx = torch.randperm(len(test), generator=torch.Generator().manual_seed(seed))
    rest = idx[n_reference:]
    pool = ImageSet(test.images[rest], test.labels[rest], list(test.classes), test.name, test.split,
                    {**test.meta, "excludes_reference": n_reference})
    return test.batch(idx[:n_reference])[0], pool


def build_dad(*, dataset: str, classifier, kernel: str, denoiser: str, reference: torch.Tensor,
              test: str = "permutation", n_resamples: int = 100, mode: str = "batch",
              calibration: torch.Tensor | None = None):
    """DAD around the given clean ``reference`` images (see :func:`split_reference`); sample mode calibrates its
    per-sample threshold at 5% FPR on ``calibration`` (clean images disjoint from reference and evaluation)."""
    from ..defenses.dad import DAD, load_denoiser
    from ..detect.kernels import load_kernel

    shape = tuple(reference.shape[1:])
    k = load_kernel(kernel, classifier=classifier, input_shape=shape)
    g = load_denoiser(denoiser, input_shape=shape)
    for p in g.parameters():
        p.requires_grad_(False)
    dad = DAD(g, k, reference, mode=mode, test=test, n_resamples=n_resamples)
    if mode == "sample":
        if calibration is None:
            raise ValueError("DAD sample mode needs clean calibration images for its per-sample threshold")
        dad.calibrate_sample(calibration, fpr=0.05)
    return dad


def mixed_batch_table(clf, dad_batch, dad_sample, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor,
                      order: torch.Tensor, *, fractions=(0.0, 0.1, 0.25, 0.5, 1.0), n_batches: int = 9,
                      batch_size: int = 50, generator: torch.Generator | None = None) -> dict:
    """DAD on batches that mix clean and adversarial inputs (issue: an attacker hides a few among clean ones).

    For each adversarial fraction f, ``n_batches`` disjoint batches (``order`` gives the image indices); the
    first ``round(f * batch_size)`` inputs of a batch are replaced by their adversarial versions. Returns, per f,
    the mean over batches of: accuracy through the batch-mode and the sample-mode DAD, the fraction of flagged
    batches (batch mode), and the fractions of flagged adversarial and clean inputs (sample mode; None when the
    batch has none of that kind).
    """
    table = {}
    for f in fractions:
        accs: dict[str, list[float]] = {"batch": [], "sample": [], "flag_batch": [], "flag_sample_adv": [],
                                        "flag_sample_clean": []}
        na = int(round(f * batch_size))
        for b in range(n_batches):
            ii = order[b * batch_size:(b + 1) * batch_size]
            xb = x[ii].clone()
            xb[:na] = x_adv[ii[:na]]
            yb = y[ii]
            with torch.no_grad():
                pb = clf(dad_batch(xb, generator=generator)).argmax(1)
                accs["flag_batch"].append(float(dad_batch.last_flags.float().mean()))
                ps = clf(dad_sample(xb, generator=generator)).argmax(1)
                fl = dad_sample.last_flags
            if na:
                accs["flag_sample_adv"].append(float(fl[:na].float().mean()))
            if na < batch_size:
                accs["flag_sample_clean"].append(float(fl[na:].float().mean()))
            accs["batch"].append(float((pb == yb).float().mean()))
            accs["sample"].append(float((ps == yb).float().mean()))
        table[f] = {k: (sum(v) / len(v) if v else None) for k, v in accs.items()}
        log.info("mixed batches f=%g: %s", f, table[f])
    return table


def dad_attacks(*, dataset: str = "digits", classifier: str, kernel: str, denoiser: str, data_dir: str | None = None,
                eps: float = 0.2, n: int = 150, batch_size: int = 50, seeds: tuple[int, ...] = (0, 1, 2),
                steps: int = 50, eot: int = 4, attacks: tuple[str, ...] = ("none", "pgd-oblivious", "dad-adaptive",
                                                                         "detector-aware", "dad-denoiser"),
                margin: float = 0.5, reference_split: str = "train", mode: str = "batch", n_calib: int = 300,
                out: str | Path | None = None) -> dict:
    """DAD's accuracy (batch mode: permutation test, alpha 0.05; sample mode: per-sample threshold at 5% FPR)
    under each attack, per seed and mean/std.

    Per seed s: a seeded test subset of ``n`` images (``subset(n, s)``), batches of ``batch_size``; each
    attacked batch is then classified once through DAD with a generator seeded by (s, batch). "flagged" is the
    fraction of flagged batches (batch mode) or of flagged inputs (sample mode). Sample mode takes ``n_calib``
    further clean images (after the 200 reference images, same split) for its threshold.
    """
    from ..attacks import PGD
    from ..attacks.detector_aware import DADPathPGD, DetectorAwarePGD
    from ..defenses import DefendedClassifier
    from ..eval.metrics import mean_std

    t0 = time.time()
    clf = _load_classifier(classifier)
    if mode not in ("batch", "sample"):
        raise ValueError(f"mode: expected 'batch' or 'sample', got {mode!r}")
    extra = n_calib if mode == "sample" else 0
    ref, test = split_reference(dataset, reference_split=reference_split, n_reference=200 + extra, data_dir=data_dir)
    dad = build_dad(dataset=dataset, classifier=clf, kernel=kernel, denoiser=denoiser, reference=ref[:200],
                    mode=mode, calibration=ref[200:] if extra else None)
    model = DefendedClassifier(clf, dad)

    def make(a: str, s: int):
        if a == "pgd-oblivious":
            return PGD(norm="linf", eps=eps, steps=20, step_size=2.5 * eps / 20, seed=s)
        if a == "dad-adaptive":
            return DADPathPGD(eps=eps, steps=steps, eot=eot, mmd_weight=1.0, seed=s)
        if a == "dad-denoiser":
            return DADPathPGD(eps=eps, steps=steps, eot=eot, mmd_weight=0.0, seed=s)
        if a == "detector-aware":
            return DetectorAwarePGD(eps=eps, steps=2 * steps, margin=margin, seed=s)
        raise ValueError(f"attack: expected none, pgd-oblivious, dad-adaptive, detector-aware or dad-denoiser, got {a!r}")

    per = {a: {"accuracy": [], "detected_batches": [], "undefended_accuracy": []} for a in attacks}
    for s in seeds:
        x, y = test.subset(n, s).tensors()
        for a in attacks:
            correct = flagged = und = 0
            nb = 0
            for b, i in enumerate(range(0, n, batch_size)):
                xb, yb = x[i:i + batch_size], y[i:i + batch_size]
                if a == "none":
                    xa = xb
                elif a == "pgd-oblivious":
                    xa = make(a, s)(clf, xb, yb)  # attacks the classifier alone
                else:
                    xa = make(a, s)(model, xb, yb)
                g = torch.Generator().manual_seed(1000 * s + b)
                with torch.no_grad():
                    pred = clf(dad.purify(xa, generator=g)).argmax(1)
                    und += int((clf(xa).argmax(1) == yb).sum())
                correct += int((pred == yb).sum())
                flagged += float(dad.last_flags.float().mean()) if mode == "sample" else int(bool(dad.last_flags.all()))
                nb += 1
            per[a]["accuracy"].append(correct / n)
            per[a]["detected_batches"].append(flagged / nb)
            per[a]["undefended_accuracy"].append(und / n)
            log.info("dad-attacks seed %d %s: acc %.3f flagged %d/%d", s, a, correct / n, flagged, nb)
    summary = {a: {k: {"values": v, **mean_std(v)} for k, v in d.items()}
               for a, d in per.items()}
    result = {"command": "advpure " + " ".join(sys.argv[1:]), "dataset": dataset, "classifier": classifier,
              "kernel": kernel, "denoiser": denoiser, "eps": eps, "n": n, "batch_size": batch_size,
              "seeds": list(seeds), "steps": steps, "eot": eot, "margin": margin, "reference_split": reference_split, "mode": mode,
              "dad": dad.describe(), "results": summary,
              "seconds": time.time() - t0}
    if out is not None:
        o = Path(out)
        o.mkdir(parents=True, exist_ok=True)
        (o / "dad-attacks.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def dad_table(r: dict) -> str:
    mode = r.get("mode", "batch")
    how = "batch mode, permutation test alpha 0.05" if mode == "batch" else "sample mode, threshold at 5% FPR"
    lines = [f"DAD on {r['dataset']} ({how}, batches of {r['batch_size']}, {r.get('reference_split', 'train')}-split "
             f"reference), linf eps {r['eps']:.3g}, {r['n']} test images per seed, seeds {r['seeds']}",
             "", f"| attack | DAD accuracy (mean +- std) | {'batches' if mode == 'batch' else 'inputs'} flagged | "
             "classifier alone on the inputs |",
             "| --- | --- | --- | --- |"]
    for a, d in r["results"].items():
        acc, fl, und = d["accuracy"], d["detected_batches"], d["undefended_accuracy"]
        lines.append(f"| {a} | {acc['mean']:.3f} +- {acc['std']:.3f} | {fl['mean']:.2f} | {und['mean']:.3f} |")
    return "\n".join(lines)


def cmd_dad_attacks(args: argparse.Namespace) -> int:
    r = dad_attacks(dataset=args.dataset, classifier=args.classifier, kernel=args.kernel, denoiser=args.denoiser,
                    data_dir=args.data_dir, eps=args.eps, n=args.n, batch_size=args.batch_size,
                    seeds=tuple(int(s) for s in args.seeds.split(",")), steps=args.steps, eot=args.eot,
                    attacks=tuple(args.attacks.split(",")), margin=args.margin,
                    reference_split=args.reference_split, mode=args.mode, out=args.out)
    print(dad_table(r))
    print(f"wrote {args.out}/dad-attacks.json ({r['seconds']:.0f} s)")
    return 0


def _register_dad(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dad-attacks", help="DAD robust accuracy under detector-aware adaptive attacks")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--classifier", default="zoo/digits-small-cnn.safetensors")
    p.add_argument("--kernel", default="zoo/digits-dad-kernel.safetensors")
    p.add_argument("--denoiser", default="zoo/digits-dad-denoiser.safetensors")
    p.add_argument("--eps", type=linf_budget, default=0.2)
    p.add_argument("--n", type=int, default=150)
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--steps", type=int, default=50, help="steps of (a)/(c); (b) runs twice as many")
    p.add_argument("--eot", type=int, default=4)
    p.add_argument("--margin", type=float, default=0.5,
                   help="detector-aware attack: keep the statistic below margin x threshold")
    p.add_argument("--attacks", default="none,pgd-oblivious,dad-adaptive,detector-aware,dad-denoiser")
    p.add_argument("--reference-split", choices=("train", "test"), default="train",
                   help="clean reference set: 200 train images, or 200 test images excluded from evaluation")
    p.add_argument("--mode", choices=("batch", "sample"), default="batch",
                   help="DAD decision per batch (permutation test) or per input (threshold at 5%% FPR, calibrated "
                        "on 300 further clean images of the reference split)")
    threads.add_argument(p)
    p.add_argument("--out", default="dad-attacks")
    p.set_defaults(func=cmd_dad_attacks)


# --------------------------------------------------------------------------- discrepancy histograms
def discrepancy(*, dataset: str = "digits", classifier: str, model: str | None = None, data_dir: str | None = None,
                kernel: str | None = None, eps: float = 0.2, subset: int = 50, n_subsets: int = 100,
                n_pool: int = 200, n_ref: int = 400, sample_steps: int = 1000, seed: int = 0,
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
    net, sched, meta = _load_diffusion(model, dataset)
    clf = _load_classifier(classifier)
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
        from ..checkpoint import read_sidecar

        side = read_sidecar(kernel)
        k = load_kernel(kernel, input_shape=train.shape)
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


def cmd_discrepancy(args: argparse.Namespace) -> int:
    r = discrepancy(dataset=args.dataset, classifier=args.classifier, model=args.model, data_dir=args.data_dir,
                    kernel=args.kernel, eps=args.eps, subset=args.subset, n_subsets=args.n_subsets,
                    n_pool=args.n_pool, n_ref=args.n_ref, sample_steps=args.sample_steps, seed=args.seed,
                    out=args.out)
    print(f"kernel: {r['kernel']}")
    print("| set | mean MMD^2_u | min | max |")
    print("| --- | --- | --- | --- |")
    for name, s in r["summary"].items():
        print(f"| {name} | {s['mean']:.4g} | {s['min']:.4g} | {s['max']:.4g} |")
    print(f"wrote {args.out}/discrepancy.png and discrepancy.json ({r['seconds']:.0f} s)")
    return 0


def _register_discrepancy(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("discrepancy", help="histograms of MMD to clean data: clean vs PGD vs generated (EPS)")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--classifier", default="zoo/digits-small-cnn.safetensors")
    p.add_argument("--model", default=None, help="diffusion checkpoint (EPS and samples)")
    p.add_argument("--kernel", default=None, help="EPS-AD kernel from `advpure eps-ad` (default: Gaussian)")
    p.add_argument("--eps", type=linf_budget, default=0.2)
    p.add_argument("--subset", type=int, default=50)
    p.add_argument("--n-subsets", type=int, default=100)
    p.add_argument("--n-pool", type=int, default=200)
    p.add_argument("--n-ref", type=int, default=400)
    p.add_argument("--sample-steps", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    threads.add_argument(p)
    p.add_argument("--out", default="discrepancy")
    p.set_defaults(func=cmd_discrepancy)
