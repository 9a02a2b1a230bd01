"""experiments/cifar10/purified-classifier/device_run.sh (the prepared accelerator run of the fresh-draws recipe with
DiffPure's own purifier) in its CPU smoke mode: it runs as committed, fine-tunes the zoo's fastnet on images purified
by the reverse SDE inside training, and writes a float16 classifier whose sidecar records the purifier; the outputs
fit what a device run can return (at most 8 files, each under 16 MiB)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "experiments" / "cifar10" / "purified-classifier" / "device_run.sh"


def test_smoke_run_writes_a_classifier_trained_on_diffpure_draws(tmp_path, cifar10_jpeg):
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OUT": str(out), "DEVICE": "cpu", "SMOKE": "1",
           "DATA": str(cifar10_jpeg), "PY": sys.executable}
    r = subprocess.run(["bash", str(SCRIPT)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    files = sorted(p.name for p in out.iterdir())
    assert files == ["cifar10-fastnet-diffpure2.json", "cifar10-fastnet-diffpure2.safetensors"], files
    assert all((out / f).stat().st_size < 16 * 2**20 for f in files)
    side = json.loads((out / "cifar10-fastnet-diffpure2.json").read_text())
    aug = side["train"]["purify_aug"]
    assert aug["frac"] == 0.5 and aug["purifier"]["n_steps"] == 2
    assert aug["purifier"]["solver"] == "euler-maruyama reverse VP SDE" and aug["purifier"]["t"] == 0.1
    assert side["train"]["init"]["spec"] == "zoo/cifar10-fastnet.safetensors" and side["weights_dtype"] == "float16"
    assert side["train"]["n_train"] == 32 and side["n_test"] == 10000
