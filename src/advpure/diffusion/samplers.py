"""Samplers for the VP diffusion, as free functions with one signature (k-diffusion style).

Every sampler takes ``model`` (``eps_model(x_t, t)``, see :mod:`advpure.diffusion.models`), the
current state ``x_t`` in data scale [-1, 1], a ``schedule`` (:class:`~advpure.diffusion.schedule.VPSchedule`
or :class:`~advpure.diffusion.schedule.DiscreteSchedule`), time arguments, and a ``generator`` that is the
only source of randomness (``None`` = torch's global RNG). They run with or without autograd; with
``checkpoint=True`` the step loop runs through :func:`advpure.ops.checkpointing.checkpointed_loop` (forward
without a graph, each step recomputed in the backward pass with its random state rewound, so the noise is
the same), so the memory of a backward pass does not grow with the steps' activations. Times may be per
sample: a tensor of shape (N,); per-sample times that require grad (SSNI) get their gradient either way.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from ..contracts import check_int, check_positive
from ..ops.broadcast import per_sample
from ..ops.checkpointing import checkpointed_loop

EpsModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: ``guidance(x_t, t, s, noise, *guidance_inputs) -> g``: a per-step shift direction; the DDPM mean becomes
#: ``mean + var * g``. ``noise`` is a fresh standard-normal tensor shaped like x_t, drawn by the sampler from its
#: generator (so a guidance target such as a re-diffused image is recomputed exactly in the backward pass).
#: Tensors the guidance depends on differentiably (the attacked image) must come as ``guidance_inputs``, not
#: through a closure: the checkpointed loop differentiates only with respect to its arguments.
Guidance = Callable[..., torch.Tensor]


def _noise(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def _per_sample(t: torch.Tensor | float, x: torch.Tensor, name: str, *, allow_zero: bool = False) -> torch.Tensor:
    """A time as a float tensor (N,) on x's device, checked to lie in (0, 1] (or [0, 1])."""
    n = x.shape[0]
    if isinstance(t, torch.Tensor):
        tt = t.to(device=x.device, dtype=x.dtype)  # keeps the graph: SSNI differentiates through per-sample t
        if tt.dim() == 0:
            tt = tt.expand(n)
        elif tt.shape != (n,):
            raise ValueError(f"{name}: expected a float or a tensor of shape ({n},) (one time per sample), got {tuple(tt.shape)}")
    else:
        try:
            v = float(t)
        except (TypeError, ValueError):
            raise TypeError(f"{name}: expected a float or a tensor of times, got {t!r}") from None
        tt = torch.full((n,), v, device=x.device, dtype=x.dtype)
    lo, hi = float(tt.detach().min()), float(tt.detach().max())
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi > 1.0 or lo < 0 or (lo == 0 and not allow_zero):
        interval = "[0, 1]" if allow_zero else "(0, 1]"
        raise ValueError(f"{name}: diffusion times must be in {interval}, got values in [{lo:.4g}, {hi:.4g}]")
    return tt


def diffuse(x0: torch.Tensor, t: torch.Tensor | float, schedule, generator: torch.Generator | None = None) -> torch.Tensor:
    """Sample the forward marginal ``x_t = alpha(t) x_0 + std(t) eps`` (Song et al. 2021, Eq. 33); t scalar or (N,)."""
    tt = _per_sample(t, x0, "t", allow_zero=True)
    return (per_sample(schedule.alpha(tt), x0, cast=True) * x0
            + per_sample(schedule.std(tt), x0, cast=True) * _noise(x0, generator))


