"""Deep kernel (Liu et al. 2020 / SAMMD): formula, gradients, MMD-OPT training, save/load checks."""

from __future__ import annotations

import math

import pytest
import torch

from advpure.detect.kernels import build_deep_kernel, load_kernel, save_kernel
from advpure.detect.mmd import mmd_test
from advpure.detect.mmd_opt import objective, pgd_linf, train_kernel
from advpure.models import build_classifier


def _reference_gram(fa, fb, xa, xb, e, s_phi, s_q):
    """Liu et al. (2020) Eq. 5, k = [(1 - e) kappa(phi(x), phi(y)) + e] q(x, y), written as in the authors'
    DK-for-TST ``MMDu`` (and the DAD code): Kxy = (1-e) exp(-Dxy/sigma0 - Dxy_org/sigma) + e exp(-Dxy_org/sigma),
    with Pdist2 squared Euclidean distances of the deep features (sigma0) and of the raw inputs (sigma).
    Element by element in float64, independent of advpure's distance code."""
    out = [[0.0] * len(xb) for _ in range(len(xa))]
    for i in range(len(xa)):
        for j in range(len(xb)):
            dphi = sum((float(u) - float(v)) ** 2 for u, v in zip(fa[i].flatten(), fb[j].flatten()))
            dq = sum((float(u) - float(v)) ** 2 for u, v in zip(xa[i].flatten(), xb[j].flatten()))
            out[i][j] = (1 - e) * math.exp(-dphi / s_phi - dq / s_q) + e * math.exp(-dq / s_q)
    return torch.tensor(out, dtype=torch.float64)


def test_deep_kernel_formula_matches_paper_and_official_code():
    torch.manual_seed(0)
    e, s_phi, s_q = 0.2, 3.0, 20.0
    k = build_deep_kernel(input_shape=(1, 8, 8), featurizer="cnn", epsilon=e, sigma_phi=s_phi, sigma_q=s_q).eval()
    x, y = torch.rand(3, 1, 8, 8), torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        px, py = k.featurizer(x), k.featurizer(y)
        got = k(x, y).double()
    ref = _reference_gram(px, py, x, y, e, s_phi, s_q)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-7)
    # the formula that applied q twice ([..] * q) is measurably different on these inputs: the test can fail
    dq = torch.cdist(x.flatten(1).double(), y.flatten(1).double()) ** 2 / s_q
    old = (ref - e * torch.exp(-dq) + e) * torch.exp(-dq)  # = [(1-e) exp(-dphi-dq) + e] exp(-dq)
    assert float(((old - ref).abs() / ref).max()) > 0.05
    assert float(k(x[:1], x[:1])[0, 0].detach()) == pytest.approx(1.0, abs=1e-6)


def test_semantic_kernel_gradients_flow_to_params_and_input():
    clf = build_classifier("small-cnn").eval()
    k = build_deep_kernel(input_shape=(1, 8, 8), featurizer="semantic", classifier=clf, proj_dim=8)
    x = torch.rand(6, 1, 8, 8, requires_grad=True)
    y = torch.rand(6, 1, 8, 8)
    z = torch.cat([x, y])
    K = k(z, z)
    K.sum().backward()
    for name in ("eps_logit", "log_sigma_phi", "log_sigma_q"):
        assert getattr(k, name).grad is not None and float(getattr(k, name).grad.abs()) > 0, name
    assert k.featurizer.proj.weight.grad.abs().sum() > 0
    assert x.grad is not None and x.grad.abs().sum() > 0
    kernel_params = {id(p) for p in k.parameters()}
    assert not any(id(p) in kernel_params for p in clf.parameters())  # classifier is not trained with the kernel
    assert not any(n.startswith("featurizer.classifier") for n in k.state_dict())


def test_mmd_opt_increases_J_on_toy_shift():
    """Clean: noise images; 'adversarial': the same plus a faint fixed pattern in one corner. Semantic kernel
    on a frozen random CNN: only e, s_phi, s_q train, so the held-out J must improve too."""
    g = torch.Generator().manual_seed(1)

    def draw(n):
        x = torch.rand(n, 1, 8, 8, generator=g) * 0.8
        y = torch.rand(n, 1, 8, 8, generator=g) * 0.8
        y[:, :, :3, :3] += 0.2
        return x, y

    x, y = draw(100)
    xv, yv = draw(100)
    torch.manual_seed(0)
    clf = build_classifier("small-cnn").eval()
    k = build_deep_kernel(input_shape=(1, 8, 8), featurizer="semantic", classifier=clf)
    k.init_sigma_phi(x, y)
    J0 = objective(k, xv, yv)
    hist = train_kernel(k, x, y, epochs=60, lr=5e-2, seed=0)
    J1 = objective(k, xv, yv)
    assert hist.objective[-1] > hist.objective[0] + 0.15, (hist.objective[0], hist.objective[-1])
    assert J1 > J0 + 0.05, (J0, J1)  # held-out test-power proxy improves too
    assert mmd_test(k, xv[:60], yv[:60], n_resamples=100, generator=torch.Generator().manual_seed(0)).reject


def test_pgd_linf_stays_in_ball_and_fools():
    torch.manual_seed(0)
    clf = build_classifier("small-cnn").eval()
    x = torch.rand(16, 1, 8, 8)
    y = clf(x).argmax(1)
    adv = pgd_linf(clf, x, y, eps=0.3, steps=10)
    assert float((adv - x).abs().max()) <= 0.3 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    assert float((clf(adv).argmax(1) == y).float().mean()) < 0.5


def test_save_load_roundtrip_and_mismatch_errors(tmp_path):
    torch.manual_seed(0)
    clf = build_classifier("small-cnn").eval()
    k = build_deep_kernel(input_shape=(1, 8, 8), featurizer="semantic", classifier=clf, epsilon=0.1)
    with torch.no_grad():
        k.log_sigma_q.fill_(1.234)
    path = tmp_path / "k.safetensors"
    save_kernel(k, path, dataset="digits")
    k2 = load_kernel(path, classifier=clf, input_shape=(1, 8, 8))
    x = torch.rand(5, 1, 8, 8)
    assert torch.allclose(k(x, x), k2(x, x))
    with pytest.raises(ValueError, match="inputs of shape"):
        load_kernel(path, classifier=clf, input_shape=(3, 32, 32))
    other = build_classifier("small-cnn").eval()  # same architecture, other weights
    with pytest.raises(ValueError, match="trained for classifier"):
        load_kernel(path, classifier=other)
    with pytest.raises(ValueError, match="needs the classifier"):
        load_kernel(path)
    with pytest.raises(ValueError, match="trained for inputs of shape"):
        k2(torch.rand(4, 1, 16, 16), torch.rand(4, 1, 16, 16))
    ck = build_deep_kernel(input_shape=(1, 8, 8), featurizer="cnn")
    save_kernel(ck, tmp_path / "c.safetensors")
    ck2 = load_kernel(tmp_path / "c.safetensors")
    ck.eval()
    assert torch.allclose(ck(x, x), ck2(x, x))
