"""Randomized smoothing (Cohen et al. 2019) and the one-shot denoiser (Carlini et al. 2023)."""

from __future__ import annotations

import math
from statistics import NormalDist

import pytest
import torch
import torch.nn as nn

from advpure.defenses.base import DefendedClassifier
from advpure.defenses.one_shot import OneShotDenoiser
from advpure.eval.certify import (
    Certification,
    certified_accuracy,
    certify,
    clopper_pearson_lower,
    min_samples_certify,
    min_samples_predict,
    predict,
)


class Constant(nn.Module):
    num_classes = 10

    def __init__(self, cls: int = 3) -> None:
        super().__init__()
        self.cls = cls

    def forward(self, x):
        out = torch.zeros(x.shape[0], self.num_classes)
        out[:, self.cls] = 1
        return out


class SignOfFirstPixel(nn.Module):
    """Class 1 if the first pixel > 0.5 else 0: at x = 0.5 the smoothed votes split 50/50."""

    num_classes = 2

    def forward(self, x):
        z = x.flatten(1)[:, 0] - 0.5
        return torch.stack([-z, z], dim=1)


class Linear2D(nn.Module):
    """f(x) = 1 iff w.x + b > 0 on 1x1x2 'images'; its smoothed classifier is known exactly."""

    num_classes = 2

    def __init__(self, w, b):
        super().__init__()
        self.w = torch.tensor(w, dtype=torch.float32)
        self.b = b

    def forward(self, x):
        z = x.flatten(1) @ self.w + self.b
        return torch.stack([-z, z], dim=1)


def test_constant_classifier_radius_matches_closed_form():
    x = torch.full((2, 1, 4, 4), 0.5)
    n, alpha, sigma = 1000, 0.001, 0.25
    res = certify(Constant(3), x, sigma=sigma, n0=10, n=n, alpha=alpha, batch_size=300,
                  generator=torch.Generator().manual_seed(0))
    p_low = alpha ** (1 / n)  # Beta(alpha; n, 1) quantile
    assert p_low == pytest.approx(0.9931160484209338, abs=1e-12)
    radius = sigma * NormalDist().inv_cdf(p_low)
    assert radius == pytest.approx(0.6158, abs=1e-4)  # Phi^-1(0.99312) = 2.4633
    assert res.prediction.tolist() == [3, 3]
    assert res.counts.tolist() == [n, n]
    torch.testing.assert_close(res.p_lower, torch.full((2,), p_low, dtype=torch.float64), rtol=0, atol=1e-10)
    torch.testing.assert_close(res.radius, torch.full((2,), radius, dtype=torch.float64), rtol=0, atol=1e-9)
    assert predict(Constant(3), x, sigma=sigma, n=100, alpha=alpha).tolist() == [3, 3]


def test_clopper_pearson_against_scipy_binomtest():
    stats = pytest.importorskip("scipy.stats")
    for k, n in ((0, 50), (37, 50), (990, 1000), (1000, 1000)):
        lo = clopper_pearson_lower(k, n, 0.01)
        if k:  # a two-sided 98% exact interval has the one-sided 99% lower bound as its lower end
            ref = stats.binomtest(k, n).proportion_ci(confidence_level=0.98, method="exact").low
            assert lo == pytest.approx(ref, rel=1e-9)
        else:
            assert lo == 0.0


def test_split_votes_abstain():
    x = torch.full((1, 1, 2, 2), 0.5)
    g = torch.Generator().manual_seed(1)
    res = certify(SignOfFirstPixel(), x, sigma=0.5, n0=50, n=2000, alpha=0.001, batch_size=500, generator=g)
    assert res.prediction.tolist() == [-1] and res.radius.tolist() == [0.0]
    assert 0.4 < float(res.counts[0]) / 2000 < 0.6 and float(res.p_lower[0]) < 0.5
    assert predict(SignOfFirstPixel(), x, sigma=0.5, n=2000, alpha=0.001, generator=g).tolist() == [-1]


