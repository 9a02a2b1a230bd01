from __future__ import annotations

import pytest
import torch

from advpure.defenses.diffpure import DiffPure
from advpure.defenses.ssni import SSNI, ssni_l, ssni_l_batch, ssni_n
from advpure.detect.eps import EPSReference, eps_norm
from advpure.diffusion.models import GaussianScoreModel
from advpure.diffusion.schedule import VPSchedule


def _setup(mode="N", differentiable=False):
    sched = VPSchedule()
    model = GaussianScoreModel(torch.full((1, 4, 4), 0.2), torch.full((1, 4, 4), 0.05), sched)
    clean = ((0.2 + 0.05 ** 0.5 * torch.randn(64, 1, 4, 4, generator=torch.Generator().manual_seed(0))) + 1) / 2
    with torch.no_grad():
        norms = eps_norm(model, clean.clamp(0, 1), schedule=sched, generator=torch.Generator().manual_seed(1))
    ref = EPSReference.from_norms(norms, t_levels=[k / 1000 for k in range(1, 21)], checkpoint_sha256=None)
    base = DiffPure(model, t=0.1, n_steps=10, schedule=sched, freeze=False)
    return SSNI(base, reference=ref, mode=mode, differentiable=differentiable), clean.clamp(0, 1)


def test_reweighting_formulas():
    s = torch.tensor([0.0, 5.0, 10.0])
    torch.testing.assert_close(ssni_n(s, mu=5.0, tau=2.0, t_star=0.1, b=0.02),
                               0.12 * torch.sigmoid((s - 5.0) / 2.0))
    torch.testing.assert_close(ssni_l(s, s_min=0.0, s_max=10.0, t_star=0.1, b=0.01), torch.tensor([0.01, 0.06, 0.11]))
    for tau in (0.0, -1.0):
        with pytest.raises(ValueError, match="tau"):
            ssni_n(s, mu=0.0, tau=tau, t_star=0.1)
    with pytest.raises(ValueError, match="max"):
        ssni_l(s, s_min=1.0, s_max=1.0, t_star=0.1)


def test_ssni_l_official_normalisation_hand_values():
    """The authors' SSNI-L: min/max over reference ∪ batch, t = t* (s - min) / (max - min) + bias, bias = 5 of
    1000 steps. Reference [2, 10], batch s = (4, 12, 0): min 0, max 12, so t = 0.1 s / 12 + 0.005 (by hand)."""
    s = torch.tensor([4.0, 12.0, 0.0])
    t = ssni_l_batch(s, ref_min=2.0, ref_max=10.0, t_star=0.1)
    torch.testing.assert_close(t, torch.tensor([0.1 * 4 / 12 + 0.005, 0.105, 0.005]))
    # a batch inside the reference range uses the reference's min and max: (s - 2) / 8
    torch.testing.assert_close(ssni_l_batch(torch.tensor([6.0]), ref_min=2.0, ref_max=10.0, t_star=0.1),
                               torch.tensor([0.1 * 4 / 8 + 0.005]))


def test_ssni_l_stays_in_bias_range_for_far_inputs_and_depends_on_the_batch():
    ssni, clean = _setup("L")
    assert ssni.b == pytest.approx(0.005)
    far = torch.rand(8, 1, 4, 4, generator=torch.Generator().manual_seed(5))  # far from the clean Gaussian
    x = torch.cat([clean[:8], far])
    ssni(x, generator=torch.Generator().manual_seed(3))
    t_mixed = ssni.last_t.clone()
    assert float(t_mixed.max()) <= 0.1 + 0.005 + 1e-6 and float(t_mixed.min()) >= 0.005 - 1e-6
    # the reference-only variant gives the far inputs more than t* + b (what the issue measured: 0.37-0.44)
    ref_only = SSNI(ssni.base, reference=ssni.reference, mode="L-ref")
    ref_only(x, generator=torch.Generator().manual_seed(3))
    assert float(ref_only.last_t[8:].max()) > 0.105
    # the same clean images alone get other t than next to the far ones: t depends on the batch
    ssni(clean[:8], generator=torch.Generator().manual_seed(3))
    assert not torch.allclose(ssni.last_t, t_mixed[:8])


@pytest.mark.parametrize("mode", ["N", "L", "L-ref"])
def test_far_samples_get_more_noise_in_one_batch(mode):
    ssni, clean = _setup(mode)
    far = (clean[:8] + 0.3).clamp(0, 1)
    x = torch.cat([clean[:8], far])
    out = ssni(x, generator=torch.Generator().manual_seed(3))
    assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    t = ssni.last_t
    assert t.shape == (16,) and float(t[:8].mean()) < float(t[8:].mean())
    assert float(t.min()) >= ssni.t_floor and ssni.nfe == 10 + 20


def test_differentiable_variant_passes_gradient_through_t():
    ssni, clean = _setup("N", differentiable=True)
    x = clean[:4].clone().requires_grad_(True)
    s = eps_norm(ssni.base.eps_model, x, schedule=ssni.base.schedule, generator=torch.Generator().manual_seed(0))
    t = ssni.noise_levels(s)
    t.sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    grads = {}
    for diff in (False, True):
        ssni.differentiable = diff
        xi = clean[:4].clone().requires_grad_(True)
        ssni(xi, generator=torch.Generator().manual_seed(0)).sum().backward()
        assert torch.isfinite(xi.grad).all() and float(xi.grad.abs().sum()) > 0
        grads[diff] = xi.grad
    # same noise draws: the only difference is the gradient path through EPS -> t -> purifier
    assert not torch.allclose(grads[False], grads[True])


def test_bad_ssni_config():
    ssni, _ = _setup()
    with pytest.raises(ValueError, match="tau"):
        SSNI(ssni.base, reference=ssni.reference, tau=0.0)
    with pytest.raises(ValueError, match="mode"):
        SSNI(ssni.base, reference=ssni.reference, mode="Q")
    with pytest.raises(ValueError, match="t_floor"):
        SSNI(ssni.base, reference=ssni.reference, t_ceil=2.0)
