"""Evaluation protocol (Athalye et al. 2018; Croce et al. 2022 for stochastic defenses), built so that a robust
accuracy is an upper bound on the defense's true robustness.

- **Stochastic defenses**: every image is attacked (none is skipped because one random clean pass misclassified
  it) and the attack never stops early on its own noisy draws: it returns its last iterate (or its own loss-based
  choice), or, for the ``standard``/``lite`` ensembles, the candidate that a *separate* set of 16 fresh draws
  finds worst (:mod:`advpure.attacks.ensemble`). Enforced in :class:`advpure.attacks.base.Attack`.
- **Deterministic defenses**: evaluate-while-optimising (``early_stop``) is allowed: the first iterate that
  fooled the model is kept, and images the clean pass misclassifies are not attacked.
- **Final evaluation with fresh randomness**: the adversarial batch is classified ``eval_draws`` times (default
  20) with fresh draws of the defense's randomness; the headline is the mean accuracy over draws, and the worst
  case per image over those draws (robust only when every draw classifies it correctly) is reported with the
  number of draws it was taken over (it falls as draws grow). Both carry 95% intervals across images and seeds.
  Deterministic models are evaluated once.
- **Majority-vote defenses** (a model, or its ``defense``, with ``voting = True``) already return the voted
  prediction; they are evaluated as they are, like any other model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

from ..attacks.base import is_stochastic
from ..contracts import check_int


@dataclass
class Protocol:
    """``eval_draws``: fresh draws of a stochastic defense in the final evaluation (1 for deterministic models);
    ``early_stop``: evaluate-while-optimising in the attack."""

    eval_draws: int = 20
    early_stop: bool = True

    def __post_init__(self) -> None:
        check_int(self.eval_draws, "eval_draws", minimum=1)

    def draws_for(self, model: nn.Module) -> int:
        return self.eval_draws if is_stochastic(model) else 1

    def describe(self, model: nn.Module | None = None) -> dict:
        d = asdict(self)
        if model is not None:
            d["draws_used"] = self.draws_for(model)
            d["stochastic"] = is_stochastic(model)
            d["early_stop_applied"] = bool(self.early_stop and not is_stochastic(model))
            d["statement"] = (
                "stochastic defense: every image attacked, no early stop on the attack's own draws; "
                f"accuracy on {self.draws_for(model)} fresh draws" if is_stochastic(model) else
                "deterministic model: " + ("first successful iterate kept (early stop)" if self.early_stop
                                           else "last iterate"))
            d["voting"] = bool(getattr(model, "voting", False) or getattr(getattr(model, "defense", None), "voting", False))
        return d


@torch.no_grad()
def correct_draws(model: nn.Module, x: torch.Tensor, y: torch.Tensor, draws: int) -> torch.Tensor:
    """(draws, N) bool: whether each fresh pass classifies each sample correctly."""
    check_int(draws, "draws", minimum=1)
    return torch.stack([model(x).argmax(1) == y for _ in range(draws)])


def summarize(correct: torch.Tensor) -> dict:
    """Mean accuracy over draws and samples, and worst-case accuracy (correct under every draw)."""
    c = correct.float()
    return {"mean": float(c.mean()), "worst": float(correct.all(0).float().mean()),
            "per_draw": [float(v) for v in c.mean(1)]}
