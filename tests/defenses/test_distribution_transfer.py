from __future__ import annotations

import pytest
import torch

from advpure.defenses.distribution_transfer import DistributionTransfer, transfer_distance
from advpure.diffusion.models import GaussianScoreModel
from advpure.diffusion.schedule import DiscreteSchedule


class _Linear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(x.flatten(1))


def _setup(scale=100.0, phi=1.0):
    sched = DiscreteSchedule()
    model = GaussianScoreModel(torch.zeros(1, 8, 8), torch.full((1, 8, 8), 0.3), sched)
    return DistributionTransfer(model, _Linear(), t=0.05, scale=scale, phi=phi, schedule=sched, freeze=False)


def test_guidance_step_reduces_the_distance():
    """A small step along the guidance direction lowers D(x'_t, x_t) on a toy example."""
    pur = _setup()
    g = torch.Generator().manual_seed(0)
    x_ref_0 = torch.rand(4, 1, 8, 8, generator=g) * 2 - 1
    z = torch.randn(4, 1, 8, 8, generator=g)
    t = torch.full((4,), 0.05)
    x_t = torch.randn(4, 1, 8, 8, generator=g) * 0.5
    a, s = pur.schedule.alpha(t).float().view(-1, 1, 1, 1), pur.schedule.std(t).float().view(-1, 1, 1, 1)
    d0 = transfer_distance(pur.classifier, a * x_ref_0 + s * z, x_t, x_ref_0, phi=1.0)
    direction = pur.guidance_direction(x_t, t, x_ref_0, z)
    d1 = transfer_distance(pur.classifier, a * x_ref_0 + s * z, x_t + 1e-4 * direction, x_ref_0, phi=1.0)
    assert (d1 < d0).all(), (d0, d1)


def test_purifier_contract_and_gradient_flow():
    pur = _setup()
    x = torch.rand(3, 1, 8, 8, requires_grad=True)
    out = pur(x, generator=torch.Generator().manual_seed(1))
    assert out.shape == x.shape and float(out.detach().min()) >= 0 and float(out.detach().max()) <= 1
    out.sum().backward()
    assert torch.isfinite(x.grad).all() and float(x.grad.abs().sum()) > 0
    a = pur(x.detach(), generator=torch.Generator().manual_seed(5))
    b = pur(x.detach(), generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(a, b)
    assert pur.nfe == 50


def test_bad_config():
    with pytest.raises(ValueError, match="t"):
        DistributionTransfer(lambda x, t: x, _Linear(), t=1.5)
    with pytest.raises(ValueError, match="output"):
        DistributionTransfer(lambda x, t: x, _Linear(), output="softmax")
    with pytest.raises(ValueError, match="scale"):
        DistributionTransfer(lambda x, t: x, _Linear(), scale=-1.0)
