"""The ``autocast`` option of DiffPure (``diffpure:autocast=bf16``) and SSNI's ``eps_autocast``/``eps_batch``:
plumbed from the spec to the network call, bad values named, output close to float32 on the zoo digits model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from advpure.defenses.diffpure import DiffPure
from advpure.defenses.ssni import SSNI
from advpure.specs import SpecContext, build

ZOO = Path(__file__).resolve().parents[2] / "zoo"
needs_zoo = pytest.mark.skipif(not (ZOO / "digits-ddpm.safetensors").is_file(), reason="zoo digits DDPM absent")


def _record_autocast(module: torch.nn.Module) -> list:
    """Forward pre-hook that records (autocast enabled, dtype) on the CPU at every call of ``module``."""
    seen: list = []
    module.register_forward_pre_hook(
        lambda _m, _a: seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"))))
    return seen


@needs_zoo
def test_diffpure_spec_autocast_reaches_the_network():
    ctx = SpecContext(dataset="digits")
    p = build("defense", "diffpure:steps=3,autocast=bf16", ctx)
    assert isinstance(p, DiffPure) and p.autocast is torch.bfloat16
    assert p.describe()["autocast"] == "bfloat16"
    seen = _record_autocast(p.eps_model)
    with torch.no_grad():
        out = p(torch.rand(2, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    assert out.dtype == torch.float32  # the sampler's arithmetic and the output stay float32
    assert seen == [(True, torch.bfloat16)] * 3
    off = build("defense", "diffpure:steps=3", ctx)
    assert off.autocast is None and "autocast" not in off.describe()
    assert build("defense", "diffpure:steps=3,autocast=none", ctx).autocast is None
    assert p.with_steps(2).autocast is torch.bfloat16  # surrogates share the option


@needs_zoo
def test_ssni_spec_eps_autocast_and_batch():
    ctx = SpecContext(dataset="digits")
    s = build("defense", "ssni:steps=2,eps_autocast=bf16,eps_batch=32", ctx)
    assert isinstance(s, SSNI) and s.eps_autocast is torch.bfloat16 and s.max_batch == 32
    assert s.base.autocast is None  # the purification's network stays float32 unless autocast= is given
    seen = _record_autocast(s.base.eps_model)
    with torch.no_grad():
        s(torch.rand(4, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    # EPS pass: 20 levels x 4 images = 80 in calls of 32 under bf16, then 2 float32 reverse steps
    assert seen == [(True, torch.bfloat16)] * 3 + [(False, torch.get_autocast_dtype("cpu"))] * 2
    assert s.with_steps(1).eps_autocast is torch.bfloat16 and s.with_steps(1).max_batch == 32
    both = build("defense", "ssni:steps=2,autocast=bf16", ctx)
    assert both.base.autocast is torch.bfloat16 and both.eps_autocast is None


@pytest.mark.parametrize("spec, name", [("diffpure:autocast=fp8", "autocast"), ("diffpure:autocast=true", "autocast"),
                                        ("ssni:eps_autocast=fp8", "eps_autocast"), ("ssni:autocast=float8", "autocast")])
def test_bad_autocast_values_are_named(spec, name):
    with pytest.raises(ValueError, match=f"{name}: expected one of bf16, fp16 or none"):
        build("defense", spec, SpecContext(dataset="digits"))


@needs_zoo
def test_bf16_diffpure_output_close_to_fp32_on_digits():
    """Same generator, 64 digits test images, the paper's 100 steps from t* = 0.1. Tolerance: the mean absolute
    difference below 1e-3, a quarter of one 8-bit grey level (1/255), so the images agree after quantisation
    up to rare single-level flips, and the largest pixel difference below 1e-2 (measured: 2.4e-4 and 1.4e-3).
    For scale, another noise draw of float32 DiffPure changes the output by 8e-2 on average: bf16's change must
    stay below 1% of that."""
    from advpure.data import load_dataset
    from advpure.diffusion import load_denoiser

    net, _ = load_denoiser(ZOO / "digits-ddpm.safetensors")
    x, _ = load_dataset("digits", "test").subset(64, 0).tensors()
    fp32, bf16 = DiffPure(net, t=0.1), DiffPure(net, t=0.1, autocast="bf16")
    with torch.no_grad():
        a = fp32(x, generator=torch.Generator().manual_seed(0))
        b = bf16(x, generator=torch.Generator().manual_seed(0))
        c = fp32(x, generator=torch.Generator().manual_seed(1))
    d = (a - b).abs()
    assert float(d.mean()) < 1e-3 and float(d.max()) < 1e-2, (float(d.mean()), float(d.max()))
    assert float(d.mean()) < 0.01 * float((a - c).abs().mean())
