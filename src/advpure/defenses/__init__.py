"""Defenses: purifiers (images -> images) and the defended classifier that composes them.

Each published method is one module here; importing this package registers their spec names
(``advpure.specs``) so ``--defense NAME:key=value`` works on the command line.
"""

from __future__ import annotations

from ..specs import SpecContext, register
from .base import DefendedClassifier, Identity, Purifier


@register("defense", "none")
def _none(ctx: SpecContext) -> Identity:
    return Identity()


__all__ = ["DefendedClassifier", "Identity", "Purifier"]

# Diffusion purifiers (register "diffpure", "gdmp", "gnsp" on import); MajorityVote wraps any of them.
from . import diffpure, gdmp, gnsp, voting  # noqa: E402,F401
from . import cmap, compose, dad, distribution_transfer, ssni  # noqa: E402,F401
