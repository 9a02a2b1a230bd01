"""SSIM/PSNR against independent implementations (pytorch-msssim, scikit-image)."""

from __future__ import annotations

import pytest
import torch

from advpure.eval.quality import default_ssim_window, lpips_available, psnr, quality_report, ssim

skm = pytest.importorskip("skimage.metrics")


def _pair(n, c, h, w, seed=0, noise=0.1):
    g = torch.Generator().manual_seed(seed)
    # smooth-ish images so SSIM is not trivially near 0
    base = torch.rand(n, c, h // 4 + 1, w // 4 + 1, generator=g, dtype=torch.float64)
    x = torch.nn.functional.interpolate(base, size=(h, w), mode="bilinear", align_corners=False)
    y = (x + noise * torch.randn(x.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    return x, y


@pytest.mark.parametrize("c,size", [(1, 32), (3, 32), (3, 48)])
def test_ssim_matches_pytorch_msssim(c, size):
    pm = pytest.importorskip("pytorch_msssim")
    x, y = _pair(4, c, size, size, seed=c + size)
    ref = pm.ssim(x, y, data_range=1.0, size_average=False, win_size=11, win_sigma=1.5)
    got = ssim(x, y)
    assert got.shape == (4,)
    # pytorch-msssim builds its window in float32, hence 1e-6 rather than double precision
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("c,size", [(1, 32), (3, 32), (1, 8), (3, 9)])
def test_ssim_matches_skimage(c, size):
    x, y = _pair(3, c, size, size, seed=7 * c + size, noise=0.15)
    win, sigma = default_ssim_window(size, size)
    got = ssim(x, y)
    for i in range(3):
        ref = skm.structural_similarity(
            x[i].numpy(), y[i].numpy(), data_range=1.0, gaussian_weights=True, sigma=sigma,
            use_sample_covariance=False, channel_axis=0,
        )
        assert abs(float(got[i]) - ref) < 1e-10, (i, float(got[i]), ref)
    if size >= 11:
        assert (win, sigma) == (11, 1.5)


def test_ssim_window_for_digits():
    assert default_ssim_window(8, 8) == (7, pytest.approx(1.5 * 7 / 11))
    with pytest.raises(ValueError, match="too small"):
        default_ssim_window(2, 2)


def test_ssim_properties_and_gradient():
    x, y = _pair(2, 1, 8, 8)
    x = x.float().requires_grad_(True)
    assert torch.allclose(ssim(x.detach(), x.detach()), torch.ones(2))
    s = ssim(x, y.float(), reduction="mean")
    assert s.dim() == 0 and float(s.detach()) < 1
    s.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # gradient check in double precision
    xd, yd = _pair(1, 1, 8, 8, seed=3)
    xd.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: ssim(a, yd), (xd,))


def test_psnr_matches_skimage():
    x, y = _pair(4, 3, 16, 16, seed=5)
    got = psnr(x, y)
    for i in range(4):
        ref = skm.peak_signal_noise_ratio(x[i].numpy(), y[i].numpy(), data_range=1.0)
        assert abs(float(got[i]) - ref) < 1e-9
    assert torch.isinf(psnr(x, x)).all()


def test_bad_input():
    x, y = _pair(2, 1, 8, 8)
    with pytest.raises(ValueError, match="same shape"):
        ssim(x, y[:1])
    with pytest.raises(ValueError, match="odd"):
        ssim(x, y, win_size=4)
    with pytest.raises(ValueError, match="does not fit"):
        ssim(x, y, win_size=11)
    with pytest.raises(ValueError, match="reduction"):
        psnr(x, y, reduction="sum")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ssim(x * 3, y)
    with pytest.raises(ValueError, match="4-D"):
        psnr(x[0], y[0])


def test_lpips_unavailable_without_weights(monkeypatch, tmp_path):
    monkeypatch.delenv("ADVPURE_LPIPS_WEIGHTS", raising=False)
    st = lpips_available()
    assert not st and "unset" in st.reason
    monkeypatch.setenv("ADVPURE_LPIPS_WEIGHTS", str(tmp_path / "missing.pth"))
    assert "not a file" in lpips_available().reason


def test_quality_report():
    x, adv = _pair(5, 3, 16, 16, seed=1, noise=0.05)
    x, adv = x.float(), adv.float()
    purified = x.clone()
    purified[0] = adv[0]  # one purified image equals the adversarial one
    rep = quality_report(x, adv, purified)
    assert rep["n"] == 5
    assert rep["ssim_clean_purified"]["mean"] > rep["ssim_adv_purified"]["mean"]
    assert rep["psnr_clean_purified"]["n_inf"] == 4 and rep["psnr_adv_purified"]["n_inf"] == 1
    ref = float(psnr(adv[1:2], purified[1:2]).mean() + psnr(adv[2:], purified[2:]).sum()) / 4
    assert abs(rep["psnr_adv_purified"]["mean"] - ref) < 1e-4
    assert rep["lpips"].startswith("unavailable: ")
    with pytest.raises(ValueError, match="same shape"):
        quality_report(x, adv[:2], purified)


def test_purification_figure_writes_png(tmp_path):
    from advpure.experiments.figures import purification_figure

    for c in (1, 3):
        x, adv = _pair(3, c, 8, 8, seed=c)
        x, adv = x.float(), adv.float()
        out = purification_figure(x, adv, (x + adv) / 2, tmp_path / f"fig{c}.png", n=8)
        data = out.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    with pytest.raises(ValueError, match="png"):
        purification_figure(x, adv, adv, tmp_path / "fig.jpg")
    with pytest.raises(ValueError, match="same shape"):
        purification_figure(x, adv[:1], adv, tmp_path / "fig.png")


def test_corruption_grid_writes_png(tmp_path):
    from advpure.experiments.figures import corruption_grid

    x = _pair(1, 1, 8, 8)[0].float()
    out = corruption_grid(x, tmp_path / "grid.png", severities=(1, 5), names=("fog", "contrast"))
    assert out.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="one 1- or 3-channel image"):
        corruption_grid(torch.rand(2, 3, 8, 8), tmp_path / "g.png")
