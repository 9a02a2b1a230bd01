"""Schedules against closed forms, numerical integration and diffusers' DDPMScheduler."""

import math

import pytest
import torch
from scipy.integrate import quad

from advpure.diffusion.schedule import DDPMConfig, DiscreteSchedule, VPSchedule, VPSDEConfig, eps_to_score, score_to_eps


def test_vp_alpha_matches_integral_of_beta():
    s = VPSchedule()
    for t in (0.0, 0.01, 0.1, 0.3, 0.7, 1.0):
        integral, _ = quad(lambda u: 0.1 + u * (20 - 0.1), 0, t)
        assert float(s.alpha(t)) == pytest.approx(math.exp(-0.5 * integral), rel=1e-9)
        assert float(s.alpha(t) ** 2 + s.std(t) ** 2) == pytest.approx(1.0, abs=1e-12)
        assert float(s.beta(t)) == pytest.approx(0.1 + t * 19.9)


def test_vp_inverse_time():
    s = VPSchedule()
    for t in (0.05, 0.1, 0.5, 0.9):
        assert s.t_of_alpha_bar(float(s.alpha(t) ** 2)) == pytest.approx(t, rel=1e-9)


def test_discrete_matches_diffusers_and_continuous():
    from diffusers import DDPMScheduler

    ds = DiscreteSchedule()
    ref = DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")
    assert torch.allclose(ds.alphas_cumprod.float(), ref.alphas_cumprod, rtol=1e-5)
    vp = VPSchedule()
    n = torch.arange(1, 1001, dtype=torch.float64)
    log_disc = torch.log(ds.alphas_cumprod)
    log_cont = 2 * vp.log_alpha(n / 1000)
    # second-order discretisation error sum(beta_i^2)/2 <= 0.07 in log alpha_bar over the full range
    assert float((log_disc - log_cont).abs().max()) < 0.07
    # and well under 1% in alpha_bar for the purification range t <= 0.3
    assert float((log_disc[:300] - log_cont[:300]).abs().max()) < 0.01
    # DiscreteSchedule's own continuous view is exact on the grid: alpha(n/N)^2 = alphas_cumprod[n-1]
    assert torch.allclose(ds.alpha(n / 1000) ** 2, ds.alphas_cumprod, rtol=1e-10)
    assert float(ds.alpha(0.0)) == 1.0
    assert int(ds.step_of_t(torch.tensor(0.1))) == 100 and float(ds.t_of_step(100)) == pytest.approx(0.1)
    assert DDPMConfig().to_vp() == VPSDEConfig(beta_min=0.1, beta_max=20.0)


def test_eps_score_roundtrip_and_gaussian_identity():
    # for x_t = alpha x0 + std eps with x0 fixed, score of N(alpha x0, std^2) is -(x_t - alpha x0)/std^2 = -eps/std
    g = torch.Generator().manual_seed(0)
    eps = torch.randn(4, 1, 3, 3, generator=g)
    std = torch.tensor([0.1, 0.5, 0.9, 0.99])
    x0 = torch.randn(4, 1, 3, 3, generator=g)
    alpha = torch.sqrt(1 - std**2)
    xt = alpha.view(-1, 1, 1, 1) * x0 + std.view(-1, 1, 1, 1) * eps
    score = -(xt - alpha.view(-1, 1, 1, 1) * x0) / std.view(-1, 1, 1, 1) ** 2
    assert torch.allclose(eps_to_score(eps, std), score, atol=1e-5)
    assert torch.allclose(score_to_eps(score, std), eps, atol=1e-5)


def test_bad_configs():
    with pytest.raises(ValueError, match="beta_max"):
        VPSDEConfig(beta_min=1.0, beta_max=0.5)
    with pytest.raises(ValueError, match="beta_min"):
        VPSDEConfig(beta_min=-1.0)
    with pytest.raises(ValueError, match="num_train_timesteps"):
        DDPMConfig(num_train_timesteps=1)
    with pytest.raises(ValueError, match="beta_start"):
        DDPMConfig(beta_start=0.1, beta_end=0.01)
