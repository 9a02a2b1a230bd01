"""Our PGD/APGD against torchattacks on the shared third-party ResNet-20 and JPEG CIFAR-10 (slow)."""

from __future__ import annotations

import pytest
import torch

from advpure.attacks import APGD, PGD

torchattacks = pytest.importorskip("torchattacks")

pytestmark = [pytest.mark.shared, pytest.mark.slow]


@pytest.fixture(scope="module")
def resnet20_data(shared_dir, cifar10_jpeg):
    from advpure.data import load_dataset
    from advpure.models import load_classifier

    m = load_classifier(f"resnet20:{shared_dir}/models/resnet20-12fca82f.th")
    x, y = load_dataset("cifar10", "test", data_dir=cifar10_jpeg).subset(500, 0).tensors()
    return m, x, y


def _acc(m, x, y):
    with torch.no_grad():
        return float((m(x).argmax(1) == y).float().mean())


def test_pgd_linf_at_least_as_strong_as_torchattacks(resnet20_data):
    m, x, y = resnet20_data
    x, y = x[:500], y[:500]
    torch.manual_seed(0)
    ours = _acc(m, PGD(eps=8 / 255, steps=10, step_size=2 / 255)(m, x, y), y)
    torch.manual_seed(0)
    theirs = _acc(m, torchattacks.PGD(m, eps=8 / 255, alpha=2 / 255, steps=10)(x, y), y)
    assert ours <= theirs + 0.01, (ours, theirs)
    assert ours < 0.05


@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_apgd_matches_torchattacks(resnet20_data, loss):
    m, x, y = resnet20_data
    x, y = x[:200], y[:200]
    eps = 2 / 255  # small budget so the accuracies are not both 0
    torch.manual_seed(0)
    ours = _acc(m, APGD(eps=eps, steps=10, loss=loss)(m, x, y), y)
    torch.manual_seed(0)
    theirs = _acc(m, torchattacks.APGD(m, eps=eps, steps=10, loss=loss)(x, y), y)
    assert abs(ours - theirs) <= 0.04, (ours, theirs)
