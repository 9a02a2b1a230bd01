"""Worst case over an ensemble of attacks, cheapest first (the idea of AutoAttack, Croce & Hein 2020, carried to
stochastic purification defenses), and the standard attack lists per defense family.

:class:`Ensemble` runs its attacks in order. After each one, every candidate image is judged on ``select_draws``
*fresh* passes of the attacked model (16 by default for a stochastic model, one for a deterministic model): its
*selection accuracy* is the share of those passes that classify it correctly. Per image the candidate with the
lowest selection accuracy so far is kept; an image stays *standing* while that accuracy is above 0, and only
standing images are given to the next attack, so the expensive attacks run on few images. The selection draws
are separate from the draws on which the caller finally reports accuracy (the runner draws again), so choosing
the best candidate does not bias the reported number.

:func:`standard_attacks` builds the list for a defended classifier (``level="standard"``, or ``"lite"`` for the
demo), cheapest first:

- for a diffusion purifier whose reverse process can change (:attr:`~advpure.defenses.base.Purifier.sampler_arg`:
  :class:`~advpure.defenses.diffpure.DiffPure`, :class:`~advpure.defenses.ssni.SSNI`,
  :class:`~advpure.defenses.gnsp.GNSP`): PGD-EOT on the one-step denoising surrogate (one network call per stage,
  Lee & Kim 2023) and on the deterministic DDIM reverse process with 2 steps (these two with ``CHEAP_FACTOR`` times
  the steps and EOT), then on DDIM with 5 steps and on the defense's own process with 5 steps (the latter only if it
  costs fewer network evaluations than the defense);
- for a diffusion purifier whose sampler is fixed but whose number of reverse steps can change (GDMP, distribution
  transfer: :attr:`~advpure.defenses.base.Purifier.steps_arg`): PGD-EOT on the same process with one reverse step
  (per round; ``CHEAP_FACTOR`` times the budget), with 2 and with 5, each only if it costs fewer network
  evaluations than the defense;
- for a guided purifier (:attr:`~advpure.defenses.base.Purifier.guidance_arg`: GDMP, distribution transfer): PGD-EOT
  on the same process without its guidance (no second derivative through the guidance term);
- BPDA-EOT (real forward, identity backward; Athalye et al. 2018);
- APGD-CE-EOT and PGD-EOT with full gradients through the defense (checkpointed);
- the method-specific attacks when the defense has them (CMAP: the consistency-disruption attack; DAD: the
  authors' adaptive attack and the detector-aware attack; distribution transfer: the guidance-target attack; GNSP:
  the deviated-reconstruction attack after DiffAttack),
  :func:`method_specific_attacks`.

The report lists, per image, which attack broke it (``last_broken_by``).
"""

from __future__ import annotations

import copy
from typing import Any, Sequence

import torch
import torch.nn as nn

from ..contracts import check_int
from .base import Attack, is_stochastic

#: default selection draws for a stochastic model
SELECT_DRAWS = 16
#: steps and EOT multiplier of the surrogates that cost one or two network calls (standard level only)
CHEAP_FACTOR = 2


