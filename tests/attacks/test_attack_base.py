"""What Attack does once for every attack: enforce the threat model on what _run returns, and rebuild itself from
its recorded constructor arguments in replace()."""

import pytest
import torch
import torch.nn as nn

from advpure.attacks import PGD, Square
from advpure.attacks.base import THREAT_MODEL_TOLERANCE, Attack, enforce_threat_model
from advpure.attacks.bpda import BPDA
from advpure.attacks.cw import CWL2


class _Linear(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        return self.fc(x.flatten(1))


class _Returns(Attack):
    """An attack whose _run returns ``x + offset`` (unprojected)."""

    name = "returns"

    def __init__(self, *, offset: float = 0.0, eps: float = 0.1, norm: str = "linf") -> None:
        super().__init__(eps=eps, norm=norm)
        self.offset = offset

    def _run(self, model, x, y, *, logits0, eot, generator):
        return x + self.offset


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 4, 4, generator=g) * 0.8 + 0.1
    return x, torch.tensor([0, 1, 2, 0])


def test_output_inside_is_returned_bit_for_bit():
    x, _ = _data()
    delta = (torch.rand(x.shape, generator=torch.Generator().manual_seed(1)) * 2 - 1) * 0.1
    inside = (x + delta).clamp(0, 1)
    assert torch.equal(enforce_threat_model(inside, x, norm="linf", eps=0.1), inside)
    assert torch.equal(enforce_threat_model(x, x, norm="l2", eps=0.5), x)
    assert torch.equal(enforce_threat_model(inside, x, norm="l2", eps=float("inf")), inside)


def test_rounding_level_excess_is_projected():
    x, _ = _data()
    nudged = x + 0.1 + 1e-6  # outside the linf ball by 1e-6 (< tolerance)
    out = enforce_threat_model(nudged, x, norm="linf", eps=0.1)
    assert float((out - x).abs().max()) <= 0.1 + 1e-7
    l2 = x + 0.2 * torch.ones_like(x) / 4 * (1 + 1e-6)  # ||delta||_2 = 0.2 (1 + 1e-6) over 16 pixels
    out = enforce_threat_model(l2, x, norm="l2", eps=0.2)
    assert float((out - x).flatten(1).norm(dim=1).max()) <= 0.2 + 1e-7


def test_an_attack_leaving_its_threat_model_is_an_error():
    x, y = _data()
    model = _Linear()
    with pytest.raises(RuntimeError, match=r"returns: returned images outside its threat model \(linf eps=0.1"):
        _Returns(offset=0.3)(model, x, y)
    with pytest.raises(RuntimeError, match="outside its threat model"):
        _Returns(offset=0.05 + 2 * THREAT_MODEL_TOLERANCE, eps=0.05)(model, x, y)
    _Returns(offset=0.05, eps=0.1)(model, x, y)  # inside: fine
    with pytest.raises(RuntimeError, match=r"l2 eps=0.1"):
        _Returns(offset=0.1, eps=0.1, norm="l2")(model, x, y)  # ||delta|| = 0.4
    neg = _Returns(offset=-0.05, eps=0.1)
    xb = x.clone()
    xb[0, 0, 0, 0] = 0.0  # x - 0.05 < 0 there
    with pytest.raises(RuntimeError, match=r"by 0.05"):
        neg(model, xb, y)


def test_every_attack_records_its_constructor_arguments():
    a = PGD(eps=0.1, steps=5, seed=3)
    assert a._init_args == {"eps": 0.1, "steps": 5, "seed": 3}
    b = BPDA(eps=0.2, steps=2)
    assert b._init_args == {"eps": 0.2, "steps": 2} and b.base._init_args == {"eps": 0.2, "steps": 2}
    assert _Returns(offset=1.0)._init_args == {"offset": 1.0}


def test_replace_rebuilds_with_validation():
    a = PGD(eps=0.1, steps=5, step_size=0.01, seed=3)
    b = a.replace(steps=10, eps=0.2)
    assert (b.steps, b.eps, b.step_size, b.seed, a.steps, a.eps) == (10, 0.2, 0.01, 3, 5, 0.1)
    a.spec = {"name": "pgd", "params": {"eps": 0.1}}
    assert a.replace(steps=2).spec == a.spec  # what was set after construction is kept
    with pytest.raises(ValueError, match="steps"):
        a.replace(steps=0)
    with pytest.raises(ValueError, match="step_size"):
        a.replace(step_size=-1.0)  # validated by the constructor
    with pytest.raises(ValueError, match="pgd: no option 'nonsense'"):
        a.replace(nonsense=1)


def test_replace_aliases_attributes_and_wrappers():
    sq = Square(eps=0.1, n_queries=20).replace(steps=40, eot=5)  # steps = queries; no EOT
    assert (sq.n_queries, sq.steps, sq.eot) == (40, 40, 1)
    cw = CWL2(eps=1.0, steps=5).replace(eot=2)  # an attribute, not a constructor argument: set on the copy
    assert cw.eot == 2 and cw.replace(steps=7).eot == 2
    base = PGD(eps=0.1, steps=4)
    w = BPDA(base=base)
    w2 = w.replace(steps=8, eot=2)
    assert w2.base is not base and (w2.base.steps, w2.base.eot, w2.eot, base.steps) == (8, 2, 2, 4)
