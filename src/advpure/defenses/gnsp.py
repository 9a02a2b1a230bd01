"""Gradual noise scheduling purification (Lee & Kim, "Robust Evaluation of Diffusion-Based Adversarial
Purification", ICCV 2023, Section 5).

Instead of one diffuse-denoise pass to a large t*, purify in stages k = 1..K: diffuse the current image to
``t_k`` and run the reverse DDPM chain back to 0, feeding the result to the next stage. Small noise
levels first remove the perturbation with little content change, larger later ones wash out what is
left. The paper pairs it with an ensemble of purification runs and majority voting
(:class:`advpure.defenses.voting.MajorityVote`).

Default stages (in DDPM steps of 1000): 30, 30, 30, 30, 50, 50, 125, 125, each denoised with the full
discrete chain (one network call per step): nfe = 470 per image.

``sampler="ddim"`` runs each stage's reverse process as deterministic DDIM (eta = 0) instead; with one step per stage
that is the one-step denoising estimate of each stage. It is a cheaper, deterministic *surrogate process* for attacks
(:meth:`~advpure.defenses.base.Purifier.with_sampler`, the surrogate family Lee & Kim use against DiffPure), not the
defense.
"""

from __future__ import annotations

import os
from typing import Sequence

import torch
import torch.nn as nn

from ..contracts import check_int
from ..diffusion.samplers import diffuse, reverse_path
from ..diffusion.schedule import DiscreteSchedule
from ..specs import SpecContext, register
from .diffusion_base import DiffusionPurifier, resolve_denoiser

DEFAULT_STAGES = (30, 30, 30, 30, 50, 50, 125, 125)
SAMPLERS = ("ddpm", "sde", "ddim")


def _parse_stages(stages: Sequence) -> list[tuple[float, int]]:
    """Stages as (t in (0, 1], steps >= 1). Accepts (t, steps) pairs, or ints = DDPM steps of 1000
    (t = n/1000, steps = n), or floats = times (steps = round(t * 1000))."""
    if isinstance(stages, (str, bytes)) or not isinstance(stages, Sequence) or len(stages) == 0:
        raise ValueError(f"stages: expected a non-empty list of (t, steps) or DDPM step counts, got {stages!r}")
    out: list[tuple[float, int]] = []
    for i, st in enumerate(stages):
        if isinstance(st, (tuple, list)) and len(st) == 2:
            t, n = float(st[0]), st[1]
        elif isinstance(st, bool):
            raise TypeError(f"stages[{i}]: expected a number or (t, steps), got {st!r}")
        elif isinstance(st, int):
            t, n = st / 1000.0, st
        elif isinstance(st, float):
            t, n = st, max(1, round(st * 1000))
        else:
            raise TypeError(f"stages[{i}]: expected a number or (t, steps), got {st!r}")
        if not (0 < t <= 1):
            raise ValueError(f"stages[{i}]: diffusion time must be in (0, 1] (i.e. 1..1000 DDPM steps), got t={t}")
        out.append((t, check_int(n, f"stages[{i}] steps")))
    return out


def _set_steps(stages: list[tuple[float, int]], steps: int | Sequence[int]) -> list[tuple[float, int]]:
    """The stages with ``steps`` reverse steps each (one int for all stages, or one per stage)."""
    ns = [steps] * len(stages) if isinstance(steps, int) else list(steps)
    if len(ns) != len(stages):
        raise ValueError(f"steps: expected one int or {len(stages)} values, got {len(ns)}")
    return [(t, check_int(n, "steps")) for (t, _), n in zip(stages, ns)]


class GNSP(DiffusionPurifier):
    """Multi-stage diffuse-denoise purification with a gradual noise schedule.

    Args:
        eps_model: ``eps_model(x_t, t)``.
        stages: list of (t, steps) or DDPM step counts (see :func:`_parse_stages`); default 30x4, 50x2, 125x2.
        steps: reverse steps per stage, one int for all stages or one per stage (default: each stage's own);
            ``with_steps(n)`` changes it (the surrogate process of cheaper attacks: same noise levels, fewer steps).
        sampler: ``"ddpm"`` (ancestral, default), ``"sde"`` (Euler–Maruyama reverse SDE) or ``"ddim"``
            (deterministic per stage; a surrogate process, see the module docstring); ``with_sampler`` changes it.
        schedule: default the discrete DDPM schedule.
    """

    steps_arg = "steps"
    sampler_arg = "sampler"

    def __init__(self, eps_model: nn.Module, *, stages: Sequence = DEFAULT_STAGES,
                 steps: int | Sequence[int] | None = None, sampler: str = "ddpm", schedule=None,
                 image_shape: tuple[int, int, int] | None = None, grad_checkpoint: bool = False,
                 freeze: bool = True) -> None:
        super().__init__(eps_model, schedule=schedule or DiscreteSchedule(), image_shape=image_shape,
                         grad_checkpoint=grad_checkpoint, freeze=freeze)
        self.stages = _parse_stages(stages)
        if steps is not None:
            self.stages = _set_steps(self.stages, steps)
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
        self.sampler = sampler

    @property
    def nfe(self) -> float:
        return float(sum(n for _, n in self.stages))

    def purify(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.to_image_space(self.purify_stages(x, generator=generator)[-1])

    def purify_stages(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """Every stage's output in model space [-1, 1] (differentiable; the last one, mapped to [0, 1], is
        :meth:`purify`'s result, with the same random draws)."""
        return [z for _, z in self.purify_path(x, generator=generator)]

    def purify_path(self, x: torch.Tensor, *, generator: torch.Generator | None = None, every: int = 0
                    ) -> list[tuple[torch.Tensor | float, torch.Tensor]]:
        """The states of every stage's reverse process in model space, ``(t, x_t)`` after every ``every``-th step of
        a stage and at each stage's end (t = 0; ``every = 0``: the stage outputs only), in order
        (:func:`~advpure.diffusion.samplers.reverse_path`): the intermediate reconstructions that the
        deviated-reconstruction attack (:mod:`advpure.attacks.diffattack`) pushes away from the clean image's."""
        z = self.to_model_space(x)
        path: list[tuple[torch.Tensor | float, torch.Tensor]] = []
        for t, n in self.stages:
            xt = diffuse(z, t, self.schedule, generator)
            path += reverse_path(self.eps_model, xt, schedule=self.schedule, t_start=t, n_steps=n, sampler=self.sampler,
                                 every=every, generator=generator, checkpoint=self.grad_checkpoint, clip_x0=True)
            z = path[-1][1]
        return path

    def describe(self) -> dict:
        return {**super().describe(), "stages": [[t, n] for t, n in self.stages], "sampler": self.sampler}


@register("defense", "gnsp")
def _gnsp(ctx: SpecContext, model: str | os.PathLike | None = None, stages: Sequence | int | None = None,
          sampler: str = "ddpm", steps: int | None = None, checkpoint: bool = False) -> GNSP:
    """``gnsp:model=PATH,stages=30|30|30|30|50|50|125|125,sampler=ddpm|sde|ddim,steps=N`` (stages in DDPM steps of 1000;
    ``steps`` sets reverse steps per stage)."""
    st = list(DEFAULT_STAGES) if stages is None else ([stages] if isinstance(stages, (int, float)) else stages)
    parsed = _parse_stages(st)
    if steps is not None:
        _set_steps(parsed, check_int(steps, "steps"))  # bad values fail before the model is loaded
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    net, _ = resolve_denoiser(model, ctx)
    return GNSP(net, stages=parsed, steps=steps, sampler=sampler, grad_checkpoint=checkpoint)
