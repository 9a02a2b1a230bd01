"""Carlini & Wagner l2 attack (IEEE S&P 2017), simplified: a fixed number of binary-search steps on the
constant c, Adam on the tanh-reparametrised image.

    x' = (tanh(w) + 1) / 2,   minimise  ||x' - x||_2^2 + c * max(z_y - max_{i != y} z_i, -kappa)

For each sample the smallest-norm misclassified x' over all c is returned; samples never misclassified
are returned unchanged. With ``eps`` set (an l2 budget), adversarials larger than eps are also replaced
by the clean image, so robust accuracy under the l2 threat model can be read off directly.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..contracts import check_int, check_positive
from .base import Attack, margin_loss


class CWL2(Attack):
    name = "cw"

    def __init__(self, *, eps: float | None = None, steps: int = 100, binary_steps: int = 5, c_init: float = 0.1,
                 kappa: float = 0.0, lr: float = 0.01, seed: int | None = None) -> None:
        super().__init__(eps=0.0 if eps is None else eps, norm="l2", seed=seed)
        if eps is None:
            self.eps = float("inf")  # unbounded: minimum-norm adversarials
        self.steps = check_int(steps, "steps", minimum=1)
        self.binary_steps = check_int(binary_steps, "binary_steps", minimum=1)
        self.c_init = check_positive(c_init, "c_init")
        self.kappa = check_positive(kappa, "kappa", allow_zero=True)
        self.lr = check_positive(lr, "lr")

    def _run(self, model: nn.Module, x, y, *, logits0, eot, generator):
        n = x.shape[0]
        dev = x.device
        lo = torch.zeros(n, device=dev)
        hi = torch.full((n,), 1e10, device=dev)
        c = torch.full((n,), self.c_init, device=dev)
        best_l2 = torch.full((n,), float("inf"), device=dev)
        best = x.clone()
        w0 = torch.atanh((x * 2 - 1).clamp(-1 + 1e-6, 1 - 1e-6))
        for _ in range(self.binary_steps):
            w = w0.clone().requires_grad_(True)
            opt = torch.optim.Adam([w], lr=self.lr)
            success = torch.zeros(n, dtype=torch.bool, device=dev)
            for _ in range(self.steps):
                xa = (torch.tanh(w) + 1) / 2
                logits = model(xa)
                l2sq = (xa - x).flatten(1).pow(2).sum(1)
                f = torch.clamp(-margin_loss(logits, y), min=-self.kappa)
                loss = (l2sq + c * f).sum()
                opt.zero_grad()
                w.grad, = torch.autograd.grad(loss, [w])  # not backward(): no gradient lands on the model's weights
                opt.step()
                with torch.no_grad():
                    fooled = logits.argmax(1) != y
                    l2 = l2sq.sqrt()
                    upd = fooled & (l2 < best_l2)
                    best_l2[upd] = l2[upd]
                    best[upd] = xa.detach()[upd]
                    success |= fooled
            # binary search on c: success -> smaller c, failure -> larger c
            hi = torch.where(success, torch.minimum(hi, c), hi)
            lo = torch.where(success, lo, torch.maximum(lo, c))
            c = torch.where(hi < 1e9, (lo + hi) / 2, c * 10)
        self.last_stats.iterations = self.steps * self.binary_steps
        if self.eps != float("inf"):
            too_far = best_l2 > self.eps
            best[too_far] = x[too_far]
        return best
