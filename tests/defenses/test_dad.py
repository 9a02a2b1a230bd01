"""DAD at inference: clean batches pass untouched, flagged inputs are denoised, bad inputs are refused."""

from __future__ import annotations

import pytest
import torch

from advpure.defenses.dad import DAD, ResidualUNet, add_noise, load_denoiser, save_denoiser
from advpure.detect.kernels import build_deep_kernel
from advpure.detect.mmd_opt import pgd_linf, train_kernel


@pytest.fixture(scope="module")
def setup(digits_data, digits_classifier):
    train, test = digits_data
    clf = digits_classifier
    for p in clf.parameters():
        p.requires_grad_(False)
    x, y = train.tensors()
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(y), generator=g)
    adv = pgd_linf(clf, x[idx[200:400]], y[idx[200:400]], eps=0.2, steps=10, generator=g)
    torch.manual_seed(0)
    k = build_deep_kernel(input_shape=(1, 8, 8), featurizer="semantic", classifier=clf)
    train_kernel(k, x[idx[:200]], adv, epochs=20, lr=1e-2)
    torch.manual_seed(1)
    den = ResidualUNet(in_channels=1, width=8, depth=1)
    with torch.no_grad():  # a non-identity "denoiser" so that denoised outputs are recognisable
        den.out.bias.fill_(0.05)
    xt, yt = test.tensors()
    adv_t = pgd_linf(clf, xt[:50], yt[:50], eps=0.2, steps=10, generator=g)
    return clf, k, den, x[idx[400:600]], x[idx[600:900]], xt, adv_t


def test_clean_batch_untouched_and_adversarial_batch_denoised(setup):
    clf, k, den, ref, cal, xt, adv_t = setup
    dad = DAD(den, k, ref, mode="batch", test="permutation", n_resamples=100)
    x = xt[100:150]
    out = dad(x, generator=torch.Generator().manual_seed(0))
    assert not bool(dad.last_flags.any())
    assert out is x  # identical, not a copy that could differ
    out = dad(adv_t, generator=torch.Generator().manual_seed(0))
    assert bool(dad.last_flags.all())
    # the test consumed draws from the generator first; recompute with the same stream
    gen = torch.Generator().manual_seed(0)
    dad.detect(adv_t, generator=gen)
    expect = den(add_noise(adv_t, std=0.25, generator=gen))
    assert torch.allclose(out, expect)
    assert not torch.allclose(out, adv_t)


def test_sample_mode_denoises_only_flagged(setup):
    clf, k, den, ref, cal, xt, adv_t = setup
    dad = DAD(den, k, ref, mode="sample", noise_std=0.0)
    thr = dad.calibrate_sample(cal, fpr=0.05)
    x = torch.cat([xt[100:125], adv_t[:25]])
    flags = dad.sample_scores(x) > thr
    out = dad(x)
    assert torch.equal(dad.last_flags, flags)
    assert torch.equal(out[~flags], x[~flags])
    if flags.any():
        assert torch.allclose(out[flags], den(x[flags]))
    # calibrated false-positive rate on fresh clean images is near the target
    fp = float((dad.sample_scores(xt) > thr).float().mean())
    assert fp < 0.15
    # replace() keeps the calibration unless the statistic it was calibrated on changes
    assert dad.replace(noise_std=0.1).sample_threshold == thr
    assert dad.replace(reference=ref[:100]).sample_threshold is None


def test_threshold_test_and_errors(setup, tmp_path):
    clf, k, den, ref, cal, xt, adv_t = setup
    dad = DAD(den, k, ref, test="threshold")
    with pytest.raises(ValueError, match="no threshold calibrated for batch size 50"):
        dad(xt[:50])
    dad.calibrate_batch(cal, batch_size=50, fpr=0.05, n_batches=60)
    dad(xt[:50])
    perm = DAD(den, k, ref[:40])
    with pytest.raises(ValueError, match="only 40 reference images"):
        perm(xt[:50])
    with pytest.raises(ValueError, match="too small"):
        perm(xt[:2])
    with pytest.raises(ValueError, match="inputs of shape"):
        perm(torch.rand(10, 3, 8, 8))
    with pytest.raises(ValueError, match="calibrate_sample"):
        DAD(den, k, ref, mode="sample")(xt[:10])
    with pytest.raises(ValueError, match="mode"):
        DAD(den, k, ref, mode="per-image")
    save_denoiser(den, tmp_path / "d.safetensors", input_shape=(1, 8, 8))
    d2 = load_denoiser(tmp_path / "d.safetensors", input_shape=(1, 8, 8))
    assert torch.allclose(d2(xt[:4]), den(xt[:4]))
    with pytest.raises(ValueError, match="denoiser trained for inputs"):
        load_denoiser(tmp_path / "d.safetensors", input_shape=(3, 32, 32))


def test_untrained_denoiser_is_identity():
    x = torch.rand(3, 3, 8, 8)
    assert torch.equal(ResidualUNet(in_channels=3, width=8, depth=2)(x), x)
