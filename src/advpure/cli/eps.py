"""``advpure eps reference`` and ``advpure eps observe``: the EPS statistics SSNI needs, and the observation
behind SSNI drawn as a figure (:mod:`advpure.experiments.eps`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import threads
from .options import budgets, old_spelling


def cmd_reference(args: argparse.Namespace) -> int:
    from ..experiments.eps import make_reference

    ref, out = make_reference(dataset=args.dataset, data_dir=args.data_dir, model=args.model, n=args.n,
                              batch_size=args.batch_size, seed=args.seed, out=args.out,
                              command="advpure " + " ".join(sys.argv[1:]))
    print(f"wrote {out}: ||EPS|| over {ref.n} clean {args.dataset} train images: mean {ref.mean:.2f}, "
          f"std {ref.std:.2f}, min {ref.min:.2f}, max {ref.max:.2f}")
    return 0


def cmd_observe(args: argparse.Namespace) -> int:
    from ..experiments.eps import observe

    eps = args.eps
    bad = [b for b in eps if not 0 <= b <= 1]
    if bad:
        raise ValueError(f"--eps {','.join(f'{b:g}' for b in eps)}: l_inf budgets for images in [0, 1] must lie in "
                         f"[0, 1] (got {', '.join(f'{b:g}' for b in bad)}; 8/255 style fractions are accepted)")
    s = observe(dataset=args.dataset, data_dir=args.data_dir, model=args.model, classifier=args.classifier,
                budgets=eps, n=args.n, seed=args.seed, steps=args.steps, out=Path(args.out), t_star=args.t,
                ref=args.ref)
    print("| budget | mean ||EPS|| | std | mean t (SSNI-N) | mean t (SSNI-L) | classifier acc |")
    print("| --- | --- | --- | --- | --- | --- |")
    for b, r in s["budgets"].items():
        print(f"| {b} | {r['eps_norm_mean']:.2f} | {r['eps_norm_std']:.2f} | {r['t_ssni_n_mean']:.4f} | "
              f"{r['t_ssni_l_mean']:.4f} | {r['classifier_accuracy']:.3f} |")
    print(f"wrote {args.out}/eps-histogram.png and eps-observe.json")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eps", help="expected perturbation score: reference statistics and the SSNI observation")
    eps_sub = p.add_subparsers(dest="what", metavar="WHAT", required=True)
    r = eps_sub.add_parser("reference", help="||EPS|| statistics of clean training images, stored beside the model")
    r.add_argument("--dataset", default="digits", help="the dataset (its train split)")
    r.add_argument("--data-dir", default=None, help="dataset location (cifar10/folder)")
    r.add_argument("--model", default=None, help="diffusion checkpoint (default: the zoo model of the dataset)")
    r.add_argument("--n", type=int, default=5000, help="clean reference images (paper: 5,000 training images)")
    r.add_argument("--batch-size", type=int, default=64, help="images per network call")
    r.add_argument("--seed", type=int, default=0, help="the run's one seed (which images, EPS noise)")
    r.add_argument("--out", default=None, help="output file (default: <model>.eps-ref.json)")
    threads.add_argument(r)
    r.set_defaults(func=cmd_reference)
    o = eps_sub.add_parser("observe", help="histogram PNG of ||EPS|| for clean and PGD inputs, and SSNI's t")
    o.add_argument("--dataset", default="digits", help="the dataset (its test split)")
    o.add_argument("--data-dir", default=None, help="dataset location (cifar10/folder)")
    o.add_argument("--model", default=None, help="diffusion checkpoint (default: the zoo model of the dataset)")
    o.add_argument("--ref", default=None, help="EPS reference statistics (default: beside the model)")
    o.add_argument("--classifier", required=True, help="classifier spec (the PGD target)")
    o.add_argument("--eps", type=budgets, default=[0, 0.05, 0.1, 0.2, 0.3],
                   help="comma-separated l_inf budgets (8/255 style fractions accepted)")
    o.add_argument("--n", type=int, default=200, help="test images (seeded subset)")
    o.add_argument("--steps", type=int, default=20, help="PGD steps")
    o.add_argument("--t", type=float, default=0.1, help="t* of the wrapped purifier")
    o.add_argument("--seed", type=int, default=0, help="the run's one seed")
    o.add_argument("--out", default="eps-observe", help="output directory (eps-histogram.png, eps-observe.json)")
    threads.add_argument(o)
    old_spelling(o, "--budgets", "--eps")
    o.set_defaults(func=cmd_observe)
