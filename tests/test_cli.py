import json
import subprocess
import sys

from advpure.cli import main


def test_info_json(capsys):
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["advpure"] and info["torch"] and "cache_dir" in info


def test_cli_errors_are_clear(capsys):
    assert main(["train", "classifier", "--dataset", "svhn", "--out", "x.safetensors"]) == 2
    assert "unknown dataset 'svhn'" in capsys.readouterr().err


def test_console_entry_point_runs():
    r = subprocess.run([sys.executable, "-m", "advpure.cli", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "train" in r.stdout
