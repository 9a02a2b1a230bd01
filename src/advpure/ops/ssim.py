"""SSIM, the one implementation: the image-quality metric (:mod:`advpure.eval.quality`) and the differentiable
similarity of purifiers (GDMP's guidance, the losses of CMAP and distribution transfer).

Structural similarity (Wang, Bovik, Sheikh & Simoncelli 2004, eq. 13) with a Gaussian window, K1 = 0.01,
K2 = 0.03 and population (not sample) covariances::

    SSIM(x, y) = mean over windows and channels of
                 (2 mu_x mu_y + C1)(2 sigma_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(sigma_x^2 + sigma_y^2 + C2)),
    C1 = (K1 L)^2, C2 = (K2 L)^2, L = data_range.

The local statistics are a separable Gaussian filter per channel. ``padding`` says which windows count:

- ``"valid"`` (default): only windows inside the image (no padding). This matches
  ``pytorch_msssim.ssim(win_size=11, win_sigma=1.5)`` and scikit-image's ``structural_similarity(
  gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``.
- ``"same"``: the image zero-padded by ``win_size // 2``, one window per pixel, as ``pytorch_ssim`` (the code
  the GDMP authors use) computes it; near the border the zeros pull the local statistics down.

Window choice: the paper's 11-tap window with sigma 1.5. With ``"valid"`` windows on images smaller than 11
pixels (the 8x8 digits) the default window becomes the largest odd size that fits (7 for 8x8) with sigma
scaled by the same ratio, ``sigma = 1.5 * win_size / 11`` (0.955 for 7 taps: the window still spans about
+-3.5 sigma as scikit-image's truncation does, so ``structural_similarity(gaussian_weights=True,
sigma=1.5*7/11)`` reproduces it). On 8x8 images this leaves a 2x2 map of local SSIM values per channel.

No check of the images here (finite, in [0, L]): this runs inside optimisation loops, and callers check their
inputs once (:func:`advpure.eval.quality.ssim` checks them).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..contracts import check_int, check_positive

#: Wang et al. (2004): K1, K2 stabilisers and the 11-tap, sigma = 1.5 Gaussian window
K1 = 0.01
K2 = 0.03
WIN_SIZE = 11
SIGMA = 1.5
PADDINGS = ("valid", "same")


def default_window(height: int, width: int) -> tuple[int, float]:
    """(win_size, sigma) of ``"valid"`` SSIM when none is given: 11/1.5 if it fits, else the largest odd size
    that does, with sigma scaled alike."""
    side = min(height, width)
    if side >= WIN_SIZE:
        return WIN_SIZE, SIGMA
    win = side if side % 2 == 1 else side - 1
    if win < 3:
        raise ValueError(f"ssim: images of {height}x{width} are too small; need at least 3x3 for a window")
    return win, SIGMA * win / WIN_SIZE


def gaussian_1d(win_size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The normalised 1-D Gaussian window (computed in float64, then cast)."""
    r = torch.arange(win_size, dtype=torch.float64) - (win_size - 1) / 2
    g = torch.exp(-(r ** 2) / (2 * sigma ** 2))
    return (g / g.sum()).to(dtype=dtype, device=device)


def _filter(x: torch.Tensor, g: torch.Tensor, pad: int) -> torch.Tensor:
    """Separable Gaussian filter per channel; ``pad`` zeros on each side (0: valid part only)."""
    c = x.shape[1]
    k = g.numel()
    x = F.conv2d(x, g.view(1, 1, 1, k).expand(c, 1, 1, k), padding=(0, pad), groups=c)
    return F.conv2d(x, g.view(1, 1, k, 1).expand(c, 1, k, 1), padding=(pad, 0), groups=c)


def _window(h: int, w: int, win_size: int | None, sigma: float | None, padding: str) -> tuple[int, float]:
    if padding not in PADDINGS:
        raise ValueError(f"padding: expected 'valid' or 'same', got {padding!r}")
    if win_size is None:
        win_size, default_sigma = default_window(h, w) if padding == "valid" else (WIN_SIZE, SIGMA)
    else:
        check_int(win_size, "win_size", minimum=1)
        if win_size % 2 == 0:
            raise ValueError(f"win_size: expected an odd window size, got {win_size}")
        if padding == "valid" and win_size > min(h, w):
            raise ValueError(f"win_size={win_size} does not fit images of {h}x{w}; use win_size <= {min(h, w)}")
        default_sigma = SIGMA * win_size / WIN_SIZE
    return win_size, default_sigma if sigma is None else check_positive(sigma, "sigma")


def ssim_map(x: torch.Tensor, y: torch.Tensor, *, data_range: float = 1.0, win_size: int | None = None,
             sigma: float | None = None, padding: str = "valid") -> torch.Tensor:
    """Local SSIM values (N, C, H', W'): H' = H - win_size + 1 for ``"valid"``, H for ``"same"``.

    Args:
        x, y: float NCHW batches of the same shape (any number of channels), values in [0, data_range].
        data_range: L in C1 = (K1 L)^2, C2 = (K2 L)^2; 1.0 for [0, 1] images.
        win_size: odd Gaussian window size; default 11, or for ``"valid"`` windows on images smaller than
            11 pixels the largest odd size that fits (7 for 8x8 digits).
        sigma: window standard deviation; default 1.5 for 11 taps, else ``1.5 * win_size / 11``.
        padding: ``"valid"`` or ``"same"`` (see the module docstring).
    """
    data_range = check_positive(data_range, "data_range")
    win_size, sigma = _window(x.shape[-2], x.shape[-1], win_size, sigma, padding)
    g = gaussian_1d(win_size, sigma, x.dtype, x.device)
    pad = win_size // 2 if padding == "same" else 0
    c1 = (K1 * data_range) ** 2
    c2 = (K2 * data_range) ** 2
    mu_x = _filter(x, g, pad)
    mu_y = _filter(y, g, pad)
    sxx = _filter(x * x, g, pad) - mu_x ** 2
    syy = _filter(y * y, g, pad) - mu_y ** 2
    sxy = _filter(x * y, g, pad) - mu_x * mu_y
    cs_map = (2 * sxy + c2) / (sxx + syy + c2)
    return (2 * mu_x * mu_y + c1) / (mu_x ** 2 + mu_y ** 2 + c1) * cs_map


def ssim(x: torch.Tensor, y: torch.Tensor, *, data_range: float = 1.0, win_size: int | None = None,
         sigma: float | None = None, padding: str = "valid", reduction: str = "none") -> torch.Tensor:
    """SSIM per image (the mean of :func:`ssim_map` over windows and channels), differentiable in ``x`` and ``y``.

    Arguments as :func:`ssim_map`; ``reduction``: ``"none"`` (shape (N,)) or ``"mean"`` (a scalar).
    """
    data_range = check_positive(data_range, "data_range")
    if reduction not in ("none", "mean"):
        raise ValueError(f"reduction: expected 'none' or 'mean', got {reduction!r}")
    per_image = ssim_map(x, y, data_range=data_range, win_size=win_size, sigma=sigma,
                         padding=padding).flatten(1).mean(dim=1)
    return per_image.mean() if reduction == "mean" else per_image


__all__ = ["K1", "K2", "WIN_SIZE", "SIGMA", "PADDINGS", "default_window", "gaussian_1d", "ssim", "ssim_map"]
