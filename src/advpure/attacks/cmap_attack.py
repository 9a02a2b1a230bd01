"""The consistency-disruption attack on CMAP (Zhang et al., "Adversarial Purification by Consistency-aware
Latent Space Optimization on Data Manifolds", the adaptive attack designed against CMAP).

Idea: CMAP trusts latents whose generated images are consistent with the input. The attack starts from
the latents ``u_k`` CMAP finds for the clean input ``x`` (:meth:`advpure.defenses.cmap.CMAP.optimise`),
then keeps optimising them on CMAP's own objective with a term that pushes the generated images towards
misclassification::

    min_u  L_CMAP(u; x)  -  gamma * CE(classifier(G(u_k)), y)

(Adam, ``steps`` iterations, the purifier's learning rate unless ``lr`` is given). Each generated
``G(u_k)`` is then projected into the threat model around ``x`` (``||. - x||_p <= eps``, [0, 1]), giving K
candidate adversarial inputs per image. The attack succeeds on an image when **any** candidate is
misclassified by the defended model (CMAP run afresh on the candidate, with its own randomness); the
returned ``x_adv`` is the first fooling candidate, else the candidate with the largest classifier loss on
its generated image.

``model`` must expose the CMAP purifier and the classifier: a :class:`advpure.defenses.DefendedClassifier`
whose ``defense`` is a :class:`~advpure.defenses.cmap.CMAP`, or a
:class:`~advpure.defenses.cmap.CMAPClassifier`. Defaults: ``gamma = 1``, ``steps = 30``, eps 8/255 (linf).
Cost: CMAP's optimisation on the clean input, ``steps`` more latent steps, and K defended-model
evaluations per image.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..contracts import check_int, check_positive
from .base import DEFAULT_EPS, Attack, project


class ConsistencyDisruption(Attack):
    """CMAP's consistency-disruption attack (module docstring). ``eot`` is not used (the attack works on
    latents); randomness: the purifier's draw on the clean input, from ``seed`` when given."""

    name = "cmap-disruption"

    def __init__(self, *, eps: float = DEFAULT_EPS["linf"], norm: str = "linf", gamma: float = 1.0, steps: int = 30,
                 lr: float | None = None, seed: int | None = None) -> None:
        super().__init__(eps=eps, norm=norm, eot=1, seed=seed)
        self.gamma = check_positive(gamma, "gamma")
        self.steps = check_int(steps, "steps", minimum=1)
        self.lr = None if lr is None else check_positive(lr, "lr")
        self.last_fooled_any: torch.Tensor | None = None

    @staticmethod
    def _parts(model: nn.Module):
        from ..defenses.cmap import CMAP

        cmap = getattr(model, "defense", None)
        clf = getattr(model, "classifier", None)
        if not isinstance(cmap, CMAP) or clf is None:
            raise TypeError("cmap-disruption: model must be a DefendedClassifier(classifier, CMAP) or a "
                            f"CMAPClassifier (with .classifier and a CMAP .defense), got {type(model).__name__}")
        return cmap, clf

    def _validate(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self._parts(model)
        return super()._validate(model, x, y)

    def candidates(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(K, N, C, H, W) projected candidates and (N, K) classifier CE of their generated images."""
        cmap, clf = self._parts(model)
        k = cmap.k
        with torch.no_grad():
            clean = cmap.optimise(x, generator=generator)
        yk = y.repeat_interleave(k)

        def disrupt(gen5: torch.Tensor) -> torch.Tensor:
            ce = F.cross_entropy(clf(gen5.flatten(0, 1)), yk, reduction="none").view(-1, k)
            return -self.gamma * ce.mean(1)

        with torch.no_grad():
            res = cmap.optimise(x, u0=clean.latents, iterations=self.steps, extra=disrupt, lr=self.lr)
            gen = res.samples.flatten(0, 1)
            ce = F.cross_entropy(clf(gen), yk, reduction="none").view(-1, k)
        cand = project(gen, x.repeat_interleave(k, dim=0), norm=self.norm, eps=self.eps)
        return cand.view(x.shape[0], k, *x.shape[1:]).transpose(0, 1), ce

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, logits0: torch.Tensor, eot: int,
             generator: torch.Generator | None) -> torch.Tensor:
        cand, ce = self.candidates(model, x, y, generator)
        k = cand.shape[0]
        fooled = torch.zeros(k, x.shape[0], dtype=torch.bool, device=x.device)
        with torch.no_grad():
            for j in range(k):
                fooled[j] = model(cand[j]).argmax(1) != y
        self.last_stats.iterations = self.steps
        #: per sample, whether any candidate fooled the defended model during the attack (the paper's criterion)
        self.last_fooled_any = fooled.any(0).detach().cpu()
        if self._stochastic_target:  # no selection on the attack's own draws: the highest-CE candidate
            first = ce.argmax(1)
        else:
            first = torch.where(fooled.any(0), fooled.float().argmax(0), ce.argmax(1))
        out = cand[first, torch.arange(x.shape[0], device=x.device)]
        already = self.skip_mask(logits0, y)  # misclassified clean inputs stay as they are (deterministic only)
        return torch.where(already.view(-1, 1, 1, 1), x, out)


__all__ = ["ConsistencyDisruption"]


from ..specs import SpecContext, register  # noqa: E402


@register("attack", "cmap-disruption")
def _cmap_disruption(ctx: SpecContext, **p) -> ConsistencyDisruption:
    """``cmap-disruption:eps=8/255,gamma=1,steps=30,lr=...`` (needs a CMAP defense)."""
    return ConsistencyDisruption(**p)
