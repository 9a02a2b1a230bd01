"""Distribution-transfer purification guided by the protected classifier (Chen, Yan & Dong,
"Adversarial defense based on distribution transfer").

Adversarial examples are treated as an extreme case of out-of-distribution data: forward diffusion
moves the input x' away from its distribution, and the DDPM reverse process brings it back to the
clean one. Each reverse step's mean is shifted so that the sample returns to where the classifier
behaves as it does on the input (their guided reverse step, cf. GDMP's Eq. 8)::

    x_s ~ N( mu_theta(x_t, t) - s * Sigma_t * grad_{x_t} D(x'_t, x_t),  Sigma_t )
    D(x'_t, x_t) = || f(x'_t) - f(x_t) ||_2  +  phi * (1 - SSIM(x'_0, x_t))

with f the protected classifier (``output="logits"`` or ``"probs"``), ``x'_t = alpha(t) x'_0 + std(t) z``
the input diffused to the same t (with the noise z drawn once when the input is diffused), and SSIM on
images mapped to [0, 1]. **Sign convention:** the paper writes ``+ phi * SSIM(x'_0, x_t)``; as a term of a
*distance* that is minimised it would push the sample away from the input, so we use the dissimilarity
``1 - SSIM`` (the two differ by a constant in value and by the sign of the gradient).

Defaults (ours, documented because the paper's code is not public): t* = 0.1 (100 DDPM steps, as
DiffPure's l_inf setting), the full discrete chain, ``scale = 100`` (the GDMP-style normalisation of
:mod:`advpure.defenses.gdmp`: D is a per-image sum), ``phi = 1``. Cost per image: ``steps`` denoiser
evaluations plus ``steps`` classifier forward+backward passes (reported in ``describe()``).
"""

from __future__ import annotations

import os

import torch
import torch.nn as nn

from ..contracts import check_positive
from ..diffusion.samplers import ddpm_ancestral, ddpm_timesteps, diffuse
from ..diffusion.schedule import DiscreteSchedule
from ..ops.broadcast import per_sample
from ..ops.ssim import ssim
from ..specs import SpecContext, register
from .diffusion_base import DiffusionPurifier, check_time, ddpm_steps, resolve_denoiser

OUTPUTS = ("logits", "probs")
NORM_EPS = 1e-6


def transfer_distance(classifier: nn.Module, x_ref_t: torch.Tensor, x_t: torch.Tensor, x_ref_0: torch.Tensor, *,
                      phi: float, output: str = "logits") -> torch.Tensor:
    """Per-image D(x'_t, x_t) = ||f(x'_t) - f(x_t)||_2 + phi (1 - SSIM(x'_0, x_t)); inputs in [-1, 1]."""
    to_img = lambda z: ((z + 1) * 0.5).clamp(0, 1)  # noqa: E731
    fa, fb = classifier(to_img(x_ref_t)), classifier(to_img(x_t))
    if output == "probs":
        fa, fb = fa.softmax(1), fb.softmax(1)
    # a smoothed l2 norm: at the first reverse step x_t == x'_t exactly, where ||.|| has no gradient (0/0)
    d = torch.sqrt((fa - fb).pow(2).sum(1) + NORM_EPS)
    if phi:
        d = d + phi * (1.0 - ssim(to_img(x_ref_0), to_img(x_t)))
    return d


