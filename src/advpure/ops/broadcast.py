"""Broadcasting a per-sample value (a diffusion time, a noise level, a schedule coefficient) against a batch."""

from __future__ import annotations

import torch


def per_sample(v: torch.Tensor | float, like: torch.Tensor, *, cast: bool) -> torch.Tensor:
    """``v`` shaped to broadcast against ``like`` (N, ...) one value per sample.

    A tensor of at most one dimension ((N,), (1,) or a scalar) becomes (N, 1, ..., 1) with ``like.dim()``
    dimensions; a tensor with more dimensions is returned as it is (already shaped).

    ``cast=True``: ``v`` (a tensor or a number) is first converted to ``like``'s dtype and device (no copy, and the
    graph kept, when it already has them), so the product with ``like`` keeps ``like``'s dtype. ``cast=False``:
    ``v`` must be a tensor and keeps its dtype and device, so torch's type promotion decides the result (a float64
    ``v`` times a float32 ``like`` is float64).
    """
    if cast:
        v = torch.as_tensor(v, dtype=like.dtype, device=like.device)
    return v.reshape(-1, *([1] * (like.dim() - 1))) if v.dim() <= 1 else v


__all__ = ["per_sample"]