class Ensemble(Attack):
    """Worst case per image over ``attacks`` (a sequence of ``(name, attack)``), cheapest first."""

    name = "ensemble"

    def __init__(self, attacks: Sequence[tuple[str, Attack]], *, select_draws: int = SELECT_DRAWS,
                 label: str = "ensemble") -> None:
        attacks = list(attacks)
        if not attacks:
            raise ValueError("ensemble: expected at least one attack")
        names = [n for n, _ in attacks]
        if len(set(names)) != len(names):
            raise ValueError(f"ensemble: attack names must be unique, got {names}")
        first = attacks[0][1]
        for n, a in attacks:
            if not isinstance(a, Attack):
                raise TypeError(f"ensemble: {n!r} is not an Attack ({type(a).__name__})")
            if a.norm != first.norm or abs(a.eps - first.eps) > 1e-12:
                raise ValueError(f"ensemble: every attack needs the same threat model; {n!r} has {a.norm} eps={a.eps:g}, "
                                 f"{attacks[0][0]!r} has {first.norm} eps={first.eps:g}")
        super().__init__(eps=first.eps, norm=first.norm, eot=max(a.eot for _, a in attacks))
        self.attacks = attacks
        self.select_draws = check_int(select_draws, "select_draws", minimum=1)
        self.label = label
        self.last_broken_by: list[str | None] = []
        self.last_rows: list[dict] = []

    # ---- options shared with the members (sanity checks change steps / eot / eps)
    @property
    def steps(self) -> int:
        return max(int(getattr(a, "steps", getattr(getattr(a, "base", None), "steps", 1)) or 1) for _, a in self.attacks)

    def replace(self, **changes: Any) -> "Ensemble":
        """A copy whose members get the changes (``steps``/``eot`` scale each member by the same factor as the
        ensemble's maximum; ``eps``/``norm``/``step_size`` are set on every member)."""
        new = copy.copy(self)
        factor = {k: changes[k] / max(1, getattr(self, k)) for k in ("steps", "eot") if k in changes}
        members = []
        for n, a in self.attacks:
            ch: dict[str, Any] = {}
            for k, v in changes.items():
                if k in factor:
                    cur = getattr(a, k, None)
                    if cur is None:
                        cur = getattr(getattr(a, "base", a), k, None)
                    if cur is None:
                        continue
                    ch[k] = max(1, int(round(cur * factor[k])))
                elif k == "step_size":
                    steps = ch.get("steps", getattr(a, "steps", None))
                    if hasattr(a, "step_size") or hasattr(getattr(a, "base", None), "step_size") or hasattr(a, "pgd"):
                        ch[k] = v if steps is None else 2.5 * changes.get("eps", a.eps) / steps
                else:
                    ch[k] = v
            try:
                members.append((n, a.replace(**ch)))
            except ValueError:
                members.append((n, a.replace(**{k: v for k, v in ch.items() if k != "step_size"})))
        new.attacks = members
        new.eps, new.norm = members[0][1].eps, members[0][1].norm
        new.eot = max(a.eot for _, a in members)
        new.last_broken_by, new.last_rows = [], []
        return new

    def describe(self) -> dict:
        return {"name": self.label, "params": {"select_draws": self.select_draws, "eps": self.eps, "norm": self.norm},
                "attacks": [{"name": n, **a.describe()} for n, a in self.attacks]}

    def params(self) -> dict[str, Any]:
        return {"select_draws": self.select_draws, "eps": self.eps, "norm": self.norm,
                "attacks": [n for n, _ in self.attacks]}

    @torch.no_grad()
    def selection_accuracy(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Share of ``select_draws`` fresh passes (one for a deterministic model) classifying each image correctly."""
        draws = self.select_draws if is_stochastic(model) else 1
        ok = torch.zeros(x.shape[0], device=x.device)
        for _ in range(draws):
            ok += (model(x).argmax(1) == y).float()
        return ok / draws

    def _run(self, model, x, y, *, logits0, eot, generator):
        n = x.shape[0]
        # reseed the surrogates' random streams from the caller's RNG state (the runner seeds it per task), so a
        # task's result does not depend on what ran before it
        base_seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        for i, (_, a) in enumerate(self.attacks):
            for m in _surrogate_models(a):
                m.reseed(base_seed + 7919 * (i + 1))
        best = x.clone()
        best_acc = self.selection_accuracy(model, x, y)
        broken_by: list[str | None] = [None] * n
        rows = [{"attack": "clean", "images": n, "selection_accuracy": float(best_acc.mean())}]
        iterations = 0
        for i_att, (name, att) in enumerate(self.attacks):
            # the first (cheapest) attack runs on every image of a stochastic model, even one no selection draw
            # classified correctly when clean; later ones on the images still standing
            first_all = i_att == 0 and is_stochastic(model)
            idx = torch.arange(n, device=x.device) if first_all else (best_acc > 0).nonzero().flatten()
            if idx.numel() == 0:
                rows.append({"attack": name, "images": 0})
                continue
            xa = att(model, x[idx], y[idx])
            iterations += int(att.last_stats.iterations or 0)
            acc = self.selection_accuracy(model, xa, y[idx])
            better = (acc < best_acc[idx]) | ((acc == best_acc[idx]) & (acc == 0))
            j = idx[better]
            best[j] = xa[better]
            best_acc[j] = acc[better]
            for k in j.tolist():
                if float(best_acc[k]) < 0.5:
                    broken_by[k] = name
            rows.append({"attack": name, "images": int(idx.numel()), "improved": int(better.sum()),
                         "selection_accuracy_after": float(best_acc.mean()),
                         "forwards_per_image": float(att.last_stats.forwards_per_image)})
        self.last_broken_by = broken_by
        self.last_rows = rows
        self.last_stats.iterations = iterations
        return best


def _surrogate_models(att: Attack) -> list[nn.Module]:
    out = []
    for obj in (att, getattr(att, "base", None)):
        sur = getattr(obj, "surrogate", None)
        if sur is not None and hasattr(sur, "reseed"):
            out.append(sur)
    return out


LEVELS = ("standard", "lite")


def standard_attacks(*, classifier: nn.Module, defense: nn.Module | None, eps: float, norm: str = "linf",
                     level: str = "standard", steps: int | None = None, eot: int | None = None,
                     full_steps: int | None = None, select_draws: int = SELECT_DRAWS) -> Ensemble:
    """The standard ensemble for ``classifier`` behind ``defense`` (see the module docstring).

    ``steps``/``eot``: of the surrogate and BPDA attacks (standard 50 / 8, lite 10 / 2); ``full_steps``: of the
    full-gradient attacks (standard 20, lite: none run). Step size 2.5 eps / steps (Madry et al. 2018).
    """
    from ..defenses.base import DefendedClassifier
    from .apgd import APGD
    from .bpda import BPDA
    from .pgd import PGD
    from .surrogate import SurrogateProcess

    if level not in LEVELS:
        raise ValueError(f"attack level: expected one of {', '.join(LEVELS)}, got {level!r}")
    lite = level == "lite"
    steps = check_int(steps if steps is not None else (10 if lite else 50), "steps", minimum=1)
    eot = check_int(eot if eot is not None else (2 if lite else 8), "eot", minimum=1)
    full_steps = check_int(full_steps if full_steps is not None else 20, "full_steps", minimum=1)
    full_eot = max(1, eot // 2)

    def pgd(n_steps: int, n_eot: int, **kw: Any) -> dict:
        return dict(norm=norm, eps=eps, steps=n_steps, step_size=2.5 * eps / n_steps, eot=n_eot, **kw)

    attacks: list[tuple[str, Attack]] = []
    stochastic = bool(getattr(defense, "stochastic", False))
    # (name, surrogate purifier, budget factor): the surrogates of one or two network calls get CHEAP_FACTOR times
    # the steps and EOT (per gradient they cost 1/20 to 1/10 of a 20-step process, and gained from it:
    # docs/RESULTS.md, "Which surrogate"); the lite list keeps the ensemble's own budget and only the cheapest
    cheap = 1 if lite else CHEAP_FACTOR
    surrogates: list[tuple[str, nn.Module, int]] = []
    if getattr(defense, "sampler_arg", None) is not None:
        # a purifier whose reverse process can change (Purifier.sampler_arg: DiffPure, SSNI, GNSP)
        surrogates = [("surrogate-one-step", defense.with_sampler("ddim", 1), cheap)]
        if not lite:
            surrogates += [("surrogate-ddim-2", defense.with_sampler("ddim", 2), cheap),
                           ("surrogate-ddim-5", defense.with_sampler("ddim", 5), 1)]
            own = defense.with_steps(5)
            if float(own.nfe) < float(defense.nfe):
                surrogates.append((f"surrogate-{_sampler_name(defense)}-5", own, 1))
    elif getattr(defense, "steps_arg", None) is not None:
        # a purifier whose sampler is fixed but whose step count can change (GDMP, distribution transfer): the same
        # process (noise levels, guidance) with 1, 2 and 5 reverse steps (per round), each only when it is cheaper
        # than the defense itself
        for n_sur, f in [(1, cheap)] + ([] if lite else [(2, 1), (5, 1)]):
            sur = defense.with_steps(n_sur)
            if float(sur.nfe) < float(defense.nfe):
                surrogates.append((f"surrogate-steps-{n_sur}", sur, f))
    if not lite and getattr(defense, "guidance_arg", None) is not None:
        # the same process without its guidance: the guidance's gradient is a second derivative (of SSIM, of the
        # classifier), noisy and costly; its surrogate keeps everything else of the process
        surrogates.append(("surrogate-unguided", defense.without_guidance(), 1))
    for name, sur, f in surrogates:
        sur_model = DefendedClassifier(classifier, sur).eval()
        attacks.append((name, SurrogateProcess(surrogate=sur_model, **pgd(steps * f, eot * f))))
    if defense is not None and not _is_identity(defense):
        attacks.append(("bpda", BPDA(**pgd(steps, eot if stochastic else 1))))
    if not lite or defense is None or _is_identity(defense):
        ck = defense is not None and hasattr(defense, "grad_checkpoint")
        attacks.append(("apgd-ce", APGD(norm=norm, eps=eps, steps=full_steps, eot=full_eot, loss="ce",
                                        grad_checkpoint=ck)))
        attacks.append(("pgd", PGD(**pgd(full_steps, full_eot), grad_checkpoint=ck)))
    if not lite:
        attacks += method_specific_attacks(defense, classifier=classifier, eps=eps, norm=norm, steps=steps, eot=eot,
                                           full_steps=full_steps)
    return Ensemble(attacks, select_draws=select_draws, label=f"{level}")


def method_specific_attacks(defense: nn.Module | None, *, classifier: nn.Module, eps: float, norm: str, steps: int,
                            eot: int, full_steps: int | None = None) -> list[tuple[str, Attack]]:
    """The attacks designed against one method: CMAP's consistency-disruption attack (Zhang et al.); for DAD the
    authors' adaptive attack (CE + MMD through the denoiser) and the detector-aware attack that stays under the
    detection threshold; for distribution transfer the guidance-target attack (PGD-EOT on the classifier at the
    input diffused as the guidance sees it, :class:`~advpure.defenses.distribution_transfer.GuidanceTarget`; its
    gradient costs one classifier pass, so it gets ``CHEAP_FACTOR`` times ``steps`` and ``eot``, as the cheap
    surrogates do); for GNSP the deviated-reconstruction attack (CE plus DiffAttack's loss at every stage's output,
    ``every=0``, as the published GNSP rows were measured; :mod:`advpure.attacks.diffattack`; full gradients, so the
    full-gradient attacks' ``full_steps`` and half the EOT)."""
    from ..defenses.base import DefendedClassifier
    from ..defenses.cmap import CMAP
    from ..defenses.dad import DAD
    from ..defenses.distribution_transfer import DistributionTransfer
    from ..defenses.gnsp import GNSP

    if isinstance(defense, CMAP) and norm == "linf":
        from .cmap_attack import ConsistencyDisruption

        return [("cmap-disruption", ConsistencyDisruption(eps=eps, norm=norm, steps=steps))]
    if isinstance(defense, DAD):
        from .detector_aware import DADPathPGD, DetectorAwarePGD

        return [("dad-adaptive", DADPathPGD(eps=eps, norm=norm, steps=steps, mmd_weight=1.0)),
                ("detector-aware", DetectorAwarePGD(eps=eps, norm=norm, steps=steps))]
    if isinstance(defense, GNSP):
        from .diffattack import DeviatedReconstruction

        # a full-gradient attack (every stage, checkpointed): the full-gradient attacks' budget
        full_steps = steps if full_steps is None else full_steps
        return [("diffattack", DeviatedReconstruction(eps=eps, norm=norm, steps=full_steps, every=0,
                                                      step_size=2.5 * eps / full_steps, eot=max(1, eot // 2)))]
    if isinstance(defense, DistributionTransfer):
        from .surrogate import SurrogateProcess

        target = DefendedClassifier(classifier, defense.guidance_target()).eval()
        n = steps * CHEAP_FACTOR
        return [("dt-guidance-target", SurrogateProcess(surrogate=target, norm=norm, eps=eps, steps=n,
                                                        step_size=2.5 * eps / n, eot=eot * CHEAP_FACTOR))]
    return []


def _sampler_name(defense: nn.Module) -> str:
    """The name of the reverse process ``defense`` runs (its :attr:`sampler_arg`, through a wrapped ``base``)."""
    for obj in (defense, getattr(defense, "base", None)):
        name = getattr(obj, "sampler", None)
        if isinstance(name, str):
            return name
    return "own"


def _is_identity(defense: nn.Module) -> bool:
    return type(defense).__name__ == "Identity"


__all__ = ["CHEAP_FACTOR", "Ensemble", "LEVELS", "SELECT_DRAWS", "standard_attacks"]
