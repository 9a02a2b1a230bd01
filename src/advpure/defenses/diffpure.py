"""DiffPure (Nie et al., "Diffusion Models for Adversarial Purification", ICML 2022).

Purification (Nie et al., Eq. 2-4): map the image to [-1, 1], diffuse it to time ``t*`` of the VP SDE
in one shot, ``x(t*) = alpha(t*) x + std(t*) eps``, then solve the reverse-time SDE from ``t*`` to 0
with Euler–Maruyama (``dt = 1e-3``, i.e. 100 steps from t* = 0.1; the paper solves it with torchsde's
Euler scheme), and map back to [0, 1] with clamping.

Defaults follow the paper's CIFAR-10 settings: ``t* = 0.1`` against l_inf attacks, ``t* = 0.075``
against l_2 attacks (Section 5.1). ``t`` may be a per-sample tensor (N,), as SSNI needs.
Cost: one network evaluation per step (``nfe = n_steps``).

``sampler="ddim"`` replaces the reverse SDE by deterministic DDIM (Song et al. 2021, eta = 0) over ``n_steps``
from t* to 0; with ``n_steps = 1`` that is the one-step denoising estimate
``x0 = (x_t - std(t*) eps(x_t, t*)) / alpha(t*)``. Both are cheaper *surrogate processes* for attacks
(:meth:`~advpure.defenses.base.Purifier.with_sampler`, Lee & Kim 2023), not the defense.
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn as nn

from ..contracts import check_int, check_positive
from ..diffusion.samplers import ddim, ddpm_timesteps, diffuse, reverse_path, reverse_sde
from ..specs import SpecContext, register
from .diffusion_base import DiffusionPurifier, autocast_dtype, check_time, resolve_denoiser

DEFAULT_T = {"linf": 0.1, "l2": 0.075}
SAMPLERS = ("sde", "ddim")


class DiffPure(DiffusionPurifier):
    """``purify(x) = clamp((reverse_sde(diffuse(2x-1, t*), t* -> 0) + 1) / 2, 0, 1)``.

    Args:
        eps_model: ``eps_model(x_t, t)`` (see :mod:`advpure.diffusion.models`).
        t: diffusion time t* in (0, 1] (default 0.1, the paper's l_inf setting).
        dt: Euler–Maruyama step (default 1e-3); ``n_steps = ceil(t / dt)`` unless ``n_steps`` is given.
        n_steps: number of reverse steps (overrides ``dt``).
        schedule: VP schedule (default continuous beta in [0.1, 20]).
        grad_checkpoint: checkpoint every step when gradients are taken (memory O(1) in steps).
        autocast: ``"bf16"``/``"fp16"``: run the network under ``torch.autocast`` in that dtype (the solver stays
            float32); ``None`` (default): float32. See ``benchmarks/bf16_purify.py`` for speed and accuracy.

    ``with_steps(n)`` changes ``n_steps``, ``with_sampler("ddim", n)`` ``sampler`` and ``n_steps`` (surrogate
    processes).
    """

    steps_arg = "n_steps"
    sampler_arg = "sampler"

    def __init__(self, eps_model: nn.Module, *, t: float = 0.1, dt: float = 1e-3, n_steps: int | None = None,
                 schedule=None, image_shape: tuple[int, int, int] | None = None, grad_checkpoint: bool = False,
                 freeze: bool = True, sampler: str = "sde", autocast: str | torch.dtype | None = None) -> None:
        super().__init__(eps_model, schedule=schedule, image_shape=image_shape, grad_checkpoint=grad_checkpoint,
                         freeze=freeze, autocast=autocast)
        if sampler not in SAMPLERS:
            raise ValueError(f"DiffPure: sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
        self.sampler = sampler
        self.t = check_time(t)
        model_t_max = float(getattr(eps_model, "t_max", 1.0))
        if self.t > model_t_max:
            raise ValueError(f"DiffPure: t* = {self.t:g} but the denoiser was trained on t <= {model_t_max:g} only")
        self.dt = check_positive(dt, "dt")
        self.n_steps = check_int(n_steps, "n_steps") if n_steps is not None else max(1, math.ceil(self.t / self.dt - 1e-4))

    @property
    def nfe(self) -> float:
        return float(self.n_steps)

    def purify(self, x: torch.Tensor, *, generator: torch.Generator | None = None,
               t: torch.Tensor | float | None = None) -> torch.Tensor:
        """Purify ``x`` (float [0, 1] NCHW); ``t`` overrides t* (a float or per-sample tensor (N,))."""
        z = self.to_model_space(x)
        t_star = self.t if t is None else t
        if not isinstance(t_star, torch.Tensor):
            check_time(t_star)
        xt = diffuse(z, t_star, self.schedule, generator)
        if self.sampler == "ddim":
            x0 = ddim(self.eps_call, xt, schedule=self.schedule, timesteps=ddpm_timesteps(t_star, self.n_steps),
                      checkpoint=self.grad_checkpoint)
        else:
            x0 = reverse_sde(self.eps_call, xt, schedule=self.schedule, t_start=t_star, n_steps=self.n_steps,
                             generator=generator, checkpoint=self.grad_checkpoint)
        return self.to_image_space(x0)

    def purify_path(self, x: torch.Tensor, *, generator: torch.Generator | None = None, every: int = 0,
                    t: torch.Tensor | float | None = None) -> list[tuple[torch.Tensor | float, torch.Tensor]]:
        """The reverse process's states in model space [-1, 1], ``[(t_k, x_{t_k}), ..., (0, x_0)]``, after every
        ``every``-th step and at the end (:func:`~advpure.diffusion.samplers.reverse_path`; ``every = 0``: the end
        only). The last one, mapped to [0, 1], is :meth:`purify`'s result for the same generator (to the rounding of
        the SDE's grid): what the deviated-reconstruction attack (:mod:`advpure.attacks.diffattack`) reads."""
        z = self.to_model_space(x)
        t_star = self.t if t is None else t
        if not isinstance(t_star, torch.Tensor):
            check_time(t_star)
        xt = diffuse(z, t_star, self.schedule, generator)
        return reverse_path(self.eps_call, xt, schedule=self.schedule, t_start=t_star, n_steps=self.n_steps,
                            sampler=self.sampler, every=every, generator=generator, checkpoint=self.grad_checkpoint)

    def describe(self) -> dict:
        solver = "euler-maruyama reverse VP SDE" if self.sampler == "sde" else "deterministic DDIM (eta 0)"
        return {**super().describe(), "t": self.t, "n_steps": self.n_steps, "solver": solver}


@register("defense", "diffpure")
def _diffpure(ctx: SpecContext, model: str | os.PathLike | None = None, t: float | None = None,
              norm: str = "linf", dt: float = 1e-3, steps: int | None = None, checkpoint: bool = False,
              autocast: str | None = None, sampler: str = "sde") -> DiffPure:
    """``diffpure:model=PATH,t=0.1,norm=linf|l2,dt=1e-3,steps=N,checkpoint=false,autocast=none|bf16|fp16,sampler=sde|ddim``.

    ``autocast=bf16`` runs the network in bfloat16 under ``torch.autocast`` (off by default). ``sampler=ddim`` replaces
    the reverse SDE by the deterministic DDIM reverse process (with ``steps=1``: Tweedie's one-step estimate of the clean
    image), a surrogate or a training-time augmentation, not DiffPure's defense."""
    if sampler not in SAMPLERS:
        raise ValueError(f"diffpure: sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    if t is None:
        if norm not in DEFAULT_T:
            raise ValueError(f"diffpure: norm must be one of {', '.join(DEFAULT_T)}, got {norm!r}")
        t = DEFAULT_T[norm]
    check_time(t)
    if steps is not None:
        check_int(steps, "steps")
    autocast_dtype(autocast)  # a bad value fails before the model is loaded
    net, _ = resolve_denoiser(model, ctx)
    return DiffPure(net, t=t, dt=dt, n_steps=steps, grad_checkpoint=checkpoint, autocast=autocast, sampler=sampler)
