"""What every command shares: the help formatter that shows defaults, the argparse types of the common vocabulary
(``--seeds``, ``--eps`` lists) and old spellings kept for one release.

The vocabulary (README, "CLI vocabulary"): ``--n`` images, ``--seeds`` a comma list of the seeds a result is repeated
over (``--seed`` the one seed of a command that runs once, ``--subset-seed`` which images), ``--eps`` the attack budget
(a comma list where a command sweeps budgets), ``--steps`` attack steps in attack contexts and optimiser steps in
training, ``--model`` a diffusion/consistency model, ``--out`` a directory when a command writes several files and the
file itself when it writes one artefact.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..contracts import parse_fraction


class HelpFormatter(argparse.HelpFormatter):
    """Appends "(default: X)" to an option's help, except where there is no meaningful default (None, False, an
    empty list, a suppressed one) or the help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        d = action.default
        if (not action.option_strings or d is None or d is False or d is argparse.SUPPRESS or d == []
                or isinstance(action, (argparse._StoreTrueAction, argparse._HelpAction, argparse._VersionAction))
                or "%(default)" in text or "default" in text.lower()):
            return text
        shown = ",".join(map(str, d)) if isinstance(d, (list, tuple)) else str(d)
        return f"{text} (default: {shown.replace('%', '%%')})" if text else f"(default: {shown.replace('%', '%%')})"


def all_parsers(parser: argparse.ArgumentParser):
    """``parser`` and every parser below it (each once)."""
    seen: set[int] = set()
    todo = [parser]
    while todo:
        p = todo.pop()
        if id(p) in seen:
            continue
        seen.add(id(p))
        yield p
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                todo.extend(a.choices.values())


def seeds(s: str) -> list[int]:
    """argparse type of ``--seeds``: comma-separated non-negative integers (``0,1,2``)."""
    try:
        out = [int(v) for v in s.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 0,1,2, got {s!r}") from None
    if not out:
        raise argparse.ArgumentTypeError("expected at least one seed")
    if any(v < 0 for v in out):
        raise argparse.ArgumentTypeError(f"seeds are integers >= 0, got {s!r}")
    return out


def budgets(s: str) -> list[float]:
    """argparse type of an ``--eps`` list: comma-separated numbers, ``8/255`` style fractions accepted."""
    out = []
    for v in (v.strip() for v in s.split(",")):
        if not v:
            continue
        try:
            out.append(float(parse_fraction(v)))
        except (ValueError, ZeroDivisionError):
            raise argparse.ArgumentTypeError(f"{v!r} is not a number (use 0.1 or 8/255)") from None
    if not out:
        raise argparse.ArgumentTypeError("expected at least one budget")
    return out


class _OldSpelling(argparse.Action):
    """An option's former spelling: stores into the new option's destination and says so on stderr."""

    def __init__(self, option_strings, dest, new: str = "", convert: Any = None, **kw) -> None:
        self.new, self.convert = new, convert
        super().__init__(option_strings, dest, **kw)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(f"advpure: {option_string} is now {self.new} (the old spelling goes in the next release)",
              file=sys.stderr)
        if self.convert is not None:
            try:
                values = self.convert(values)
            except argparse.ArgumentTypeError as e:
                parser.error(f"argument {option_string}: {e}")
        setattr(namespace, self.dest, values)


def old_spelling(parser: argparse.ArgumentParser, old: str, new: str) -> None:
    """Accept ``old`` (hidden from help) for the option ``new`` of ``parser``, for one release."""
    act = parser._option_string_actions[new]
    parser.add_argument(old, dest=act.dest, action=_OldSpelling, new=new, convert=act.type,
                        default=argparse.SUPPRESS, help=argparse.SUPPRESS, metavar=act.metavar)
