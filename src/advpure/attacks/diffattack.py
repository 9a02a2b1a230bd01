"""The deviated-reconstruction attack (after DiffAttack: Kang, Song & Li, "DiffAttack: Evasion Attacks Against
Diffusion-Based Adversarial Purification", NeurIPS 2023, Section 3.2), for a multi-stage purifier.

DiffAttack adds to the classification loss a *deviated-reconstruction loss* at intermediate points of the
purification: it pushes the purification's intermediate samples ``x_t`` of the adversarial input away from the
samples ``x'_t ~ q(x'_t | x)`` of the clean input ``x`` at the same time, so that the errors of the density-gradient
estimate accumulate instead of being removed, and the gradient does not have to come only through the long chain to
the classifier::

    max_{x_adv}  CE(f(P(x_adv)), y)  +  lambda * l_dev,     l_dev = E_t [ alpha_t * d(x_t, x'_t) ]

For GNSP (:class:`~advpure.defenses.gnsp.GNSP`, Lee & Kim 2023) the intermediate points are the outputs of its K
stages, :meth:`~advpure.defenses.gnsp.GNSP.purify_stages` (each a reconstruction at time 0, where ``x'_0 = x``): the
multi-stage process is exactly the kind of deep, repeatedly re-noised chain the loss is made for. Here

    l_dev = (1/K) sum_k  mean_pixels (z_k(x_adv) - (2x - 1))^2

(``alpha_t = 1/K``, ``d`` the mean squared distance per pixel in the model's [-1, 1] space). The weights ``alpha_t``
and ``lambda`` of the paper's experiments are not used here (not in this project's sources). **lambda per image**
(``balance=True``, the default): the two terms' scales differ by orders of magnitude, and from image to image (digits,
GNSP with 5 steps per stage, 16 test images, ``experiments/digits/ssni/dev_gradient_ratio.py``: ||grad l_dev|| /
||grad CE|| has median 55 at the clean image and 136 at a random corner of the 0.2 ball, range 0.003 to 8e4), so with
one lambda the sign steps would follow one term alone on most images. At the first iterate the attack sets, per image,
``lambda_i = dev_weight * ||grad CE_i|| / ||grad l_dev_i||`` (EOT-averaged gradients, one extra backward pass) and
keeps it: both terms pull with the same strength there, whatever the dataset. ``balance=False`` uses
``lambda = dev_weight`` as given; ``dev_weight=0`` is plain PGD-EOT on CE through the stages (a control). DiffAttack's
segment-wise forward-backward algorithm is what the purifier's ``grad_checkpoint`` does (each stage's reverse chain is
recomputed step by step in the backward pass with its random state rewound): on by default.

Optimisation: PGD (linf sign steps / l2 normalised steps, projection onto the eps-ball and [0, 1]) with EOT over the
purifier's randomness (``eot`` passes averaged per gradient) and a random start. The protocol of
:mod:`advpure.attacks.base` holds: against a stochastic defense every image is attacked and the last iterate is
returned; its success is judged on fresh draws by the caller. The model must be a
:class:`~advpure.defenses.base.DefendedClassifier` whose defense has ``purify_stages``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..contracts import check_int, check_positive
from .base import DEFAULT_EPS, FirstSuccess, PathAttack, ascent_step, check_step_size, random_start

#: the weight of the deviated-reconstruction term against the per-image cross-entropy (relative to the gradient
#: norms at the first iterate when ``balance`` is on)
DEFAULT_DEV_WEIGHT = 1.0


def _parts(model: nn.Module):
    defense = getattr(model, "defense", None)
    clf = getattr(model, "classifier", None)
    if clf is None or not callable(getattr(defense, "purify_stages", None)):
        raise TypeError("diffattack: model must be a DefendedClassifier whose defense exposes its intermediate "
                        f"reconstructions (purify_stages, e.g. GNSP); got {type(model).__name__} with defense "
                        f"{type(defense).__name__}")
    return defense, clf


def deviation_objective(defense: nn.Module, classifier: nn.Module, x_adv: torch.Tensor, x_clean: torch.Tensor,
                        y: torch.Tensor, *, dev_weight: float | torch.Tensor,
                        generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per image: (CE + dev_weight * l_dev, CE, l_dev) for one stochastic pass of the purifier (module docstring);
    ``dev_weight`` a number or one weight per image."""
    stages = defense.purify_stages(x_adv, generator=generator)
    logits = classifier(defense.to_image_space(stages[-1]))
    ce = F.cross_entropy(logits, y, reduction="none")
    ref = 2.0 * x_clean - 1.0
    dev = torch.stack([(z - ref).pow(2).flatten(1).mean(1) for z in stages]).mean(0)
    return ce + dev_weight * dev, ce, dev


class DeviatedReconstruction(PathAttack):
    """PGD-EOT on CE + dev_weight * l_dev through a multi-stage purifier (module docstring).

    Defaults: 20 steps of 2.5 eps / steps, EOT 4, random start, ``grad_checkpoint`` on, ``balance`` on.

    Args:
        dev_weight: lambda, the weight of the deviated-reconstruction loss (relative, when balance is on)
        balance: per image, scale lambda at the first iterate so both gradients have the same norm
    """

    name = "diffattack"

    def __init__(self, *, norm: str = "linf", eps: float | None = None, steps: int = 20, step_size: float | None = None,
                 dev_weight: float = DEFAULT_DEV_WEIGHT, balance: bool = True, eot: int = 4, random_start: bool = True,
                 grad_checkpoint: bool = True, seed: int | None = None) -> None:
        norm_l = norm.lower() if isinstance(norm, str) else norm
        if eps is None and norm_l in DEFAULT_EPS:
            eps = DEFAULT_EPS[norm_l]
        super().__init__(eps=eps if eps is not None else -1.0, norm=norm, eot=eot, grad_checkpoint=grad_checkpoint,
                         seed=seed)
        self.steps = check_int(steps, "steps", minimum=1)
        self.step_size = check_step_size(step_size)
        self.dev_weight = check_positive(dev_weight, "dev_weight", allow_zero=True)
        self.balance = bool(balance)
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
                _, ce, dev = deviation_objective(defense, clf, xr, xc, yr, dev_weight=0.0, generator=gen)
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


__all__ = ["DEFAULT_DEV_WEIGHT", "DeviatedReconstruction", "deviation_objective"]


from ..specs import SpecContext, register  # noqa: E402


@register("attack", "diffattack")
def _diffattack(ctx: SpecContext, **p) -> DeviatedReconstruction:
    """``diffattack:eps=8/255,steps=20,eot=4,dev_weight=1,balance=true`` (needs a defense with ``purify_stages``, e.g.
    GNSP)."""
    return DeviatedReconstruction(**p)
