"""``advpure curves``: clean/robust accuracy vs t* and vs the budget for a diffusion purifier
(:mod:`advpure.experiments.curves`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import threads
from .options import budgets, old_spelling, seeds


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("curves", help="clean/robust accuracy vs t* and vs the budget for a diffusion purifier (PNG)")
    p.add_argument("--dataset", default="digits", help="the dataset (its test split)")
    p.add_argument("--data-dir", default=None, help="dataset location (cifar10/folder)")
    p.add_argument("--classifier", required=True, help="classifier spec (advpure list models)")
    p.add_argument("--defense", required=True, help="a purifier spec with a t parameter, e.g. diffpure:steps=20")
    p.add_argument("--attack", required=True, help="attack spec; its eps is overridden on the budget axis")
    p.add_argument("--t-values", type=budgets, default=[0.025, 0.05, 0.1, 0.2, 0.3],
                   help="comma-separated t* of the accuracy-vs-t curve")
    p.add_argument("--eps", type=budgets, default=[0, 0.05, 0.1, 0.2, 0.3],
                   help="comma-separated budgets of the accuracy-vs-budget curve (8/255 style fractions accepted)")
    p.add_argument("--n", type=int, default=64, help="test images (seeded subset)")
    p.add_argument("--seeds", type=seeds, default=[0], help="comma-separated seeds each point is repeated over")
    p.add_argument("--votes", type=int, default=0, help="majority vote over K purifications (0 = none)")
    p.add_argument("--out", default="curves", help="output directory (curves.png, curves.json)")
    threads.add_argument(p)
    old_spelling(p, "--budgets", "--eps")
    p.set_defaults(func=_curves_main)


def _curves_main(args: argparse.Namespace) -> int:
    from ..experiments.curves import run_curves

    res = run_curves(dataset=args.dataset, data_dir=args.data_dir, classifier=args.classifier, defense=args.defense,
                     attack=args.attack, t_values=args.t_values, budgets=args.eps, n=args.n,
                     out=Path(args.out), seeds=args.seeds, votes=args.votes)
    print("| t* | clean | robust |\n|---|---|---|")
    for t, v in res["vs_t"].items():
        print(f"| {t} | {100 * v['clean']:.1f}% | {100 * v['robust']:.1f}% |")
    print("\n| eps | accuracy |\n|---|---|")
    for e, v in res["vs_eps"].items():
        print(f"| {e} | {100 * (v['robust'] if float(e) > 0 else v['clean']):.1f}% |")
    print(f"\nwrote {args.out}/curves.png and curves.json")
    return 0
