"""Detector-aware attacks: stay in the threat model, keep a toy detector's statistic below its threshold,
match DAD's own statistic, and refuse bad inputs."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from advpure.attacks.base import perturbation_norm
from advpure.attacks.detector_aware import DADPathPGD, DetectorAwarePGD, DetectorStatistic, dad_statistic
from advpure.attacks.pgd import PGD


class Linear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        return self.fc(x.flatten(1) - 0.5)


def _toy_detector(per_sample: bool, threshold: float) -> DetectorStatistic:
    # squared distance to the image centre 0.5, per sample or averaged over the batch
    def stat(x):
        d = (x - 0.5).flatten(1).pow(2).sum(1)
        return d if per_sample else d.mean()

    return DetectorStatistic(stat, threshold, per_sample=per_sample, min_batch=1 if per_sample else 4)


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    x = (0.5 + 0.05 * torch.randn(32, 1, 4, 4, generator=g)).clamp(0, 1)
    model = Linear()
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


@pytest.mark.parametrize("per_sample", [True, False])
def test_penalty_keeps_statistic_below_threshold(data, per_sample):
    model, x, y = data
    eps = 0.3
    det = _toy_detector(per_sample, threshold=0.4)
    with torch.no_grad():
        assert bool((det.statistic(x) < 0.4 * 0.9).all())  # clean inputs are accepted
        # unconstrained PGD leaves the accepted region: the constraint is active
        x_pgd = PGD(norm="linf", eps=eps, steps=30, step_size=0.03, random_start=False)(model, x, y)
        assert bool((det.statistic(x_pgd) > 0.4).any())
    atk = DetectorAwarePGD(eps=eps, steps=60, step_size=0.02, margin=0.9, detector=det, classifier=model)
    xa = atk(model, x, y)
    assert float(perturbation_norm(xa, x, "linf").max()) <= eps + 1e-6
    assert float(xa.min()) >= 0 and float(xa.max()) <= 1
    with torch.no_grad():
        s = det.statistic(xa)
        assert bool((s <= 0.4 * 0.9 + 1e-6).all())
        fooled = model(xa).argmax(1) != y
    assert bool(atk.last_undetected.all())
    assert float(fooled.float().mean()) > 0.5  # the attack still does its job inside the constraint


def test_l2_threat_model(data):
    model, x, y = data
    atk = DetectorAwarePGD(norm="l2", eps=0.5, steps=20, detector=_toy_detector(True, 0.4), classifier=model)
    xa = atk(model, x, y)
    assert float(perturbation_norm(xa, x, "l2").max()) <= 0.5 + 1e-5


def test_bad_inputs(data):
    model, x, y = data
    with pytest.raises(ValueError, match="at least 4"):
        DetectorAwarePGD(eps=0.1, steps=2, detector=_toy_detector(False, 0.4), classifier=model)(model, x[:2], y[:2])
    with pytest.raises(ValueError, match="margin"):
        DetectorAwarePGD(margin=1.5)
    with pytest.raises(TypeError, match="DAD"):
        DetectorAwarePGD(eps=0.1, steps=2)(model, x, y)
    with pytest.raises(TypeError, match="DAD"):
        DADPathPGD(eps=0.1, steps=2)(model, x, y)
    with pytest.raises(ValueError, match="eps"):
        DetectorAwarePGD(eps=-1.0)


@pytest.fixture(scope="module")
def toy_dad():
    from advpure.defenses import DefendedClassifier
    from advpure.defenses.dad import DAD, ResidualUNet
    from advpure.detect.kernels import build_deep_kernel
    from advpure.models import build_classifier

    torch.manual_seed(0)
    clf = build_classifier("small-cnn").eval()
    k = build_deep_kernel(input_shape=(1, 8, 8), featurizer="cnn", cnn_width=4, cnn_out_dim=8, sigma_phi=1.0).eval()
    g = torch.Generator().manual_seed(1)
    ref = torch.rand(40, 1, 8, 8, generator=g)
    dad = DAD(ResidualUNet(in_channels=1, width=8, depth=1), k, ref, mode="batch", test="permutation")
    x = torch.rand(12, 1, 8, 8, generator=g)
    with torch.no_grad():
        y = clf(x).argmax(1)
    return DefendedClassifier(clf, dad), dad, x, y


def test_dad_statistic_matches_dad(toy_dad):
    model, dad, x, y = toy_dad
    det = dad_statistic(dad)
    _, stat = dad.batch_statistic(x)
    assert torch.allclose(det.statistic(x), stat, atol=1e-6)
    dad.mode = "sample"
    dad.calibrate_sample(torch.rand(40, 1, 8, 8, generator=torch.Generator().manual_seed(3)))
    try:
        ds = dad_statistic(dad)
        assert torch.allclose(ds.statistic(x), dad.sample_scores(x), atol=1e-6)
        assert float(ds.threshold(x)) == dad.sample_threshold
    finally:
        dad.mode = "batch"


@pytest.mark.parametrize("w", [0.0, 1.0])
def test_dad_path_pgd_threat_model(toy_dad, w):
    model, dad, x, y = toy_dad
    xa = DADPathPGD(eps=0.1, steps=3, eot=2, mmd_weight=w, seed=0)(model, x, y)
    assert float(perturbation_norm(xa, x, "linf").max()) <= 0.1 + 1e-6
    assert float(xa.min()) >= 0 and float(xa.max()) <= 1
