"""Evaluation protocol for stochastic defenses (Lee & Kim, ICCV 2023, sec. 3; Athalye et al. 2018).

- **Evaluate while optimising**: the attack keeps, per sample, the first iterate that fooled the
  defense (``early_stop=True`` on the attacks in :mod:`advpure.attacks`), instead of only the last one.
- **Final evaluation with fresh randomness**: the adversarial batch is classified ``draws`` times with
  fresh draws of the defense's randomness; we report the mean accuracy over draws and the worst case
  per sample (a sample is robust in the worst case only when every draw classifies it correctly).
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

    eval_draws: int = 5
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
