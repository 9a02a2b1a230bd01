"""How many CPU threads torch uses: the one place the default is decided.

Every compute command takes ``--threads N``; without it :func:`default_threads` decides:

- ``OMP_NUM_THREADS`` when it is set (torchrun sets it to 1 per rank; a user who sets it means it);
- else 1 on a machine with at most 2 usable CPUs: the models here are small (8x8 digits, 32x32 CIFAR-10), a second
  intra-op thread buys little on them, and such machines usually run several jobs at once (these 2-core machines
  run two or three), where competing threads only slow every job down;
- else the usable CPUs (the process's affinity mask, i.e. what a container or ``taskset`` grants) capped at torch's
  own default (the physical cores) and at :data:`MAX_DEFAULT_THREADS`: beyond 4 threads these small convolutions
  scale poorly and a shared machine is better used by more processes (``torchrun``) than by more threads.
"""

from __future__ import annotations

import argparse
import os

import torch

MAX_DEFAULT_THREADS = 4
#: torch's default intra-op threads at import (the physical cores, or OMP_NUM_THREADS), before anyone changed it
_TORCH_DEFAULT = torch.get_num_threads()


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def default_threads() -> int:
    """The thread count used when ``--threads`` is not given (see the module docstring)."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) >= 1:
        return int(env)
    cpus = usable_cpus()
    if cpus <= 2:
        return 1
    return max(1, min(cpus, _TORCH_DEFAULT, MAX_DEFAULT_THREADS))


def positive_int(s: str) -> int:
    """argparse type for ``--threads``: an integer >= 1."""
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {s!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {v}")
    return v


def add_argument(p: argparse.ArgumentParser) -> None:
    """Add ``--threads N`` to a compute command (applied by :func:`advpure.cli.main` through :func:`apply`)."""
    p.add_argument("--threads", type=positive_int, default=None,
                   help=f"torch CPU threads (default {default_threads()} here: OMP_NUM_THREADS if set, else 1 on "
                        f"<= 2 CPUs, else min(CPUs, physical cores, {MAX_DEFAULT_THREADS}))")


def apply(n: int | None = None) -> int:
    """``torch.set_num_threads(n or default_threads())``; returns the count set."""
    n = default_threads() if n is None else int(n)
    if n < 1:
        raise ValueError(f"--threads: expected an integer >= 1, got {n}")
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n
