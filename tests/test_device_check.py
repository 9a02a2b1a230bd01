"""benchmarks/device_check.py, the prepared accelerator script, in its --reduced CPU mode (one subprocess, < 60 s).

On the device machine ``../shared`` does not travel, so the script builds the full networks from the modules'
RELEASED_CONFIG; this test also checks, here where the manifests exist, that those equal the manifests' configs
and that the full networks' parameter names and shapes equal the manifests'.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "device_check.py"
INTEROP = Path(os.environ.get("ADVPURE_SHARED", REPO.parent / "shared")) / "interop"
SECTIONS = ("env", "manifests", "nfe", "diffpure", "memory", "compile")


def _errors(tree, path=""):
    """Paths of every 'error' entry in the results (a section or a measurement that raised)."""
    if isinstance(tree, dict):
        out = [path] if "error" in tree else []
        for k, v in tree.items():
            out += _errors(v, f"{path}.{k}")
        return out
    return []


def test_device_check_reduced_cpu(tmp_path):
    if not INTEROP.is_dir():
        pytest.skip(f"{INTEROP} not found (set ADVPURE_SHARED): manifests and small configs unavailable")
    out = tmp_path / "device_check.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("OUT", None)
    proc = subprocess.run([sys.executable, str(SCRIPT), "--reduced", "--device", "cpu", "--budget-s", "120",
                           "--out", str(out)], cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "| measurement | value |" in proc.stdout
    r = json.loads(out.read_text())
    assert r["meta"].get("done") is True and "watchdog" not in r["meta"]
    for name in SECTIONS:  # every section present, with numbers or a skip note
        assert isinstance(r.get(name), dict) and r[name], name
    assert not _errors(r), f"errors in {_errors(r)}: {json.dumps(r, indent=1)[:3000]}"
    assert "skipped" in r["compile"]  # cpu: compile is timed on cuda only

    # manifests: full networks built on the meta device match the published names/shapes and RELEASED_CONFIG
    for key, n in (("ncsnpp", 106_632_579), ("adm", 552_814_086)):
        m = r["manifests"][key]
        assert m["names_shapes_match"] is True and m["config_equals_released"] is True and m["parameters"] == n

    # network evaluations/s: finite and positive, for both networks, fp32 and bf16
    for key in ("ncsnpp", "adm"):
        sub = r["nfe"][key]
        assert sub["batch"] == 2
        for variant in ("fp32", "bf16"):
            ev = sub[variant]["evals_per_s"]
            assert isinstance(ev, float) and math.isfinite(ev) and ev > 0, (key, variant, ev)

    # DiffPure: 2 reverse steps; the official structure adds torchsde's shape-check call (one more NFE)
    d = r["diffpure"]
    assert d["n_steps"] == 2 and d["advpure"]["nfe"] == 2 and d["official"]["nfe"] == 3
    assert d["advpure"]["images_per_s"] > 0 and d["official"]["images_per_s"] > 0
    assert math.isfinite(d["time_ratio_official_over_advpure"]) and d["time_ratio_official_over_advpure"] > 0

    # one PGD step through DiffPure, with and without checkpointing, for both networks
    for key in ("ncsnpp", "adm"):
        mem = r["memory"][key]
        for name in ("checkpoint", "no_checkpoint_1_steps", "no_checkpoint_2_steps"):
            assert mem[name]["seconds"] > 0 and mem[name]["finite"] is True, (key, name, mem[name])
