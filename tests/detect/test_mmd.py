"""MMD^2_u, its variance, and the permutation / wild-bootstrap tests against independent references."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from advpure.detect.kernels import GaussianKernel, median_sq_dist
from advpure.detect.mmd import (
    min_sample_size,
    mmd2_unbiased,
    mmd2_variance,
    mmd_opt_objective,
    mmd_test,
    permutation_stats,
    permutation_test,
    split_gram,
    wild_bootstrap_test,
)


def _k(a, b, s2=1.0):
    return math.exp(-sum((ai - bi) ** 2 for ai, bi in zip(a, b)) / (2 * s2))


def _loop_mmd2(x, y, s2=1.0):
    """Gretton et al. (2012) Eq. 3 written as a double loop over i != j of h(z_i, z_j)."""
    m = len(x)
    tot = 0.0
    for i in range(m):
        for j in range(m):
            if i != j:
                tot += _k(x[i], x[j], s2) + _k(y[i], y[j], s2) - _k(x[i], y[j], s2) - _k(x[j], y[i], s2)
    return tot / (m * (m - 1))


def _grams(x, y, s2=1.0):
    k = GaussianKernel(bandwidth=math.sqrt(s2))
    return k(x, x), k(y, y), k(x, y)


def test_mmd2_matches_double_loop():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(9, 3, generator=g, dtype=torch.float64)
    y = torch.randn(9, 3, generator=g, dtype=torch.float64) + 0.5
    got = float(mmd2_unbiased(*_grams(x, y, 2.0)))
    assert got == pytest.approx(_loop_mmd2(x.tolist(), y.tolist(), 2.0), rel=1e-10, abs=1e-12)


def test_mmd2_batched_equals_single():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 10, 2, generator=g)
    y = torch.randn(4, 10, 2, generator=g)
    k = GaussianKernel(bandwidth=1.0)
    batched = mmd2_unbiased(k(x, x), k(y, y), k(x, y))
    single = torch.stack([mmd2_unbiased(k(x[i], x[i]), k(y[i], y[i]), k(x[i], y[i])) for i in range(4)])
    assert torch.allclose(batched, single, atol=1e-6)


def test_mmd2_is_unbiased_under_null():
    """Mean of MMD^2_u over 2000 clean-vs-clean Gaussian draws is 0 within 4 standard errors."""
    g = torch.Generator().manual_seed(2)
    R, m = 2000, 15
    x = torch.randn(R, m, 2, generator=g, dtype=torch.float64)
    y = torch.randn(R, m, 2, generator=g, dtype=torch.float64)
    vals = mmd2_unbiased(*_grams(x, y))
    se = vals.std() / math.sqrt(R)
    assert abs(float(vals.mean())) < 4 * float(se)
    # the biased V-statistic (diagonals kept) is clearly positive on the same draws: the check has teeth
    Kxx, Kyy, Kxy = _grams(x, y)
    v_stat = Kxx.mean((-1, -2)) + Kyy.mean((-1, -2)) - 2 * Kxy.mean((-1, -2))
    assert float(v_stat.mean()) > 10 * float(se)


def test_variance_formula_brute_force():
    """Liu et al. (2020) sigma^2_H1 = 4 (mean_i hbar_i^2 - (mean_i hbar_i)^2), hbar_i = mean_j h(z_i, z_j) (j incl. i)."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(8, 2, generator=g, dtype=torch.float64)
    y = torch.randn(8, 2, generator=g, dtype=torch.float64) + 0.7
    m = 8
    xs, ys = x.tolist(), y.tolist()
    hbar = []
    for i in range(m):
        hbar.append(sum(_k(xs[i], xs[j]) + _k(ys[i], ys[j]) - _k(xs[i], ys[j]) - _k(xs[j], ys[i])
                        for j in range(m)) / m)
    mean = sum(hbar) / m
    ref = 4.0 * (sum(h * h for h in hbar) / m - mean ** 2)
    assert float(mmd2_variance(*_grams(x, y))) == pytest.approx(ref, rel=1e-10)


def test_variance_estimates_sampling_variance():
    """Under a mean shift the estimate approximates m * (Monte-Carlo variance of MMD^2_u) (within 30%):
    sigma^2_H1 is the asymptotic variance of sqrt(m) MMD^2_u (Liu et al. 2020, Eq. 3)."""
    g = torch.Generator().manual_seed(4)
    R, m = 600, 60
    x = torch.randn(R, m, 2, generator=g, dtype=torch.float64)
    y = torch.randn(R, m, 2, generator=g, dtype=torch.float64) + torch.tensor([0.8, 0.0], dtype=torch.float64)
    Kxx, Kyy, Kxy = _grams(x, y)
    mc = m * float(mmd2_unbiased(Kxx, Kyy, Kxy).var())
    est = float(mmd2_variance(Kxx, Kyy, Kxy).mean())
    assert est == pytest.approx(mc, rel=0.3)


