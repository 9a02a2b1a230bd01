"""Accuracy summaries across seeds and the perturbation sanity line."""

from __future__ import annotations

import math
from typing import Sequence

import torch


def mean_std(values: Sequence[float]) -> dict:
    """Mean and sample standard deviation (ddof=1; 0 for a single value)."""
    v = [float(a) for a in values]
    if not v:
        return {"mean": float("nan"), "std": float("nan"), "n": 0}
    m = sum(v) / len(v)
    s = math.sqrt(sum((a - m) ** 2 for a in v) / (len(v) - 1)) if len(v) > 1 else 0.0
    return {"mean": m, "std": s, "n": len(v)}


def success_rate(clean_correct: torch.Tensor, robust_correct: torch.Tensor) -> float:
    """Among samples classified correctly when clean (mean over draws > 1/2), the mean fraction of draws
    in which the adversarial example is misclassified."""
    cc = clean_correct.float().mean(0) > 0.5
    if not bool(cc.any()):
        return float("nan")
    return float(1 - robust_correct.float().mean(0)[cc].mean())


def perturbation_stats(x_adv: torch.Tensor, x: torch.Tensor) -> dict:
    """max linf / l2 norm of x_adv - x, NaN count, and the pixel range of x_adv."""
    d = (x_adv - x).flatten(1)
    finite = torch.isfinite(x_adv)
    xa = x_adv[finite] if bool(finite.any()) else torch.zeros(1)
    return {
        "max_linf": float(torch.nan_to_num(d, nan=0.0).abs().max()),
        "max_l2": float(torch.nan_to_num(d, nan=0.0).norm(dim=1).max()),
        "nan": int((~finite).sum()),
        "min_pixel": float(xa.min()),
        "max_pixel": float(xa.max()),
    }


def merge_perturbation_stats(parts: Sequence[dict]) -> dict:
    if not parts:
        return {}
    return {"max_linf": max(p["max_linf"] for p in parts), "max_l2": max(p["max_l2"] for p in parts),
            "nan": sum(p["nan"] for p in parts), "min_pixel": min(p["min_pixel"] for p in parts),
            "max_pixel": max(p["max_pixel"] for p in parts)}


Z95 = 1.959963984540054


def interval95(values: Sequence[float]) -> dict:
    """Mean of per-image scores in [0, 1] with a 95% interval across images (and seeds, when pooled).

    Binary scores (0/1) get the Wilson score interval; fractional scores (the share of draws classifying an
    image correctly) the normal interval of the mean, mean +- 1.96 s / sqrt(n), clipped to [0, 1]."""
    v = [float(a) for a in values]
    n = len(v)
    if n == 0:
        return {"mean": None, "low": None, "high": None, "n": 0}
    m = sum(v) / n
    if all(a in (0.0, 1.0) for a in v):
        z2 = Z95 * Z95
        centre = (m + z2 / (2 * n)) / (1 + z2 / n)
        half = Z95 * math.sqrt(m * (1 - m) / n + z2 / (4 * n * n)) / (1 + z2 / n)
        lo, hi = centre - half, centre + half
    else:
        s = math.sqrt(sum((a - m) ** 2 for a in v) / (n - 1)) if n > 1 else 0.0
        lo, hi = m - Z95 * s / math.sqrt(n), m + Z95 * s / math.sqrt(n)
    return {"mean": m, "low": max(0.0, lo), "high": min(1.0, hi), "n": n}


def paired_difference(a: Sequence[float], b: Sequence[float]) -> dict:
    """Mean of b - a over paired per-image scores and the half-width of its 95% interval (normal approximation of
    the paired differences; for 0/1 scores it behaves like McNemar's test, counting only the images that changed).
    ``significant`` when the interval excludes 0."""
    if len(a) != len(b) or not a:
        raise ValueError(f"paired_difference: need two equally long non-empty lists, got {len(a)} and {len(b)}")
    d = [float(y) - float(x) for x, y in zip(a, b)]
    n = len(d)
    m = sum(d) / n
    s = math.sqrt(sum((v - m) ** 2 for v in d) / (n - 1)) if n > 1 else 0.0
    half = Z95 * s / math.sqrt(n)
    # with no variation at all (every image changed the same way) the interval is the point itself
    return {"diff": m, "half_width": half, "significant": abs(m) > half and m != 0.0, "n": n}
