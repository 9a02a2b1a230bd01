"""benchmarks/device_train.py (the prepared accelerator training run) in its CPU smoke mode, on synthetic images so
the test never skips: the three models load with advpure's loaders, sidecars record steps and seconds, the phases stop
on their time budget, a failing torch.compile falls back to eager, and an over-16-MiB network is refused up front."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import torch

from advpure.diffusion.consistency import ConsistencyModel, load_consistency_model
from advpure.diffusion.models import load_denoiser

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "device_train.py"


def _run(tmp_path: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "ADVPURE_CACHE": str(tmp_path / "cache")}
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _side(path: Path) -> dict:
    return json.loads(path.with_suffix(".json").read_text())


def test_smoke_run_writes_three_loadable_models(tmp_path):
    out = tmp_path / "out"
    clf = REPO / "zoo" / "cifar10-resnet8.safetensors"
    r = _run(tmp_path, "--smoke", "--synthetic", "--out", str(out), *(["--classifier", str(clf)] if clf.is_file() else []))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8 and all((out / f).stat().st_size < 16 * 2**20 for f in files), files
    short, full, cm_path = (out / f"{n}.safetensors" for n in ("cifar10-ddpm-smoke-t0.2", "cifar10-ddpm-smoke",
                                                               "cifar10-cm-cd-smoke"))
    for p in (short, full, cm_path):
        assert p.is_file() and p.with_suffix(".json").is_file(), files
        side = _side(p)
        assert side["training_steps"] == 4 and side["run"]["steps"] == 4 and side["run"]["stopped_by"] == "max_steps"
        assert side["run"]["seconds"] > 0 and side["train_seconds_this_run"] >= 0
        assert math.isfinite(side["final_loss"]) and side["command"].startswith("python benchmarks/device_train.py")
        assert side["device"].startswith("cpu") and side["batch_size"] == 8

    x = torch.rand(2, 3, 32, 32) * 2 - 1
    for p, t_max in ((short, 0.2), (full, 1.0)):
        eps_model, meta = load_denoiser(p, image_shape=(3, 32, 32))
        assert meta["kind"] == "diffusion" and meta["t_max"] == t_max and eps_model.t_max == t_max
        with torch.no_grad():
            assert torch.isfinite(eps_model(x, torch.full((2,), 0.1))).all()
    ev = _side(short)["eval"]
    assert set(ev["eps_mse"]) == {"0.02", "0.05", "0.1", "0.2"} and ev["n"] == 16
    assert all(math.isfinite(v) for v in ev["eps_mse"].values())
    assert "0.5" in _side(full)["eval"]["eps_mse"]

    cm, meta = load_consistency_model(cm_path, image_shape=(3, 32, 32))  # the loader CMAP uses
    assert isinstance(cm, ConsistencyModel) and meta["mode"] == "cd" and meta["n_cd"] == 18
    assert meta["teacher"] == full.name and meta["teacher_sha256"] == _side(full)["sha256"]
    with torch.no_grad():
        assert torch.isfinite(cm(x, 1.0)).all()
    if clf.is_file():  # one-step samples classified, recorded where advpure train consistency --classifier puts it
        assert meta["recognisability"]["n"] == 64 and 0 <= meta["recognisability"]["confident_fraction"] <= 1

    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["phases"]) == {"1", "2", "3"} and (out / "samples.png").is_file()
    assert "phase 3: saved" in r.stdout


def test_phases_stop_on_their_time_budget(tmp_path):
    out = tmp_path / "out"
    r = _run(tmp_path, "--smoke", "--synthetic", "--phases", "1", "--max-steps", "0", "--budgets", "2,1,1",
             "--phase-reserve-s", "0", "--grid", "off", "--out", str(out))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    run = _side(out / "cifar10-ddpm-smoke-t0.2.safetensors")["run"]
    assert run["stopped_by"] == "time" and run["steps"] >= 1 and run["budget_s"] == 2.0
    # stops before the step that would pass the deadline (one step here is ~0.25 s; slack for a loaded machine)
    assert run["seconds"] < 2.0 + 1.5, run
    assert not (out / "cifar10-ddpm-smoke.safetensors").exists()


def test_failed_compile_falls_back_to_eager(tmp_path):
    out = tmp_path / "out"
    r = _run(tmp_path, "--smoke", "--synthetic", "--phases", "1", "--max-steps", "2", "--grid", "off",
             "--compile", "on", "--compile-backend", "fail-for-test", "--out", str(out))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "falling back to eager" in r.stdout
    run = _side(out / "cifar10-ddpm-smoke-t0.2.safetensors")["run"]
    assert run["steps"] == 2 and run["compile"] is False and "falling back to eager" in run["notes"][0]


def test_refuses_a_network_over_the_16_mib_file_limit(tmp_path):
    r = _run(tmp_path, "--smoke", "--synthetic", "--arch", "cifar10-small", "--out", str(tmp_path / "out"), timeout=120)
    assert r.returncode == 2 and "16.93 MiB" in r.stderr and "--max-file-mib" in r.stderr
    assert not list((tmp_path / "out").glob("*.safetensors"))
