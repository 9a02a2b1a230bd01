"""`advpure eval --threat corruptions|certify` and `advpure curves` end to end on digits (small sizes)."""

from __future__ import annotations

import json

from advpure.cli import main

CLF = "zoo/digits-small-cnn.safetensors"


def test_corruption_threat_with_and_without_defense(tmp_path, capsys):
    out = tmp_path / "c.json"
    rc = main(["eval", "--threat", "corruptions", "--dataset", "digits", "--classifier", CLF, "--defense",
               "diffpure:t=0.05,steps=2", "--corruptions", "gaussian_noise,pixelate", "--severities", "1,5",
               "--n", "24", "--out", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    for part in ("undefended", "defended"):
        assert set(res[part]["corruptions"]) == {"gaussian_noise", "pixelate"}
        assert set(res[part]["corruptions"]["pixelate"]) == {"1", "5"}
    assert "| pixelate | 5 |" in capsys.readouterr().out


def test_certify_threat_and_its_errors(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["eval", "--threat", "certify", "--dataset", "digits", "--classifier", CLF, "--sigma", "0.25",
                 "--n0", "20", "--n-mc", "200", "--n", "6", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    acc = res["certified_accuracy"]
    assert list(acc) == ["0", "0.25", "0.5", "0.75", "1"]
    assert all(acc[a] >= acc[b] for a, b in zip(list(acc), list(acc)[1:]))  # certified accuracy falls with radius
    assert main(["eval", "--threat", "certify", "--dataset", "digits", "--classifier", CLF, "--sigma", "0",
                 "--n", "2"]) == 2
    assert "sigma" in capsys.readouterr().err
    assert main(["eval", "--threat", "certify", "--dataset", "digits", "--classifier", CLF, "--n-mc", "5",
                 "--n", "2"]) == 2
    assert "too small" in capsys.readouterr().err


def test_curves_command_writes_png(tmp_path):
    out = tmp_path / "curves"
    assert main(["curves", "--dataset", "digits", "--classifier", CLF, "--defense", "diffpure:steps=2",
                 "--attack", "pgd:eps=0.2,steps=1,step_size=0.2", "--t-values", "0.02,0.1", "--eps", "0,0.2",
                 "--n", "8", "--out", str(out)]) == 0
    res = json.loads((out / "curves.json").read_text())
    assert set(res["vs_t"]) == {"0.02", "0.1"} and set(res["vs_eps"]) == {"0", "0.2"}
    assert (out / "curves.png").stat().st_size > 1000
