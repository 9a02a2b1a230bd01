"""The deviated-reconstruction attack (DiffAttack: Kang, Song & Li, "DiffAttack: Evasion Attacks Against
Diffusion-Based Adversarial Purification", NeurIPS 2023, Sections 3.2 and 3.4, Appendix D), for diffusion purifiers.

DiffAttack adds to the classification loss a *deviated-reconstruction loss* at intermediate points of the
purification (Eq. 8): it pushes the reverse process's samples ``x'_t`` of the adversarial input away from the samples
``x_t`` of the diffusion process of the clean input ``x`` at the same time, so that the errors of the density-gradient
estimate accumulate instead of being removed, and the gradient does not have to come only through the long chain to
the classifier (Eq. 10)::

    max_{x_adv}  CE(f(P(x_adv)), y)  +  lambda * l_dev,     l_dev = E_t [ alpha(t) * E d(x_t, x'_t) ]

The paper takes the expectation over t as the average over uniformly spread time steps of the reverse chain (Section
4.7: a third of them, better than the same number at its start or end only), ``alpha(t)`` the reciprocal of their
number, ``lambda = 1`` (Appendix D.2). Here the points are the states after every ``every``-th reverse step and the
final one (:meth:`purify_path` of the defense; :func:`~advpure.diffusion.samplers.reverse_path`): ``every = 3``
(default) takes a third of the steps, evenly spread; for a multi-stage purifier (GNSP, Lee & Kim 2023) the states
inside every stage's chain and every stage's output; ``every = 0`` the stage outputs only (for DiffPure, the final
output only). With ``P`` such points ``(t_k, z_k)`` in the model's [-1, 1] space::

    l_dev = (1/P) sum_k  mean_pixels (z_k - a(t_k) (2x - 1))^2

``a(t)`` the schedule's signal scale (1 at t = 0). ``d`` is taken to the *mean* of the clean input's diffusion,
``a(t)(2x - 1)``, not to one sample ``x_t = a(t)(2x - 1) + s(t) n`` of it: the two have the same expected gradient
(the noise ``n`` is independent of ``z_k``, so it adds only a zero-mean term), and the mean has less variance.
``d`` is the mean squared distance per pixel (the paper does not fix it; its code was not in our sources).
**lambda per image** (``balance=True``, the default) instead of the paper's fixed 1: the two terms' scales differ by
orders of magnitude, and from image to image (digits, GNSP with 5 steps per stage, 16 test images,
``experiments/digits/ssni/dev_gradient_ratio.py``: ||grad l_dev|| / ||grad CE|| has median 55 at the clean image and
136 at a random corner of the 0.2 ball, range 0.003 to 8e4), so with one lambda the sign steps would follow one term
alone on most images. At the first iterate the attack sets, per image, ``lambda_i = dev_weight * ||grad CE_i|| /
||grad l_dev_i||`` (EOT-averaged gradients, one extra backward pass) and keeps it: both terms pull with the same
strength there, whatever the dataset. ``balance=False`` uses ``lambda = dev_weight`` as given; ``dev_weight=0`` is
plain PGD-EOT on CE through the purifier (a control). DiffAttack's segment-wise forward-backward algorithm (Section
3.3) is what the purifier's ``grad_checkpoint`` does (each reverse chain is recomputed step by step in the backward
pass with its random state rewound): on by default.

Optimisation: PGD (linf sign steps / l2 normalised steps, projection onto the eps-ball and [0, 1]) with EOT over the
purifier's randomness (``eot`` passes averaged per gradient) and a random start; the paper runs it inside AutoAttack's
APGD (100 iterations, EOT 20, CE then DLR). The protocol of :mod:`advpure.attacks.base` holds: against a stochastic
defense every image is attacked and the last iterate is returned; its success is judged on fresh draws by the caller.
The model must be a :class:`~advpure.defenses.base.DefendedClassifier` whose defense has ``purify_path``
(:class:`~advpure.defenses.diffpure.DiffPure`, :class:`~advpure.defenses.ssni.SSNI` over DiffPure,
:class:`~advpure.defenses.gnsp.GNSP`).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..contracts import check_int, check_positive
from ..defenses.diffusion_base import DiffusionPurifier
from .base import DEFAULT_EPS, FirstSuccess, PathAttack, ascent_step, check_step_size, random_start

#: the weight of the deviated-reconstruction term against the per-image cross-entropy (relative to the gradient
#: norms at the first iterate when ``balance`` is on)
DEFAULT_DEV_WEIGHT = 1.0


#: default spacing of the deviated-reconstruction points: a third of the reverse steps (Kang et al. 2023, Sec. 4.7)
DEFAULT_EVERY = 3


def _parts(model: nn.Module):
    defense = getattr(model, "defense", None)
    clf = getattr(model, "classifier", None)
    if clf is None or not callable(getattr(defense, "purify_path", None)):
        raise TypeError("diffattack: model must be a DefendedClassifier whose defense exposes its reverse process "
                        f"(purify_path: DiffPure, SSNI, GNSP); got {type(model).__name__} with defense "
                        f"{type(defense).__name__}")
    return defense, clf


def deviation_objective(defense: nn.Module, classifier: nn.Module, x_adv: torch.Tensor, x_clean: torch.Tensor,
                        y: torch.Tensor, *, dev_weight: float | torch.Tensor, every: int = DEFAULT_EVERY,
                        generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per image: (CE + dev_weight * l_dev, CE, l_dev) for one stochastic pass of the purifier (module docstring);
    ``dev_weight`` a number or one weight per image."""
    path = defense.purify_path(x_adv, generator=generator, every=every)
    logits = classifier(DiffusionPurifier.to_image_space(path[-1][1]))
    ce = F.cross_entropy(logits, y, reduction="none")
    ref = 2.0 * x_clean - 1.0
    devs = []
    for t, z in path:
        if isinstance(t, torch.Tensor) or float(t) != 0.0:
            tt = torch.as_tensor(t, dtype=z.dtype, device=z.device)
            a = defense.schedule.alpha(tt.expand(z.shape[0])).to(z.dtype).view(-1, *([1] * (z.dim() - 1)))
            target = a * ref
        else:
            target = ref
        devs.append((z - target).pow(2).flatten(1).mean(1))
    dev = torch.stack(devs).mean(0)
    return ce + dev_weight * dev, ce, dev


