"""Transfer attack (Papernot et al. 2016; used as a gradient-masking check by Athalye et al. 2018):
craft adversarial examples on a *surrogate classifier* with a white-box attack, then evaluate them on
the defended model. The defended model is only used to validate the call (its output shape)."""

from __future__ import annotations

import torch.nn as nn

from .base import Attack
from .pgd import PGD


class Transfer(Attack):
    """``base`` (default :class:`PGD` with the given options) run on ``surrogate``; no gradient of the target."""

    name = "transfer"
    gradient_based = False

    def __init__(self, *, surrogate: nn.Module, base: Attack | None = None, **pgd_options) -> None:
        if not isinstance(surrogate, nn.Module):
            raise TypeError(f"transfer: surrogate must be a classifier nn.Module, got {type(surrogate).__name__}")
        if base is not None and pgd_options:
            raise ValueError("transfer: give either base=<attack> or PGD options, not both")
        self.base = base if base is not None else PGD(**pgd_options)
        super().__init__(eps=self.base.eps, norm=self.base.norm, eot=self.base.eot, seed=self.base.seed)
        self.surrogate = surrogate

    def _run(self, model, x, y, *, logits0, eot, generator):
        x_adv = self.base(self.surrogate, x, y)
        self.last_stats.iterations = self.base.last_stats.iterations
        return x_adv
