"""Consistency models: parameterisation, Karras sigmas, VP <-> VE conversion, CD/CT losses, trainer."""

from __future__ import annotations

import math

import pytest
import torch

from advpure.diffusion.consistency import (
    SIGMA_MAX,
    SIGMA_MIN,
    ConsistencyModel,
    GaussianConsistencyFunction,
    build_consistency_model,
    cd_loss,
    ct_loss,
    ct_schedule,
    distance,
    karras_sigmas,
    load_consistency_model,
    pf_ode_step,
    scalings,
    vp_denoiser,
    vp_t_of_sigma,
)
from advpure.diffusion.models import GaussianScoreModel
from advpure.diffusion.schedule import VPSchedule

TINY = dict(sample_size=8, in_channels=1, out_channels=1, block_out_channels=[8, 8],
            down_block_types=["DownBlock2D", "DownBlock2D"], up_block_types=["UpBlock2D", "UpBlock2D"],
            layers_per_block=1, norm_num_groups=4)


@pytest.fixture(scope="module")
def gaussian():
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(1, 4, 4, generator=g) * 0.3
    var = torch.rand(1, 4, 4, generator=g) * 0.3 + 0.05
    x0 = mu + var.sqrt() * torch.randn(512, 1, 4, 4, generator=g)
    return mu, var, x0


def test_scalings_boundary_values():
    s = torch.tensor([SIGMA_MIN, 1.0, SIGMA_MAX])
    c_skip, c_out, c_in = scalings(s)
    assert c_skip[0] == 1.0 and c_out[0] == 0.0
    # closed forms at sigma = 1 (sigma_data = 0.5)
    assert math.isclose(float(c_skip[1]), 0.25 / ((1 - SIGMA_MIN) ** 2 + 0.25), rel_tol=1e-6)
    assert math.isclose(float(c_out[1]), 0.5 * (1 - SIGMA_MIN) / math.sqrt(1.25), rel_tol=1e-6)
    assert math.isclose(float(c_in[2]), 1 / math.sqrt(6400.25), rel_tol=1e-6)


def test_boundary_condition_f_of_sigma_min_is_identity():
    torch.manual_seed(0)
    cm = build_consistency_model(TINY).eval()
    x = torch.randn(4, 1, 8, 8) * 3
    with torch.no_grad():
        assert torch.equal(cm(x, SIGMA_MIN), x)
        assert not torch.allclose(cm(x, 1.0), x)  # the network does act away from sigma_min


def test_model_rejects_other_image_size():
    cm = build_consistency_model(TINY)
    with pytest.raises(ValueError, match="1x8x8"):
        cm(torch.zeros(2, 1, 16, 16), 1.0)


def test_karras_sigmas_closed_form():
    s = karras_sigmas(18)
    assert s.shape == (18,) and float(s[0]) == pytest.approx(SIGMA_MIN) and float(s[-1]) == pytest.approx(SIGMA_MAX)
    assert bool((s[1:] > s[:-1]).all())
    i = 5
    ref = (SIGMA_MIN ** (1 / 7) + i / 17 * (SIGMA_MAX ** (1 / 7) - SIGMA_MIN ** (1 / 7))) ** 7
    assert float(s[i]) == pytest.approx(ref, rel=1e-5)
    with pytest.raises(ValueError):
        karras_sigmas(1)


def test_vp_t_of_sigma_inverts_the_schedule():
    sched = VPSchedule()
    t = torch.tensor([1e-4, 0.01, 0.3, 0.9, 1.0], dtype=torch.float64)
    sigma = sched.std(t) / sched.alpha(t)
    assert torch.allclose(vp_t_of_sigma(sigma), t, rtol=1e-6, atol=1e-9)
    # sigma_max = 80 lies inside t <= 1
    assert 0.9 < float(vp_t_of_sigma(torch.tensor(80.0))) < 1.0


def test_vp_denoiser_of_exact_gaussian_model_is_the_posterior_mean(gaussian):
    mu, var, x0 = gaussian
    eps = GaussianScoreModel(mu, var)
    s = torch.full((x0.shape[0],), 2.0)
    x = x0 + 2.0 * torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    ref = mu + var / (var + 4.0) * (x - mu)
    assert torch.allclose(vp_denoiser(eps, x, s), ref, atol=1e-5)


