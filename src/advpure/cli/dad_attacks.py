"""``advpure dad-attacks``: DAD's robust accuracy under detector-aware adaptive attacks
(:mod:`advpure.experiments.dad_attacks`)."""

from __future__ import annotations

import argparse

from .. import threads
from ..contracts import linf_budget
from ..paths import zoo_dir
from .options import seeds


def cmd_dad_attacks(args: argparse.Namespace) -> int:
    from ..experiments.dad_attacks import dad_attacks, dad_table

    r = dad_attacks(dataset=args.dataset, classifier=args.classifier, kernel=args.kernel, denoiser=args.denoiser,
                    data_dir=args.data_dir, eps=args.eps, n=args.n, batch_size=args.batch_size,
                    seeds=tuple(args.seeds), steps=args.steps, eot=args.eot,
                    attacks=tuple(args.attacks.split(",")), margin=args.margin,
                    reference_split=args.reference_split, mode=args.mode, out=args.out)
    print(dad_table(r))
    print(f"wrote {args.out}/dad-attacks.json ({r['seconds']:.0f} s)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dad-attacks", help="DAD robust accuracy under detector-aware adaptive attacks")
    p.add_argument("--dataset", default="digits", help="the dataset (its test split)")
    p.add_argument("--data-dir", default=None, help="dataset location (cifar10/folder)")
    p.add_argument("--classifier", default=str(zoo_dir() / "digits-small-cnn.safetensors"), help="classifier spec")
    p.add_argument("--kernel", default=str(zoo_dir() / "digits-dad-kernel.safetensors"),
                   help="DAD's MMD-OPT kernel (advpure train kernel)")
    p.add_argument("--denoiser", default=str(zoo_dir() / "digits-dad-denoiser.safetensors"),
                   help="DAD's denoiser network (advpure train denoiser)")
    p.add_argument("--eps", type=linf_budget, default=0.2, help="l_inf budget (8/255 style fractions accepted)")
    p.add_argument("--n", type=int, default=150, help="test images per seed (seeded subset)")
    p.add_argument("--batch-size", type=int, default=50, help="images per batch (DAD decides per batch)")
    p.add_argument("--seeds", type=seeds, default=[0, 1, 2], help="comma-separated seeds the table is repeated over")
    p.add_argument("--steps", type=int, default=50, help="attack steps of (a)/(c); (b) runs twice as many")
    p.add_argument("--eot", type=int, default=4, help="EOT samples per gradient")
    p.add_argument("--margin", type=float, default=0.5,
                   help="detector-aware attack: keep the statistic below margin x threshold")
    p.add_argument("--attacks", default="none,pgd-oblivious,dad-adaptive,detector-aware,dad-denoiser",
                   help="comma-separated rows of the table")
    p.add_argument("--reference-split", choices=("train", "test"), default="train",
                   help="clean reference set: 200 train images, or 200 test images excluded from evaluation")
    p.add_argument("--mode", choices=("batch", "sample"), default="batch",
                   help="DAD decision per batch (permutation test) or per input (threshold at 5%% FPR, calibrated "
                        "on 300 further clean images of the reference split)")
    threads.add_argument(p)
    p.add_argument("--out", default="dad-attacks", help="output directory (dad-attacks.json)")
    p.set_defaults(func=cmd_dad_attacks)