class DistributionTransfer(DiffusionPurifier):
    """Diffuse to t*, then classifier-guided DDPM reverse steps (see the module docstring).

    Args:
        eps_model: ``eps_model(x_t, t)``.
        classifier: the protected classifier f ([0, 1] images -> logits).
        t: diffusion time t* in (0, 1] (default 0.1).
        steps: reverse DDPM steps (default ``round(t * 1000)``, the full discrete chain).
        scale: guidance scale s (default 100; 0 = plain DDPM purification).
        phi: weight of the SSIM dissimilarity (default 1).
        output: ``"logits"`` (default) or ``"probs"`` for f.

    ``with_steps(n)`` changes ``steps`` and ``without_guidance()`` sets ``scale`` to 0 (surrogate processes);
    :meth:`guidance_target` is what the guidance makes the sample imitate (the guidance-target attack's surrogate).
    The classifier is shared, never copied.
    """

    steps_arg = "steps"
    guidance_arg = "scale"

    def __init__(self, eps_model: nn.Module, classifier: nn.Module, *, t: float = 0.1, steps: int | None = None,
                 scale: float = 100.0, phi: float = 1.0, output: str = "logits", schedule=None,
                 image_shape: tuple[int, int, int] | None = None, grad_checkpoint: bool = False,
                 freeze: bool = True) -> None:
        super().__init__(eps_model, schedule=schedule or DiscreteSchedule(), image_shape=image_shape,
                         grad_checkpoint=grad_checkpoint, freeze=freeze)
        self.t = check_time(t)
        self.steps = ddpm_steps(steps, self.t)
        self.scale = check_positive(scale, "scale", allow_zero=True)
        self.phi = check_positive(phi, "phi", allow_zero=True)
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {', '.join(OUTPUTS)}, got {output!r}")
        self.output = output
        # not registered as a submodule: the classifier is the protected model, not part of the purifier's state
        self.__dict__["classifier"] = classifier

    @property
    def nfe(self) -> float:
        return float(self.steps)

    def guidance_direction(self, x_t: torch.Tensor, t: torch.Tensor, x_ref_0: torch.Tensor, z: torch.Tensor
                           ) -> torch.Tensor:
        """``-scale * grad_{x_t} D(x'_t, x_t)``; keeps the graph when an attack differentiates through it."""
        x_ref_t = (per_sample(self.schedule.alpha(t), x_t, cast=True) * x_ref_0
                   + per_sample(self.schedule.std(t), x_t, cast=True) * z)

        def dist(xt: torch.Tensor) -> torch.Tensor:
            return transfer_distance(self.classifier, x_ref_t, xt, x_ref_0, phi=self.phi, output=self.output).sum()

        if torch.is_grad_enabled() and x_t.requires_grad:
            g = torch.autograd.grad(dist(x_t), x_t, create_graph=True)[0]
        else:
            with torch.enable_grad():
                xt = x_t.detach().requires_grad_(True)
                g = torch.autograd.grad(dist(xt), xt)[0]
        return -self.scale * g

    def guidance_target(self) -> "GuidanceTarget":
        """The input diffused as the guidance sees it (:class:`GuidanceTarget`), sharing the network."""
        return GuidanceTarget(self.eps_model, t=self.t, steps=self.steps, schedule=self.schedule,
                              image_shape=self.image_shape)

    def purify(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        x_ref_0 = self.to_model_space(x)
        z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        t0 = torch.full((x.shape[0],), self.t, device=x.device, dtype=x.dtype)
        xt = (per_sample(self.schedule.alpha(t0), x, cast=True) * x_ref_0
              + per_sample(self.schedule.std(t0), x, cast=True) * z)
        guidance = None
        if self.scale > 0:
            guidance = lambda xt_, t, s, _noise, ref, z0: self.guidance_direction(xt_, t, ref, z0)  # noqa: E731
        out = ddpm_ancestral(self.eps_model, xt, schedule=self.schedule, timesteps=ddpm_timesteps(self.t, self.steps),
                             generator=generator, checkpoint=self.grad_checkpoint, guidance=guidance,
                             guidance_inputs=(x_ref_0, z), clip_x0=True)
        return self.to_image_space(out)

    def describe(self) -> dict:
        return {**super().describe(), "t": self.t, "steps": self.steps, "scale": self.scale, "phi": self.phi,
                "output": self.output, "classifier_passes_per_image": 2 * self.steps if self.scale > 0 else 0}


class GuidanceTarget(DiffusionPurifier):
    """The reference the guidance of :class:`DistributionTransfer` pulls towards: the input diffused to one of the
    guided steps' times, ``x'_t = alpha(t) x' + std(t) z`` (t drawn per image, uniformly among the ``steps`` times
    t*, t* (1 - 1/steps), ..., t*/steps at which the guidance is evaluated; z fresh), as the image in [0, 1] the
    guidance's classifier sees (clamped).

    Not a defense: ``classifier(GuidanceTarget(x))`` is the surrogate of the guidance-target attack. The guidance
    makes the purified sample's logits match ``f(x'_t)``, so an input whose diffused versions the classifier gets
    wrong pulls every guided step toward the wrong class; the attack's gradient needs the classifier only.
    """

    def __init__(self, eps_model: nn.Module, *, t: float, steps: int, schedule=None,
                 image_shape: tuple[int, int, int] | None = None) -> None:
        # the network is only shared (image shape, device), never called: its mode and gradients are left alone
        super().__init__(eps_model, schedule=schedule or DiscreteSchedule(), image_shape=image_shape, freeze=False)
        self.t = check_time(t)
        self.steps = ddpm_steps(steps, self.t)

    def purify(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        x0 = self.to_model_space(x)
        times = torch.tensor(ddpm_timesteps(self.t, self.steps)[:-1], device=x.device, dtype=x.dtype)
        t = times[torch.randint(len(times), (x.shape[0],), generator=generator, device=x.device)]
        return self.to_image_space(diffuse(x0, t, self.schedule, generator))

    def describe(self) -> dict:
        return {**super().describe(), "t": self.t, "steps": self.steps}


@register("defense", "distribution-transfer")
def _dt(ctx: SpecContext, model: str | os.PathLike | None = None, t: float = 0.1, steps: int | None = None,
        scale: float = 100.0, phi: float = 1.0, output: str = "logits", checkpoint: bool = False) -> DistributionTransfer:
    """``distribution-transfer:model=PATH,t=0.1,steps=100,scale=100,phi=1,output=logits|probs``."""
    if ctx.classifier is None:
        raise ValueError("distribution-transfer needs the protected classifier (--classifier)")
    net, _ = resolve_denoiser(model, ctx)
    return DistributionTransfer(net, ctx.classifier, t=t, steps=steps, scale=scale, phi=phi, output=output,
                                grad_checkpoint=checkpoint)
