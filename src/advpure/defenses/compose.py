"""Purifier composition: run several purifiers one after the other as one purifier.

``Compose(p1, p2, ...)`` purifies with ``p_n(... p2(p1(x)))``. Every stage gets the same explicit
``generator`` (so the composition's randomness is reproducible from one seed), the composition is
stochastic when any stage is, its cost is the sum of the stages' ``nfe``, and it is differentiable end
to end when every stage is. ``grad_checkpoint`` is forwarded to stages that have it (attacks switch it on
through :func:`advpure.attacks.base.grad_checkpointing`, which walks submodules; each stage then runs its loop
through :func:`advpure.ops.checkpointing.checkpointed_loop`).

Spec: ``diffpure+cmap`` -- DiffPure (Nie et al. 2022) followed by CMAP: the diffusion purifier first
washes out the adversarial perturbation, then CMAP projects its output onto the consistency model's
manifold. Parameters: ``dm=PATH`` (diffusion model), ``t``, ``steps`` for DiffPure; ``cm=PATH``
(consistency model), ``k``, ``iterations``, ``lr``, ``lam``, ``lam_s`` for CMAP.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..specs import SpecContext, register
from .base import Purifier


class Compose(Purifier):
    """``purify(x) = p_n(...p_1(x))`` with the same generator for every stage."""

    def __init__(self, *purifiers: nn.Module) -> None:
        super().__init__()
        if not purifiers:
            raise ValueError("Compose: expected at least one purifier")
        for i, p in enumerate(purifiers):
            if not isinstance(p, nn.Module) or not callable(p):
                raise TypeError(f"Compose: stage {i} must be a purifier module, got {type(p).__name__}")
        self.stages = nn.ModuleList(purifiers)

    @property
    def stochastic(self) -> bool:  # type: ignore[override]
        return any(bool(getattr(p, "stochastic", False)) for p in self.stages)

    @property
    def nfe(self) -> float:
        return float(sum(float(getattr(p, "nfe", 0.0)) for p in self.stages))

    def purify(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        for p in self.stages:
            x = p(x, generator=generator) if isinstance(p, Purifier) else p(x)
        return x

    def describe(self) -> dict:
        return {"name": "Compose", "nfe": self.nfe,
                "stages": [p.describe() if hasattr(p, "describe") else type(p).__name__ for p in self.stages]}


@register("defense", "diffpure+cmap")
def _diffpure_cmap(ctx: SpecContext, dm: str | None = None, t: float = 0.1, steps: int | None = None,
                   cm: str | None = None, k: int | None = None, iterations: int | None = None, lr: float | None = None,
                   lam: float | None = None, lam_s: float | None = None, checkpoint: bool = False) -> Compose:
    """``diffpure+cmap:dm=PATH,t=0.1,steps=N,cm=PATH,k=4,iterations=30,lr=0.1,lam=3,lam_s=1``."""
    from .cmap import DEFAULTS, load_cmap
    from .diffpure import _diffpure

    dp = _diffpure(ctx, model=dm, t=t, steps=steps, checkpoint=checkpoint)
    opts = {name: val for name, val in dict(k=k, iterations=iterations, lr=lr, lam=lam, lam_s=lam_s).items()
            if val is not None}
    c = load_cmap(cm, dataset=ctx.dataset or "digits", image_shape=ctx.image_shape,
                  **{**{kk: DEFAULTS[kk] for kk in ("k", "iterations", "lr", "lam", "lam_s")}, **opts},
                  grad_checkpoint=checkpoint)
    return Compose(dp, c.to(ctx.device))


__all__ = ["Compose"]
