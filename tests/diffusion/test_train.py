"""Diffusion training: saved checkpoint loads through load_denoiser, resume is exact, bad arguments."""

import argparse

import pytest
import torch
from safetensors.torch import load_file

from advpure.cli.train import add_diffusion
from advpure.diffusion import load_denoiser
from advpure.train.diffusion import train_diffusion


def _train(out, steps, **kw):
    return train_diffusion(dataset="digits", steps=steps, batch_size=8, out=out, progress=False, grid=False,
                           save_every=0, **kw)


def test_train_save_load_and_exact_resume(tmp_path):
    a = _train(tmp_path / "a", 4, seed=1)
    _train(tmp_path / "b", 2, seed=1)
    b = _train(tmp_path / "b", 4, seed=1, resume=True)
    wa, wb = load_file(a["weights"]), load_file(b["weights"])
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    meta = a["sidecar"]
    assert meta["training_steps"] == 4 and meta["dataset"] == "digits" and meta["t_max"] == 1.0
    assert len(meta["sha256"]) == 64 and meta["unet_config"]["sample_size"] == 8
    eps_model, m2 = load_denoiser(a["weights"])
    out = eps_model(torch.zeros(2, 1, 8, 8), torch.tensor([0.1, 0.5]))
    assert out.shape == (2, 1, 8, 8) and torch.isfinite(out).all()
    c = _train(tmp_path / "c", 1, seed=2)
    assert not torch.equal(load_file(c["weights"])["conv_in.weight"], wa["conv_in.weight"])


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="t_max"):
        _train(tmp_path, 2, t_max=1.5)
    with pytest.raises(ValueError, match="steps"):
        _train(tmp_path, 0)
    with pytest.raises(FileNotFoundError, match="resume"):
        _train(tmp_path / "none", 2, resume=True)
    with pytest.raises(ValueError, match="preset"):
        train_diffusion(dataset="folder", steps=1, out=tmp_path)


def test_cli_registration():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    add_diffusion(sub)
    args = parser.parse_args(["diffusion", "--dataset", "digits", "--steps", "5", "--batch-size", "4",
                              "--out", "x", "--t-max", "0.2", "--resume"])
    assert args.steps == 5 and args.batch_size == 4 and args.t_max == 0.2 and args.resume and callable(args.func)


def test_small_t_model_refuses_larger_t_and_draws_purification_grid(tmp_path):
    from advpure.defenses.diffpure import DiffPure
    from advpure.defenses.ssni import SSNI
    from advpure.detect.eps import EPSReference

    r = train_diffusion(dataset="digits", steps=2, batch_size=8, out=tmp_path, progress=False, save_every=0,
                        t_max=0.2, grid=True)
    assert r["sidecar"]["t_max"] == 0.2 and r["grid"].endswith("-purify.png")
    assert (tmp_path / "digits-ddpm-purify.png").stat().st_size > 0
    eps_model, _ = load_denoiser(r["weights"])
    x = torch.zeros(2, 1, 8, 8)
    assert torch.isfinite(eps_model(x, torch.tensor([0.1, 0.2]))).all()
    with pytest.raises(ValueError, match=r"trained on noise levels t <= 0.2"):
        eps_model(x, torch.tensor([0.1, 0.5]))
    with pytest.raises(ValueError, match=r"t\* = 0.3 .* t <= 0.2"):
        DiffPure(eps_model, t=0.3)
    ref = EPSReference.from_norms(torch.linspace(1, 2, 16), t_levels=[k / 1000 for k in range(1, 21)],
                                  checkpoint_sha256=None)
    ssni = SSNI(DiffPure(eps_model, t=0.1), reference=ref)
    assert ssni.t_ceil == 0.2  # defaults to the model's range
    with pytest.raises(ValueError, match=r"t_max \(0.2\)"):
        SSNI(DiffPure(eps_model, t=0.1), reference=ref, t_ceil=0.5)


def test_t_focus_resumes_exactly_and_refuses_other_settings(tmp_path):
    kw = dict(seed=3, t_max=0.2, t_focus=(0.1, 0.75))
    a = _train(tmp_path / "a", 4, **kw)
    _train(tmp_path / "b", 2, **kw)
    b = _train(tmp_path / "b", 4, resume=True, **kw)
    wa, wb = load_file(a["weights"]), load_file(b["weights"])
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a["sidecar"]["t_focus"] == [0.1, 0.75]
    # the focus changes what is drawn, hence the weights
    u = _train(tmp_path / "u", 4, seed=3, t_max=0.2)
    assert not torch.equal(load_file(u["weights"])["conv_in.weight"], wa["conv_in.weight"])
    with pytest.raises(ValueError, match="t_focus"):
        _train(tmp_path / "b", 6, resume=True, seed=3, t_max=0.2)  # no focus now: another setting
    for bad in ((0.3, 0.5), (0.1, 1.0), (0.0005, 0.5)):
        with pytest.raises(ValueError, match="t_focus"):
            _train(tmp_path / "x", 2, t_max=0.2, t_focus=bad)