class DeviatedReconstruction(PathAttack):
    """PGD-EOT on CE + dev_weight * l_dev through a multi-stage purifier (module docstring).

    Defaults: 20 steps of 2.5 eps / steps, EOT 4, random start, ``grad_checkpoint`` on, ``balance`` on.

    Args:
        dev_weight: lambda, the weight of the deviated-reconstruction loss (relative, when balance is on)
        balance: per image, scale lambda at the first iterate so both gradients have the same norm
        every: the loss's points: the reverse process's state after every ``every``-th step (per stage) and at the
            end (default 3, a third of the steps); 0: the stage outputs only
    """

    name = "diffattack"

    def __init__(self, *, norm: str = "linf", eps: float | None = None, steps: int = 20, step_size: float | None = None,
                 dev_weight: float = DEFAULT_DEV_WEIGHT, balance: bool = True, every: int = DEFAULT_EVERY, eot: int = 4,
                 random_start: bool = True, grad_checkpoint: bool = True, seed: int | None = None) -> None:
        norm_l = norm.lower() if isinstance(norm, str) else norm
        if eps is None and norm_l in DEFAULT_EPS:
            eps = DEFAULT_EPS[norm_l]
        super().__init__(eps=eps if eps is not None else -1.0, norm=norm, eot=eot, grad_checkpoint=grad_checkpoint,
                         seed=seed)
        self.steps = check_int(steps, "steps", minimum=1)
        self.step_size = check_step_size(step_size)
        self.dev_weight = check_positive(dev_weight, "dev_weight", allow_zero=True)
        self.balance = bool(balance)
        self.every = check_int(every, "every", minimum=0)
        self.random_start = bool(random_start)
        #: the per-image lambda of the last call
        self.last_lambda: torch.Tensor | None = None
        #: mean CE and l_dev over the batch at each step (convergence evidence for reports and tests)
        self.last_curve: list[tuple[float, float]] = []

    def _validate(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        _parts(model)
        return super()._validate(model, x, y)

    def _run(self, model, x, y, *, logits0, eot, generator):
        defense, clf = _parts(model)
        gen = getattr(model, "generator", None)  # the defense's own random stream, as model.forward uses it
        alpha = self.step_size or 2.5 * self.eps / self.steps
        x_adv = random_start(x, norm=self.norm, eps=self.eps, generator=generator) if self.random_start else x.clone()
        skip = self.skip_mask(logits0, y)  # deterministic defense only (protocol of advpure.attacks.base)
        tracker = FirstSuccess(x) if self.early_stop_active else None
        xc, yr = x.repeat(eot, 1, 1, 1), y.repeat(eot)
        self.last_curve = []
        lam: torch.Tensor | None = None if self.balance and self.dev_weight > 0 else torch.full_like(y, self.dev_weight,
                                                                                                      dtype=x.dtype)

        def per_image(g: torch.Tensor) -> torch.Tensor:
            return torch.nan_to_num(g.view(eot, *x.shape).sum(0))

        for _ in range(self.steps):
            xr = x_adv.detach().repeat(eot, 1, 1, 1).requires_grad_(True)
            with torch.enable_grad():
                _, ce, dev = deviation_objective(defense, clf, xr, xc, yr, dev_weight=0.0, every=self.every,
                                                 generator=gen)
                self._path_images += xr.shape[0]
                if lam is None:  # the first iterate: lambda_i from the two gradients' norms (module docstring)
                    g_ce = per_image(torch.autograd.grad(ce.sum() / eot, xr, retain_graph=True)[0])
                    g_dev = per_image(torch.autograd.grad(dev.sum() / eot, xr)[0])
                    lam = self.dev_weight * g_ce.flatten(1).norm(dim=1) / g_dev.flatten(1).norm(dim=1).clamp(min=1e-12)
                    grad = g_ce + lam.view(-1, *([1] * (x.dim() - 1))) * g_dev
                else:
                    grad = per_image(torch.autograd.grad((ce + lam.repeat(eot) * dev).sum() / eot, xr)[0])
            self.last_curve.append((float(ce.detach().mean()), float(dev.detach().mean())))
            x_adv = ascent_step(x_adv, grad, x, norm=self.norm, eps=self.eps, alpha=alpha)
            if tracker is not None:
                with torch.no_grad():
                    tracker.update(x_adv, model(x_adv).argmax(1) != y)
        self.last_stats.iterations = self.steps
        self.last_lambda = lam.detach().cpu()
        if tracker is not None:
            x_adv = tracker.result(x_adv)
        return torch.where(skip.view(-1, *([1] * (x.dim() - 1))), x, x_adv)


__all__ = ["DEFAULT_DEV_WEIGHT", "DEFAULT_EVERY", "DeviatedReconstruction", "deviation_objective"]


from ..specs import SpecContext, register  # noqa: E402


@register("attack", "diffattack")
def _diffattack(ctx: SpecContext, **p) -> DeviatedReconstruction:
    """``diffattack:eps=8/255,steps=20,eot=4,dev_weight=1,balance=true,every=3`` (needs a defense with
    ``purify_path``: DiffPure, SSNI, GNSP)."""
    return DeviatedReconstruction(**p)
