"""``advpure cmap-ablation``: the attack table on a tiny digits subset, and its per-dataset defaults."""

from __future__ import annotations

import json

import pytest

from advpure.cli import main
from advpure.experiments.cmap_ablation import run_attacks


def test_attack_table_runs_and_records_what_it_ran(tmp_path):
    rep = run_attacks(model="zoo/digits-cm.safetensors", classifier="zoo/digits-small-cnn.safetensors",
                      teacher=None, n=6, seed=0, out=tmp_path, eps=0.2, pgd_steps=2, eot=1, iterations=3, k=2,
                      parts="cmap", disruption_steps=2, lr=0.05, lam=1.0, lam_s=0.5)
    names = [r["defense_attack"] for r in rep["rows"]]
    assert names[0] == "undefended / clean"
    assert any("consistency-disruption (gamma=1, 2 steps)" in nm for nm in names)
    assert any("BPDA-EOT (PGD 2 steps, EOT 1" in nm for nm in names)
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in rep["rows"])
    # the options given are the ones used, and the JSON on disk is the returned report
    assert rep["dataset"] == "digits"
    assert {k: rep["cmap"][k] for k in ("k", "iterations", "lr", "lam", "lam_s")} == \
        {"k": 2, "iterations": 3, "lr": 0.05, "lam": 1.0, "lam_s": 0.5}
    assert json.loads((tmp_path / "report.json").read_text()) == json.loads(json.dumps(rep))


def test_cifar10_needs_a_classifier(tmp_path, capsys):
    assert main(["cmap-ablation", "--dataset", "cifar10", "--out", str(tmp_path)]) != 0
    assert "pass --classifier (no default for this dataset)" in capsys.readouterr().err


def test_unknown_dataset_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["cmap-ablation", "--dataset", "mnist", "--out", str(tmp_path)])
    assert "invalid choice" in capsys.readouterr().err
