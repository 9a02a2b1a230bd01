"""The demo end to end on a tiny setting (slow: runs every defense row, the corruptions and certification)."""

from __future__ import annotations

import json

import pytest

from advpure.demo import demo_rows, run_demo


def test_demo_rows_cover_every_defense():
    names = " ".join(r["name"] for r in demo_rows("clf", steps=2, eot=2, eps=0.2))
    for method in ("undefended", "DiffPure", "BPDA", "SSNI", "distribution-transfer", "DAD", "CMAP"):
        assert method in names


def test_demo_rejects_sizes_too_small_for_dad(tmp_path):
    with pytest.raises(ValueError, match="sanity_n >= 3"):
        run_demo(tmp_path, n=6, sanity_n=2, progress=False)


@pytest.mark.slow
def test_demo_writes_report_and_figure(tmp_path):
    res = run_demo(tmp_path, n=6, steps=1, eot=1, sanity_n=3, progress=False)
    report = json.loads((tmp_path / "report.json").read_text())
    assert len(report["rows"]) == len(demo_rows("clf", steps=1, eot=1, eps=0.2))
    assert all("sanity_checks" in r for r in report["rows"])
    assert (tmp_path / "purification.png").stat().st_size > 10_000
    assert "| undefended |" in res["table"]
