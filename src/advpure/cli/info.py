"""``advpure info``: versions, device, and where data and checkpoints are looked up (:func:`advpure.info.collect`)."""

from __future__ import annotations

import argparse
import json

from ..info import collect


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="versions, device, data and checkpoint locations")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    info = collect()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        width = max(map(len, info))
        for k, v in info.items():
            print(f"{k:<{width}}  {v}")
    return 0
