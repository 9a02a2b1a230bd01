"""``advpure discrepancy``: histograms of MMD to clean data, clean vs PGD vs generated
(:mod:`advpure.experiments.discrepancy`)."""

from __future__ import annotations

import argparse

from .. import threads
from ..contracts import linf_budget
from ..paths import zoo_dir


def cmd_discrepancy(args: argparse.Namespace) -> int:
    from ..experiments.discrepancy import discrepancy

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


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("discrepancy", help="histograms of MMD to clean data: clean vs PGD vs generated (EPS)")
    p.add_argument("--dataset", default="digits", help="the dataset")
    p.add_argument("--data-dir", default=None, help="dataset location (cifar10/folder)")
    p.add_argument("--classifier", default=str(zoo_dir() / "digits-small-cnn.safetensors"), help="classifier spec (PGD target, "
                                                                                    "semantic features)")
    p.add_argument("--model", default=None, help="diffusion checkpoint (EPS and samples)")
    p.add_argument("--kernel", default=None, help="EPS-AD kernel from `advpure eps-ad` (default: Gaussian)")
    p.add_argument("--eps", type=linf_budget, default=0.2, help="l_inf budget of the PGD examples")
    p.add_argument("--subset", type=int, default=50, help="images per MMD subset")
    p.add_argument("--n-subsets", type=int, default=100, help="subsets drawn per set (histogram entries)")
    p.add_argument("--n-pool", type=int, default=200, help="test images (clean/adversarial pool)")
    p.add_argument("--n-ref", type=int, default=400, help="clean reference images")
    p.add_argument("--sample-steps", type=int, default=1000, help="sampling steps of the generated images")
    p.add_argument("--seed", type=int, default=0, help="the run's one seed")
    threads.add_argument(p)
    p.add_argument("--out", default="discrepancy", help="output directory (discrepancy.png, discrepancy.json)")
    p.set_defaults(func=cmd_discrepancy)
