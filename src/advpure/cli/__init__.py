"""The ``advpure`` command line (top floor: argparse only). One module of this package per command group, each with
a ``register(subparsers)`` function (listed in :data:`CLI_MODULES`); the work itself is done by the library below
(:mod:`advpure.eval`, :mod:`advpure.train`, :mod:`advpure.experiments`, ...).

One error path for every sub-command (:func:`run_command`): a bad input (a ``ValueError``, ``TypeError``, an
``OSError`` such as a missing or unreadable file, a corrupt safetensors or refused pickle file) is one line
``advpure COMMAND: error: ...`` naming the culprit and exit status 2; ``--debug`` (``advpure --debug COMMAND ...`` or
``advpure COMMAND ... --debug``) shows the traceback instead. Ctrl-C is one line and exit status 130. ``--device``
and ``--threads`` are checked and applied here, before the command runs. Every ``--help`` shows the defaults
(:class:`advpure.cli.options.HelpFormatter`); ``advpure list`` shows what the specs can name. The option vocabulary
shared by the commands: :mod:`advpure.cli.options` and the README's "CLI vocabulary".
"""

from __future__ import annotations

import argparse
import importlib
import os
import pickle
import sys

from .options import HelpFormatter, all_parsers

CLI_MODULES = (
    "advpure.cli.info",
    "advpure.cli.listing",
    "advpure.cli.demo",
    "advpure.cli.train",
    "advpure.cli.eval",
    "advpure.cli.eps",
    "advpure.cli.cmap_ablation",
    "advpure.cli.curves",
    "advpure.cli.eps_ad",
    "advpure.cli.dad_attacks",
    "advpure.cli.discrepancy",
)


def _leaf_parsers(parser: argparse.ArgumentParser):
    """Every parser below ``parser`` that has no sub-commands of its own (each once)."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield parser
        return
    seen = set()
    for a in subs:
        for p in a.choices.values():
            if id(p) not in seen:
                seen.add(id(p))
                yield from _leaf_parsers(p)


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="advpure",
        description="Adversarial purification and detection, evaluated with attacks that know the defense.",
    )
    parser.add_argument("--version", action="version", version=f"advpure {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (any sub-command)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in CLI_MODULES:
        importlib.import_module(mod).register(sub)
    for p in _leaf_parsers(parser):
        if p is not parser and "--debug" not in p._option_string_actions:
            # SUPPRESS: absent unless given, so it never overwrites the global flag
            p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    for p in all_parsers(parser):
        p.formatter_class = HelpFormatter
    return parser


def _known_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [ValueError, TypeError, OSError, pickle.UnpicklingError]
    try:
        from safetensors import SafetensorError

        errors.append(SafetensorError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(errors)


def one_line(e: BaseException) -> str:
    """An error as one line: its message (or type), lines joined, torch's advice to unpickle unsafely removed."""
    msg = str(e)
    if isinstance(e, pickle.UnpicklingError) and "weights_only" in msg:
        from ..checkpoint import _weights_only_reason

        msg = f"refused to unpickle: {_weights_only_reason(msg)} (advpure loads pickles only with weights_only=True)"
    if not msg.strip():
        msg = type(e).__name__
    return " ".join(line.strip() for line in msg.splitlines() if line.strip())


def _command_name(args: argparse.Namespace) -> str:
    parts = [getattr(args, "command", None) or ""]
    for key in ("what",):  # nested sub-commands: train WHAT, eps WHAT
        v = getattr(args, key, None)
        if isinstance(v, str):
            parts.append(v)
    return " ".join(p for p in parts if p)


def run_command(args: argparse.Namespace) -> int:
    """Run a parsed sub-command with the one error path (see the module docstring)."""
    from .. import threads
    from ..contracts import check_device

    name = _command_name(args)
    try:
        device = getattr(args, "device", None)
        if isinstance(device, str) and device != "auto":
            check_device(device)
        if hasattr(args, "threads"):
            threads.apply(args.threads)
        return int(args.func(args) or 0)
    except BrokenPipeError:  # the reader stopped early (advpure list | head): not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        if getattr(args, "debug", False):
            raise
        journal = getattr(args, "journal", None)
        hint = f"; resume with the same command (finished work is kept in --journal {journal})" if journal else ""
        print(f"\nadvpure {name}: interrupted{hint}", file=sys.stderr)
        return 130
    except _known_errors() as e:
        if getattr(args, "debug", False):
            raise
        print(f"advpure {name}: error: {one_line(e)}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return run_command(args)
