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


def test_fine_tuning_starts_from_init_and_trains_on_the_extra_images(tmp_path):
    """--init loads the given weights (at lr 0 the convolution weights stay those of the init) and --extra-train
    appends the image set: an epoch has ceil((clean + extra) / batch) steps; both are recorded in the sidecar."""
    from safetensors.torch import load_file

    from advpure.data import load_dataset
    from advpure.data.imagefile import save_image_file

    init = tmp_path / "init.safetensors"
    _, init_meta = train_classifier(ClassifierTrainConfig(dataset="digits", epochs=1, out=str(init)), progress=False)
    train = load_dataset("digits", "train")
    x, y = train.batch(slice(0, 100))
    extra = tmp_path / "extra.safetensors"
    save_image_file(extra, x.flip(-1), y, torch.arange(100), {"purifier": "mirror", "num_classes": 10})
    out = tmp_path / "ft.safetensors"
    _, meta = train_classifier(ClassifierTrainConfig(dataset="digits", epochs=1, lr=0.0, init=str(init),
                                                     extra_train=(str(extra),), out=str(out)), progress=False)
    a, b = load_file(str(init)), load_file(str(out))
    conv = [k for k in a if k.endswith("weight") and a[k].dim() == 4]
    assert conv
    for k in conv:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=0, msg=k)
    t = meta["train"]
    assert t["init"]["sha256"] == init_meta["sha256"] and t["n_train_clean"] == len(train)
    assert t["n_train"] == len(train) + 100 and t["extra_train"][0]["made_by"] == "mirror"
    leak = tmp_path / "leak.safetensors"
    save_image_file(leak, x, y, torch.arange(100), {"split": "test", "num_classes": 10})
    with pytest.raises(ValueError, match="made from the test split"):
        train_classifier(ClassifierTrainConfig(dataset="digits", epochs=1, init=str(init), extra_train=(str(leak),),
                                               out=str(tmp_path / "x.safetensors")), progress=False)
    with pytest.raises(ValueError, match="not the --arch 'resnet20'"):
        train_classifier(ClassifierTrainConfig(dataset="digits", epochs=1, arch="resnet20", init=str(init),
                                               out=str(tmp_path / "x.safetensors")), progress=False)


def test_float16_weights_are_measured_as_stored(tmp_path):
    """--weights-dtype float16: the file holds half-precision tensors, the loaded model is float32, and the recorded
    accuracy is that of the loaded (rounded) weights."""
    from safetensors.torch import load_file

    from advpure.data import load_dataset
    from advpure.models import load_classifier
    from advpure.train.classifier import accuracy

    out = tmp_path / "h.safetensors"
    _, meta = train_classifier(ClassifierTrainConfig(dataset="digits", epochs=2, weights_dtype="float16",
                                                     out=str(out)), progress=False)
    sd = load_file(str(out))
    assert {v.dtype for v in sd.values() if v.is_floating_point()} == {torch.float16}
    assert meta["weights_dtype"] == "float16"
    model = load_classifier(str(out))
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    x, y = load_dataset("digits", "test").tensors()
    assert accuracy(model, x, y) == meta["accuracy"]


def test_purify_part_replaces_the_stated_share_and_leaves_the_rest():
    """Each image is replaced with probability frac (binomial: 4,000 images, share within 4.5 standard deviations),
    the others are untouched, the input is not modified, and frac = 1 replaces every image."""
    from advpure.train.classifier import purify_part

    class Fill(torch.nn.Module):
        def forward(self, x, *, generator=None):
            return torch.full_like(x, -1.0)

    x = torch.rand(4000, 1, 2, 2)
    keep = x.clone()
    out = purify_part(x, Fill(), 0.25, torch.Generator().manual_seed(0))
    replaced = (out == -1).flatten(1).all(1)
    assert abs(float(replaced.float().mean()) - 0.25) < 4.5 * (0.25 * 0.75 / 4000) ** 0.5
    torch.testing.assert_close(out[~replaced], keep[~replaced], rtol=0, atol=0)
    torch.testing.assert_close(x, keep, rtol=0, atol=0)
    assert bool((purify_part(x, Fill(), 1.0, torch.Generator().manual_seed(0)) == -1).all())


def test_training_on_purified_images_drawn_afresh(tmp_path):
    """--purify-aug: the run is reproducible from its seed, differs from the run without it (the augmentation is
    applied), records the purifier in the sidecar, and refuses a spec that is not a purifier or a share outside (0, 1]."""
    from safetensors.torch import load_file

    spec = "diffpure:model=zoo/digits-ddpm.safetensors,t=0.1,steps=1,sampler=ddim"
    kw = dict(dataset="digits", epochs=1, train_subset=256, batch_size=64)
    runs = {}
    for name, aug in (("a", spec), ("b", spec), ("plain", None)):
        _, meta = train_classifier(ClassifierTrainConfig(**kw, purify_aug=aug, out=str(tmp_path / f"{name}.safetensors")),
                                   progress=False)
        runs[name] = (load_file(str(tmp_path / f"{name}.safetensors")), meta)
    (a, meta), (b, _), (plain, _) = runs["a"], runs["b"], runs["plain"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], plain[k]) for k in a)
    rec = meta["train"]["purify_aug"]
    assert rec["spec"] == spec and rec["frac"] == 0.5 and rec["purifier"]["solver"].startswith("deterministic DDIM")
    assert runs["plain"][1]["train"]["purify_aug"] is None
    with pytest.raises(ValueError, match="expected a purifier"):
        train_classifier(ClassifierTrainConfig(**kw, purify_aug="none", out=str(tmp_path / "x.safetensors")), progress=False)
    with pytest.raises(ValueError, match=r"purify_frac: expected a share in \(0, 1\], got 1.5"):
        train_classifier(ClassifierTrainConfig(**kw, purify_aug=spec, purify_frac=1.5, out=str(tmp_path / "x.safetensors")),
                         progress=False)
