"""Projected Gradient Descent (Madry et al., ICLR 2018), linf and l2, with EOT.

Iteration (maximising the loss L, projection P onto the eps-ball ∩ [0, 1]):

    linf:  x_{k+1} = P(x_k + alpha * sign(g_k))
    l2:    x_{k+1} = P(x_k + alpha * g_k / ||g_k||_2)

with g_k the (EOT-averaged, Athalye et al. 2018) gradient of L at x_k and x_0 a uniform draw in the
ball (``random_start``). Defaults follow the diffusion-purification literature on CIFAR-10 (DiffPure,
Nie et al. 2022; Lee & Kim, ICCV 2023): 200 steps, step size 0.007, eps 8/255 (linf) or 0.5 (l2),
EOT 20 for stochastic defenses. For l2 the default step size is 2.5 * eps / steps (Madry et al.).
Deterministic models are attacked with one pass per step whatever ``eot`` is.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..contracts import check_int
from .base import DEFAULT_EPS, Attack, FirstSuccess, ascent_step, check_step_size, make_loss, random_start

#: literature defaults (Lee & Kim 2023, Table 1 setting)
DEFAULT_STEPS = 200
DEFAULT_STEP_SIZE_LINF = 0.007


class PGD(Attack):
    """PGD-linf / PGD-l2 with random start, optional EOT and evaluate-while-optimising."""

    name = "pgd"

    def __init__(self, *, norm: str = "linf", eps: float | None = None, steps: int = DEFAULT_STEPS,
                 step_size: float | None = None, random_start: bool = True, loss: str = "ce", eot: int = 1,
                 eot_batch: int | None = None, early_stop: bool = False, grad_checkpoint: bool = False,
                 seed: int | None = None) -> None:
        norm_l = norm.lower() if isinstance(norm, str) else norm
        if eps is None and norm_l in DEFAULT_EPS:
            eps = DEFAULT_EPS[norm_l]
        super().__init__(eps=eps if eps is not None else -1.0, norm=norm, eot=eot, eot_batch=eot_batch,
                         early_stop=early_stop, grad_checkpoint=grad_checkpoint, seed=seed)
        self.steps = check_int(steps, "steps", minimum=1)
        self.step_size = check_step_size(step_size)
        self.random_start = bool(random_start)
        make_loss(loss)  # validates the name
        self.loss = loss

    def alpha(self) -> float:
        if self.step_size is not None:
            return self.step_size
        return DEFAULT_STEP_SIZE_LINF if self.norm == "linf" else 2.5 * self.eps / self.steps

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, logits0: torch.Tensor, eot: int,
             generator: torch.Generator | None, grad_model: nn.Module | None = None) -> torch.Tensor:
        loss_fn = make_loss(self.loss)
        gm = grad_model if grad_model is not None else model
        alpha = self.alpha()
        x_adv = random_start(x, norm=self.norm, eps=self.eps, generator=generator) if self.random_start else x.clone()
        tracker = FirstSuccess(x)
        early = self.early_stop_active
        if early:
            tracker.update(x, self.skip_mask(logits0, y))  # already misclassified: keep the clean image
        for _ in range(self.steps):
            grad, _, logits = self.loss_and_grad(gm, x_adv, y, loss_fn, eot)
            if early:
                tracker.update(x_adv, self.fooled(model, x_adv, y, logits, gm))
            x_adv = ascent_step(x_adv, torch.nan_to_num(grad), x, norm=self.norm, eps=self.eps, alpha=alpha)
        self.last_stats.iterations = self.steps
        if not early:
            return x_adv
        with torch.no_grad():
            tracker.update(x_adv, model(x_adv).argmax(1) != y)
        return tracker.result(x_adv)

    def fooled(self, model: nn.Module, x_k: torch.Tensor, y: torch.Tensor, grad_logits: torch.Tensor,
               grad_model: nn.Module) -> torch.Tensor:
        """Whether x_k fools the model: from the logits of the gradient pass when the gradient is taken on
        the model itself, else from a fresh forward of the evaluated model (surrogate / BPDA setting)."""
        if grad_model is model:
            return grad_logits.argmax(1) != y
        with torch.no_grad():
            return model(x_k).argmax(1) != y


def make_adversarial(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int = 10,
                     batch_size: int = 256, seed: int = 0) -> torch.Tensor:
    """PGD-linf examples of ``model`` in batches of ``batch_size``, step size 2.5 eps / steps (Madry et al.), one
    attack seeded by ``seed``: the adversarial side of MMD-OPT kernel and DAD denoiser training data."""
    attack = PGD(norm="linf", eps=eps, steps=steps, step_size=2.5 * eps / steps, seed=seed)
    out = []
    for i in range(0, x.shape[0], batch_size):
        out.append(attack(model, x[i:i + batch_size], y[i:i + batch_size]).detach())
    return torch.cat(out, 0)
