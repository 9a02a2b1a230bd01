"""Denoiser contract: time convention, diffusers-folder loading, our checkpoints, mismatch errors."""

import json

import pytest
import torch

from advpure.diffusion import DiscreteTimeAdapter, GaussianScoreModel, VPSchedule, build_unet, load_denoiser, load_unet
from advpure.diffusion.models import PRESETS


class _EchoT(torch.nn.Module):
    def forward(self, x, timestep):
        return timestep.view(-1, 1, 1, 1).expand_as(x)


def test_adapter_time_convention_matches_schedule():
    from diffusers import DDPMScheduler

    ad = DiscreteTimeAdapter(_EchoT())
    t = torch.tensor([0.001, 0.1, 0.5, 1.0])
    k = ad(torch.zeros(4, 1, 2, 2), t)[:, 0, 0, 0]
    assert torch.allclose(k, torch.tensor([0.0, 99.0, 499.0, 999.0]))
    # index k fed at time t has noise level alphas_cumprod[k] close to alpha(t)^2
    ac = DDPMScheduler(num_train_timesteps=1000).alphas_cumprod
    vp = VPSchedule()
    for ti, ki in zip(t.tolist()[:3], k.long().tolist()[:3]):
        assert float(ac[ki]) == pytest.approx(float(vp.alpha(ti) ** 2), rel=0.01)


def test_gaussian_score_model_is_the_posterior_noise():
    # eps = E[eps | x_t]: regress eps on x_t by Monte Carlo and compare
    s = VPSchedule()
    mu, var = torch.tensor(0.3).view(1, 1, 1, 1), torch.tensor(0.05).view(1, 1, 1, 1)
    m = GaussianScoreModel(mu, var, s)
    g = torch.Generator().manual_seed(0)
    x0 = mu + var.sqrt() * torch.randn(200000, 1, 1, 1, generator=g)
    eps = torch.randn(200000, 1, 1, 1, generator=g)
    t = 0.2
    a, sd = float(s.alpha(t)), float(s.std(t))
    xt = a * x0 + sd * eps
    slope = float(((xt - xt.mean()) * (eps - eps.mean())).mean() / xt.var())
    pred = m(xt, torch.full((200000,), t))
    assert float((pred[1] - pred[0]) / (xt[1] - xt[0])) == pytest.approx(slope, rel=0.02)


def test_presets_build_with_expected_sizes():
    d = build_unet("digits")
    n = sum(p.numel() for p in d.parameters())
    assert n < 2_500_000  # < 10 MB as float32
    out = d(torch.zeros(2, 1, 8, 8), torch.tensor([0.0, 10.0])).sample
    assert out.shape == (2, 1, 8, 8)
    assert set(PRESETS) >= {"digits", "cifar10-small"}
    with pytest.raises(ValueError, match="preset"):
        build_unet("nope")


def test_load_diffusers_folder_and_mismatch(tmp_path):
    net = build_unet("digits")
    net.save_pretrained(tmp_path / "ddpm")
    loaded = load_unet(tmp_path / "ddpm", expect="digits", image_shape=(1, 8, 8))
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(loaded(x, torch.tensor([5, 5])).sample, net(x, torch.tensor([5, 5])).sample, atol=1e-6)
    with pytest.raises(ValueError, match="does not match the requested network"):
        load_unet(tmp_path / "ddpm", expect="cifar10-small")
    with pytest.raises(ValueError, match="3x32x32"):
        load_unet(tmp_path / "ddpm", image_shape=(3, 32, 32))
    with pytest.raises(FileNotFoundError):
        load_unet(tmp_path / "missing")
    eps_model, meta = load_denoiser(tmp_path / "ddpm")
    assert meta["format"] == "diffusers"
    with pytest.raises(ValueError, match="trained on 1x8x8"):
        eps_model(torch.zeros(1, 3, 32, 32), torch.tensor([0.1]))
    cfg = json.loads((tmp_path / "ddpm" / "config.json").read_text())
    cfg["_class_name"] = "UNet2DConditionModel"
    (tmp_path / "ddpm" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="UNet2DModel"):
        load_unet(tmp_path / "ddpm")


def test_load_our_checkpoint(tmp_path):
    from advpure.checkpoint import save_weights
    from advpure.diffusion.models import unet_config

    net = build_unet("digits")
    save_weights(net.state_dict(), tmp_path / "m.safetensors", {"unet_config": unet_config("digits"), "t_max": 1.0})
    eps_model, meta = load_denoiser(tmp_path / "m")
    assert meta["format"] == "advpure" and eps_model.image_shape == (1, 8, 8)
    with pytest.raises(ValueError, match="3x32x32 were requested"):
        load_denoiser(tmp_path / "m.safetensors", image_shape=(3, 32, 32))
    with pytest.raises(FileNotFoundError):
        load_denoiser(tmp_path / "other.safetensors")


@pytest.mark.parametrize("key,value", [("prediction_type", "v_prediction"), ("prediction_type", "sample"),
                                       ("beta_schedule", "squaredcos_cap_v2")])
def test_diffusers_pipeline_with_another_scheduler_is_refused(tmp_path, key, value):
    """A pipeline folder (unet/ + scheduler/) whose scheduler is not eps-prediction on the linear schedule would be
    used wrongly by advpure's samplers: refused by name. eps + linear loads."""
    net = build_unet("digits")
    net.save_pretrained(tmp_path / "pipe" / "unet")
    (tmp_path / "pipe" / "scheduler").mkdir()
    sched = {"_class_name": "DDPMScheduler", "prediction_type": "epsilon", "beta_schedule": "linear",
             "num_train_timesteps": 1000}
    (tmp_path / "pipe" / "scheduler" / "scheduler_config.json").write_text(json.dumps(sched))
    load_unet(tmp_path / "pipe")
    (tmp_path / "pipe" / "scheduler" / "scheduler_config.json").write_text(json.dumps({**sched, key: value}))
    with pytest.raises(ValueError, match=f"{key} is '{value}'"):
        load_unet(tmp_path / "pipe")
    with pytest.raises(ValueError, match=key):
        load_denoiser(tmp_path / "pipe")
