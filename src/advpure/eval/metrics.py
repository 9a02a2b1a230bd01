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
