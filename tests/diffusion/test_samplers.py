"""Samplers: Gaussian data with the exact score model, diffusers' schedulers, determinism, checkpointing."""

import math

import pytest
import torch

from advpure.diffusion import (
    DiscreteSchedule,
    GaussianScoreModel,
    VPSchedule,
    ddim,
    ddpm_ancestral,
    ddpm_timesteps,
    diffuse,
    reverse_sde,
    sample,
)

N = 4000
MU = torch.linspace(-0.6, 0.6, 16).view(1, 1, 4, 4)
VAR = torch.linspace(0.01, 0.1, 16).view(1, 1, 4, 4)


def _data(seed=0):
    g = torch.Generator().manual_seed(seed)
    return MU + VAR.sqrt() * torch.randn(N, 1, 4, 4, generator=g), g


def _check_gaussian(y, *, var_rtol=0.12):
    m, v = y.mean(0, keepdim=True), y.var(0, keepdim=True)
    se = (VAR / N).sqrt()
    assert float(((m - MU).abs() / se).max()) < 5.0, "sample mean off by more than 5 standard errors"
    # sampling s.e. of a variance is var*sqrt(2/N) = 2.2%; the rest is discretisation error
    assert float(((v - VAR).abs() / VAR).max()) < var_rtol


def test_diffuse_marginal():
    x0, g = _data()
    s = VPSchedule()
    xt = diffuse(x0, 0.5, s, g)
    a = float(s.alpha(0.5))
    se = ((a * a * VAR + 1 - a * a) / N).sqrt()
    assert float(((xt.mean(0, keepdim=True) - a * MU).abs() / se).max()) < 5
    assert torch.allclose(xt.var(0, keepdim=True), a * a * VAR + 1 - a * a, rtol=0.12)


@pytest.mark.parametrize("schedule", [VPSchedule(), DiscreteSchedule()], ids=["vp", "ddpm"])
def test_reverse_sde_recovers_gaussian(schedule):
    x0, g = _data()
    model = GaussianScoreModel(MU, VAR, schedule)
    xt = diffuse(x0, 0.3, schedule, g)
    y = reverse_sde(model, xt, schedule=schedule, t_start=0.3, dt=1e-3, generator=g)
    assert model.calls == 300
    _check_gaussian(y)


def test_reverse_sde_from_pure_noise():
    s = VPSchedule()
    model = GaussianScoreModel(MU, VAR, s)
    y = sample(model, (N, 1, 4, 4), schedule=s, n_steps=400, method="sde", generator=torch.Generator().manual_seed(1))
    _check_gaussian(y)


def test_ddpm_and_ddim_recover_gaussian():
    x0, g = _data()
    s = DiscreteSchedule()
    model = GaussianScoreModel(MU, VAR, s)
    xt = diffuse(x0, 0.3, s, g)
    _check_gaussian(ddpm_ancestral(model, xt, schedule=s, timesteps=ddpm_timesteps(0.3, 300), generator=g))
    _check_gaussian(ddim(model, xt, schedule=s, timesteps=ddpm_timesteps(0.3, 300), eta=0.0))
    _check_gaussian(ddim(model, xt, schedule=s, timesteps=ddpm_timesteps(0.3, 300), eta=1.0, generator=g))


@pytest.mark.parametrize("clip", [False, True])
def test_ddpm_chain_matches_diffusers(clip):
    """The exact DDPM chain x_20 -> x_0 equals diffusers' DDPMScheduler (same noise stream)."""
    from diffusers import DDPMScheduler

    s = DiscreteSchedule()
    model = GaussianScoreModel(MU, VAR, s)
    xt = diffuse(torch.zeros(8, 1, 4, 4), 0.02, s, torch.Generator().manual_seed(3))
    ours = ddpm_ancestral(model, xt, schedule=s, timesteps=ddpm_timesteps(0.02, 20),
                          generator=torch.Generator().manual_seed(5), clip_x0=clip)
    ref = DDPMScheduler(num_train_timesteps=1000, clip_sample=clip, variance_type="fixed_small")
    x, g = xt.clone(), torch.Generator().manual_seed(5)
    for k in range(19, -1, -1):  # diffusers index k has alphas_cumprod[k], i.e. t = (k+1)/1000
        eps = model(x, torch.full((8,), (k + 1) / 1000))
        x = ref.step(eps, k, x, generator=g).prev_sample
        if k == 0:  # diffusers draws no noise at its last step, ours draws (and scales it by 0)
            pass
    assert torch.allclose(ours, x, atol=1e-4)


