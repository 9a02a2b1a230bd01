"""``advpure eps-ad``: train EPS-AD, report AUROC / TPR@5%FPR per attack (:mod:`advpure.experiments.eps_ad`)."""

from __future__ import annotations

import argparse

from .. import threads
from ..contracts import linf_budget, parse_fraction
from .options import budgets, old_spelling


def _floats(s: str) -> list[float]:
    return [parse_fraction(v) for v in s.split(",") if v.strip()]


def cmd_eps_ad(args: argparse.Namespace) -> int:
    from ..experiments.eps_ad import eps_ad_table, run_eps_ad

    r = run_eps_ad(dataset=args.dataset, classifier=args.classifier, model=args.model, data_dir=args.data_dir,
                   t_levels=_floats(args.t_levels) if args.t_levels else None, train_eps=args.train_eps,
                   n_train=args.n_train, n_ref=args.n_ref, n_calib=args.n_calib, n_test=args.n_test,
                   epochs=args.epochs, lr=args.lr, fpr=args.fpr, linf_budgets=tuple(args.eps),
                   l2_budgets=tuple(args.l2_eps), attacks=tuple(args.attacks.split(",")),
                   seed=args.seed, out=args.out)
    print(eps_ad_table(r))
    print(f"wrote {args.out}/eps-ad.json ({r['seconds']:.0f} s)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eps-ad", help="EPS-AD: train the EPS deep kernel, report AUROC / TPR@5%%FPR per attack")
    p.add_argument("--dataset", default="digits", help="the dataset")
    p.add_argument("--data-dir", default=None, help="dataset location (cifar10/folder)")
    p.add_argument("--classifier", required=True, help="classifier spec (the attacks' target)")
    p.add_argument("--model", default=None, help="diffusion checkpoint (default: the dataset's zoo model)")
    p.add_argument("--t-levels", default=None, help="comma-separated EPS noise levels (default t=1..20/1000)")
    p.add_argument("--train-eps", type=linf_budget, default=0.1,
                   help="PGD-linf budget of the kernel's adversarial training data (EPS-AD: half the headline budget)")
    p.add_argument("--n-train", type=int, default=300, help="clean and adversarial train images for the kernel")
    p.add_argument("--n-ref", type=int, default=400, help="clean reference images")
    p.add_argument("--n-calib", type=int, default=300, help="clean images calibrating the threshold")
    p.add_argument("--n-test", type=int, default=200, help="test images (seeded subset)")
    p.add_argument("--epochs", type=int, default=300, help="kernel training epochs")
    p.add_argument("--lr", type=float, default=1e-3, help="kernel learning rate")
    p.add_argument("--fpr", type=float, default=0.05, help="false-positive rate of the threshold")
    p.add_argument("--eps", type=budgets, default=[0.05, 0.1, 0.2, 0.3],
                   help="comma-separated l_inf budgets of the evaluated attacks (8/255 style fractions accepted)")
    p.add_argument("--l2-eps", type=budgets, default=[1.0, 2.0], help="comma-separated l_2 budgets (cw, l_2 rows)")
    p.add_argument("--attacks", default="pgd,apgd,cw,fgsm,noise", help="comma-separated attacks")
    p.add_argument("--seed", type=int, default=0, help="the run's one seed (data split, attacks, kernel training)")
    threads.add_argument(p)
    p.add_argument("--out", default="eps-ad", help="output directory (eps-ad.json, the kernel)")
    old_spelling(p, "--linf-budgets", "--eps")
    old_spelling(p, "--l2-budgets", "--l2-eps")
    p.set_defaults(func=cmd_eps_ad)
