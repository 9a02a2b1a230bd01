"""Auto-PGD (Croce & Hein, ICML 2020, "Reliable evaluation of adversarial robustness with an ensemble
of diverse parameter-free attacks"), Algorithm 1, with EOT for stochastic models.

Per iteration k (eq. 2), with momentum alpha = 0.75 (1 at k = 0):

    z_{k+1} = P(x_k + eta_k * s(grad L(x_k)))                       s = sign (linf) or g/||g||_2 (l2)
    x_{k+1} = P(x_k + alpha (z_{k+1} - x_k) + (1 - alpha)(x_k - x_{k-1}))

The step size starts at eta_0 = 2 eps and is halved at checkpoints w_j (p_0 = 0, p_1 = 0.22,
p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06), w_j = ceil(p_j N)) when (condition 1) the loss increased
in fewer than rho = 0.75 of the steps since the last checkpoint, or (condition 2) the step size was not
reduced at the last checkpoint and the best loss did not improve; after halving, the iterate restarts
from the best point. Losses: cross-entropy ('ce'), DLR (eq. 5, 'dlr'), and targeted DLR (eq. 6,
:class:`APGDT`, run against the ``n_target_classes`` most likely wrong classes in turn).

The bookkeeping follows the official implementation (fra31/auto-attack ``autopgd_base.py``, of which
torchattacks' APGD is a port): the checkpoint schedule is k <- max(k - 0.03 N, 0.06 N) starting at
k = 0.22 N. Returned per sample: the last iterate that was misclassified, else the highest-loss iterate
(the official code returns the clean image there; the highest-loss point is the stronger choice for a
stochastic defense that is evaluated again with fresh randomness). With ``early_stop`` the *first*
misclassified iterate is returned instead.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..contracts import check_int, check_positive
from .base import DEFAULT_EPS, Attack, FirstSuccess, dlr_loss, dlr_targeted_loss, project

DEFAULT_STEPS = 100  # AutoAttack standard version


def _l2(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1).view(-1, 1, 1, 1)


class APGD(Attack):
    """APGD-CE (``loss='ce'``) / APGD-DLR (``loss='dlr'``), linf or l2."""

    name = "apgd"

    def __init__(self, *, norm: str = "linf", eps: float | None = None, steps: int = DEFAULT_STEPS,
                 loss: str = "ce", n_restarts: int = 1, rho: float = 0.75, momentum: float = 0.75,
                 eot: int = 1, eot_batch: int | None = None, early_stop: bool = False,
                 grad_checkpoint: bool = False, seed: int | None = None) -> None:
        norm_l = norm.lower() if isinstance(norm, str) else norm
        if eps is None:
            eps = DEFAULT_EPS.get(norm_l, -1.0)
        super().__init__(eps=eps, norm=norm, eot=eot, eot_batch=eot_batch, early_stop=early_stop,
                         grad_checkpoint=grad_checkpoint, seed=seed)
        self.steps = check_int(steps, "steps", minimum=1)
        if loss not in ("ce", "dlr", "ce-targeted", "dlr-targeted"):
            raise ValueError(f"loss: expected 'ce' or 'dlr', got {loss!r}")
        self.loss = loss
        self.n_restarts = check_int(n_restarts, "n_restarts", minimum=1)
        self.rho = check_positive(rho, "rho")
        self.momentum = check_positive(momentum, "momentum")
        self.target: torch.Tensor | None = None  # set by APGDT for one run

    # ---- loss
    def _loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.loss == "ce":
            return F.cross_entropy(logits, y, reduction="none")
        if self.loss == "dlr":
            if logits.shape[1] < 3:
                raise ValueError("apgd: the DLR loss needs at least 3 classes")
            return dlr_loss(logits, y)
        assert self.target is not None
        t = self.target.repeat(logits.shape[0] // self.target.shape[0])
        if self.loss == "ce-targeted":
            return -F.cross_entropy(logits, t, reduction="none")
        if logits.shape[1] < 4:
            raise ValueError("apgd-t: the targeted DLR loss needs at least 4 classes")
        return dlr_targeted_loss(logits, y, t)

    def _fooled(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return logits.argmax(1) != y

    # ---- one run (Algorithm 1)
    def _single_run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eot: int,
                    generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        n_iter = self.steps
        n_iter_2 = max(int(0.22 * n_iter), 1)
        n_iter_min = max(int(0.06 * n_iter), 1)
        size_decr = max(int(0.03 * n_iter), 1)
        n = x.shape[0]
        if self.norm == "linf":
            t = torch.rand(x.shape, generator=generator, device=x.device) * 2 - 1
            x_adv = x + self.eps * t / t.flatten(1).abs().max(dim=1).values.view(-1, 1, 1, 1)
        else:
            t = torch.randn(x.shape, generator=generator, device=x.device)
            x_adv = x + self.eps * t / (_l2(t) + 1e-12)
        x_adv = x_adv.clamp(0.0, 1.0)
        x_best = x_adv.clone()
        x_best_adv = x_adv.clone()
        loss_fn = self._loss

        grad, loss_indiv, logits = self.loss_and_grad(model, x_adv, y, loss_fn, eot)
        grad = torch.nan_to_num(grad)
        fooled = self._fooled(logits, y)
        ever_fooled = fooled.clone()
        first = FirstSuccess(x)
        first.update(x_adv, fooled)
        x_best_adv[fooled] = x_adv[fooled]
        grad_best = grad.clone()
        loss_best = loss_indiv.clone()
        # loss history; row 0 = the starting point (the official code compares against an unset row there)
        loss_steps = torch.zeros(n_iter + 1, n, device=x.device)
        loss_steps[0] = loss_indiv

        step_size = 2.0 * self.eps * torch.ones(n, 1, 1, 1, device=x.device)
        x_adv_old = x_adv.clone()
        k = n_iter_2
        counter3 = 0
        loss_best_last_check = loss_best.clone()
        reduced_last_check = torch.ones(n, dtype=torch.bool, device=x.device)

        for i in range(n_iter):
            with torch.no_grad():
                grad2 = x_adv - x_adv_old
                x_adv_old = x_adv.clone()
                a = self.momentum if i > 0 else 1.0
                if self.norm == "linf":
                    z = project(x_adv + step_size * grad.sign(), x, norm="linf", eps=self.eps)
                else:
                    z = project(x_adv + step_size * grad / (_l2(grad) + 1e-12), x, norm="l2", eps=self.eps)
                x_adv = project(x_adv + (z - x_adv) * a + grad2 * (1 - a), x, norm=self.norm, eps=self.eps)

            grad, loss_indiv, logits = self.loss_and_grad(model, x_adv, y, loss_fn, eot)
            grad = torch.nan_to_num(grad)
            with torch.no_grad():
                fooled = self._fooled(logits, y)
                ever_fooled |= fooled
                x_best_adv[fooled] = x_adv[fooled]
                first.update(x_adv, fooled)

                loss_steps[i + 1] = loss_indiv
                improved = loss_indiv > loss_best
                x_best[improved] = x_adv[improved]
                grad_best[improved] = grad[improved]
                loss_best[improved] = loss_indiv[improved]

                counter3 += 1
                if counter3 == k:
                    # condition 1: fraction of increasing steps since the last checkpoint <= rho
                    j = i + 1
                    incr = (loss_steps[j - k + 1:j + 1] > loss_steps[j - k:j]).float().sum(0)
                    osc = incr <= k * self.rho
                    # condition 2: not reduced last time and no improvement of the best loss
                    no_impr = (~reduced_last_check) & (loss_best_last_check >= loss_best)
                    reduce = osc | no_impr
                    reduced_last_check = reduce.clone()
                    loss_best_last_check = loss_best.clone()
                    if bool(reduce.any()):
                        step_size[reduce] /= 2.0
                        x_adv[reduce] = x_best[reduce]
                        grad[reduce] = grad_best[reduce]
                    counter3 = 0
                    k = max(k - size_decr, n_iter_min)
        self.last_stats.iterations += n_iter
        return x_best, x_best_adv, ever_fooled, first.result(x_best_adv)

    def _trust(self, fooled: torch.Tensor) -> torch.Tensor:
        """Success seen on the attack's own EOT draws counts only for a deterministic model; for a stochastic one
        every image keeps its best-loss point and stays in play for the next restart (or target)."""
        return fooled & (not self._stochastic_target)

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, logits0: torch.Tensor, eot: int,
             generator: torch.Generator | None) -> torch.Tensor:
        self.last_stats.iterations = 0
        out = x.clone()
        done = self.skip_mask(logits0, y)  # misclassified clean points stay clean (as in AutoAttack); none if random
        best_loss_point = x.clone()
        have_loss_point = torch.zeros_like(done)
        for _ in range(self.n_restarts):
            idx = (~done).nonzero().flatten()
            if idx.numel() == 0:
                break
            x_best, x_best_adv, fooled, x_first = self._single_run(model, x[idx], y[idx], eot, generator)
            fooled = self._trust(fooled)
            chosen = x_first if self.early_stop_active else x_best_adv
            out[idx[fooled]] = chosen[fooled]
            keep = ~fooled & ~have_loss_point[idx]
            best_loss_point[idx[keep]] = x_best[keep]
            have_loss_point[idx[keep]] = True
            done[idx[fooled]] = True
        rest = ~done & have_loss_point
        out[rest] = best_loss_point[rest]
        return out


class APGDT(APGD):
    """Targeted APGD (APGD-T, Croce & Hein 2020): targeted DLR loss against each of the
    ``n_target_classes`` highest-scoring wrong classes in turn (AutoAttack: 9 targets, 1 restart each)."""

    name = "apgd-t"

    def __init__(self, *, n_target_classes: int = 9, loss: str = "dlr-targeted", **kw) -> None:
        if loss not in ("dlr-targeted", "ce-targeted"):
            raise ValueError(f"loss: expected 'dlr-targeted' or 'ce-targeted', got {loss!r}")
        super().__init__(loss=loss, **kw)
        self.n_target_classes = check_int(n_target_classes, "n_target_classes", minimum=1)

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, logits0: torch.Tensor, eot: int,
             generator: torch.Generator | None) -> torch.Tensor:
        n_cls = logits0.shape[1]
        n_t = min(self.n_target_classes, n_cls - 1)
        order = logits0.argsort(dim=1)  # increasing
        out = x.clone()
        done = self.skip_mask(logits0, y)
        best_loss_point = x.clone()
        self.last_stats.iterations = 0
        for t_i in range(2, n_t + 2):
            idx = (~done).nonzero().flatten()
            if idx.numel() == 0:
                break
            self.target = order[idx, -t_i]
            try:
                for _ in range(self.n_restarts):
                    x_best, x_best_adv, fooled, x_first = self._single_run(model, x[idx], y[idx], eot, generator)
                    fooled = self._trust(fooled)
                    chosen = x_first if self.early_stop_active else x_best_adv
                    out[idx[fooled]] = chosen[fooled]
                    if t_i == 2:
                        best_loss_point[idx[~fooled]] = x_best[~fooled]
                    done[idx[fooled]] = True
                    idx = idx[~fooled]
                    self.target = self.target[~fooled]
                    if idx.numel() == 0:
                        break
            finally:
                self.target = None
        rest = ~done
        out[rest] = best_loss_point[rest]
        return out