def test_ddim_matches_diffusers():
    from diffusers import DDIMScheduler

    s = DiscreteSchedule()
    model = GaussianScoreModel(MU, VAR, s)
    ref = DDIMScheduler(num_train_timesteps=1000, clip_sample=False, set_alpha_to_one=True)
    ref.set_timesteps(10)
    ks = [int(k) for k in ref.timesteps]  # 900, 800, ..., 0
    xt = torch.randn(8, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    times = [(k + 1) / 1000 for k in ks] + [0.0]
    ours = ddim(model, xt, schedule=s, timesteps=times, eta=0.0)
    x = xt.clone()
    for k in ks:
        x = ref.step(model(x, torch.full((8,), (k + 1) / 1000)), k, x, eta=0.0).prev_sample
    assert torch.allclose(ours, x, atol=1e-4)


def test_per_sample_time_grid():
    """Sample 0 of a batch with per-sample t_start equals the same sample run with scalar t_start."""
    s = VPSchedule()
    model = GaussianScoreModel(MU, VAR, s)
    x = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    a = reverse_sde(model, x, schedule=s, t_start=torch.tensor([0.1, 0.3, 0.05]), n_steps=20,
                    generator=torch.Generator().manual_seed(1))
    for i, ti in enumerate((0.1, 0.3, 0.05)):
        b = reverse_sde(model, x, schedule=s, t_start=ti, n_steps=20, generator=torch.Generator().manual_seed(1))
        assert torch.allclose(a[i], b[i], atol=1e-6)
    times = ddpm_timesteps(torch.tensor([0.1, 0.3, 0.05]), 10)
    c = ddim(model, x, schedule=s, timesteps=times)
    d = ddim(model, x[1:2], schedule=s, timesteps=ddpm_timesteps(0.3, 10))
    assert torch.allclose(c[1:2], d, atol=1e-6)


def test_determinism_with_generator():
    s = VPSchedule()
    model = GaussianScoreModel(MU, VAR, s)
    x = torch.randn(4, 1, 4, 4)
    run = lambda seed: reverse_sde(model, x, schedule=s, t_start=0.1, n_steps=10,  # noqa: E731
                                   generator=torch.Generator().manual_seed(seed))
    assert torch.equal(run(7), run(7))
    assert not torch.allclose(run(7), run(8))


class _TinyNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(2, 1, 3, padding=1)

    def forward(self, x, t):
        return torch.tanh(self.conv(torch.cat([x, t.view(-1, 1, 1, 1).expand_as(x)], 1)))


@pytest.mark.parametrize("which", ["sde", "ddpm", "ddim"])
def test_checkpointed_gradients_equal(which):
    s = VPSchedule()
    net = _TinyNet()
    x0 = torch.rand(2, 1, 4, 4)

    def grad(ckpt):
        x = x0.clone().requires_grad_(True)
        g = torch.Generator().manual_seed(0)
        if which == "sde":
            y = reverse_sde(net, x, schedule=s, t_start=0.2, n_steps=8, generator=g, checkpoint=ckpt)
        elif which == "ddpm":
            y = ddpm_ancestral(net, x, schedule=s, timesteps=ddpm_timesteps(0.2, 8), generator=g, checkpoint=ckpt)
        else:
            y = ddim(net, x, schedule=s, timesteps=ddpm_timesteps(0.2, 8), eta=0.5, generator=g, checkpoint=ckpt)
        (y ** 2).sum().backward()
        return y.detach(), x.grad

    y1, g1 = grad(False)
    y2, g2 = grad(True)
    assert torch.equal(y1, y2)
    assert g1.abs().sum() > 0 and torch.isfinite(g1).all()
    assert torch.allclose(g1, g2, atol=1e-6)


def test_bad_inputs():
    s = VPSchedule()
    model = GaussianScoreModel(MU, VAR, s)
    x = torch.randn(2, 1, 4, 4)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        reverse_sde(model, x, schedule=s, t_start=0.0)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        reverse_sde(model, x, schedule=s, t_start=1.5)
    with pytest.raises(ValueError, match="n_steps"):
        reverse_sde(model, x, schedule=s, t_start=0.1, n_steps=0)
    with pytest.raises(ValueError, match="shape"):
        reverse_sde(model, x, schedule=s, t_start=torch.tensor([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="decreasing"):
        ddpm_ancestral(model, x, schedule=s, timesteps=[0.1, 0.2, 0.0])
    with pytest.raises(ValueError, match="eta"):
        ddim(model, x, schedule=s, timesteps=[0.1, 0.0], eta=-1)
    with pytest.raises(ValueError, match="dt"):
        reverse_sde(model, x, schedule=s, t_start=0.1, dt=0)
    assert math.isfinite(float(reverse_sde(model, x, schedule=s, t_start=1.0, n_steps=3).sum()))
