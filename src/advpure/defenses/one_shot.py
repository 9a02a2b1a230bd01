"""The one-shot diffusion denoiser of denoised smoothing (Carlini et al., "(Certified!!) Adversarial Robustness for
Free!", ICLR 2023), a purifier for :mod:`advpure.eval.certify`.

Given ``y = x + sigma * eps`` in [0, 1] space, :class:`OneShotDenoiser` picks the diffusion time t with
``std(t) / alpha(t) = 2 sigma``, forms ``x_t = alpha(t) * (2 y - 1)`` (then x_t is distributed as
``alpha(t) x0 + std(t) eps`` with ``x0 = 2x - 1``, the forward process at t), and returns the one-shot
estimate ``x0_hat = (x_t - std(t) eps_theta(x_t, t)) / alpha(t)`` mapped back to [0, 1]. Carlini et al. state
sigma in the diffusion model's [-1, 1] space, where the same noise has twice the std: ``sigma_diffusion = 2 *
sigma``.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn as nn

from ..contracts import check_images, check_positive
from .base import Purifier


class NoiseSchedule(Protocol):
    """What :class:`OneShotDenoiser` needs: x_t = alpha(t) x0 + std(t) eps, std/alpha increasing in t."""

    def alpha(self, t: torch.Tensor) -> torch.Tensor: ...

    def std(self, t: torch.Tensor) -> torch.Tensor: ...


class OneShotDenoiser(Purifier):
    """Carlini et al. (2023) one-shot diffusion denoiser for denoised smoothing at noise level ``sigma``.

    Args:
        eps_model: noise-prediction network called as ``eps_model(x_t, t)`` with ``x_t`` in the
            diffusion's [-1, 1] space (N, C, H, W) and ``t`` a float tensor (N,) of diffusion times in
            the schedule's units.
        schedule: any object with ``alpha(t)`` and ``std(t)`` (tensors in, tensors out), optionally
            ``t_min``/``t_max`` (default 0 and 1).
        sigma: the smoothing noise std in [0, 1] pixel space; the timestep solves
            ``std(t) / alpha(t) = 2 sigma`` (bisection in float64).
    """

    stochastic = False

    def __init__(self, eps_model: nn.Module, schedule: NoiseSchedule, *, sigma: float) -> None:
        super().__init__()
        for attr in ("alpha", "std"):
            if not callable(getattr(schedule, attr, None)):
                raise TypeError(f"schedule: expected an object with alpha(t) and std(t) methods, "
                                f"{type(schedule).__name__} has no {attr}()")
        self.eps_model = eps_model
        self.schedule = schedule
        self.sigma = check_positive(sigma, "sigma")
        self.t = self.timestep_for(self.sigma)

    def timestep_for(self, sigma: float) -> float:
        """The diffusion time t with std(t) / alpha(t) = 2 sigma."""
        target = 2.0 * sigma
        lo = float(getattr(self.schedule, "t_min", 0.0))
        hi = float(getattr(self.schedule, "t_max", 1.0))

        def ratio(t: float) -> float:
            tt = torch.tensor([t], dtype=torch.float64)
            return float(self.schedule.std(tt) / self.schedule.alpha(tt))

        if ratio(hi) < target:
            raise ValueError(f"sigma={sigma}: the schedule's largest noise ratio std/alpha={ratio(hi):.4g} at "
                             f"t={hi} is below 2*sigma={target:.4g}; use a smaller sigma")
        if ratio(lo) > target:
            raise ValueError(f"sigma={sigma}: 2*sigma={target:.4g} is below the schedule's smallest noise "
                             f"ratio {ratio(lo):.4g} at t={lo}")
        for _ in range(100):
            mid = 0.5 * (lo + hi)
            if ratio(mid) < target:
                lo = mid
            else:
                hi = mid
        return 0.5 * (lo + hi)

    @property
    def nfe(self) -> float:
        return 1.0

    def describe(self) -> dict:
        return {"name": "OneShotDenoiser", "sigma": self.sigma, "t": self.t}

    def purify(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """One-shot x0 estimate for ``x`` = clean image + sigma * noise in [0, 1] space (not clipped)."""
        check_images(x, check_range=False)
        t = torch.full((x.shape[0],), self.t, dtype=x.dtype, device=x.device)
        a = self.schedule.alpha(t).to(x.dtype).view(-1, 1, 1, 1)
        s = self.schedule.std(t).to(x.dtype).view(-1, 1, 1, 1)
        x_t = a * (2 * x - 1)
        eps = self.eps_model(x_t, t)
        x0 = (x_t - s * eps) / a
        return ((x0 + 1) / 2).clamp(0, 1)


__all__ = ["NoiseSchedule", "OneShotDenoiser"]
