"""BPDA+EOT: Backward Pass Differentiable Approximation (Athalye, Carlini & Wagner, ICML 2018, sec. 4.1)
combined with Expectation over Transformation for randomised defenses.

For a defended classifier f(g(x)) with purifier g, the forward pass runs the real defense and the
backward pass replaces g by a differentiable approximation h (identity by default, the
straight-through estimator, valid when g(x) ≈ x):

    forward:  f(g(x))          backward:  d f(h(x)) / dx  evaluated at g(x),  i.e.  z = h(x) + (g(x) - h(x)).detach()

:class:`BPDA` wraps any gradient attack (PGD by default, with its EOT) and runs it on this surrogate
module; success is judged on the real defended model.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from .base import Attack
from .pgd import PGD


class BPDAModel(nn.Module):
    """classifier(h(x) + (defense(x) - h(x)).detach()): real forward, approximate backward."""

    def __init__(self, model: nn.Module, approx: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        super().__init__()
        if not (hasattr(model, "classifier") and hasattr(model, "defense")):
            raise TypeError(
                f"BPDA needs a DefendedClassifier-like model with .classifier and .defense, got {type(model).__name__}"
            )
        self.model = model
        self.approx = approx

    @property
    def stochastic(self) -> bool:
        return bool(getattr(self.model, "stochastic", False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        purify = getattr(self.model, "purify", None)
        with torch.no_grad():
            purified = purify(x) if callable(purify) else self.model.defense(x)
        h = x if self.approx is None else self.approx(x)
        return self.model.classifier(h + (purified - h).detach())


class BPDA(Attack):
    """Run ``base`` (a gradient attack, default :class:`PGD` with the given options) with BPDA gradients.

    ``approx``: a differentiable h(x) approximating the purifier (default: identity / straight-through).
    """

    name = "bpda"

    def __init__(self, *, base: Attack | None = None, approx: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 **pgd_options) -> None:
        if base is not None and pgd_options:
            raise ValueError(f"bpda: give either base=<attack> or PGD options, not both (got {sorted(pgd_options)})")
        self.base = base if base is not None else PGD(**pgd_options)
        if not getattr(self.base, "gradient_based", True):
            raise TypeError(f"bpda: base attack {self.base.name} is not gradient based")
        super().__init__(eps=self.base.eps, norm=self.base.norm, eot=self.base.eot, eot_batch=self.base.eot_batch,
                         early_stop=self.base.early_stop, seed=self.base.seed)
        self.approx = approx

    def gradient_model(self, model: nn.Module) -> nn.Module:
        return BPDAModel(model, self.approx)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits0 = self._validate(model, x, y)
        return self._run(model, x, y, logits0=logits0, eot=self.base.eot, generator=None)

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, logits0: torch.Tensor, eot: int,
             generator: torch.Generator | None) -> torch.Tensor:
        """Run the base attack on the BPDA model (its own seeding, EOT and forward counting apply)."""
        x_adv = self.base(self.gradient_model(model), x, y)
        # the BPDA module's forward is the real model's, so the base judged success on the real defense
        self.last_stats = self.base.last_stats
        return x_adv
