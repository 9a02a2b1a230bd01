"""Consistency models (Song, Dhariwal, Chen & Sutskever, "Consistency Models", ICML 2023).

A consistency function maps any point ``x_sigma`` of a probability-flow (PF) ODE trajectory back to its
origin ``x_{sigma_min}``. It is parameterised so that the boundary condition ``f(x, sigma_min) = x``
holds exactly (CM paper, Eq. 5 and Appendix C, the EDM-style scalings)::

    f(x, sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x, c_noise(sigma))
    c_skip = sigma_data^2 / ((sigma - sigma_min)^2 + sigma_data^2)
    c_out  = sigma_data (sigma - sigma_min) / sqrt(sigma_data^2 + sigma^2)
    c_in   = 1 / sqrt(sigma^2 + sigma_data^2)

with ``sigma_min = 0.002``, ``sigma_max = 80``, ``sigma_data = 0.5`` (the paper's values) and ``F`` a
diffusers ``UNet2DModel``. The noise conditioning fed to the UNet as its "timestep" is
``c_noise(sigma) = 1000 * 0.25 * ln(sigma)`` (EDM's ``0.25 ln sigma``, scaled by 1000 so that the
sinusoidal embedding, designed for timesteps in [0, 1000), sees a comparable range: -1554 .. 1095).

Data live in [-1, 1] (image ``2 x - 1``); the noise is variance-exploding: ``x_sigma = x_0 + sigma n``.
Discretisation (Karras et al. 2022, Eq. 5; CM paper Sec. 3, rho = 7)::

    sigma_i = (sigma_min^(1/rho) + (i-1)/(N-1) (sigma_max^(1/rho) - sigma_min^(1/rho)))^rho,   i = 1..N

Consistency distillation (CD, CM paper Algorithm 2): with ``x_{n+1} = x_0 + sigma_{n+1} z``, one step of
the teacher's PF ODE ``dx/dsigma = (x - D(x, sigma)) / sigma`` (Heun, or Euler) from ``sigma_{n+1}`` to
``sigma_n`` gives ``x^_n``, and the loss is ``d(f_theta(x_{n+1}, sigma_{n+1}), f_theta-(x^_n, sigma_n))``
with ``theta-`` an EMA of ``theta``. The teacher here is the project's VP eps-model ``eps(x_t, t)``;
since ``x_t = alpha(t) x_0 + std(t) n`` we have ``x_sigma = x_t / alpha(t)`` with ``sigma = std/alpha``, so

    D(x, sigma) = x - sigma * eps(alpha x, t(sigma)),    alpha = 1 / sqrt(1 + sigma^2)

and ``t(sigma)`` solves ``log alpha(t) = -1/4 t^2 (beta_max - beta_min) - 1/2 t beta_min = -1/2 log(1 + sigma^2)``
(closed form: :func:`vp_t_of_sigma`). Consistency training (CT, Algorithm 3) replaces ``x^_n`` by
``x_0 + sigma_n z`` (same ``z``), needing no teacher.

For Gaussian data ``x_0 ~ N(mu, v)`` (per pixel) the PF ODE is linear, ``dx/dsigma = (x - mu) sigma / (v + sigma^2)``,
so ``x - mu`` scales as ``sqrt(v + sigma^2)`` and the exact consistency function is
``f*(x, sigma) = mu + (x - mu) sqrt((v + sigma_min^2) / (v + sigma^2))`` (:class:`GaussianConsistencyFunction`,
used by the tests: with the exact teacher :class:`~advpure.diffusion.models.GaussianScoreModel`, the CD loss
of ``f*`` vanishes up to the ODE solver's error).
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable, Mapping

import torch
import torch.nn as nn

from ..contracts import check_int, check_positive
from ..ops.broadcast import per_sample
from .schedule import VPSchedule, VPSDEConfig

#: CM paper (Song et al. 2023), Appendix C / EDM (Karras et al. 2022)
SIGMA_MIN = 0.002
SIGMA_MAX = 80.0
SIGMA_DATA = 0.5
RHO = 7.0

#: F for the digits consistency model: the "digits" UNet preset with half the channels (16, 32): 0.16M
#: parameters, ~2.5x cheaper than the preset on CPU (CMAP runs it iterations x K times per image).
DIGITS_CM_UNET: dict[str, Any] = dict(sample_size=8, in_channels=1, out_channels=1, block_out_channels=[16, 32],
                                      down_block_types=["DownBlock2D", "DownBlock2D"],
                                      up_block_types=["UpBlock2D", "UpBlock2D"], layers_per_block=1, norm_num_groups=8)
UNET_CONFIGS = {"digits-cm": DIGITS_CM_UNET}

ConsistencyFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# ----------------------------------------------------------------------------------------- schedules
def karras_sigmas(n: int, *, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX, rho: float = RHO,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Increasing noise levels ``sigma_1 = sigma_min < ... < sigma_N = sigma_max`` (Karras et al., Eq. 5)."""
    check_int(n, "n", minimum=2)
    check_positive(sigma_min, "sigma_min")
    check_positive(rho, "rho")
    if not sigma_max > sigma_min:
        raise ValueError(f"sigma_max ({sigma_max}) must exceed sigma_min ({sigma_min})")
    i = torch.arange(n, dtype=torch.float64) / (n - 1)
    s = (sigma_min ** (1 / rho) + i * (sigma_max ** (1 / rho) - sigma_min ** (1 / rho))) ** rho
    s[0], s[-1] = sigma_min, sigma_max
    return s.to(dtype)


