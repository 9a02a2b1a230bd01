"""Attacks, one call contract (foolbox-3 style): ``Attack(**options)(model, x, y) -> x_adv``.

``model`` maps float [0, 1] NCHW images to (N, classes) logits (any classifier, or a
:class:`~advpure.defenses.DefendedClassifier`); ``x_adv`` stays inside the threat model. Stochastic
models get EOT gradients. See :mod:`advpure.attacks.base` for the shared options.

Spec names for the command line (``--attack NAME:key=value,...``):

- ``pgd`` (:class:`PGD`), ``apgd`` / ``apgd-ce`` / ``apgd-dlr`` (:class:`APGD`), ``apgd-t`` (:class:`APGDT`);
- ``bpda`` (:class:`BPDA`, straight-through backward through the defense, PGD options);
- ``surrogate`` (:class:`SurrogateProcess`; the surrogate defense comes from ``--surrogate-defense``);
- ``transfer`` (:class:`Transfer`; the surrogate classifier comes from ``--surrogate-classifier``);
- ``square`` (:class:`Square`, linf black-box), ``cw`` (:class:`CWL2`);
- ``diffattack`` (:class:`DeviatedReconstruction`: CE plus DiffAttack's deviated-reconstruction loss at the stage
  outputs of a multi-stage purifier, GNSP);
- ``standard`` / ``lite`` (:class:`Ensemble` from :func:`standard_attacks`: worst case per image over the attack
  list for the defense being evaluated, cheapest first).

Full-gradient adaptive attacks are ``pgd``/``apgd`` with ``grad_checkpoint=true``.
"""

from __future__ import annotations

from typing import Any

from ..ops.checkpointing import checkpointed_loop
from ..specs import SpecContext, register
from .apgd import APGD, APGDT
from .base import Attack, dlr_loss, dlr_targeted_loss, is_stochastic, margin_loss, perturbation_norm, project
from .bpda import BPDA, BPDAModel
from .cmap_attack import ConsistencyDisruption
from .cw import CWL2
from .detector_aware import DADPathPGD, DetectorAwarePGD
from .diffattack import DeviatedReconstruction
from .ensemble import Ensemble, standard_attacks
from .pgd import PGD
from .square import Square
from .surrogate import SurrogateProcess
from .transfer import Transfer


@register("attack", "pgd")
def _pgd(ctx: SpecContext, **p: Any) -> PGD:
    return PGD(**p)


@register("attack", "apgd")
@register("attack", "apgd-ce")
def _apgd_ce(ctx: SpecContext, **p: Any) -> APGD:
    p.setdefault("loss", "ce")
    return APGD(**p)


@register("attack", "apgd-dlr")
def _apgd_dlr(ctx: SpecContext, **p: Any) -> APGD:
    p.setdefault("loss", "dlr")
    return APGD(**p)


@register("attack", "apgd-t")
def _apgd_t(ctx: SpecContext, **p: Any) -> APGDT:
    return APGDT(**p)


@register("attack", "bpda")
def _bpda(ctx: SpecContext, **p: Any) -> BPDA:
    return BPDA(**p)


@register("attack", "surrogate")
def _surrogate(ctx: SpecContext, **p: Any) -> SurrogateProcess:
    sur = ctx.extra.get("surrogate_model")
    if sur is None:
        raise ValueError("surrogate attack: no surrogate defense given (pass --surrogate-defense SPEC, e.g. the "
                         "same purifier with fewer steps)")
    return SurrogateProcess(surrogate=sur, **p)


@register("attack", "transfer")
def _transfer(ctx: SpecContext, **p: Any) -> Transfer:
    sur = ctx.extra.get("surrogate_classifier")
    if sur is None:
        raise ValueError("transfer attack: no surrogate classifier given (pass --surrogate-classifier SPEC)")
    return Transfer(surrogate=sur, **p)


@register("attack", "square")
def _square(ctx: SpecContext, **p: Any) -> Square:
    return Square(**p)


@register("attack", "cw")
def _cw(ctx: SpecContext, **p: Any) -> CWL2:
    return CWL2(**p)


def _ensemble_factory(level: str):
    def factory(ctx: SpecContext, eps: float | None = None, norm: str = "linf", steps: int | None = None,
                eot: int | None = None, full_steps: int | None = None, select_draws: int = 16) -> Ensemble:
        """``standard:eps=8/255,norm=linf,steps=..,eot=..,full_steps=..,select_draws=16`` (``lite`` likewise)."""
        from ..data import DEFAULT_LINF_EPS

        if ctx.classifier is None:
            raise ValueError(f"{level} attack: needs the classifier (run it through advpure eval / run_eval)")
        if eps is None:
            if norm != "linf" or ctx.dataset not in DEFAULT_LINF_EPS:
                raise ValueError(f"{level} attack: give eps= (no default for norm {norm!r} on dataset {ctx.dataset!r})")
            eps = DEFAULT_LINF_EPS[ctx.dataset]
        return standard_attacks(classifier=ctx.classifier, defense=ctx.extra.get("defense"), eps=eps, norm=norm,
                                level=level, steps=steps, eot=eot, full_steps=full_steps, select_draws=select_draws)

    return factory


register("attack", "standard")(_ensemble_factory("standard"))
register("attack", "lite")(_ensemble_factory("lite"))


@register("attack", "dad-adaptive")
def _dad_adaptive(ctx: SpecContext, **p: Any) -> DADPathPGD:
    """The DAD authors' adaptive attack: PGD on CE + MMD through the denoiser path."""
    p.setdefault("mmd_weight", 1.0)
    return DADPathPGD(**p)


@register("attack", "dad-denoiser")
def _dad_denoiser(ctx: SpecContext, **p: Any) -> DADPathPGD:
    """Full gradients through DAD's denoiser (assumes the detector fires)."""
    p.setdefault("mmd_weight", 0.0)
    return DADPathPGD(**p)


@register("attack", "detector-aware")
def _detector_aware(ctx: SpecContext, **p: Any) -> DetectorAwarePGD:
    """Maximise the loss on the undetected path while staying under the detection threshold."""
    return DetectorAwarePGD(**p)


__all__ = ["APGD", "APGDT", "Attack", "BPDA", "BPDAModel", "CWL2", "ConsistencyDisruption", "DADPathPGD", "DetectorAwarePGD",
           "DeviatedReconstruction", "Ensemble", "PGD", "standard_attacks", "Square", "SurrogateProcess", "Transfer",
           "checkpointed_loop", "dlr_loss", "dlr_targeted_loss", "is_stochastic", "margin_loss",
           "perturbation_norm", "project"]