def test_objective_is_ratio():
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(10, 2, generator=g), torch.randn(10, 2, generator=g) + 1
    Kxx, Kyy, Kxy = _grams(x, y)
    J = mmd_opt_objective(Kxx, Kyy, Kxy)
    assert float(J) == pytest.approx(float(mmd2_unbiased(Kxx, Kyy, Kxy) / torch.sqrt(mmd2_variance(Kxx, Kyy, Kxy) + 1e-8)))


def test_permutation_stats_match_reindexing():
    """The quadratic-form permutation statistics equal MMD^2_u of the explicitly permuted Gram matrix."""
    g = torch.Generator().manual_seed(6)
    z = torch.randn(14, 3, generator=g, dtype=torch.float64)
    K = GaussianKernel(bandwidth=1.3)(z, z)
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    fast = permutation_stats(K, 7, n_perm=20, generator=g1)
    perms = torch.rand(20, 14, generator=g2).argsort(1)
    slow = torch.stack([mmd2_unbiased(*split_gram(K[p][:, p], 7)) for p in perms])
    assert torch.allclose(fast, slow, atol=1e-12)


@pytest.mark.parametrize("method", ["permutation", "wild"])
def test_type1_error_calibrated(method):
    """400 null draws (m=20, 2-D Gaussians, median heuristic): rejection rate at 0.05 within [0.02, 0.08]."""
    g = torch.Generator().manual_seed(7)
    R, m = 400, 20
    z = torch.randn(R, 2 * m, 2, generator=g)
    K = GaussianKernel()(z, z)
    if method == "permutation":
        r = permutation_test(K, m, n_perm=200, alpha=0.05, generator=g)
    else:
        r = wild_bootstrap_test(*split_gram(K, m), n_boot=200, alpha=0.05, generator=g)
    rate = float(r.reject.float().mean())
    assert 0.02 <= rate <= 0.08, rate


@pytest.mark.parametrize("method", ["permutation", "wild", "wild-gaussian"])
def test_power_on_mean_shift(method):
    g = torch.Generator().manual_seed(8)
    rej = 0
    for _ in range(30):
        x = torch.randn(30, 2, generator=g)
        y = torch.randn(30, 2, generator=g) + 1.0
        rej += int(mmd_test(GaussianKernel(), x, y, method=method, n_resamples=100, generator=g).reject)
    assert rej >= 28


def test_median_heuristic():
    z = torch.tensor([[0.0], [1.0], [3.0]])
    assert float(median_sq_dist(z)) == pytest.approx(4.0)  # off-diagonal squared distances 1, 9, 4 (twice)


def test_min_sample_size_matches_invariance():
    """Brute force over all 720 relabelings of 6 points: at least 2 * 3! give the observed MMD^2_u."""
    m = min_sample_size(0.05)
    assert 2 * math.factorial(m) / math.factorial(2 * m) <= 0.05 < 2 * math.factorial(m - 1) / math.factorial(2 * m - 2)
    z = torch.randn(6, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    K = GaussianKernel(bandwidth=1.0)(z, z)
    obs = float(mmd2_unbiased(*split_gram(K, 3)))
    same = 0
    for p in itertools.permutations(range(6)):
        p = list(p)
        same += abs(float(mmd2_unbiased(*split_gram(K[p][:, p], 3))) - obs) < 1e-12
    assert same >= 2 * math.factorial(3)


def test_bad_inputs():
    with pytest.raises(ValueError, match="too small"):
        permutation_test(torch.rand(4, 4), 2, n_perm=200, alpha=0.05)  # p >= 2*2!/4! = 1/6 > 0.05
    with pytest.raises(ValueError, match="resamples cannot reach"):
        permutation_test(torch.rand(20, 20), 10, n_perm=10, alpha=0.05)
    with pytest.raises(ValueError, match="pooled Gram"):
        permutation_test(torch.rand(20, 20), 8, n_perm=100)
    with pytest.raises(ValueError, match="equal sample sizes"):
        mmd_test(GaussianKernel(), torch.rand(10, 2), torch.rand(12, 2))
    with pytest.raises(ValueError, match="at least 2"):
        mmd2_unbiased(torch.ones(1, 1), torch.ones(1, 1), torch.ones(1, 1))
    with pytest.raises(ValueError, match="multipliers"):
        wild_bootstrap_test(*split_gram(torch.rand(20, 20), 10), multipliers="poisson")
