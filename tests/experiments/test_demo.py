"""The demo end to end on a tiny setting (slow: runs every defense row, the corruptions and certification)."""

from __future__ import annotations

import json

import pytest

from advpure.experiments.demo import demo_rows, run_demo


def test_demo_rows_cover_every_defense():
    names = " ".join(r["name"] for r in demo_rows("clf", steps=2, eot=2, eps=0.2))
    for method in ("undefended", "DiffPure", "BPDA", "SSNI", "distribution-transfer", "DAD", "CMAP"):
        assert method in names


@pytest.mark.parametrize("kw", [dict(n=6), dict(sanity_n=2), dict(steps=0), dict(eot=0)])
def test_demo_rejects_sizes_that_cannot_give_a_number(tmp_path, kw):
    with pytest.raises(ValueError, match="demo: need"):
        run_demo(tmp_path, progress=False, **kw)
    assert not any(tmp_path.iterdir())  # nothing written before the check


@pytest.mark.slow
def test_demo_writes_report_and_figure(tmp_path):
    res = run_demo(tmp_path, n=8, steps=1, eot=1, sanity_n=8, progress=False)
    report = json.loads((tmp_path / "report.json").read_text())
    assert len(report["rows"]) == len(demo_rows("clf", steps=1, eot=1, eps=0.2))
    assert all("sanity_checks" in r for r in report["rows"])
    assert (tmp_path / "purification.png").stat().st_size > 10_000
    assert "| undefended |" in res["table"]
    lite_rows = [r for r in report["rows"] if r["attack"]["spec"].startswith("lite")]
    assert lite_rows and all(r.get("broken_by") for r in lite_rows)
