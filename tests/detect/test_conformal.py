"""The conformal threshold shared by EPS-AD and DAD: expected values from the formula
t = the ceil((1 - fpr)(n + 1))-th smallest of n clean scores."""

import math

import pytest
import torch

from advpure.detect.conformal import conformal_min_scores, conformal_rank, conformal_threshold


@pytest.mark.parametrize("fpr, expected", [
    (0.2, 5.0),   # n = 5: ceil(0.8 * 6) = ceil(4.8) = 5th smallest
    (0.4, 4.0),   # ceil(0.6 * 6) = ceil(3.6) = 4
    (0.5, 3.0),   # ceil(0.5 * 6) = 3
    (0.9, 1.0),   # ceil(0.1 * 6) = ceil(0.6) = 1
])
def test_threshold_is_the_conformal_order_statistic(fpr, expected):
    scores = torch.tensor([5.0, 1.0, 4.0, 2.0, 3.0])  # unsorted on purpose
    assert conformal_threshold(scores, fpr) == expected
    assert conformal_threshold(scores.view(5, 1), fpr) == expected  # any shape: the scores are flattened


def test_rank_is_valid_and_tight():
    """For n exchangeable continuous scores, P(new > k-th smallest) = (n + 1 - k) / (n + 1): at most fpr, and
    the next smaller rank would exceed it."""
    for fpr in (0.01, 0.05, 0.1, 0.2, 1 / 3, 0.5):
        for n in range(conformal_min_scores(fpr), 400, 7):
            k = conformal_rank(n, fpr)
            assert k == math.ceil((1 - fpr) * (n + 1)) and 1 <= k <= n
            assert (n + 1 - k) / (n + 1) <= fpr + 1e-12
            assert (n + 2 - k) / (n + 1) > fpr - 1e-12


@pytest.mark.parametrize("fpr, n_min", [(0.05, 19), (0.1, 9), (0.01, 99), (0.2, 4), (1 / 3, 2), (0.5, 1), (0.7, 1)])
def test_fewest_scores(fpr, n_min):
    assert conformal_min_scores(fpr) == n_min
    assert conformal_rank(n_min, fpr) <= n_min
    if n_min > 1:
        assert conformal_rank(n_min - 1, fpr) > n_min - 1


def test_too_few_scores_and_bad_rates():
    with pytest.raises(ValueError, match="need at least 19"):
        conformal_threshold(torch.arange(18.0), 0.05)
    assert conformal_threshold(torch.arange(19.0), 0.05) == 18.0  # the largest of 19
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="fpr"):
            conformal_threshold(torch.arange(100.0), bad)


def test_one_implementation_for_eps_ad_and_dad():
    from advpure.defenses import dad
    from advpure.detect import eps_ad

    assert eps_ad.conformal_threshold is conformal_threshold and dad.conformal_threshold is conformal_threshold
