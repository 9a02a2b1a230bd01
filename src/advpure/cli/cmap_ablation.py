"""``advpure cmap-ablation``: CMAP's ablations and its robustness next to DiffPure
(:mod:`advpure.experiments.cmap_ablation`)."""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any

import torch

from .. import threads
from ..contracts import linf_budget
from ..data import DEFAULT_LINF_EPS
from ..experiments import cmap_ablation
from .options import old_spelling


def _handler(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from ..defenses.cmap import DEFAULT_MODELS

    model = DEFAULT_MODELS.get(args.dataset)
    defaults = {"model": model and str(model), "classifier": cmap_ablation.DEFAULT_CLASSIFIERS.get(args.dataset),
                "eps": DEFAULT_LINF_EPS.get(args.dataset)}
    for key in ("model", "classifier", "eps"):
        if getattr(args, key) is None:
            if defaults[key] is None:
                raise ValueError(f"cmap-ablation --dataset {args.dataset}: pass --{key} (no default for this dataset)")
            setattr(args, key, defaults[key])
    torch.manual_seed(args.seed)
    common = dict(model=args.model, classifier=args.classifier, n=args.n, seed=args.seed, out=args.out, eps=args.eps,
                  dataset=args.dataset, data_dir=args.data_dir, lr=args.lr, lam_s=args.lam_s)
    if args.attacks:
        rep = cmap_ablation.run_attacks(**common, teacher=args.teacher, pgd_steps=args.steps, eot=args.eot,
                                        iterations=args.iterations, k=args.k, lam=args.lam, skip_full=args.skip_full,
                                        full_steps=args.full_steps, parts=args.parts,
                                        disruption_steps=args.disruption_steps, diffpure_t=args.diffpure_t,
                                        diffpure_steps=args.diffpure_steps)
        for r in rep["rows"]:
            print(f"{r['accuracy']:.3f}  {r['defense_attack']}  ({r['seconds']} s)")
        return 0
    rep = cmap_ablation.run_ablation(**common, iterations=args.curve_iterations, every=args.every,
                                     lam=3.0 if args.lam is None else args.lam, k=args.k or 4,
                                     k_iterations=args.iterations, ks=tuple(int(v) for v in args.ks.split(",")))
    print(json.dumps({kk: rep[kk] for kk in ("undefended", "voting", "k_sweep")}, indent=1))
    print(f"figures in {args.out}: iterations.png, voting.png, k.png, examples.png")
    return 0


def register(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("cmap-ablation", help="CMAP ablations (iterations, lambda, voting, K) and attacks",
                              description=cmap_ablation.__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="digits", choices=sorted(cmap_ablation.DEFAULT_CLASSIFIERS),
                   help="the dataset (its test split)")
    p.add_argument("--data-dir", default=None, help="dataset location (cifar10: the JPEG archive or folder)")
    p.add_argument("--model", default=None, help="consistency model (default: zoo/digits-cm or zoo/cifar10-cm-cd-tiny)")
    p.add_argument("--classifier", default=None, help="classifier spec (digits default: zoo/digits-small-cnn)")
    p.add_argument("--teacher", default=None, help="diffusion model for the DiffPure comparison (--attacks)")
    p.add_argument("--n", type=int, default=100, help="test images (seeded subset)")
    p.add_argument("--seed", type=int, default=0, help="the run's one seed (subset, attacks, CMAP's latents)")
    p.add_argument("--eps", type=linf_budget, default=None, help="linf budget, e.g. 8/255 (default: digits 0.2, "
                   "cifar10 8/255)")
    p.add_argument("--iterations", type=int, default=None, help="CMAP iterations (default 30); for the ablation: "
                   "the iterations of the voting and K comparisons")
    p.add_argument("--curve-iterations", type=int, default=60, help="ablation: length of the iteration curves")
    p.add_argument("--every", type=int, default=5, help="ablation: trace every this many iterations")
    p.add_argument("--k", type=int, default=None, help="CMAP latents per input (default 4)")
    p.add_argument("--ks", default="1,2,4,8", help="ablation: the K values compared")
    p.add_argument("--lr", type=float, default=None, help="CMAP Adam learning rate (default 0.1)")
    p.add_argument("--lam", type=float, default=None, help="lambda (ablation: the lambda > 0 compared with 0; "
                   "default 3)")
    p.add_argument("--lam-s", type=float, default=None, help="SSIM weight (default 1)")
    p.add_argument("--attacks", action="store_true", help="run the adaptive attacks instead of the ablations")
    p.add_argument("--steps", type=int, default=10, help="attacks: steps of the PGD/BPDA attacks on CMAP and DiffPure")
    p.add_argument("--eot", type=int, default=2, help="attacks: EOT samples per gradient")
    p.add_argument("--full-steps", type=int, default=5, help="PGD steps of the full-gradient attack through CMAP")
    p.add_argument("--disruption-steps", type=int, default=30, help="steps of the consistency-disruption attack")
    p.add_argument("--diffpure-t", type=float, default=0.1, help="DiffPure t* for the comparison")
    p.add_argument("--diffpure-steps", type=int, default=20, help="DiffPure reverse steps for the comparison")
    p.add_argument("--parts", default="cmap,full,diffpure", help="which rows of the attack table to run")
    p.add_argument("--skip-full", action="store_true", help="skip the full-gradient PGD-EOT through CMAP")
    p.add_argument("--out", required=True, help="output directory (report.json, figures)")
    threads.add_argument(p)
    old_spelling(p, "--pgd-steps", "--steps")
    p.set_defaults(func=_handler)
    return p
