"""The schedule and sampler contracts, checked on every noise schedule and sampler :mod:`advpure.diffusion` exports.

Discovery (so that a new one cannot be added untested): a *schedule* is an exported class with ``alpha``, ``std``
and ``beta``; a *sampler* is an exported function taking both a ``schedule`` and a ``generator``. Each must have
an entry in :data:`SCHEDULES` / :data:`SAMPLERS`, else the completeness tests fail and name it.

A new schedule must: give ``alpha(t)^2 + std(t)^2 = 1`` (variance preserving), ``alpha(0) = 1``, ``std(0) = 0``,
``alpha`` strictly decreasing and ``std`` strictly increasing on [0, 1], ``beta(t) > 0`` consistent with ``alpha``
(``d log alpha / dt = -beta / 2``, or per step for a discrete one), keep the input's float dtype, and match its
closed form (a known-answer case in :data:`SCHEDULES`).

A new sampler must: return the input's shape and dtype; take its randomness only from ``generator`` (same seed,
same output; torch's global RNG untouched; another seed, another output exactly when it is stochastic); give the
same output and input gradient with ``checkpoint=True`` (when it has the option); refuse diffusion times outside
its range with a ``ValueError`` naming the interval; and, with the exact eps-model of Gaussian data N(m, v)
(:class:`advpure.diffusion.GaussianScoreModel`), started from the exact marginal at t*, return samples whose
mean and variance match N(m, v) within sampling error plus the documented discretisation allowance.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Callable

import pytest
import torch

import advpure.diffusion as D

# --------------------------------------------------------------------------- the cases
#: Gaussian data of the known-answer cases, per pixel: N(_M, _V)
_M = torch.tensor([-0.3, 0.4, 0.0, 0.2]).view(1, 2, 2)
_V = torch.tensor([0.1, 0.3, 0.15, 0.2]).view(1, 2, 2)
#: data well inside [-1, 1] (4 standard deviations) for samplers that clip x0-predictions to [-1, 1]
_M_IN = torch.tensor([-0.2, 0.2, 0.0, 0.1]).view(1, 2, 2)
_V_IN = torch.tensor([0.04, 0.05, 0.04, 0.05]).view(1, 2, 2)

#: closed forms written from the papers, not from the code: t -> alpha(t) (float64 scalars)
_BMIN, _BMAX = 0.1, 20.0  # Song et al. 2021 / DiffPure


def _alpha_vp(t: float) -> float:
    """VP SDE marginal mean coefficient, Song et al. 2021 Eq. 33: exp(-t^2 (bmax - bmin) / 4 - t bmin / 2)."""
    return math.exp(-0.25 * t * t * (_BMAX - _BMIN) - 0.5 * t * _BMIN)


def _ddpm_betas(n: int = 1000, b0: float = 1e-4, b1: float = 0.02) -> list[float]:
    return [b0 + (b1 - b0) * i / (n - 1) for i in range(n)]  # Ho et al. 2020: linear betas


def _alpha_ddpm(t: float) -> float:
    """sqrt(prod_{i < n} (1 - beta_i)) at the grid time t = n / 1000 (n completed DDPM steps)."""
    n = round(t * 1000)
    assert abs(n - t * 1000) < 1e-9, "the DDPM closed form is checked on the grid t = n / 1000"
    return math.sqrt(math.prod(1.0 - b for b in _ddpm_betas()[:n]))


@dataclass
class ScheduleCase:
    make: Callable[[], object]
    closed_form: Callable[[float], float]
    grid: list[float]  # times at which the closed form is checked
    discrete_steps: int | None = None  # N for a discrete schedule (beta checked per step)


SCHEDULES: dict[str, ScheduleCase] = {
    "VPSchedule": ScheduleCase(D.VPSchedule, _alpha_vp, [0.0, 1e-3, 0.05, 0.1, 0.3, 0.5, 0.9, 1.0]),
    "DiscreteSchedule": ScheduleCase(D.DiscreteSchedule, _alpha_ddpm, [0.0, 0.001, 0.036, 0.1, 0.5, 0.999, 1.0],
                                     discrete_steps=1000),
}
#: get_schedule names -> class names
NAMED = {"vp": "VPSchedule", "ddpm": "DiscreteSchedule"}


@dataclass
class SamplerCase:
    """``run(model, schedule, x, t, steps, generator, checkpoint)``: ``x`` is the state at time t (the clean
    image for ``forward``); ``from_noise``: the sampler draws its own start at t = 1 and ``x`` only gives the shape."""

    run: Callable[..., torch.Tensor]
    stochastic: bool
    forward: bool = False
    from_noise: bool = False
    checkpoint: bool = False
    t_name: str = "t_start"
    allow_zero_t: bool = False
    # known answer: start time, steps, and the one-sided variance deficit allowed by the discretisation
    t_star: float = 0.3
    steps: int = 300
    var_deficit: float = 0.0
    var_excess: float = 0.0
    #: the Gaussian data (per-pixel mean and variance, shape (1, 2, 2)); default _M, _V
    data: tuple[torch.Tensor, torch.Tensor] | None = None


def _rev_sde(model, sch, x, t, steps, g, ck=False):
    return D.reverse_sde(model, x, schedule=sch, t_start=t, n_steps=steps, generator=g, checkpoint=ck)


def _ancestral(model, sch, x, t, steps, g, ck=False):
    return D.ddpm_ancestral(model, x, schedule=sch, timesteps=D.ddpm_timesteps(t, steps), generator=g, checkpoint=ck)


def _ddim(eta):
    def run(model, sch, x, t, steps, g, ck=False):
        return D.ddim(model, x, schedule=sch, timesteps=D.ddpm_timesteps(t, steps), eta=eta, generator=g,
                      checkpoint=ck)
    return run


def _sample(method):
    def run(model, sch, x, t, steps, g, ck=False):
        return D.sample(model, tuple(x.shape), schedule=sch, n_steps=steps, method=method, t_start=t, generator=g)
    return run


def _path(sampler):
    def run(model, sch, x, t, steps, g, ck=False):  # the final state of the chain run in segments of 3 steps
        return D.reverse_path(model, x, schedule=sch, t_start=t, n_steps=steps, sampler=sampler, every=3, generator=g,
                              checkpoint=ck)[-1][1]
    return run


def _diffuse(model, sch, x, t, steps, g, ck=False):
    return D.diffuse(x, t, sch, g)


# Discretisation allowances (from the maths of each scheme with an exact model, not fitted to outputs):
# ancestral DDPM steps use the posterior variance of q(x_s | x_t, x0) (Ho et al. 2020's sigma^2 = beta-tilde, exact
# only for a known x0), so every step misses c^2 Var[x0 | x_t] and the chain's variance falls short by O(1 / steps)
# (the Gaussian recursion gives 2.4% for v = 0.1, 300 steps from t* = 0.3; 4.5% for 500 steps from t = 1); DDIM's
# deterministic step shrinks the variance by cos^2 of the per-step angle (under 1% here); Euler-Maruyama is
# first order in the step (about 1-2%).
SAMPLERS: dict[str, list[SamplerCase]] = {
    "diffuse": [SamplerCase(_diffuse, stochastic=True, forward=True, t_name="t", allow_zero_t=True)],
    "reverse_sde": [SamplerCase(_rev_sde, stochastic=True, checkpoint=True, var_deficit=0.02, var_excess=0.02)],
    "ddpm_ancestral": [SamplerCase(_ancestral, stochastic=True, checkpoint=True, var_deficit=0.04)],
    "reverse_path": [SamplerCase(_path("sde"), stochastic=True, checkpoint=True, var_deficit=0.02, var_excess=0.02),
                     SamplerCase(_path("ddpm"), stochastic=True, checkpoint=True, var_deficit=0.04)],
    "ddim": [SamplerCase(_ddim(0.0), stochastic=False, checkpoint=True, var_deficit=0.02),
             SamplerCase(_ddim(1.0), stochastic=True, checkpoint=True, var_deficit=0.04)],
    "sample": [SamplerCase(_sample("sde"), stochastic=True, from_noise=True, t_star=1.0, steps=400,
                           var_deficit=0.02, var_excess=0.03),
               SamplerCase(_sample("ddpm"), stochastic=True, from_noise=True, t_star=1.0, steps=500,
                           var_deficit=0.08, data=(_M_IN, _V_IN))],  # clips x0 to [-1, 1]: data inside
}

SCHED_IDS = sorted(SCHEDULES)
SAMPLER_VARIANTS = [(name, i) for name in sorted(SAMPLERS) for i in range(len(SAMPLERS[name]))]
SAMPLER_IDS = [f"{n}-{i}" for n, i in SAMPLER_VARIANTS]


# --------------------------------------------------------------------------- completeness
def _exported():
    objs = {n: getattr(D, n) for n in D.__all__}
    schedules = {n for n, o in objs.items()
                 if inspect.isclass(o) and all(callable(getattr(o, a, None)) for a in ("alpha", "std", "beta"))}
    samplers = {n for n, o in objs.items() if inspect.isfunction(o)
                and {"schedule", "generator"} <= set(inspect.signature(o).parameters)}
    return schedules, samplers


def test_every_schedule_has_a_case():
    found = _exported()[0]
    assert found == set(SCHEDULES), f"schedules without a case: {sorted(found - set(SCHEDULES))}; " \
                                    f"cases without a schedule: {sorted(set(SCHEDULES) - found)}"


def test_every_sampler_has_a_case():
    found = _exported()[1]
    assert found == set(SAMPLERS), f"samplers without a case: {sorted(found - set(SAMPLERS))}; " \
                                   f"cases without a sampler: {sorted(set(SAMPLERS) - found)}"


def test_named_schedules():
    for name, cls in NAMED.items():
        assert type(D.get_schedule(name)).__name__ == cls
    with pytest.raises(ValueError, match="vp"):
        D.get_schedule("cosine-typo")


# --------------------------------------------------------------------------- schedules
@pytest.mark.parametrize("name", SCHED_IDS)
def test_schedule_is_variance_preserving_and_monotone(name):
    s = SCHEDULES[name].make()
    t = torch.linspace(0, 1, 2001, dtype=torch.float64)
    a, sd, b = s.alpha(t), s.std(t), s.beta(t)
    assert torch.allclose(a * a + sd * sd, torch.ones_like(t), atol=1e-12), "alpha^2 + std^2 != 1"
    assert float(a[0]) == 1.0 and float(sd[0]) == 0.0
    assert bool((a[1:] < a[:-1]).all()), "alpha not strictly decreasing"
    assert bool((sd[1:] > sd[:-1]).all()), "std not strictly increasing"
    assert bool((a > 0).all()) and bool((b > 0).all()) and bool(torch.isfinite(b).all())
    assert float(s.t_max) == 1.0
    for dt in (torch.float32, torch.float64):
        tt = torch.tensor([0.1, 0.5], dtype=dt)
        assert s.alpha(tt).dtype == dt and s.std(tt).dtype == dt, f"{name}: dtype {dt} not kept"
    json_ok = s.describe()
    assert isinstance(json_ok, dict) and json_ok.get("type")


@pytest.mark.parametrize("name", SCHED_IDS)
def test_schedule_closed_form(name):
    case = SCHEDULES[name]
    s = case.make()
    for t in case.grid:
        got = float(s.alpha(torch.tensor(t, dtype=torch.float64)))
        assert got == pytest.approx(case.closed_form(t), rel=1e-9, abs=1e-12), f"{name}: alpha({t})"
        assert float(s.alpha(t)) == pytest.approx(got, rel=1e-12), "float and tensor times disagree"


@pytest.mark.parametrize("name", SCHED_IDS)
def test_schedule_beta_matches_alpha(name):
    case = SCHEDULES[name]
    s = case.make()
    if case.discrete_steps is None:  # d log alpha / dt = -beta / 2 (VP SDE)
        t = torch.linspace(0.01, 0.99, 99, dtype=torch.float64)
        h = 1e-6
        dlog = (torch.log(s.alpha(t + h)) - torch.log(s.alpha(t - h))) / (2 * h)
        assert torch.allclose(dlog, -0.5 * s.beta(t), rtol=1e-6, atol=1e-8)
    else:  # alpha(n/N)^2 / alpha((n-1)/N)^2 = 1 - beta_n, with beta(t) = N beta_n inside step n
        n_steps = case.discrete_steps
        n = torch.arange(1, n_steps + 1, dtype=torch.float64)
        ratio = (s.alpha(n / n_steps) / s.alpha((n - 1) / n_steps)) ** 2
        mid = (n - 0.5) / n_steps
        assert torch.allclose(ratio, 1 - s.beta(mid) / n_steps, rtol=0, atol=1e-12)


def test_vp_inverse_time():
    s = D.VPSchedule()
    for ab in (0.99, 0.5, 0.1, 1e-3):
        t = s.t_of_alpha_bar(ab)
        assert float(s.alpha(t)) ** 2 == pytest.approx(ab, rel=1e-9)
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match=r"\(0, 1\]"):
            s.t_of_alpha_bar(bad)


def test_schedule_configs_refuse_bad_parameters():
    with pytest.raises(ValueError, match="beta_max"):
        D.VPSDEConfig(beta_min=5.0, beta_max=1.0)
    with pytest.raises(ValueError, match="beta_end"):
        D.DDPMConfig(beta_start=1e-4, beta_end=1.5)
    with pytest.raises(ValueError, match="beta_min"):
        D.VPSDEConfig(beta_min=-1.0)


# --------------------------------------------------------------------------- samplers
def _model(sch, data=None):
    m, v = data or (_M, _V)
    return D.GaussianScoreModel(m, v, sch)


def _marginal(sch_name: str, t: float, n: int, g: torch.Generator, m: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """n exact draws of x_t for data N(m, v): N(alpha m, alpha^2 v + 1 - alpha^2), alpha from the closed form."""
    a = SCHEDULES[sch_name].closed_form(t)
    return a * m + torch.sqrt(a * a * v + (1 - a * a)) * torch.randn(n, *m.shape, generator=g)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("sched", SCHED_IDS)
@pytest.mark.parametrize("name, i", SAMPLER_VARIANTS, ids=SAMPLER_IDS)
def test_sampler_shape_dtype_and_generator(sched, name, i):
    case, s = SAMPLERS[name][i], SCHEDULES[sched].make()
    model = _model(s)
    x = torch.randn(5, *_M.shape, generator=_gen(0)) * 0.5
    x0 = x.clone()
    torch.manual_seed(99)
    before = torch.get_rng_state()
    with torch.no_grad():
        a = case.run(model, s, x, 0.2, 4, _gen(1))
        b = case.run(model, s, x, 0.2, 4, _gen(1))
        c = case.run(model, s, x, 0.2, 4, _gen(2))
    assert torch.equal(torch.get_rng_state(), before), f"{name}: drew from torch's global RNG despite a generator"
    assert torch.equal(x, x0), f"{name}: modified its input"
    assert a.shape == x.shape and a.dtype == x.dtype and bool(torch.isfinite(a).all()), (a.shape, a.dtype)
    assert torch.equal(a, b), f"{name}: same generator, different outputs"
    assert torch.equal(a, c) != case.stochastic, f"{name}: stochastic={case.stochastic} but seeds " + \
        ("differ" if not torch.equal(a, c) else "agree")


@pytest.mark.parametrize("sched", SCHED_IDS)
@pytest.mark.parametrize("name, i", [v for v in SAMPLER_VARIANTS if SAMPLERS[v[0]][v[1]].checkpoint],
                         ids=[s for s, v in zip(SAMPLER_IDS, SAMPLER_VARIANTS) if SAMPLERS[v[0]][v[1]].checkpoint])
def test_sampler_checkpoint_same_output_and_gradient(sched, name, i):
    case, s = SAMPLERS[name][i], SCHEDULES[sched].make()
    model = _model(s)
    outs, grads = [], []
    for ck in (False, True):
        x = (torch.randn(3, *_M.shape, generator=_gen(0)) * 0.5).requires_grad_(True)
        y = case.run(model, s, x, 0.2, 5, _gen(1), ck)
        (y * torch.linspace(-1, 1, y[0].numel()).view(1, *y.shape[1:])).sum().backward()
        outs.append(y.detach())
        grads.append(x.grad)
    assert torch.allclose(outs[0], outs[1], atol=1e-6), f"{name}: checkpointing changed the output"
    assert bool(torch.isfinite(grads[0]).all()) and float(grads[0].abs().sum()) > 0
    assert torch.allclose(grads[0], grads[1], atol=1e-6), f"{name}: checkpointing changed the gradient"


@pytest.mark.parametrize("name, i", SAMPLER_VARIANTS, ids=SAMPLER_IDS)
def test_sampler_refuses_times_outside_its_range(name, i):
    case, s = SAMPLERS[name][i], D.VPSchedule()
    model = _model(s)
    x = torch.zeros(2, *_M.shape)
    interval = r"\[0, 1\]" if case.allow_zero_t else r"\(0, 1\]"
    bad = [1.5, -0.1, float("nan")] + ([] if case.allow_zero_t else [0.0])
    for t in bad:
        with pytest.raises(ValueError, match=interval):
            case.run(model, s, x, t, 3, _gen(0))
    if not case.from_noise:  # per-sample times: one bad entry is enough
        with pytest.raises(ValueError, match=interval):
            case.run(model, s, x, torch.tensor([0.2, 1.2]), 3, _gen(0))
        with pytest.raises(ValueError, match="shape"):
            case.run(model, s, x, torch.tensor([0.2, 0.2, 0.2]), 3, _gen(0))
    if case.allow_zero_t:
        assert torch.equal(case.run(model, s, x + 0.3, 0.0, 3, _gen(0)), x + 0.3), "t = 0 must be the identity"


N_KNOWN = 10_000  # draws per pixel; 4 pixels with different (m, v)


@pytest.mark.parametrize("sched", SCHED_IDS)
@pytest.mark.parametrize("name, i", SAMPLER_VARIANTS, ids=SAMPLER_IDS)
def test_sampler_known_answer_for_gaussian_data(sched, name, i):
    """Exact eps-model of N(m, v): outputs are N(m, v) (forward diffusion: N(alpha m, alpha^2 v + std^2))."""
    case, s = SAMPLERS[name][i], SCHEDULES[sched].make()
    m, v = case.data or (_M, _V)
    model = _model(s, (m, v))
    g = _gen(7)
    t = case.t_star
    if case.forward:
        x_in = m + torch.sqrt(v) * torch.randn(N_KNOWN, *m.shape, generator=g)
        a = SCHEDULES[sched].closed_form(t)
        mean, var = a * m, a * a * v + (1 - a * a)
    else:
        x_in = _marginal(sched, t, N_KNOWN, g, m, v) if not case.from_noise else torch.zeros(N_KNOWN, *m.shape)
        mean, var = m, v
    with torch.no_grad():
        out = case.run(model, s, x_in, t, case.steps, g)
    got_mean, got_var = out.mean(0), out.var(0)
    se_mean = torch.sqrt(var / N_KNOWN)
    se_ratio = math.sqrt(2.0 / (N_KNOWN - 1))
    assert bool(((got_mean - mean).abs() <= 5 * se_mean + 2e-3).all()), \
        f"{name}: mean {got_mean.flatten().tolist()} vs {mean.flatten().tolist()}"
    ratio = got_var / var
    lo, hi = 1 - 5 * se_ratio - case.var_deficit, 1 + 5 * se_ratio + case.var_excess
    assert bool(((ratio >= lo) & (ratio <= hi)).all()), \
        f"{name}: variance ratio {ratio.flatten().tolist()} outside [{lo:.3f}, {hi:.3f}]"
