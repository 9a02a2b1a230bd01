"""The ``advpure`` command line. Each sub-package contributes its sub-commands through a
``register(subparsers)`` function in its ``cli`` module (listed in :data:`CLI_MODULES`)."""

from __future__ import annotations

import argparse
import importlib
import sys

CLI_MODULES = (
    "advpure.info",
    "advpure.demo",
    "advpure.train.cli",
    "advpure.eval.cli",
    "advpure.detect.eps_cli",
    "advpure.eval.cmap_ablation",
    "advpure.eval.threats",
    "advpure.eval.discrepancy",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="advpure",
        description="Adversarial purification and detection, evaluated with attacks that know the defense.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in CLI_MODULES:
        importlib.import_module(mod).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError) as e:
        if getattr(args, "debug", False):
            raise
        print(f"advpure {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
