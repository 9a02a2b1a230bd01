"""Noise schedules: the continuous VP SDE and the discrete DDPM schedule, and the map between them.

Continuous VP SDE (Song et al., ICLR 2021, Eq. 11; the process DiffPure purifies with)::

    dx = -1/2 beta(t) x dt + sqrt(beta(t)) dw,      beta(t) = beta_min + t (beta_max - beta_min),  t in [0, 1]

with marginal ``x_t = alpha(t) x_0 + std(t) eps`` (Song et al., Eq. 33)::

    alpha(t) = exp(-1/4 t^2 (beta_max - beta_min) - 1/2 t beta_min),    std(t) = sqrt(1 - alpha(t)^2).

Discrete DDPM (Ho et al., NeurIPS 2020): ``betas = linspace(1e-4, 0.02, 1000)``, ``alphas_cumprod[k] =
prod_{i<=k} (1 - betas[i])``. These are the VP SDE's ``beta_i = beta(i/(N-1)) / N`` (score_sde), so

    alphas_cumprod[n - 1]  ~=  alpha(n / N)^2,     n = 1..N,

i.e. **continuous time t corresponds to n = t * N completed DDPM steps** (the ``t = n/1000`` convention of
DiffPure and score_sde). A network trained with diffusers' integer timestep index ``k`` (noise level
``alphas_cumprod[k]``) therefore sees ``k = t * N - 1`` at continuous time t; see
:class:`advpure.diffusion.models.DiscreteTimeAdapter`.

Both schedule classes expose the same interface (``alpha``, ``std``, ``beta``, ``t_max``), so every
sampler in :mod:`advpure.diffusion.samplers` runs on either. :class:`DiscreteSchedule` interpolates
``log alphas_cumprod`` between the grid points ``t = n/N`` (exact on the grid, ``alpha(0) = 1``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from ..contracts import check_int, check_positive
from ..ops.broadcast import per_sample


@dataclass(frozen=True)
class VPSDEConfig:
    """Continuous VP SDE parameters (defaults: Song et al. 2021 / DiffPure, ``beta in [0.1, 20]``)."""

    beta_min: float = 0.1
    beta_max: float = 20.0

    def __post_init__(self) -> None:
        check_positive(self.beta_min, "beta_min")
        check_positive(self.beta_max, "beta_max")
        if self.beta_max < self.beta_min:
            raise ValueError(f"beta_max ({self.beta_max}) must be >= beta_min ({self.beta_min})")


@dataclass(frozen=True)
class DDPMConfig:
    """Discrete DDPM schedule parameters (defaults: Ho et al. 2020, linear betas 1e-4..0.02, 1000 steps)."""

    beta_start: float = 1e-4
    beta_end: float = 0.02
    num_train_timesteps: int = 1000

    def __post_init__(self) -> None:
        check_positive(self.beta_start, "beta_start")
        check_positive(self.beta_end, "beta_end")
        check_int(self.num_train_timesteps, "num_train_timesteps", minimum=2)
        if not (self.beta_start <= self.beta_end < 1):
            raise ValueError(f"expected 0 < beta_start <= beta_end < 1, got {self.beta_start}, {self.beta_end}")

    def to_vp(self) -> VPSDEConfig:
        """The continuous VP SDE this schedule discretises (beta_min = N beta_start, beta_max = N beta_end)."""
        n = self.num_train_timesteps
        return VPSDEConfig(beta_min=self.beta_start * n, beta_max=self.beta_end * n)


def _as_t(t: torch.Tensor | float, like: torch.Tensor | None = None) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        t = torch.tensor(float(t), dtype=torch.float64 if like is None else like.dtype)
    return t


class VPSchedule:
    """The continuous VP SDE schedule. All methods accept a float or a tensor of times in [0, 1]."""

    t_max: float = 1.0

    def __init__(self, config: VPSDEConfig | None = None) -> None:
        self.config = config or VPSDEConfig()

    def __repr__(self) -> str:
        return f"VPSchedule(beta_min={self.config.beta_min}, beta_max={self.config.beta_max})"

    def describe(self) -> dict:
        return {"type": "vp", **asdict(self.config)}

    def beta(self, t: torch.Tensor | float) -> torch.Tensor:
        """``beta(t) = beta_min + t (beta_max - beta_min)``."""
        c = self.config
        return c.beta_min + _as_t(t) * (c.beta_max - c.beta_min)

    def log_alpha(self, t: torch.Tensor | float) -> torch.Tensor:
        c = self.config
        t = _as_t(t)
        return -0.25 * t * t * (c.beta_max - c.beta_min) - 0.5 * t * c.beta_min

    def alpha(self, t: torch.Tensor | float) -> torch.Tensor:
        """Marginal mean coefficient ``alpha(t) = exp(-t^2 (bmax - bmin)/4 - t bmin/2)``."""
        return torch.exp(self.log_alpha(t))

    def std(self, t: torch.Tensor | float) -> torch.Tensor:
        """Marginal standard deviation ``sqrt(1 - alpha(t)^2)`` (computed as sqrt(-expm1(2 log alpha)))."""
        return torch.sqrt(-torch.expm1(2.0 * self.log_alpha(t)))

    def t_of_alpha_bar(self, alpha_bar: float) -> float:
        """Inverse of ``alpha(t)^2``: the time at which the signal power is ``alpha_bar``."""
        if not (0 < alpha_bar <= 1):
            raise ValueError(f"alpha_bar must be in (0, 1], got {alpha_bar}")
        c = self.config
        a, b, k = 0.5 * (c.beta_max - c.beta_min), c.beta_min, math.log(alpha_bar)  # a t^2 + b t + k = 0
        return (-b + math.sqrt(b * b - 4 * a * k)) / (2 * a) if a > 0 else -k / b


class DiscreteSchedule:
    """The discrete DDPM schedule, viewed in continuous time ``t = n / N``.

    ``alpha(t)`` interpolates ``log alphas_cumprod`` linearly between grid points, with
    ``alpha(n/N)^2 = alphas_cumprod[n-1]`` exactly and ``alpha(0) = 1``. ``beta(t)`` is the
    per-unit-time rate ``N * betas[n]`` of the step containing t (used by the reverse SDE).
    """

    t_max: float = 1.0

    def __init__(self, config: DDPMConfig | None = None) -> None:
        self.config = config or DDPMConfig()
        c = self.config
        self.num_steps = c.num_train_timesteps
        self.betas = torch.linspace(c.beta_start, c.beta_end, c.num_train_timesteps, dtype=torch.float64)
        self.alphas_cumprod = torch.cumprod(1.0 - self.betas, 0)
        # log alpha_bar on the grid t = n/N, n = 0..N
        self._log_ab = torch.cat([torch.zeros(1, dtype=torch.float64), torch.log(self.alphas_cumprod)])

    def __repr__(self) -> str:
        c = self.config
        return f"DiscreteSchedule(beta_start={c.beta_start}, beta_end={c.beta_end}, N={c.num_train_timesteps})"

    def describe(self) -> dict:
        return {"type": "ddpm", **asdict(self.config)}

    # --- conversions -----------------------------------------------------------------------------
    def t_of_step(self, n: torch.Tensor | int) -> torch.Tensor:
        """Continuous time of ``n`` completed steps: ``t = n / N`` (noise level ``alphas_cumprod[n-1]``)."""
        return _as_t(n).to(torch.float64) / self.num_steps

    def step_of_t(self, t: torch.Tensor | float) -> torch.Tensor:
        """Nearest number of completed steps ``round(t N)`` (int64)."""
        return torch.round(_as_t(t) * self.num_steps).long()

    # --- schedule interface ----------------------------------------------------------------------
    def log_alpha(self, t: torch.Tensor | float) -> torch.Tensor:
        t = _as_t(t)
        pos = (t.to(torch.float64) * self.num_steps).clamp(0, self.num_steps)
        lo = pos.floor().clamp(max=self.num_steps - 1).long()
        w = pos - lo
        la = self._log_ab.to(t.device)
        out = 0.5 * ((1 - w) * la[lo] + w * la[lo + 1])
        return out.to(t.dtype) if t.is_floating_point() else out

    def alpha(self, t: torch.Tensor | float) -> torch.Tensor:
        return torch.exp(self.log_alpha(t))

    def std(self, t: torch.Tensor | float) -> torch.Tensor:
        return torch.sqrt(-torch.expm1(2.0 * self.log_alpha(t)))

    def beta(self, t: torch.Tensor | float) -> torch.Tensor:
        t = _as_t(t)
        idx = (t.to(torch.float64) * self.num_steps).floor().clamp(0, self.num_steps - 1).long()
        b = self.betas.to(t.device)[idx] * self.num_steps
        return b.to(t.dtype) if t.is_floating_point() else b


Schedule = VPSchedule | DiscreteSchedule


def get_schedule(name: str = "vp") -> Schedule:
    """``"vp"`` (continuous VP SDE, beta in [0.1, 20]) or ``"ddpm"`` (discrete linear 1e-4..0.02, N=1000)."""
    if name == "vp":
        return VPSchedule()
    if name == "ddpm":
        return DiscreteSchedule()
    raise ValueError(f"unknown schedule {name!r}; expected 'vp' or 'ddpm'")


def eps_to_score(eps: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``score = -eps / std(t)`` (Song et al. 2021, the denoising score-matching identity); ``std`` broadcasts per sample."""
    return -eps / per_sample(std, eps, cast=True)


def score_to_eps(score: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`eps_to_score`: ``eps = -std(t) * score``."""
    return -per_sample(std, score, cast=True) * score