def test_gaussian_consistency_function_solves_the_pf_ode(gaussian):
    """Integrating the PF ODE with many Heun steps lands where the closed form says."""
    mu, var, x0 = gaussian
    eps = GaussianScoreModel(mu, var)
    f = GaussianConsistencyFunction(mu, var)
    x = x0[:64] + 5.0 * torch.randn(64, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    sig = karras_sigmas(400, sigma_max=5.0)
    z = x.clone()
    for i in range(len(sig) - 1, 0, -1):
        z = pf_ode_step(lambda a, b: vp_denoiser(eps, a, b), z, sig[i].expand(64), sig[i - 1].expand(64))
    assert torch.allclose(z, f(x, 5.0), atol=1e-4)
    assert torch.equal(f(x, SIGMA_MIN), x) or torch.allclose(f(x, SIGMA_MIN), x, atol=1e-7)


def test_cd_loss_vanishes_for_exact_consistency_function(gaussian):
    mu, var, x0 = gaussian
    eps = GaussianScoreModel(mu, var)

    def den(x, s):
        return vp_denoiser(eps, x, s)

    exact = GaussianConsistencyFunction(mu, var)
    wrong = GaussianConsistencyFunction(mu, 2 * var)
    g = torch.Generator().manual_seed(3)
    losses = {}
    for n_steps in (18, 40, 160):
        s = karras_sigmas(n_steps)
        n = torch.randint(0, n_steps - 1, (x0.shape[0],), generator=g)
        z = torch.randn(x0.shape, generator=g)
        losses[n_steps] = (float(cd_loss(exact, exact, den, x0, n, s, z).mean()),
                           float(cd_loss(wrong, wrong, den, x0, n, s, z).mean()))
    assert losses[18][0] < losses[18][1] / 20
    assert losses[160][0] < 1e-9 < losses[160][1]
    # Heun's local error is O(h^3): the squared error falls much faster than the mismatch's
    assert losses[40][0] / losses[18][0] < 0.05


def test_ct_loss_and_metrics():
    x = torch.zeros(3, 1, 4, 4)
    ident = lambda a, s: a  # noqa: E731
    s = karras_sigmas(10)
    n = torch.tensor([0, 4, 8])
    z = torch.ones_like(x)
    # identity "consistency function": the pair differs by (sigma_{n+1} - sigma_n) z
    d = (s[n + 1] - s[n])
    assert torch.allclose(ct_loss(ident, ident, x, n, s, z, metric="l2"), d ** 2, rtol=1e-5)
    c = 0.00054 * 4
    assert torch.allclose(ct_loss(ident, ident, x, n, s, z), torch.sqrt(16 * d ** 2 + c * c) - c, rtol=1e-5)
    with pytest.raises(ValueError, match="metric"):
        distance(x, x, "l1")


def test_ct_schedule_endpoints():
    assert ct_schedule(0, 100) == (2, pytest.approx(0.9))
    n_end, mu_end = ct_schedule(100, 100)
    assert n_end == 151 and mu_end == pytest.approx(math.exp(2 * math.log(0.9) / 151))


def test_trainer_ct_and_cd_roundtrip_and_resume(tmp_path):
    from advpure.checkpoint import save_weights
    from advpure.diffusion.models import build_unet
    from advpure.train.consistency import train_consistency

    torch.manual_seed(0)
    teacher = tmp_path / "teacher.safetensors"
    save_weights(build_unet(TINY).state_dict(), teacher, {"kind": "diffusion", "unet_config": TINY})
    r = train_consistency(mode="cd", teacher=str(teacher), steps=2, batch_size=4, out=str(tmp_path), preset=None,
                          progress=False, name="cd")
    assert (tmp_path / "cd-samples.png").is_file() and r["sidecar"]["mode"] == "cd"
    cm, meta = load_consistency_model(r["weights"])
    assert isinstance(cm, ConsistencyModel) and meta["sigma_max"] == SIGMA_MAX
    with pytest.raises(ValueError, match="requested"):
        load_consistency_model(r["weights"], image_shape=(3, 32, 32))
    r1 = train_consistency(mode="ct", steps=2, batch_size=4, out=str(tmp_path), progress=False, name="ct")
    r2 = train_consistency(mode="ct", steps=3, batch_size=4, out=str(tmp_path), progress=False, name="ct", resume=True)
    assert r1["steps"] == 2 and r2["steps"] == 3
    with pytest.raises(ValueError, match="teacher"):
        train_consistency(mode="cd", steps=1, out=str(tmp_path))
    with pytest.raises(FileNotFoundError):
        load_consistency_model(tmp_path / "missing.safetensors")
