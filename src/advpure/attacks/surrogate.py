"""Surrogate-process attack (Lee & Kim, ICCV 2023, "Robust evaluation of diffusion-based adversarial
purification", sec. 4): gradients come from a cheaper *surrogate* of the defense (e.g. the same diffusion
purifier with fewer denoising steps), every iterate is *evaluated* on the real defense.

    x_{k+1} = P(x_k + alpha * s(E_surrogate[ grad L(surrogate(x_k), y) ]))

For a deterministic defense, per sample the first iterate that fools the real defense is kept
(evaluate-while-optimising); samples never fooled get the final iterate. For a stochastic defense the last
iterate is returned (see :mod:`advpure.attacks.base`, protocol for stochastic models). The surrogate is a second model (typically a
:class:`~advpure.defenses.DefendedClassifier` sharing the classifier), given at construction.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .base import Attack, FirstSuccess, ascent_step, count_forwards, is_stochastic, make_loss, random_start
from .pgd import PGD


class SurrogateProcess(Attack):
    """PGD whose gradient is taken on ``surrogate`` while success is judged on the attacked model.

    Options are those of :class:`PGD`; EOT applies to the surrogate's randomness. ``eval_draws`` fresh
    passes of the real (stochastic) model judge each iterate; a sample counts as fooled when the
    majority of them misclassify it.
    """

    name = "surrogate"

    def __init__(self, *, surrogate: nn.Module, eval_draws: int = 1, **pgd_options) -> None:
        if not isinstance(surrogate, nn.Module):
            raise TypeError(f"surrogate: expected an nn.Module (e.g. a DefendedClassifier), got {type(surrogate).__name__}")
        pgd_options.setdefault("early_stop", True)
        self.pgd = PGD(**pgd_options)
        super().__init__(eps=self.pgd.eps, norm=self.pgd.norm, eot=self.pgd.eot, eot_batch=self.pgd.eot_batch,
                         early_stop=self.pgd.early_stop, grad_checkpoint=self.pgd.grad_checkpoint, seed=self.pgd.seed)
        self.surrogate = surrogate
        from ..contracts import check_int

        self.eval_draws = check_int(eval_draws, "eval_draws", minimum=1)

    def gradient_model(self, model: nn.Module) -> nn.Module:
        return self.surrogate

    def _run(self, model, x, y, *, logits0, eot, generator):
        pgd = self.pgd
        eot = pgd.eot if is_stochastic(self.surrogate) else 1
        self.last_stats.eot = eot
        alpha = pgd.alpha()
        loss_fn = make_loss(pgd.loss)
        x_adv = random_start(x, norm=pgd.norm, eps=pgd.eps, generator=generator) if pgd.random_start else x.clone()
        tracker = FirstSuccess(x)
        early = self.early_stop_active
        if early:
            tracker.update(x, self.skip_mask(logits0, y))
        with count_forwards(self.surrogate) as sc:
            for _ in range(pgd.steps):
                grad, _, _ = pgd.loss_and_grad(self.surrogate, x_adv, y, loss_fn, eot)
                x_adv = ascent_step(x_adv, torch.nan_to_num(grad), x, norm=pgd.norm, eps=pgd.eps, alpha=alpha)
                if early:
                    tracker.update(x_adv, self._fooled_real(model, x_adv, y))
        self.last_stats.iterations = pgd.steps
        self.surrogate_forwards_per_image = sc.images / x.shape[0]
        return tracker.result(x_adv) if early else x_adv

    def _fooled_real(self, model: nn.Module, x_k: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        draws = self.eval_draws if is_stochastic(model) else 1
        with torch.no_grad():
            wrong = torch.zeros(x_k.shape[0], device=x_k.device)
            for _ in range(draws):
                wrong += (model(x_k).argmax(1) != y).float()
        return wrong * 2 > draws
