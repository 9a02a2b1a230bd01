"""Diffusion training: saved checkpoint loads through load_denoiser, resume is exact, bad arguments."""

import argparse

import pytest
import torch
from safetensors.torch import load_file

from advpure.diffusion import load_denoiser
from advpure.train.diffusion import register, train_diffusion


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
    register(sub)
    args = parser.parse_args(["diffusion", "--dataset", "digits", "--steps", "5", "--batch-size", "4",
                              "--out", "x", "--t-max", "0.2", "--resume"])
    assert args.steps == 5 and args.batch_size == 4 and args.t_max == 0.2 and args.resume and callable(args.func)
