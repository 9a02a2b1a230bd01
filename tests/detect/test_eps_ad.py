"""EPS-AD on a toy case with a closed-form eps-model: a large mean shift is detected, the calibrated
threshold gives the target false-positive rate on held-out nulls, and bad inputs are refused."""

from __future__ import annotations

import pytest
import torch

from advpure.detect.eps_ad import (
    EPSAD,
    auroc,
    build_eps_kernel,
    conformal_threshold,
    eps_features,
    tpr_at,
    train_eps_kernel,
)
from advpure.diffusion.models import GaussianScoreModel
from advpure.diffusion.schedule import VPSchedule

SHAPE = (1, 4, 4)
LEVELS = (0.01, 0.02, 0.05)


def _clean(n: int, g: torch.Generator) -> torch.Tensor:
    return (0.5 + 0.1 * torch.randn(n, *SHAPE, generator=g)).clamp(0, 1)


@pytest.fixture(scope="module")
def toy():
    sched = VPSchedule()
    # data N(0.5, 0.1^2) per pixel in [0, 1] = N(0, 0.2^2) in the model's [-1, 1] scale
    model = GaussianScoreModel(torch.zeros(SHAPE), torch.full(SHAPE, 0.04), sched)
    g = torch.Generator().manual_seed(0)
    ge = torch.Generator().manual_seed(1)
    feat = lambda x: eps_features(model, x, schedule=sched, t_levels=LEVELS, generator=ge)  # noqa: E731
    x_tr = _clean(200, g)
    x_shift = (_clean(200, g) + 0.25).clamp(0, 1)
    f_tr, f_adv, f_ref = feat(x_tr), feat(x_shift), feat(_clean(200, g))
    scale = float(f_tr.std())
    torch.manual_seed(0)
    kernel = build_eps_kernel(SHAPE, width=4, out_dim=8)
    hist = train_eps_kernel(kernel, f_tr / scale, f_adv / scale, epochs=40, lr=1e-2)
    det = EPSAD(model, kernel, f_ref / scale, schedule=sched, adv_reference=f_adv / scale, scale=scale,
                t_levels=LEVELS)
    return det, hist, g, ge


def test_eps_features_match_closed_form_score():
    """For N(mu, v) data the mean score over levels is -(1/K) sum_k (x_t - a mu)/(a^2 v + s^2): check EPS
    against the closed form with the same noise draws."""
    sched = VPSchedule()
    model = GaussianScoreModel(torch.zeros(SHAPE), torch.full(SHAPE, 0.04), sched)
    x = _clean(3, torch.Generator().manual_seed(5))
    f = eps_features(model, x, schedule=sched, t_levels=LEVELS, generator=torch.Generator().manual_seed(7))
    noise = torch.randn((len(LEVELS) * 3, *SHAPE), generator=torch.Generator().manual_seed(7)).view(len(LEVELS), 3, *SHAPE)
    expect = torch.zeros_like(x)
    for k, t in enumerate(LEVELS):
        a, s = sched.alpha(torch.tensor(t)), sched.std(torch.tensor(t))
        xt = a * (2 * x - 1) + s * noise[k]
        expect += -xt / (a * a * 0.04 + s * s) / len(LEVELS)
    assert torch.allclose(f, expect, rtol=1e-4, atol=1e-4)


def test_large_shift_detected_and_fpr_calibrated(toy):
    det, hist, g, ge = toy
    assert hist.objective[-1] > hist.objective[0]
    det.calibrate(_clean(399, g), fpr=0.05, generator=ge)
    null = det.score(_clean(1000, g), generator=ge)
    shifted = det.score((_clean(300, g) + 0.25).clamp(0, 1), generator=ge)
    assert auroc(null, shifted) > 0.95
    fpr = tpr_at(null, det.threshold)
    # 400 calibration points: the realised FPR of a conformal threshold has sd ~ 0.011; 1000 test nulls add 0.007
    assert 0.015 < fpr < 0.09, fpr
    assert tpr_at(shifted, det.threshold) > 0.8
    flags = det.detect((_clean(50, g) + 0.25).clamp(0, 1), generator=ge)
    assert flags.dtype == torch.bool and flags.float().mean() > 0.8


def test_single_sample_mmd_equals_definition(toy):
    """score = k(x,x) - 2/n sum_j k(x,r_j) + 1/(n(n-1)) sum_{j!=l} k(r_j,r_l), computed here from the Gram."""
    det, *_ = toy
    f = torch.randn(4, *SHAPE)
    ref = torch.randn(5, *SHAPE)
    d2 = EPSAD(det.eps_model, det.kernel, ref, schedule=det.schedule, t_levels=LEVELS)
    K = det.kernel(torch.cat([f, ref]), torch.cat([f, ref]))
    Krr = K[4:, 4:]
    expect = K[:4, :4].diagonal() - 2 * K[:4, 4:].mean(1) + (Krr.sum() - Krr.diagonal().sum()) / 20
    assert torch.allclose(d2.score_features(f), expect, atol=1e-6)


def test_witness_ranks_shift_above_clean(toy):
    det, _, g, ge = toy
    f0 = det.features(_clean(100, g), generator=ge)
    f1 = det.features((_clean(100, g) + 0.25).clamp(0, 1), generator=ge)
    assert auroc(det.score_features(f0, statistic="witness"), det.score_features(f1, statistic="witness")) > 0.95


def test_auroc_and_conformal_threshold_closed_forms():
    assert auroc(torch.tensor([0.0, 1.0]), torch.tensor([2.0, 3.0])) == 1.0
    assert auroc(torch.tensor([0.0, 2.0]), torch.tensor([1.0, 3.0])) == 0.75
    assert auroc(torch.tensor([1.0]), torch.tensor([1.0])) == 0.5
    s = torch.arange(1.0, 20.0)  # 19 scores, fpr 0.05: ceil(0.95 * 20) = 19th smallest
    assert conformal_threshold(s, 0.05) == 19.0


def test_bad_inputs(toy):
    det, *_ = toy
    with pytest.raises(ValueError, match="at least 2"):
        EPSAD(det.eps_model, det.kernel, torch.zeros(1, *SHAPE), schedule=det.schedule)
    with pytest.raises(ValueError, match="shape"):
        EPSAD(det.eps_model, det.kernel, torch.zeros(5, 1, 8, 8), schedule=det.schedule)
    with pytest.raises(ValueError, match="adv_reference"):
        EPSAD(det.eps_model, det.kernel, torch.zeros(5, *SHAPE), schedule=det.schedule, statistic="witness")
    with pytest.raises(ValueError, match="statistic"):
        EPSAD(det.eps_model, det.kernel, torch.zeros(5, *SHAPE), schedule=det.schedule, statistic="both")
    with pytest.raises(ValueError, match="need at least 19"):
        det.calibrate(torch.full((10, *SHAPE), 0.5), fpr=0.05)
    fresh = EPSAD(det.eps_model, det.kernel, torch.zeros(5, *SHAPE), schedule=det.schedule)
    with pytest.raises(ValueError, match="calibrate"):
        fresh.detect(torch.full((2, *SHAPE), 0.5))
    with pytest.raises(ValueError, match=r"\[0, 1\]|range"):
        det.score(torch.full((2, *SHAPE), 2.0))
    with pytest.raises(ValueError, match="equal"):
        train_eps_kernel(det.kernel, torch.zeros(6, *SHAPE), torch.zeros(5, *SHAPE))
    with pytest.raises(ValueError, match="at least 4"):
        train_eps_kernel(det.kernel, torch.zeros(3, *SHAPE), torch.zeros(3, *SHAPE))
