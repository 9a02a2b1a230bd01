"""benchmarks/cmap_cost.py --quick (digits, 4 images, a few seconds): its forward/backward evaluation counts equal
CMAP's and DiffPure's declared costs, so the benchmark's table counts what it says it counts."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "cmap_cost.py"


@pytest.mark.skipif(not (REPO / "zoo" / "digits-cm.safetensors").is_file(), reason="zoo digits models absent")
def test_cmap_cost_quick_counts_forward_and_backward(tmp_path):
    spec = importlib.util.spec_from_file_location("cmap_cost", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rows = mod.main(["--quick", "--out", str(tmp_path / "cost.json")])
    by = {r["method"]: r for r in rows}
    k, it = 4, 2  # CMAP's default K; --quick's iterations
    assert (by["DiffPure"]["forward_per_image"], by["DiffPure"]["backward_per_image"]) == (3, 0)
    # K latents per Adam step (forward + backward) and K final samples (forward only)
    assert (by["CMAP-2"]["forward_per_image"], by["CMAP-2"]["backward_per_image"]) == (k * (it + 1), k * it)
    assert by["DiffPure"]["seconds_ratio_vs_diffpure"] == 1.0 and by["CMAP-2"]["seconds_per_image"] > 0
    assert json.loads((tmp_path / "cost.json").read_text())["rows"] == rows
