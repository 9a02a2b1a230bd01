"""GDMP: guided diffusion model purification (Wang, Lyu, Lin, Dai & Fu, arXiv:2205.14969, 2022).

Each of ``iterations`` rounds diffuses the current image to step ``t`` and runs the DDPM reverse chain
back to 0, with every step's mean shifted towards the (diffused) input image (their Eq. 8)::

    x_{s} ~ N( mu_theta(x_t, t) + scale * Sigma_t * grad_{x_t} sim(x_t, y_t),  Sigma_t ),   y_t = diffuse(x_adv, t)

where ``x_adv`` is the image given to the purifier, ``y_t`` is drawn afresh at every step, and ``sim``
is SSIM (their default) or the negative squared error ``-1/2 ||x_t - y_t||^2``. The guidance keeps the
purified image close to the input's content while the diffusion removes the perturbation. The next
round starts from the previous round's output; the guidance target stays the original input.

Defaults follow the authors' CIFAR-10 configuration: 36 DDPM steps (t = 0.036), 4 iterations, SSIM
guidance. The guidance scale is ours: the authors' scale depends on their loss normalisation
(batch-mean MSE, and an adaptive rule tied to the attack budget); here ``sim`` is summed per image
(SSIM multiplied by the number of pixels), and ``scale`` multiplies ``Sigma_t * grad`` directly
(``scale = 100`` moves the mean ~10% of the way to ``y_t`` per step at t = 0.036 for MSE).
"""

from __future__ import annotations

import os

import torch
import torch.nn as nn

from ..contracts import check_int, check_positive
from ..diffusion.samplers import ddpm_ancestral, ddpm_timesteps, diffuse
from ..diffusion.schedule import DiscreteSchedule
from ..ops.broadcast import per_sample
from ..ops.ssim import ssim
from ..specs import SpecContext, register
from .diffusion_base import DiffusionPurifier, check_time, ddpm_steps, resolve_denoiser

GUIDES = ("ssim", "mse")


def _similarity_grad(kind: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """grad_x sim(x, y), per image; differentiable when autograd is recording."""
    if kind == "mse":
        return y - x  # grad of -1/2 ||x - y||^2
    npix = float(x[0].numel())

    def _sim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        # SSIM as pytorch_ssim (the authors' code) computes it: 11x11 Gaussian window, zero-padded 'same' windows
        return ssim((a + 1) * 0.5, (b + 1) * 0.5, win_size=11, sigma=1.5, padding="same").sum() * npix

    if torch.is_grad_enabled() and (x.requires_grad or y.requires_grad):
        xi = x if x.requires_grad else x.detach().requires_grad_(True)
        return torch.autograd.grad(_sim(xi, y), xi, create_graph=True)[0]
    with torch.enable_grad():
        xi = x.detach().requires_grad_(True)
        return torch.autograd.grad(_sim(xi, y.detach()), xi)[0]


class GDMP(DiffusionPurifier):
    """Guided DDPM purification.

    Args:
        eps_model: ``eps_model(x_t, t)``.
        t: diffusion time per round (default 0.036 = 36 of 1000 DDPM steps).
        steps: DDPM steps per round (default ``round(t * 1000)``, i.e. the full discrete chain).
        iterations: rounds of diffuse + guided denoise (default 4).
        guide: ``"ssim"`` (default) or ``"mse"``.
        scale: guidance scale (default 100, see the module docstring); 0 disables guidance.
        schedule: default the discrete DDPM schedule (linear betas 1e-4..0.02, 1000 steps).

    ``with_steps(n)`` changes ``steps`` and ``without_guidance()`` sets ``scale`` to 0 (surrogate processes).
    """

    steps_arg = "steps"
    guidance_arg = "scale"

    def __init__(self, eps_model: nn.Module, *, t: float = 0.036, steps: int | None = None, iterations: int = 4,
                 guide: str = "ssim", scale: float = 100.0, schedule=None,
                 image_shape: tuple[int, int, int] | None = None, grad_checkpoint: bool = False,
                 freeze: bool = True) -> None:
        super().__init__(eps_model, schedule=schedule or DiscreteSchedule(), image_shape=image_shape,
                         grad_checkpoint=grad_checkpoint, freeze=freeze)
        self.t = check_time(t)
        self.steps = ddpm_steps(steps, self.t)
        self.iterations = check_int(iterations, "iterations")
        if guide not in GUIDES:
            raise ValueError(f"guide must be one of {', '.join(GUIDES)}, got {guide!r}")
        self.guide = guide
        self.scale = check_positive(scale, "scale", allow_zero=True)

    @property
    def nfe(self) -> float:
        return float(self.steps * self.iterations)

    def purify(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        target = self.to_model_space(x)

        def guidance(xt: torch.Tensor, t: torch.Tensor, s: torch.Tensor, noise: torch.Tensor, y0: torch.Tensor
                     ) -> torch.Tensor:
            # y_t: the input diffused to the current level, with fresh noise at every step
            a, sd = per_sample(self.schedule.alpha(t), xt, cast=False), per_sample(self.schedule.std(t), xt, cast=False)
            return self.scale * _similarity_grad(self.guide, xt, a * y0 + sd * noise)

        z = target
        for _ in range(self.iterations):
            xt = diffuse(z, self.t, self.schedule, generator)
            z = ddpm_ancestral(self.eps_model, xt, schedule=self.schedule, timesteps=ddpm_timesteps(self.t, self.steps),
                               generator=generator, checkpoint=self.grad_checkpoint,
                               guidance=guidance if self.scale > 0 else None, guidance_inputs=(target,),
                               clip_x0=True)
        return self.to_image_space(z)

    def describe(self) -> dict:
        return {**super().describe(), "t": self.t, "steps": self.steps, "iterations": self.iterations,
                "guide": self.guide, "scale": self.scale}


@register("defense", "gdmp")
def _gdmp(ctx: SpecContext, model: str | os.PathLike | None = None, t: float = 0.036, steps: int | None = None,
          iterations: int = 4, guide: str = "ssim", scale: float = 100.0, checkpoint: bool = False) -> GDMP:
    """``gdmp:model=PATH,t=0.036,steps=36,iterations=4,guide=ssim|mse,scale=100``."""
    _validate_spec(t, steps, iterations, guide, scale)
    net, _ = resolve_denoiser(model, ctx)
    return GDMP(net, t=t, steps=steps, iterations=iterations, guide=guide, scale=scale, grad_checkpoint=checkpoint)


def _validate_spec(t, steps, iterations, guide, scale) -> None:
    ddpm_steps(steps, check_time(t))
    check_int(iterations, "iterations")
    if guide not in GUIDES:
        raise ValueError(f"guide must be one of {', '.join(GUIDES)}, got {guide!r}")
    check_positive(scale, "scale", allow_zero=True)

