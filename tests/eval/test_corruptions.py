"""Common corruptions (Hendrycks & Dietterich 2019): contracts, determinism, severity ordering, references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from advpure.eval import corruptions as C
from advpure.eval.corruptions import CORRUPTIONS, DETERMINISTIC, corrupt, corruption_accuracy
from advpure.eval.quality import psnr


@pytest.fixture(scope="module")
def natural32():
    """Eight 32x32 RGB crops of scikit-image's bundled photographs (area-downsampled)."""
    data = pytest.importorskip("skimage.data")
    imgs = []
    for name, boxes in (("astronaut", ((0, 0), (200, 250))), ("chelsea", ((50, 100), (150, 250))),
                        ("coffee", ((100, 150), (200, 350))), ("rocket", ((150, 200), (250, 300)))):
        a = torch.from_numpy(getattr(data, name)()).permute(2, 0, 1).float() / 255
        for top, left in boxes:
            imgs.append(a[:, top:top + 128, left:left + 128])
    return F.interpolate(torch.stack(imgs), size=(32, 32), mode="area").clamp(0, 1)


@pytest.fixture(scope="module")
def digits8(digits_data):
    return digits_data[1].batch(slice(0, 8))[0]


def test_names():
    assert len(CORRUPTIONS) == 15 and len(set(CORRUPTIONS)) == 15
    assert set(DETERMINISTIC) < set(CORRUPTIONS)


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_contract_and_determinism(name, natural32, digits8):
    for x in (natural32[:2], digits8[:2]):
        for s in (1, 5):
            a = corrupt(x, name, s, seed=3)
            assert a.shape == x.shape and a.dtype == x.dtype
            assert float(a.min()) >= 0 and float(a.max()) <= 1 and torch.isfinite(a).all()
            assert torch.equal(a, corrupt(x, name, s, seed=3))
            b = corrupt(x, name, s, seed=4)
            if name in DETERMINISTIC:
                assert torch.equal(a, b)
            else:
                assert not torch.equal(a, b), f"{name} sev {s} ignores the seed"
        assert not torch.equal(corrupt(x, name, 5, seed=0), x), f"{name} sev 5 left the images unchanged"


#: corruptions whose PSNR to the original is not monotone in severity *by the original's tables*
#: (tested separately below): glass blur's extra Gaussian smoothing at severities 2-3 offsets the
#: pixel jitter; frost lowers the image weight while raising the frost weight, and the two terms
#: partly cancel; elastic_transform's random affine part shrinks with severity (2.56 -> 0.96 px)
#: while its local elastic part grows.
NON_MONOTONE = {"glass_blur", "frost", "elastic_transform"}


def _mean_psnr(x, name, s, seed=0):
    return float(psnr(x, corrupt(x, name, s, seed=seed)).clamp(max=100).mean())


@pytest.mark.parametrize("name", [n for n in CORRUPTIONS if n not in NON_MONOTONE])
def test_severity_monotone_psnr_rgb32(name, natural32):
    p = [_mean_psnr(natural32, name, s) for s in range(1, 6)]
    # motion blur severities 3 (radius 6, sigma 2) and 4 (radius 8, sigma 2) differ only in
    # kernel taps beyond 3 sigma, so they may tie up to a small tolerance
    tol = 0.1 if name == "motion_blur" else 1e-6
    assert all(a >= b - tol for a, b in zip(p, p[1:])), (name, p)
    assert p[0] > p[-1] + 1.0, (name, p)


@pytest.mark.parametrize("name", [n for n in CORRUPTIONS if n not in NON_MONOTONE | {"pixelate"}])
def test_severity_monotone_psnr_digits(name, digits8):
    p = [_mean_psnr(digits8, name, s) for s in range(1, 6)]
    assert all(a >= b - 0.1 for a, b in zip(p, p[1:])), (name, p)
    assert p[0] > p[-1] + 1.0, (name, p)


def test_severity_non_monotone_cases(natural32, digits8):
    for x in (natural32, digits8):
        g = [_mean_psnr(x, "glass_blur", s) for s in range(1, 6)]
        # same blur sigma, two shuffling passes instead of one: (0.25,1,1) vs (0.25,1,2), (0.4,1,1) vs (0.4,1,2)
        assert g[3] < g[1] - 1 and g[4] < g[2] - 1, g
        assert _mean_psnr(x, "pixelate", 5) < _mean_psnr(x, "pixelate", 1) - 1
    # frost on a black image is frost_weight * texture (same texture for all severities of one seed)
    black = torch.zeros(2, 3, 32, 32)
    m = [float(corrupt(black, "frost", s, seed=1).mean()) for s in range(1, 6)]
    w = [b for _, b in C.FROST]
    assert all(a <= b + 1e-7 for a, b in zip(m, m[1:])) and m[0] > 0.01, m
    np.testing.assert_allclose(np.array(m) / m[0], np.array(w) / w[0], rtol=1e-5)
    # elastic: bilinear sampling reproduces a linear ramp exactly under any affine warp, so the
    # interior's deviation from a fitted plane measures the local (elastic) part, which grows
    ii, jj = torch.meshgrid(torch.arange(32.), torch.arange(32.), indexing="ij")
    ramp = (0.2 + 0.6 * (ii + 0.5 * jj) / 47).expand(1, 3, 32, 32).contiguous()
    A = np.c_[ii[6:-6, 6:-6].reshape(-1), jj[6:-6, 6:-6].reshape(-1), np.ones(400)]
    res = []
    for s in range(1, 6):
        out = corrupt(ramp, "elastic_transform", s, seed=2)[0, 0, 6:-6, 6:-6].reshape(-1).double().numpy()
        coef, *_ = np.linalg.lstsq(A, out, rcond=None)
        res.append(float(np.sqrt(np.mean((A @ coef - out) ** 2))))
    assert res[0] < 1e-6, res  # severity 1 is a pure affine warp (alpha = 0)
    assert all(a < b for a, b in zip(res, res[1:])), res


