"""The one SSIM (advpure.ops.ssim) against a direct computation of Wang et al. (2004), eq. 13, and its call sites.

The reference below is written from the paper, not from the code under test: for every window position, the
Gaussian-weighted local means, variances and covariance (weights w, sum w = 1; population moments), then
``(2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2))`` with C1 = (0.01 L)^2 and
C2 = (0.03 L)^2, averaged over positions and channels. "valid": windows inside the image; "same": the image
zero-padded by half a window, one window per pixel.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from advpure.ops.ssim import ssim, ssim_map


def reference_ssim(x: np.ndarray, y: np.ndarray, *, L: float = 1.0, win: int = 11, sigma: float = 1.5,
                   padding: str = "valid") -> np.ndarray:
    """SSIM per image of (N, C, H, W) arrays by explicit loops over window positions."""
    r = np.arange(win) - (win - 1) / 2
    w = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma ** 2))
    w /= w.sum()
    c1, c2 = (0.01 * L) ** 2, (0.03 * L) ** 2
    if padding == "same":
        p = win // 2
        x = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
        y = np.pad(y, ((0, 0), (0, 0), (p, p), (p, p)))
    n, c, h, wd = x.shape
    out = np.zeros(n)
    for i in range(n):
        vals = []
        for ch in range(c):
            for u in range(h - win + 1):
                for v in range(wd - win + 1):
                    a = x[i, ch, u:u + win, v:v + win]
                    b = y[i, ch, u:u + win, v:v + win]
                    mx, my = (w * a).sum(), (w * b).sum()
                    sxx = (w * (a - mx) ** 2).sum()
                    syy = (w * (b - my) ** 2).sum()
                    sxy = (w * (a - mx) * (b - my)).sum()
                    vals.append((2 * mx * my + c1) * (2 * sxy + c2) / ((mx ** 2 + my ** 2 + c1) * (sxx + syy + c2)))
        out[i] = np.mean(vals)
    return out


def _pair(n=2, c=3, h=16, w=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, c, h, w, generator=g, dtype=torch.float64)
    y = (x + 0.2 * torch.randn(n, c, h, w, generator=g, dtype=torch.float64)).clamp(0, 1)
    return x, y


@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("c", [1, 3])
def test_ssim_equals_the_paper_formula(padding, c):
    x, y = _pair(c=c)
    ref = reference_ssim(x.numpy(), y.numpy(), padding=padding)
    got = ssim(x, y, win_size=11, sigma=1.5, padding=padding)
    assert got.shape == (2,)
    np.testing.assert_allclose(got.numpy(), ref, rtol=0, atol=1e-12)
    assert float(ssim(x, x, padding=padding).min()) == pytest.approx(1.0, abs=1e-12)


def test_data_range_scales_c1_c2():
    x, y = _pair(c=1, seed=1)
    ref = reference_ssim(255 * x.numpy(), 255 * y.numpy(), L=255.0)
    np.testing.assert_allclose(ssim(255 * x, 255 * y, data_range=255.0).numpy(), ref, rtol=0, atol=1e-12)


def test_small_images_default_window():
    """8x8 digits: "valid" windows default to 7 taps, sigma 1.5 * 7 / 11; "same" keeps 11 taps, sigma 1.5."""
    x, y = _pair(c=1, h=8, w=8, seed=2)
    np.testing.assert_allclose(ssim(x, y).numpy(), reference_ssim(x.numpy(), y.numpy(), win=7, sigma=1.5 * 7 / 11),
                               rtol=0, atol=1e-12)
    np.testing.assert_allclose(ssim(x, y, padding="same").numpy(), reference_ssim(x.numpy(), y.numpy(), padding="same"),
                               rtol=0, atol=1e-12)
    assert ssim_map(x, y).shape == (2, 1, 2, 2) and ssim_map(x, y, padding="same").shape == (2, 1, 8, 8)


def test_bad_arguments():
    x, y = _pair(c=1, h=8, w=8)
    with pytest.raises(ValueError, match="padding"):
        ssim(x, y, padding="reflect")
    with pytest.raises(ValueError, match="does not fit"):
        ssim(x, y, win_size=11)
    with pytest.raises(ValueError, match="odd"):
        ssim(x, y, win_size=4)
    with pytest.raises(ValueError, match="reduction"):
        ssim(x, y, reduction="sum")


def test_call_sites_use_it():
    """eval.quality.ssim is the checked "valid" SSIM; GDMP's guidance is the gradient of the "same" SSIM (11 taps,
    sigma 1.5) of the images mapped from [-1, 1], summed per image times the pixel count."""
    from advpure.defenses.gdmp import _similarity_grad
    from advpure.eval.quality import ssim as quality_ssim

    x, y = _pair(c=3, h=32, w=32, seed=3)
    assert torch.equal(quality_ssim(x.float(), y.float()), ssim(x.float(), y.float()))
    with pytest.raises(ValueError, match="NaN"):
        quality_ssim(x * float("nan"), y)
    a, b = 2 * x - 1, 2 * y - 1
    grad = _similarity_grad("ssim", a, b)
    # the reference gradient by central differences of the paper formula, at a few pixels
    npix = x[0].numel()
    for idx in [(0, 0, 0, 0), (1, 2, 16, 7), (0, 1, 31, 31)]:
        h = 1e-6
        ap, am = a.clone(), a.clone()
        ap[idx] += h
        am[idx] -= h
        f = lambda z: reference_ssim(((z + 1) / 2)[idx[0]:idx[0] + 1].numpy(),  # noqa: E731
                                     ((b + 1) / 2)[idx[0]:idx[0] + 1].numpy(), padding="same")[0] * npix
        assert float(grad[idx]) == pytest.approx((f(ap) - f(am)) / (2 * h), rel=1e-5, abs=1e-6)