def reverse_sde(model: EpsModel, x_t: torch.Tensor, *, schedule, t_start: torch.Tensor | float,
                n_steps: int | None = None, dt: float = 1e-3, generator: torch.Generator | None = None,
                checkpoint: bool = False, segment: tuple[int, int] | None = None) -> torch.Tensor:
    """Euler–Maruyama integration of the reverse VP SDE from ``t_start`` to 0 (DiffPure's solver).

    Reverse SDE (Anderson 1982; Song et al. 2021, Eq. 6) for ``dx = -1/2 beta x dt + sqrt(beta) dw``::

        dx = [-1/2 beta(t) x - beta(t) score(x, t)] dt + sqrt(beta(t)) dw_bar,   score = -eps / std(t)

    stepped backwards with ``h = t_start / n_steps``: ``x <- x + h (1/2 beta x + beta score) + sqrt(beta h) z``,
    noise injected at every step (as torchsde's Euler scheme in DiffPure). Sample i uses its own grid
    ``t_i(k) = t_start_i (1 - k / n_steps)``; all samples take the same number of steps, one network call
    per step for the whole batch. ``n_steps`` defaults to ``ceil(max(t_start) / dt)`` (DiffPure: 100 steps
    from t* = 0.1 with dt = 1e-3).

    ``segment=(k0, k1)`` runs only the steps ``k0 .. k1 - 1`` of this chain, on its grid, from ``x_t`` at time
    ``t(k0)``: the segments of a chain, called in turn with the same generator, give exactly the whole chain (the same
    coefficients and noise), with the states between them kept (the deviated-reconstruction attack,
    :mod:`advpure.attacks.diffattack`, reads them through :func:`reverse_path`).
    """
    ts = _per_sample(t_start, x_t, "t_start")
    if n_steps is None:
        check_positive(dt, "dt")
        n_steps = max(1, math.ceil(float(ts.max()) / dt - 1e-4))
    check_int(n_steps, "n_steps")
    k0, k1 = (0, n_steps) if segment is None else (int(segment[0]), int(segment[1]))
    if not 0 <= k0 < k1 <= n_steps:
        raise ValueError(f"reverse_sde: segment must be (k0, k1) with 0 <= k0 < k1 <= n_steps = {n_steps}, "
                         f"got {segment}")
    # all per-step coefficients at once (one small tensor op each instead of several per step):
    # x <- (1 + h beta / 2) x - (h beta / std) eps + sqrt(h beta) z
    frac = 1.0 - torch.arange(n_steps, device=x_t.device, dtype=x_t.dtype) / n_steps
    grid = frac[:, None] * ts[None, :]  # (n_steps, N)
    h = (ts / n_steps)[None, :]
    beta = schedule.beta(grid).to(x_t.dtype)
    shape = (n_steps, -1) + (1,) * (x_t.dim() - 1)
    c_x = (1.0 + 0.5 * h * beta).reshape(shape)
    c_eps = (h * beta / schedule.std(grid).to(x_t.dtype)).reshape(shape)
    c_z = torch.sqrt(h * beta).reshape(shape)

    def step(x: torch.Tensor, k: int, grid: torch.Tensor, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor
             ) -> torch.Tensor:
        z = _noise(x, generator)
        # a x - b eps + c z as two fused multiply-adds (fewer temporaries than the plain expression)
        return torch.addcmul(torch.addcmul(a[k] * x, b[k], model(x, grid[k]), value=-1.0), c[k], z)

    if (k0, k1) != (0, n_steps):
        grid, c_x, c_eps, c_z = grid[k0:k1], c_x[k0:k1], c_eps[k0:k1], c_z[k0:k1]
    return checkpointed_loop(step, x_t, k1 - k0, extras=(grid, c_x, c_eps, c_z), enabled=checkpoint,
                             generator=generator)


def ddpm_timesteps(t_start: torch.Tensor | float, n_steps: int) -> list[torch.Tensor | float]:
    """``n_steps + 1`` evenly spaced times from ``t_start`` down to 0 (scalars or per-sample tensors).

    With :class:`~advpure.diffusion.schedule.DiscreteSchedule`, ``t_start = n/1000`` and ``n_steps = n``
    this is exactly the original DDPM chain x_n -> ... -> x_0.
    """
    check_int(n_steps, "n_steps")
    return [t_start * (1.0 - k / n_steps) for k in range(n_steps + 1)]


def _times(timesteps: Sequence[torch.Tensor | float] | torch.Tensor, x: torch.Tensor) -> list[torch.Tensor]:
    if isinstance(timesteps, torch.Tensor) and timesteps.dim() == 1:
        timesteps = list(timesteps)
    seq = list(timesteps)
    if len(seq) < 2:
        raise ValueError(f"timesteps: need at least 2 times (from t_start down to a smaller time), got {len(seq)}")
    out = [_per_sample(t, x, f"timesteps[{i}]", allow_zero=(i == len(seq) - 1) or i > 0) for i, t in enumerate(seq)]
    for i in range(len(out) - 1):
        if bool((out[i + 1] >= out[i]).any()):
            raise ValueError("timesteps must be strictly decreasing (from the noisiest time down towards 0)")
    return out


