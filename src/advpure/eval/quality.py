"""Image-quality metrics for purified images: SSIM, PSNR and (when local weights exist) LPIPS.

All metrics take float [0, 1] NCHW batches and return one value per image (``reduction="none"``).

SSIM: :func:`advpure.ops.ssim.ssim` (Wang, Bovik, Sheikh & Simoncelli 2004, eq. 13; Gaussian window,
"valid" windows only, K1 = 0.01, K2 = 0.03, population covariances; the paper's 11-tap, sigma 1.5 window, or the
largest odd one that fits smaller images: 7 taps, sigma 1.5 * 7 / 11 on the 8x8 digits, a coarse number there),
with the inputs checked here. It matches ``pytorch_msssim.ssim(win_size=11, win_sigma=1.5)`` and scikit-image's
``structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``.

PSNR: ``10 log10(data_range^2 / MSE)`` per image (``inf`` for identical images).

LPIPS (Zhang et al. 2018) needs pretrained network weights. Nothing is ever downloaded: LPIPS is
reported only when ``$ADVPURE_LPIPS_WEIGHTS`` points to a local file *and* an implementation that can
read it is present. This release has no LPIPS network implementation (the reference package pulls in
torchvision), so :func:`lpips_available` explains why it is unavailable and :func:`quality_report`
records ``"unavailable: <reason>"``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..contracts import check_images, check_positive
from ..ops import ssim as _ssim
from ..ops.ssim import default_window as default_ssim_window

LPIPS_ENV = "ADVPURE_LPIPS_WEIGHTS"


def _check_pair(x: torch.Tensor, y: torch.Tensor, names: tuple[str, str] = ("x", "y"),
                data_range: float = 1.0) -> None:
    # range check only for the default [0, 1] convention
    check_images(x, name=names[0], check_range=data_range == 1.0)
    check_images(y, name=names[1], check_range=data_range == 1.0)
    if x.shape != y.shape:
        raise ValueError(f"{names[0]} and {names[1]} must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")


def ssim(x: torch.Tensor, y: torch.Tensor, *, data_range: float = 1.0, win_size: int | None = None,
         sigma: float | None = None, reduction: str = "none") -> torch.Tensor:
    """Structural similarity per image (Wang et al. 2004, eq. 13), differentiable in ``x`` and ``y``: the images
    checked, then :func:`advpure.ops.ssim.ssim` with "valid" windows.

    Args:
        x, y: float NCHW batches of the same shape (any number of channels), values in [0, data_range].
        data_range: L in C1 = (K1 L)^2, C2 = (K2 L)^2; 1.0 for [0, 1] images.
        win_size: odd Gaussian window size; default 11 (the paper's), or the largest odd size that fits
            for images smaller than 11 pixels (7 for 8x8 digits).
        sigma: window standard deviation; default 1.5 for 11 taps, else ``1.5 * win_size / 11``.
        reduction: ``"none"`` (shape (N,)) or ``"mean"`` (a scalar).
    """
    _check_pair(x, y, data_range=data_range)
    return _ssim.ssim(x, y, data_range=data_range, win_size=win_size, sigma=sigma, padding="valid",
                      reduction=reduction)


def psnr(x: torch.Tensor, y: torch.Tensor, *, data_range: float = 1.0, reduction: str = "none") -> torch.Tensor:
    """Peak signal-to-noise ratio per image in dB: ``10 log10(data_range^2 / MSE)``; ``inf`` when equal."""
    _check_pair(x, y, data_range=data_range)
    data_range = check_positive(data_range, "data_range")
    if reduction not in ("none", "mean"):
        raise ValueError(f"reduction: expected 'none' or 'mean', got {reduction!r}")
    mse = (x.double() - y.double()).pow(2).flatten(1).mean(dim=1)
    out = (10 * torch.log10(data_range ** 2 / mse)).to(x.dtype)
    return out.mean() if reduction == "mean" else out


@dataclass(frozen=True)
class LpipsStatus:
    """Truthy only when LPIPS can be computed; ``reason`` says why not."""

    available: bool
    reason: str

    def __bool__(self) -> bool:
        return self.available


def lpips_available() -> LpipsStatus:
    """Whether LPIPS can be computed here (never downloads anything).

    Requires ``$ADVPURE_LPIPS_WEIGHTS`` to name an existing local file and an LPIPS network
    implementation; this release ships none, so the status is always unavailable with the reason.
    """
    path = os.environ.get(LPIPS_ENV)
    if not path:
        return LpipsStatus(False, f"no local LPIPS weights (${LPIPS_ENV} is unset; nothing is downloaded)")
    if not Path(path).expanduser().is_file():
        return LpipsStatus(False, f"${LPIPS_ENV}={path} is not a file")
    return LpipsStatus(False, f"weights at {path} found, but advpure has no LPIPS network implementation "
                              "(the reference lpips package requires torchvision)")


def _mean_std(v: torch.Tensor) -> dict:
    v = v.detach().double()
    finite = v[torch.isfinite(v)]
    n_inf = int((~torch.isfinite(v)).sum())
    d = {"mean": float(finite.mean()) if finite.numel() else math.inf,
         "std": float(finite.std(unbiased=False)) if finite.numel() else 0.0}
    if n_inf:
        d["n_inf"] = n_inf  # identical pairs (PSNR = inf), left out of mean/std
    return d


@torch.no_grad()
def quality_report(clean: torch.Tensor, adv: torch.Tensor, purified: torch.Tensor) -> dict:
    """SSIM and PSNR of purified images against the clean and the adversarial ones (mean, std over images).

    Returns ``{"n", "ssim_clean_purified", "ssim_adv_purified", "psnr_clean_purified",
    "psnr_adv_purified", "ssim_clean_adv", "psnr_clean_adv", "lpips"}``; each metric entry is
    ``{"mean", "std"}`` (PSNR of identical pairs is ``inf``: those are counted in ``n_inf`` and left
    out of mean/std). ``lpips`` is ``"unavailable: <reason>"`` (see :func:`lpips_available`).
    """
    for t, n in ((clean, "clean"), (adv, "adv"), (purified, "purified")):
        check_images(t, name=n)
    if not (clean.shape == adv.shape == purified.shape):
        raise ValueError(f"clean, adv and purified must have the same shape, got {tuple(clean.shape)}, "
                         f"{tuple(adv.shape)} and {tuple(purified.shape)}")
    status = lpips_available()
    return {
        "n": int(clean.shape[0]),
        "ssim_clean_purified": _mean_std(ssim(clean, purified)),
        "ssim_adv_purified": _mean_std(ssim(adv, purified)),
        "psnr_clean_purified": _mean_std(psnr(clean, purified)),
        "psnr_adv_purified": _mean_std(psnr(adv, purified)),
        "ssim_clean_adv": _mean_std(ssim(clean, adv)),
        "psnr_clean_adv": _mean_std(psnr(clean, adv)),
        "lpips": "available" if status else f"unavailable: {status.reason}",
    }


__all__ = ["ssim", "psnr", "lpips_available", "LpipsStatus", "quality_report", "default_ssim_window"]
