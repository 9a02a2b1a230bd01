"""The observation behind SSNI on digits, with the zoo diffusion model: ||EPS|| grows with the budget and
clean inputs get a smaller SSNI noise level than adversarial ones."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from advpure.attacks import PGD
from advpure.defenses.ssni import ssni_n
from advpure.detect.eps import EPSReference, eps_norm

ZOO = Path(__file__).resolve().parents[2] / "zoo"


@pytest.mark.skipif(not (ZOO / "digits-ddpm.safetensors").is_file(), reason="zoo digits DDPM absent")
def test_eps_norm_grows_with_budget_on_digits(digits_classifier, digits_data):
    from advpure.diffusion import load_denoiser
    from advpure.diffusion.schedule import VPSchedule

    net, meta = load_denoiser(ZOO / "digits-ddpm.safetensors")
    ref = EPSReference.load(ZOO / "digits-ddpm.eps-ref.json", checkpoint_sha256=meta["sha256"])
    x, y = digits_data[1].subset(48, seed=3).tensors()
    means, ts = [], []
    for eps in (0.0, 0.03, 0.1, 0.2):
        xa = x if eps == 0 else PGD(eps=eps, steps=10, step_size=2.5 * eps / 10, seed=0)(digits_classifier, x, y)
        with torch.no_grad():
            s = eps_norm(net, xa, schedule=VPSchedule(), generator=torch.Generator().manual_seed(0))
        means.append(float(s.mean()))
        ts.append(float(ssni_n(s, mu=ref.mean, tau=ref.std, t_star=0.1).mean()))
    assert means == sorted(means) and len(set(means)) == 4, means
    assert ts[0] < ts[2], ts


@pytest.mark.skipif(not (ZOO / "digits-ddpm.safetensors").is_file(), reason="zoo digits DDPM absent")
def test_bf16_eps_norms_stay_close_to_fp32_on_digits(digits_data):
    """The EPS pass under torch.autocast(bfloat16) (SSNI's ``eps_autocast=bf16``) against the float32 values
    with the same noise. Tolerance: bfloat16 keeps 8 significant bits, a relative rounding of 2^-9 ~ 2e-3 per
    stored activation; through the UNet's dozen rounded layers that grows to about 1e-2 on an output pixel, and
    the norm over 64 pixels averages such errors. So every norm within 3e-2 (15 roundings), the batch mean
    within 1e-2 (measured: max 1.3e-2, mean 4.4e-3). What makes such an error harmless is the noise SSNI
    already accepts: ||EPS|| from one noise draw per level differs between two draws by 4e-2 on average here,
    so bf16's error must stay below a quarter of that, and it moves SSNI-N's t by far less than a new draw."""
    from advpure.diffusion import load_denoiser
    from advpure.diffusion.schedule import VPSchedule

    net, meta = load_denoiser(ZOO / "digits-ddpm.safetensors")
    ref = EPSReference.load(ZOO / "digits-ddpm.eps-ref.json", checkpoint_sha256=meta["sha256"])
    x, _ = digits_data[1].subset(64, seed=0).tensors()

    def norms(seed: int, dtype=None) -> torch.Tensor:
        with torch.no_grad():
            return eps_norm(net, x, schedule=VPSchedule(), generator=torch.Generator().manual_seed(seed),
                            autocast_dtype=dtype)

    s32, s16, s32_other = norms(0), norms(0, torch.bfloat16), norms(1)
    rel = (s16 - s32).abs() / s32
    assert float(rel.max()) < 3e-2 and float(rel.mean()) < 1e-2, (float(rel.max()), float(rel.mean()))
    other = (s32_other - s32).abs() / s32
    assert float(rel.mean()) < 0.25 * float(other.mean()), (float(rel.mean()), float(other.mean()))

    def t_of(s):
        return ssni_n(s, mu=ref.mean, tau=ref.std, t_star=0.1)

    dt_bf16 = float((t_of(s16) - t_of(s32)).abs().max())
    dt_other = float((t_of(s32_other) - t_of(s32)).abs().max())
    assert dt_bf16 < 0.25 * dt_other, (dt_bf16, dt_other)