def _posterior(schedule, x: torch.Tensor, eps: torch.Tensor, t: torch.Tensor, s: torch.Tensor, clip_x0: bool):
    """x0-prediction, and q(x_s | x_t, x0) mean coefficients and variance (Ho et al. 2020, Eq. 6-7, general s < t)."""
    la_t, la_s = per_sample(schedule.log_alpha(t), x, cast=True), per_sample(schedule.log_alpha(s), x, cast=True)
    a_t, a_s = torch.exp(la_t), torch.exp(la_s)
    var_t, var_s = -torch.expm1(2 * la_t), -torch.expm1(2 * la_s)
    var_ts = -torch.expm1(2 * (la_t - la_s))  # 1 - (alpha_t / alpha_s)^2
    x0 = (x - torch.sqrt(var_t) * eps) / a_t
    if clip_x0:
        x0 = x0.clamp(-1.0, 1.0)
    mean = (a_s * var_ts / var_t) * x0 + (torch.exp(la_t - la_s) * var_s / var_t) * x
    var = var_ts * var_s / var_t
    return x0, mean, var, a_s, var_s


def ddpm_ancestral(model: EpsModel, x_t: torch.Tensor, *, schedule, timesteps, generator: torch.Generator | None = None,
                   checkpoint: bool = False, guidance: Guidance | None = None,
                   guidance_inputs: Sequence[torch.Tensor] = (), clip_x0: bool = False) -> torch.Tensor:
    """Ancestral sampling ``x_s ~ N(mu(x_t, x0_hat), sigma^2)`` along decreasing ``timesteps`` (Ho et al. 2020, Alg. 2).

    ``x0_hat = (x_t - std_t eps) / alpha_t``; ``mu``, ``sigma^2`` are the posterior q(x_s | x_t, x0_hat) of
    the VP process between any two times s < t (Eq. 6-7 generalised; equal to DDPM's step when s, t are
    adjacent grid points of :class:`DiscreteSchedule`). ``timesteps[0]`` is the time of ``x_t``; the last
    one is usually 0 (noise-free final step). Each entry may be a float or a per-sample tensor (N,).
    ``guidance(x_t, t, s, noise, *guidance_inputs)`` shifts the mean by ``sigma^2 * guidance`` (GDMP, Wang et al.
    2022, Eq. 8).
    ``clip_x0`` clamps ``x0_hat`` to [-1, 1] (as diffusers/guided-diffusion do).
    """
    times = torch.stack(_times(timesteps, x_t))  # (n_steps + 1, N)

    def step(x: torch.Tensor, k: int, times: torch.Tensor, *g_in: torch.Tensor) -> torch.Tensor:
        t, s = times[k], times[k + 1]
        z = _noise(x, generator)
        zg = _noise(x, generator) if guidance is not None else None
        _, mean, var, _, _ = _posterior(schedule, x, model(x, t), t, s, clip_x0)
        if guidance is not None:
            mean = mean + var * guidance(x, t, s, zg, *g_in)
        return mean + torch.sqrt(var) * z

    return checkpointed_loop(step, x_t, len(times) - 1, extras=(times, *guidance_inputs), enabled=checkpoint,
                             generator=generator)


def ddim(model: EpsModel, x_t: torch.Tensor, *, schedule, timesteps, eta: float = 0.0,
         generator: torch.Generator | None = None, checkpoint: bool = False, clip_x0: bool = False) -> torch.Tensor:
    """DDIM (Song, Meng & Ermon 2021, Eq. 12): ``x_s = alpha_s x0_hat + sqrt(std_s^2 - c^2) eps + c z``,
    ``c = eta * sigma`` with ``sigma^2`` the DDPM posterior variance; ``eta = 0`` is deterministic,
    ``eta = 1`` is ancestral DDPM."""
    eta = check_positive(eta, "eta", allow_zero=True)
    times = torch.stack(_times(timesteps, x_t))  # (n_steps + 1, N)

    def step(x: torch.Tensor, k: int, times: torch.Tensor) -> torch.Tensor:
        t, s = times[k], times[k + 1]
        z = _noise(x, generator) if eta > 0 else torch.zeros_like(x)
        eps = model(x, t)
        x0, _, var, a_s, var_s = _posterior(schedule, x, eps, t, s, clip_x0)
        c2 = (eta * eta) * var
        return a_s * x0 + torch.sqrt((var_s - c2).clamp(min=0)) * eps + torch.sqrt(c2) * z

    return checkpointed_loop(step, x_t, len(times) - 1, extras=(times,), enabled=checkpoint, generator=generator)


