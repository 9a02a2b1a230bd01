"""Square Attack, linf (Andriushchenko, Croce, Flammarion & Hein, ECCV 2020), a score-based black-box
attack used here as a gradient-free check against gradient masking.

Initialisation: vertical stripes, x_0 = clip(x + eps * s, 0, 1) with s in {-1, +1}^{1 x W} per channel.
Iteration i: pick a square of side h_i = round(sqrt(p_i * H * W)) at a uniformly random position and set
the perturbation on it to eps * {-1, +1} per channel (Algorithm 2); keep the candidate when it lowers the
margin loss L = z_y - max_{k != y} z_k (the paper's untargeted loss). p_i follows the paper's piecewise
schedule (halved at iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000, rescaled to 10,000 queries).
Defaults follow AutoAttack's standard version: ``n_queries=5000``, ``p_init=0.8``.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..contracts import check_int, check_positive
from .base import DEFAULT_EPS, Attack, margin_loss


def p_selection(p_init: float, it: int, n_queries: int) -> float:
    """The paper's schedule for the fraction of pixels changed at iteration ``it``."""
    it = int(it / n_queries * 10000)
    for bound, div in ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64),
                       (6000, 128), (8000, 256), (10000, 512)):
        if it <= bound:
            return p_init / div
    return p_init / 512


class Square(Attack):
    """Square attack, linf, untargeted, margin loss."""

    name = "square"
    gradient_based = False
    _option_aliases = {"steps": "n_queries"}  # replace(steps=...) sets the query budget
    _ignored_options = ("eot",)

    def __init__(self, *, eps: float = DEFAULT_EPS["linf"], n_queries: int = 5000, p_init: float = 0.8,
                 early_stop: bool = True, seed: int | None = 0) -> None:
        super().__init__(eps=eps, norm="linf", eot=1, early_stop=early_stop, seed=seed)
        self.n_queries = check_int(n_queries, "n_queries", minimum=1)
        self.steps = self.n_queries
        self.p_init = check_positive(p_init, "p_init")
        if self.p_init > 1:
            raise ValueError(f"p_init: expected a fraction in (0, 1], got {p_init}")

    def _margin(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return -margin_loss(model(x), y)  # z_y - max other; < 0 means misclassified

    def _run(self, model, x, y, *, logits0, eot, generator):
        n, c, h, w = x.shape
        eps = self.eps
        dev = x.device

        def rsign(*shape: int) -> torch.Tensor:
            return torch.randint(0, 2, shape, generator=generator, device=dev).float() * 2 - 1

        x_best = (x + eps * rsign(n, c, 1, w)).clamp(0, 1)
        margin = self._margin(model, x_best, y)
        clean_wrong = self.skip_mask(logits0, y)
        x_best[clean_wrong] = x[clean_wrong]
        margin[clean_wrong] = -1.0
        for i in range(self.n_queries - 1):
            # a stochastic model's margin is one noisy draw: keep searching every image (no early stop)
            active = (margin > 0).nonzero().flatten() if not self._stochastic_target else \
                (~clean_wrong).nonzero().flatten()
            if active.numel() == 0:
                break
            xa, xb = x[active], x_best[active]
            p = p_selection(self.p_init, i, self.n_queries)
            s = max(int(round(math.sqrt(p * h * w))), 1)
            s = min(s, h - 1, w - 1) if min(h, w) > 1 else 1
            ch = int(torch.randint(0, h - s + 1, (1,), generator=generator, device=dev))
            cw = int(torch.randint(0, w - s + 1, (1,), generator=generator, device=dev))
            delta = xb - xa
            delta[:, :, ch:ch + s, cw:cw + s] = eps * rsign(active.numel(), c, 1, 1)
            x_new = (xa + delta).clamp(xa - eps, xa + eps).clamp(0, 1)
            # query the whole batch (finished images keep their best iterate): defenses whose decision depends
            # on the batch (DAD's batch-mode test) then always see the batch the evaluation gives them
            x_query = x_best.clone()
            x_query[active] = x_new
            m_new = self._margin(model, x_query, y)[active]
            better = m_new < margin[active]
            idx = active[better]
            x_best[idx] = x_new[better]
            margin[idx] = m_new[better]
            self.last_stats.iterations = i + 1
        return x_best
