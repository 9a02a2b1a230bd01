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
from . import cmap, compose, dad, diffpure, distribution_transfer, gdmp, gnsp, ssni, voting  # noqa: E402,F401  # noqa: E402,F401
