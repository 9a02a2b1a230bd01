"""``advpure demo``: the main job on digits (:mod:`advpure.experiments.demo`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import threads
from ..paths import check_writable


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the main job on digits: defenses under adaptive attacks, report + figure")
    p.add_argument("--out", default="advpure-demo", help="output directory (report.json, report.md, details.md, "
                                                         "purification.png)")
    p.add_argument("--n", type=int, default=24, help="test images (seeded subset)")
    p.add_argument("--sanity-n", type=int, default=8, help="images used by the gradient-masking checks (>= 8)")
    p.add_argument("--steps", type=int, default=5, help="attack steps (detector-aware attacks: 4x)")
    p.add_argument("--eot", type=int, default=2, help="EOT samples for stochastic defenses")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    threads.add_argument(p)
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    from ..experiments.demo import DIGITS_EPS, run_demo

    check_writable(args.out, "--out", "dir")
    res = run_demo(Path(args.out), n=args.n, steps=args.steps, eot=args.eot, sanity_n=args.sanity_n,
                   progress=not args.no_progress)
    print(res["table"])
    print(f"\ndigits: {res['report']['n']} test images, "
          f"l_inf eps {DIGITS_EPS}, {res['report']['seconds']} s. Wrote {args.out}/report.json, report.md, "
          "details.md, purification.png")
    return 0