def scalings(sigma: torch.Tensor, *, sigma_min: float = SIGMA_MIN, sigma_data: float = SIGMA_DATA
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(c_skip, c_out, c_in)`` of the CM paper, Appendix C (``c_skip(sigma_min) = 1``, ``c_out(sigma_min) = 0``)."""
    sd2 = sigma_data ** 2
    c_skip = sd2 / ((sigma - sigma_min) ** 2 + sd2)
    c_out = sigma_data * (sigma - sigma_min) / torch.sqrt(sd2 + sigma ** 2)
    c_in = 1.0 / torch.sqrt(sigma ** 2 + sd2)
    return c_skip, c_out, c_in


def noise_conditioning(sigma: torch.Tensor) -> torch.Tensor:
    """The UNet's "timestep" input: ``1000 * 0.25 * ln(sigma)`` (EDM's c_noise, scaled by 1000)."""
    return 250.0 * torch.log(sigma)


def _per_sample_sigma(sigma: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if s.dim() == 0:
        s = s.expand(x.shape[0])
    if s.shape != (x.shape[0],):
        raise ValueError(f"sigma: expected a float or a tensor of shape ({x.shape[0]},), got {tuple(s.shape)}")
    return s


# ----------------------------------------------------------------------------------------- the model
class ConsistencyModel(nn.Module):
    """``f(x, sigma) = c_skip x + c_out F(c_in x, c_noise(sigma))`` in data scale [-1, 1] (CM paper, Eq. 5/App. C).

    Args:
        net: ``F``, a diffusers ``UNet2DModel`` (``.sample`` is unwrapped) or any ``net(x, timestep)``.
        image_shape: (C, H, W) the model was trained on (checked on every call when given).
        sigma_min, sigma_max, sigma_data: the paper's 0.002, 80, 0.5.
    """

    def __init__(self, net: nn.Module, *, image_shape: tuple[int, int, int] | None = None,
                 sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX, sigma_data: float = SIGMA_DATA) -> None:
        super().__init__()
        self.net = net
        self.image_shape = tuple(int(v) for v in image_shape) if image_shape is not None else None
        self.sigma_min = check_positive(sigma_min, "sigma_min")
        self.sigma_max = check_positive(sigma_max, "sigma_max")
        self.sigma_data = check_positive(sigma_data, "sigma_data")
        if self.sigma_max <= self.sigma_min:
            raise ValueError(f"sigma_max ({sigma_max}) must exceed sigma_min ({sigma_min})")
        self.calls = 0  # network evaluations (batch calls)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        if self.image_shape is not None and tuple(x.shape[1:]) != self.image_shape:
            c, h, w = self.image_shape
            raise ValueError(f"consistency model was trained on {c}x{h}x{w} images (CxHxW), got {tuple(x.shape[1:])}")
        s = _per_sample_sigma(sigma, x)
        c_skip, c_out, c_in = scalings(s, sigma_min=self.sigma_min, sigma_data=self.sigma_data)
        self.calls += 1
        out = self.net(per_sample(c_in, x, cast=False) * x, noise_conditioning(s))
        out = out.sample if hasattr(out, "sample") else out
        return per_sample(c_skip, x, cast=False) * x + per_sample(c_out, x, cast=False) * out

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """One-step generation ``f(z, sigma_max)`` for ``z ~ N(0, sigma_max^2 I)`` (CM paper, Algorithm 1, one step)."""
        return self(z, self.sigma_max)

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
               ) -> torch.Tensor:
        """``n`` one-step samples in [-1, 1] (not clamped)."""
        if self.image_shape is None:
            raise ValueError("sample: the model has no image_shape; call generate(z) with your own latents")
        z = torch.randn((check_int(n, "n"), *self.image_shape), generator=generator, device=device) * self.sigma_max
        return self.generate(z)


class GaussianConsistencyFunction(nn.Module):
    """Exact consistency function of per-pixel Gaussian data ``N(mu, v)`` under VE noise (module docstring)::

        f*(x, sigma) = mu + (x - mu) sqrt((v + sigma_min^2) / (v + sigma^2))
    """

    def __init__(self, mean: torch.Tensor, var: torch.Tensor, *, sigma_min: float = SIGMA_MIN) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("var", torch.as_tensor(var, dtype=torch.float32).expand_as(self.mean).clone())
        self.sigma_min = sigma_min

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        s = per_sample(_per_sample_sigma(sigma, x), x, cast=False)
        return self.mean + (x - self.mean) * torch.sqrt((self.var + self.sigma_min ** 2) / (self.var + s * s))


# ----------------------------------------------------------------------------------------- VP teacher
def vp_t_of_sigma(sigma: torch.Tensor, config: VPSDEConfig | None = None) -> torch.Tensor:
    """VP time with ``std(t)/alpha(t) = sigma``: the positive root of
    ``1/4 (b_max - b_min) t^2 + 1/2 b_min t - 1/2 log(1 + sigma^2) = 0``."""
    c = config or VPSDEConfig()
    a = 0.25 * (c.beta_max - c.beta_min)
    b = 0.5 * c.beta_min
    k = 0.5 * torch.log1p(sigma.to(torch.float64) ** 2)
    if a == 0:
        t = k / b
    else:
        t = 2 * k / (b + torch.sqrt(b * b + 4 * a * k))  # = (-b + sqrt(b^2 + 4ak)) / (2a), stable for small k
    return t.to(sigma.dtype)


def vp_denoiser(eps_model: Callable, x: torch.Tensor, sigma: torch.Tensor | float,
                schedule: VPSchedule | None = None) -> torch.Tensor:
    """``D(x, sigma) = x - sigma * eps(alpha x, t(sigma))`` with ``alpha = 1/sqrt(1 + sigma^2)``: the VE-scale
    denoiser of a VP eps-model (x in VE scale, i.e. ``x_0 + sigma n``)."""
    sched = schedule or VPSchedule()
    s = _per_sample_sigma(sigma, x)
    t = vp_t_of_sigma(s, sched.config)
    if float(t.max()) > sched.t_max + 1e-6:
        raise ValueError(f"vp_denoiser: sigma up to {float(s.max()):.4g} needs VP time {float(t.max()):.4g} > "
                         f"t_max={sched.t_max}")
    alpha = per_sample(torch.rsqrt(1 + s * s), x, cast=False)
    return x - per_sample(s, x, cast=False) * eps_model(alpha * x, t)


def pf_ode_step(denoiser: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor,
                sigma_from: torch.Tensor, sigma_to: torch.Tensor, *, solver: str = "heun") -> torch.Tensor:
    """One step of ``dx/dsigma = (x - D(x, sigma)) / sigma`` from ``sigma_from`` to ``sigma_to`` (per sample).

    ``heun``: Karras et al. 2022, Algorithm 1 (second order; two denoiser calls); ``euler``: first order.
    """
    if solver not in ("heun", "euler"):
        raise ValueError(f"solver: expected 'heun' or 'euler', got {solver!r}")
    sf, st = per_sample(sigma_from, x, cast=False), per_sample(sigma_to, x, cast=False)
    d = (x - denoiser(x, sigma_from)) / sf
    x_e = x + (st - sf) * d
    if solver == "euler":
        return x_e
    d2 = (x_e - denoiser(x_e, sigma_to)) / st
    return x + (st - sf) * 0.5 * (d + d2)


# ----------------------------------------------------------------------------------------- losses
def pseudo_huber_c(dim: int) -> float:
    """``c = 0.00054 sqrt(d)`` (Song & Dhariwal, "Improved techniques for training consistency models", 2023)."""
    return 0.00054 * math.sqrt(dim)


def distance(a: torch.Tensor, b: torch.Tensor, metric: str = "l2") -> torch.Tensor:
    """Per-sample distance ``d``: ``l2`` = mean squared error over pixels (CM paper's squared l2, averaged),
    ``pseudo-huber`` = ``sqrt(||a - b||^2 + c^2) - c`` with ``c = 0.00054 sqrt(dim)``."""
    diff = (a - b).flatten(1)
    if metric == "l2":
        return diff.pow(2).mean(1)
    if metric == "pseudo-huber":
        c = pseudo_huber_c(diff.shape[1])
        return torch.sqrt(diff.pow(2).sum(1) + c * c) - c
    raise ValueError(f"metric: expected 'l2' or 'pseudo-huber', got {metric!r}")


def cd_loss(online: ConsistencyFn, target: ConsistencyFn, denoiser: Callable, x0: torch.Tensor,
            n: torch.Tensor, sigmas: torch.Tensor, noise: torch.Tensor, *, solver: str = "heun",
            metric: str = "l2") -> torch.Tensor:
    """Consistency distillation loss per sample (CM paper, Eq. 7 with lambda = 1).

    ``n`` (N,) int indices in ``[0, len(sigmas) - 2]`` (0-based; ``sigmas`` increasing): the pair is
    ``(sigma_n, sigma_{n+1})``; ``x_{n+1} = x0 + sigma_{n+1} noise``; ``x^_n`` = one teacher ODE step of
    ``denoiser(x, sigma)`` from ``sigma_{n+1}`` to ``sigma_n``; the target network gets no gradient.
    """
    s_lo, s_hi = sigmas[n], sigmas[n + 1]
    x_hi = x0 + per_sample(s_hi, x0, cast=False) * noise
    with torch.no_grad():
        x_lo = pf_ode_step(denoiser, x_hi, s_hi, s_lo, solver=solver)
        tgt = target(x_lo, s_lo)
    return distance(online(x_hi, s_hi), tgt, metric)


def ct_loss(online: ConsistencyFn, target: ConsistencyFn, x0: torch.Tensor, n: torch.Tensor, sigmas: torch.Tensor,
            noise: torch.Tensor, *, metric: str = "pseudo-huber") -> torch.Tensor:
    """Consistency training loss per sample (CM paper, Eq. 10): ``x_n = x0 + sigma_n z`` (same ``z``) replaces
    the teacher step."""
    s_lo, s_hi = sigmas[n], sigmas[n + 1]
    with torch.no_grad():
        tgt = target(x0 + per_sample(s_lo, x0, cast=False) * noise, s_lo)
    return distance(online(x0 + per_sample(s_hi, x0, cast=False) * noise, s_hi), tgt, metric)


def ct_schedule(k: int, total: int, *, s0: int = 2, s1: int = 150, mu0: float = 0.9) -> tuple[int, float]:
    """CT's step schedule N(k) and EMA rate mu(k) (CM paper, Appendix C, Eq. 30 with s0 = 2, s1 = 150, mu0 = 0.9):

    ``N(k) = ceil(sqrt(k/K ((s1 + 1)^2 - s0^2) + s0^2) - 1) + 1``,  ``mu(k) = exp(s0 log(mu0) / N(k))``.
    """
    nk = math.ceil(math.sqrt(k / max(total, 1) * ((s1 + 1) ** 2 - s0 ** 2) + s0 ** 2) - 1) + 1
    return nk, math.exp(s0 * math.log(mu0) / nk)


# ----------------------------------------------------------------------------------------- loading
def load_consistency_model(path: str | os.PathLike, *, image_shape: tuple[int, int, int] | None = None
                           ) -> tuple[ConsistencyModel, dict]:
    """Load ``<name>.safetensors`` + JSON sidecar written by :mod:`advpure.train.consistency` (eval mode)."""
    from ..checkpoint import load_artifact, load_into, resolve_artifact
    from .models import _shape_of, build_unet

    p = resolve_artifact(path)
    sd, meta = load_artifact(p, kind="consistency", require=("unet_config",), what="consistency model")
    shape = _shape_of(meta["unet_config"])
    if image_shape is not None and tuple(image_shape) != shape:
        raise ValueError(f"{p}: consistency model is for {shape[0]}x{shape[1]}x{shape[2]} images (CxHxW) but "
                         f"{tuple(image_shape)} were requested")
    net = build_unet(meta["unet_config"])
    load_into(net, sd, what=str(p))
    cm = ConsistencyModel(net, image_shape=shape, sigma_min=meta.get("sigma_min", SIGMA_MIN),
                          sigma_max=meta.get("sigma_max", SIGMA_MAX), sigma_data=meta.get("sigma_data", SIGMA_DATA))
    return cm.eval(), {**meta, "source": str(p)}


def build_consistency_model(unet: str | Mapping[str, Any] = "digits", **kw: Any) -> ConsistencyModel:
    """A random-weight consistency model around ``build_unet(unet)`` (preset name or config dict)."""
    from .models import _shape_of, build_unet, unet_config

    cfg = (dict(UNET_CONFIGS[unet]) if unet in UNET_CONFIGS else unet_config(unet)) if isinstance(unet, str) \
        else dict(unet)
    return ConsistencyModel(build_unet(cfg), image_shape=_shape_of(cfg), **kw)


__all__ = ["ConsistencyModel", "GaussianConsistencyFunction", "SIGMA_DATA", "SIGMA_MAX", "SIGMA_MIN", "RHO",
           "build_consistency_model", "cd_loss", "ct_loss", "ct_schedule", "distance", "karras_sigmas",
           "load_consistency_model", "noise_conditioning", "pf_ode_step", "pseudo_huber_c", "scalings",
           "vp_denoiser", "vp_t_of_sigma"]
