"""Conformal (finite-sample valid) thresholds for detectors calibrated on held-out clean scores.

For n exchangeable clean scores, the ``ceil((1 - fpr)(n + 1))``-th smallest one, ``t``, guarantees
``P(new clean score > t) <= fpr`` (split conformal prediction; Vovk et al. 2005, Lei et al. 2018). It exists
when that rank is at most n, i.e. for ``n >= 1/fpr - 1`` clean scores.
"""

from __future__ import annotations

import math

import torch


def conformal_rank(n: int, fpr: float) -> int:
    """The rank (1-based, among n scores sorted ascending) of the conformal threshold: ``ceil((1 - fpr)(n + 1))``."""
    return math.ceil((1 - fpr) * (n + 1))


def conformal_min_scores(fpr: float) -> int:
    """The fewest clean scores that give a conformal threshold for ``fpr``: the smallest n with
    ``conformal_rank(n, fpr) <= n`` (``ceil(1/fpr) - 1``, checked against the rank's own floating-point
    arithmetic)."""
    _check_fpr(fpr)
    n = max(1, math.ceil(1 / fpr) - 1)
    while n > 1 and conformal_rank(n - 1, fpr) <= n - 1:
        n -= 1
    while conformal_rank(n, fpr) > n:
        n += 1
    return n


def conformal_threshold(scores: torch.Tensor, fpr: float) -> float:
    """The ``ceil((1 - fpr)(n + 1))``-th smallest of n clean scores: P(new clean score > t) <= fpr."""
    _check_fpr(fpr)
    n = scores.numel()
    k = conformal_rank(n, fpr)
    if k > n:
        raise ValueError(f"calibration: {n} clean scores cannot give a false-positive rate of {fpr}; "
                         f"need at least {conformal_min_scores(fpr)} held-out clean images")
    return float(scores.flatten().sort().values[k - 1])


def _check_fpr(fpr: float) -> None:
    if not 0 < fpr < 1:
        raise ValueError(f"fpr: expected a rate in (0, 1), got {fpr}")


__all__ = ["conformal_min_scores", "conformal_rank", "conformal_threshold"]
