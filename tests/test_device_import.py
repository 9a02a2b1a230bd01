"""benchmarks/device_import.py: fp32 device weights stored as float16 in the zoo. Expected bounds come from IEEE 754
half precision (10 stored mantissa bits: round-to-nearest is within 2^-11 of a normal value), not from our code."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from advpure.diffusion.models import load_denoiser

REPO = Path(__file__).resolve().parents[1]
ZOO_MODEL = REPO / "zoo" / "cifar10-purify-t0.2.safetensors"


def _module():
    spec = importlib.util.spec_from_file_location("device_import", REPO / "benchmarks" / "device_import.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_half_rounding_is_within_ieee_half_precision():
    mod = _module()
    g = torch.Generator().manual_seed(0)
    sd = {"w": torch.randn(64, 64, generator=g), "b": torch.rand(7, generator=g) * 3, "n": torch.arange(5)}
    half, err = mod.to_half(sd)
    assert half["w"].dtype == torch.float16 and half["n"].dtype == torch.int64
    for k in ("w", "b"):
        rel = ((half[k].float() - sd[k]).abs() / sd[k].abs().clamp_min(2.0 ** -14)).max().item()
        assert rel <= 2.0 ** -11, (k, rel)
    assert 0 < err <= 2.0 ** -11


def test_out_of_range_tensor_is_refused_by_name():
    with pytest.raises(ValueError, match="'big'.*float16"):
        _module().to_half({"big": torch.tensor([1.0, 7.0e4])})


@pytest.mark.skipif(not ZOO_MODEL.is_file(), reason="zoo/cifar10-purify-t0.2 not in this checkout")
def test_imported_model_loads_and_predicts_like_the_fp32_one(tmp_path):
    dst = tmp_path / "imported"
    _module().main([str(ZOO_MODEL), str(dst)])
    path = dst.with_name("imported.safetensors")
    side = json.loads(path.with_suffix(".json").read_text())
    src_side = json.loads(ZOO_MODEL.with_suffix(".json").read_text())
    assert side["stored_dtype"] == "float16" and side["source"]["sha256"] == src_side["sha256"]
    assert side["command"] == src_side["command"] and side["training_steps"] == src_side["training_steps"]
    assert path.stat().st_size < 0.52 * ZOO_MODEL.stat().st_size
    m32, _ = load_denoiser(ZOO_MODEL)
    m16, _ = load_denoiser(path)
    assert next(m16.parameters()).dtype == torch.float32
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 32, 32, generator=g)
    t = torch.tensor([0.05, 0.1])
    with torch.no_grad():
        a, b = m32.eval()(x, t), m16.eval()(x, t)
    assert (a - b).abs().max().item() < 1e-2 * a.abs().max().item()