def test_linear_classifier_radius_below_true_distance():
    """For f(x) = [w.x + b > 0], g(x) = f(x) and pA = Phi(|w.x + b| / (sigma |w|)) (Cohen et al., Sec. 3.1),
    so the exact certified radius is the distance to the hyperplane; the estimate must not exceed it."""
    w, b = [0.6, -0.8], 0.05  # |w| = 1
    model = Linear2D(w, b)
    pts = torch.tensor([[0.5, 0.5], [0.7, 0.4], [0.3, 0.35], [0.9, 0.1], [0.2, 0.8]])
    x = pts.view(-1, 1, 1, 2)
    sigma = 0.25
    res = certify(model, x, sigma=sigma, n0=100, n=20000, alpha=0.001, batch_size=5000,
                  generator=torch.Generator().manual_seed(0))
    margin = pts @ torch.tensor(w) + b
    for i in range(len(pts)):
        dist = abs(float(margin[i]))
        p_a = NormalDist().cdf(dist / sigma)
        if p_a < 0.52:  # too close to the boundary to certify with n = 20000
            continue
        assert int(res.prediction[i]) == int(margin[i] > 0)
        assert float(res.radius[i]) <= dist + 1e-9
        assert float(res.radius[i]) > dist - 0.08  # and close to it with 20000 samples
    assert (res.prediction >= 0).sum() >= 3