#: the reverse processes :func:`reverse_path` can cut into segments
PATH_SAMPLERS = ("sde", "ddpm", "ddim")


def reverse_path(model: EpsModel, x_t: torch.Tensor, *, schedule, t_start: torch.Tensor | float, n_steps: int,
                 sampler: str = "sde", every: int = 0, generator: torch.Generator | None = None,
                 checkpoint: bool = False, clip_x0: bool = False) -> list[tuple[torch.Tensor | float, torch.Tensor]]:
    """One reverse process from ``t_start`` to 0 (``sampler``: :func:`reverse_sde`, :func:`ddpm_ancestral` or
    :func:`ddim` on the grid :func:`ddpm_timesteps`), returned as its states ``[(t_k, x_{t_k}), ..., (0, x_0)]`` after
    every ``every``-th step and at the end (``every = 0``: the end only).

    The chain is run in segments of ``every`` steps, each a call of the sampler on its part of the same grid, with the
    same generator: the final state is the plain call's. Every state is differentiable (each segment is checkpointed on its own
    when ``checkpoint``). What the deviated-reconstruction loss of DiffAttack (Kang, Song & Li 2023, Eq. 8) reads:
    the reverse process's samples at intermediate times.
    """
    if sampler not in PATH_SAMPLERS:
        raise ValueError(f"reverse_path: sampler must be one of {', '.join(PATH_SAMPLERS)}, got {sampler!r}")
    n_steps = check_int(n_steps, "n_steps")
    every = check_int(every, "every", minimum=0)
    cuts = list(range(0, n_steps, every)) + [n_steps] if 0 < every < n_steps else [0, n_steps]
    grid = ddpm_timesteps(t_start, n_steps)
    path: list[tuple[torch.Tensor | float, torch.Tensor]] = []
    x = x_t
    for k0, k1 in zip(cuts, cuts[1:]):
        t_end = 0.0 if k1 == n_steps else grid[k1]
        if sampler == "sde":
            x = reverse_sde(model, x, schedule=schedule, t_start=t_start, n_steps=n_steps, segment=(k0, k1),
                            generator=generator, checkpoint=checkpoint)
        elif sampler == "ddpm":
            x = ddpm_ancestral(model, x, schedule=schedule, timesteps=grid[k0:k1 + 1], generator=generator,
                               checkpoint=checkpoint, clip_x0=clip_x0)
        else:
            x = ddim(model, x, schedule=schedule, timesteps=grid[k0:k1 + 1], generator=generator,
                     checkpoint=checkpoint, clip_x0=clip_x0)
        path.append((t_end, x))
    return path


def sample(model: EpsModel, shape: Sequence[int], *, schedule, n_steps: int = 1000, method: str = "ddpm",
           t_start: float = 1.0, generator: torch.Generator | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
    """Generate from pure noise at ``t_start`` (default 1.0) with ``ddpm`` or ``sde``; returns data scale [-1, 1]."""
    x = torch.randn(tuple(shape), generator=generator, device=device)
    x = x * float(schedule.std(torch.tensor(t_start)))  # alpha(1) ~ 0: x_1 ~ N(0, std(1)^2)
    if method == "ddpm":
        return ddpm_ancestral(model, x, schedule=schedule, timesteps=ddpm_timesteps(t_start, n_steps),
                              generator=generator, clip_x0=True)
    if method == "sde":
        return reverse_sde(model, x, schedule=schedule, t_start=t_start, n_steps=n_steps, generator=generator)
    raise ValueError(f"unknown sampling method {method!r}; expected 'ddpm' or 'sde'")
