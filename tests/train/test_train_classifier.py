from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from advpure.train.classifier import ClassifierTrainConfig, train_classifier


def test_digits_classifier_reaches_97_percent_in_under_a_minute(tmp_path):
    t0 = time.time()
    model, meta = train_classifier(ClassifierTrainConfig(dataset="digits", out=str(tmp_path / "d.safetensors")),
                                   progress=False)
    assert time.time() - t0 < 60
    assert meta["accuracy"] >= 0.97
    side = json.loads((tmp_path / "d.json").read_text())
    assert side["accuracy"] == meta["accuracy"] and side["dataset"] == "digits"
    assert not (tmp_path / "d.resume.pt").exists()


def test_killed_training_resumes_to_the_same_weights(tmp_path):
    """kill -9 mid-run, start again with the same arguments: same final weights as an uninterrupted run."""
    args = ["--dataset", "digits", "--epochs", "15", "--batch-size", "32", "--seed", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "advpure.cli", "train", "classifier", *args]
    ref = tmp_path / "ref.safetensors"
    subprocess.run([*cmd, "--out", str(ref)], check=True, env=env, capture_output=True)
    out = tmp_path / "run.safetensors"
    proc = subprocess.Popen([*cmd, "--out", str(out)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    resume = out.with_suffix(".resume.pt")
    deadline = time.time() + 60
    while not resume.exists() and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    subprocess.run([*cmd, "--out", str(out)], check=True, env=env, capture_output=True)
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["train"]["resumed_from_epoch"] > 0, "the run finished before it was killed: nothing resumed"
    from safetensors.torch import load_file

    a, b = load_file(str(ref)), load_file(str(out))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def test_bad_training_config(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset"):
        train_classifier(ClassifierTrainConfig(dataset="svhn", out=str(tmp_path / "x.safetensors")))
    with pytest.raises(ValueError, match=".safetensors"):
        train_classifier(ClassifierTrainConfig(dataset="digits", epochs=1, out=str(tmp_path / "x.pt")), progress=False)