def test_minimum_n_and_bad_input():
    assert min_samples_certify(0.001) == 10  # 0.001^(1/10) = 0.501 > 0.5, 0.001^(1/9) = 0.464
    assert 0.001 ** (1 / 10) > 0.5 > 0.001 ** (1 / 9)
    assert min_samples_predict(0.001) == 11  # 2 * 2^-11 <= 0.001 < 2 * 2^-10
    x = torch.full((1, 1, 2, 2), 0.5)
    # n at the minimum certifies a constant classifier, one less cannot
    res = certify(Constant(1), x, sigma=0.5, n0=1, n=10, alpha=0.001)
    assert res.prediction.tolist() == [1] and float(res.radius[0]) > 0
    with pytest.raises(ValueError, match="need n >= 10"):
        certify(Constant(1), x, sigma=0.5, n0=1, n=9, alpha=0.001)
    with pytest.raises(ValueError, match="need n >= 11"):
        predict(Constant(1), x, sigma=0.5, n=10, alpha=0.001)
    with pytest.raises(ValueError, match="sigma"):
        certify(Constant(1), x, sigma=0.0, n0=1, n=100)
    with pytest.raises(ValueError, match="sigma"):
        certify(Constant(1), x, sigma=-0.25, n0=1, n=100)
    with pytest.raises(ValueError, match="n0"):
        certify(Constant(1), x, sigma=0.25, n0=0, n=100)
    with pytest.raises(ValueError, match="alpha"):
        certify(Constant(1), x, sigma=0.25, n0=1, n=100, alpha=1.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        certify(Constant(1), x + 1, sigma=0.25, n0=1, n=100)
    with pytest.raises(ValueError, match="num_classes"):
        certify(nn.Identity(), x, sigma=0.25, n0=1, n=100)


def test_certified_accuracy_by_hand():
    res = Certification(torch.tensor([0, 1, -1, 2]), torch.tensor([0.3, 0.9, 0.0, 0.6], dtype=torch.float64),
                        torch.zeros(4, dtype=torch.float64), torch.zeros(4, dtype=torch.long), 0.25, 1, 10, 0.001)
    labels = torch.tensor([0, 1, 2, 0])
    acc = certified_accuracy(res, labels, radii=(0, 0.25, 0.5, 1.0))
    assert acc == {0.0: 0.5, 0.25: 0.5, 0.5: 0.25, 1.0: 0.0}
    with pytest.raises(ValueError, match="shape"):
        certified_accuracy(res, labels[:3])


def test_real_classifier_under_noise_validation_restored(digits_classifier, digits_data):
    x, y = digits_data[1].batch(slice(0, 4))
    res = certify(digits_classifier, x, sigma=0.12, n0=20, n=200, alpha=0.001, batch_size=200,
                  generator=torch.Generator().manual_seed(0))
    assert res.prediction.shape == (4,) and (res.radius >= 0).all()
    assert digits_classifier.validate_inputs  # switched back on after sampling
    assert certified_accuracy(res, y)[0.0] >= 0.5


# --------------------------------------------------------------------------- one-shot denoiser
class VPSchedule:
    """Closed-form VP-SDE schedule (Song et al. 2021): beta(t) = b0 + t (b1 - b0), t in [0, 1]."""

    b0, b1 = 0.1, 20.0

    def alpha(self, t):
        return torch.exp(-0.25 * t ** 2 * (self.b1 - self.b0) - 0.5 * t * self.b0)

    def std(self, t):
        return torch.sqrt(1 - self.alpha(t) ** 2)

    def t_for_ratio(self, r):
        # alpha^2 = 1 / (1 + r^2)  =>  0.5 (b1 - b0) t^2 + b0 t - log(1 + r^2) = 0
        a, b, c = 0.5 * (self.b1 - self.b0), self.b0, -math.log1p(r * r)
        return (-b + math.sqrt(b * b - 4 * a * c)) / (2 * a)


class OracleEps(nn.Module):
    """eps_theta that knows the clean image: eps = (x_t - alpha x0) / std. Records its inputs."""

    def __init__(self, clean, schedule):
        super().__init__()
        self.clean, self.schedule, self.calls = clean, schedule, []

    def forward(self, x_t, t):
        self.calls.append((x_t.clone(), t.clone()))
        a = self.schedule.alpha(t).view(-1, 1, 1, 1)
        s = self.schedule.std(t).view(-1, 1, 1, 1)
        return (x_t - a * (2 * self.clean - 1)) / s


@pytest.mark.parametrize("sigma", [0.12, 0.25, 0.5, 1.0])
def test_one_shot_timestep_matches_closed_form(sigma):
    sch = VPSchedule()
    den = OneShotDenoiser(nn.Identity(), sch, sigma=sigma)
    assert den.t == pytest.approx(sch.t_for_ratio(2 * sigma), abs=1e-9)
    tt = torch.tensor([den.t], dtype=torch.float64)
    assert float(sch.std(tt) / sch.alpha(tt)) == pytest.approx(2 * sigma, rel=1e-9)


def test_one_shot_denoiser_scaling_and_oracle_recovery():
    sch = VPSchedule()
    g = torch.Generator().manual_seed(0)
    clean = torch.rand(3, 3, 8, 8, generator=g, dtype=torch.float64)
    sigma = 0.25
    noisy = clean + sigma * torch.randn(clean.shape, generator=g, dtype=torch.float64)
    oracle = OracleEps(clean, sch)
    den = OneShotDenoiser(oracle, sch, sigma=sigma)
    out = den(noisy)
    torch.testing.assert_close(out, clean, rtol=0, atol=1e-9)
    x_t, t = oracle.calls[0]
    a = sch.alpha(torch.tensor(den.t, dtype=torch.float64))
    torch.testing.assert_close(x_t, a * (2 * noisy - 1))
    assert t.shape == (3,) and torch.allclose(t, torch.full((3,), den.t, dtype=torch.float64))
    # x_t is the forward process at t: alpha x0 + std * eps with unit-variance eps
    resid = (x_t - a * (2 * clean - 1)) / sch.std(torch.tensor(den.t, dtype=torch.float64))
    assert abs(float(resid.std()) - 1) < 0.1
    assert den.nfe == 1 and not den.stochastic


def test_denoised_smoothing_end_to_end_and_errors():
    sch = VPSchedule()
    x = torch.full((1, 1, 2, 2), 0.8)
    den = OneShotDenoiser(OracleEps(x[0:1], sch), sch, sigma=0.5)
    model = DefendedClassifier(SignOfFirstPixel(), den)
    # the oracle denoiser removes the noise, so the smoothed classifier votes class 1 every time
    res = certify(model, x, sigma=0.5, n0=10, n=400, alpha=0.001, batch_size=400,
                  generator=torch.Generator().manual_seed(0))
    assert res.prediction.tolist() == [1] and int(res.counts[0]) == 400
    assert model.validate_inputs
    with pytest.raises(ValueError, match="below 2\\*sigma"):
        OneShotDenoiser(nn.Identity(), sch, sigma=1e4)
    with pytest.raises(TypeError, match="alpha"):
        OneShotDenoiser(nn.Identity(), object(), sigma=0.25)
    with pytest.raises(ValueError, match="sigma"):
        OneShotDenoiser(nn.Identity(), sch, sigma=0)
