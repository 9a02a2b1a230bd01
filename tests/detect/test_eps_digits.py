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