def test_brightness_matches_skimage_hsv(natural32):
    color = pytest.importorskip("skimage.color")
    for s in (1, 5):
        got = corrupt(natural32[:3], "brightness", s, seed=0).permute(0, 2, 3, 1).double().numpy()
        for i in range(3):
            hsv = color.rgb2hsv(natural32[i].permute(1, 2, 0).double().numpy())
            hsv[..., 2] = np.clip(hsv[..., 2] + C.BRIGHTNESS[s - 1], 0, 1)
            ref = np.clip(color.hsv2rgb(hsv), 0, 1)
            np.testing.assert_allclose(got[i], ref, atol=1e-6)


def test_contrast_and_noise_closed_forms(natural32):
    x = natural32[:2].double()
    out = corrupt(x, "contrast", 5, seed=0)
    mean = x.mean(dim=(2, 3), keepdim=True)
    torch.testing.assert_close(out, ((x - mean) * 0.15 + mean).clamp(0, 1))
    # gaussian noise: the residual's std (where no clipping happened) matches the table
    flat = torch.full((4, 3, 32, 32), 0.5)
    for s, std in enumerate(C.GAUSSIAN_NOISE_STD, start=1):
        r = corrupt(flat, "gaussian_noise", s, seed=0) - 0.5
        assert abs(float(r.std()) - std) < 0.05 * std
    # impulse noise: the fraction of changed values of a mid-grey image is the table's amount
    for s, amount in enumerate(C.IMPULSE_AMOUNT, start=1):
        frac = float((corrupt(flat, "impulse_noise", s, seed=0) != 0.5).float().mean())
        assert abs(frac - amount) < 0.25 * amount + 0.003


def test_motion_blur_is_one_sided_gaussian():
    img = np.zeros((21, 21, 1))
    img[10, 5] = 1.0
    out = C._motion_blur(img, 6, 1.5, 0.0)
    # output(r, c) = sum_i w_i img(r, c + i): the impulse shows up to its left, with weights w_i
    w = np.exp(-np.arange(13) ** 2 / (2 * 1.5 ** 2))
    w /= w.sum()
    np.testing.assert_allclose(out[10, 5::-1, 0], w[:6])
    assert out[10, 6:, 0].sum() == 0 and out[:10].sum() == 0 and out[11:].sum() == 0


def test_bad_input(natural32):
    x = natural32[:1]
    with pytest.raises(ValueError, match="unknown corruption 'speckle'"):
        corrupt(x, "speckle", 1, seed=0)
    for bad in (0, 6, -1):
        with pytest.raises(ValueError, match="1..5"):
            corrupt(x, "fog", bad, seed=0)
    with pytest.raises(TypeError, match="severity"):
        corrupt(x, "fog", 2.0, seed=0)
    with pytest.raises(TypeError, match="seed"):
        corrupt(x, "fog", 2, seed=None)
    with pytest.raises(ValueError, match="channels"):
        corrupt(torch.rand(1, 2, 8, 8), "fog", 2, seed=0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        corrupt(x * 2, "fog", 2, seed=0)


def test_corruption_accuracy(digits_classifier, digits_data):
    x, y = digits_data[1].batch(slice(0, 60))
    res = corruption_accuracy(digits_classifier, x, y, names=("gaussian_noise", "contrast"),
                              severities=(1, 5), seed=0, batch_size=25)
    assert set(res["corruptions"]) == {"gaussian_noise", "contrast"}
    assert set(res["corruptions"]["contrast"]) == {1, 5}
    with torch.no_grad():
        ref = float((digits_classifier(corrupt(x, "contrast", 5, seed=0)).argmax(1) == y).float().mean())
        clean = float((digits_classifier(x).argmax(1) == y).float().mean())
    assert res["corruptions"]["contrast"][5] == pytest.approx(ref)
    assert res["clean"] == pytest.approx(clean) and clean > 0.8
    assert res["mean"]["contrast"] == pytest.approx(np.mean(list(res["corruptions"]["contrast"].values())))
    with pytest.raises(ValueError, match="unknown corruption"):
        corruption_accuracy(digits_classifier, x, y, names=("nope",))
    with pytest.raises(ValueError, match="1..5"):
        corruption_accuracy(digits_classifier, x, y, severities=(0,))
