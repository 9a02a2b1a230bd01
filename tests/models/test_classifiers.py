"""Architectures, the third-party checkpoints, and checkpoint round-trips."""

from __future__ import annotations

import json

import pytest
import torch

from advpure.checkpoint import load_state_dict
from advpure.models import ARCHS, build_classifier, load_classifier, save_classifier


def test_every_arch_maps_images_to_logits():
    for arch in ARCHS:
        if arch in ("wrn-28-10", "wrn-70-16", "dm-wrn-28-10", "resnet50", "wide-resnet50-2"):
            continue  # large; layouts and forwards in test_paper_formats.py
        kw = {"in_channels": 1, "image_size": 8, "mean": None, "std": None} if arch == "small-cnn" else {}
        m = build_classifier(arch, **kw).eval()
        x = torch.rand(2, m.in_channels, m.image_size, m.image_size)
        out = m(x)
        assert out.shape == (2, 10), arch
        assert m.features(x).shape[0] == 2


def test_wrn_28_10_matches_robustbench_standard_layout():
    m = build_classifier("wrn-28-10")
    sd = m.state_dict()
    # RobustBench "Standard" (Zagoruyko & Komodakis WRN-28-10): 36,479,194 parameters, these key names.
    assert sum(p.numel() for p in m.parameters()) == 36_479_194
    for k in ("conv1.weight", "block1.layer.0.bn1.weight", "block1.layer.0.convShortcut.weight",
              "block1.layer.3.conv2.weight", "block2.layer.0.convShortcut.weight", "block3.layer.3.bn2.running_var",
              "bn1.running_mean", "fc.weight", "fc.bias"):
        assert k in sd, k
    assert "block1.layer.1.convShortcut.weight" not in sd
    assert m.mean.flatten().tolist() == [0.0, 0.0, 0.0]  # Standard takes un-normalised inputs


def test_save_load_round_trip(tmp_path):
    m = build_classifier("resnet8").eval()
    path = tmp_path / "m.safetensors"
    meta = save_classifier(m, path, dataset="cifar10", accuracy=0.5)
    side = json.loads(path.with_suffix(".json").read_text())
    assert side["arch"] == "resnet8" and side["sha256"] == meta["sha256"] and side["accuracy"] == 0.5
    m2 = load_classifier(path)
    x = torch.rand(3, 3, 32, 32)
    torch.testing.assert_close(m(x), m2(x), rtol=0, atol=0)


def test_tampered_checkpoint_fails_hash(tmp_path):
    m = build_classifier("small-cnn")
    path = tmp_path / "m.safetensors"
    save_classifier(m, path, dataset="digits")
    side = json.loads(path.with_suffix(".json").read_text())
    side["sha256"] = "0" * 64
    path.with_suffix(".json").write_text(json.dumps(side))
    with pytest.raises(ValueError, match="sha256"):
        load_classifier(path)


def test_pickle_checkpoint_weights_only_and_module_prefix(tmp_path):
    m = build_classifier("resnet8").eval()
    p = tmp_path / "w.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in m.state_dict().items()}, "best_prec1": 1.0}, p)
    m2 = load_classifier(f"resnet8:{p}")
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(m(x), m2(x))

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    bad = tmp_path / "evil.pt"
    torch.save({"state_dict": Evil()}, bad)
    with pytest.raises(Exception, match="(?i)weights_only|unsupported|global"):
        load_state_dict(bad)


def test_architecture_mismatch_names_keys(tmp_path):
    p = tmp_path / "w.pt"
    torch.save(build_classifier("resnet8").state_dict(), p)
    with pytest.raises(ValueError, match=r"missing keys \[layer1\.1\.") as e:
        load_classifier(f"resnet20:{p}")
    assert "unexpected keys" in str(e.value)
    with pytest.raises(ValueError, match="shape mismatches"):
        torch.save(build_classifier("resnet8", num_classes=5).state_dict(), p)
        load_classifier(f"resnet8:{p}")


def test_bad_model_inputs():
    with pytest.raises(ValueError, match="unknown architecture 'resnet19'"):
        build_classifier("resnet19")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_classifier("resnet20:/nonexistent/w.th")
    m = build_classifier("resnet8")
    with pytest.raises(ValueError, match="expected 3 channel"):
        m(torch.rand(1, 1, 32, 32))
    with pytest.raises(ValueError, match="expected image size 32x32"):
        m(torch.rand(1, 3, 28, 28))
    with pytest.raises(ValueError, match=r"expected \[0, 1\]"):
        m(torch.rand(1, 3, 32, 32) * 255)


@pytest.mark.shared
@pytest.mark.parametrize("arch, fname, expected", [
    ("resnet20", "resnet20-12fca82f.th", 0.810),
    ("resnet56", "resnet56-4bfd9763.th", 0.832),
])
def test_shared_resnets_score_as_documented(shared_dir, cifar10_jpeg, arch, fname, expected):
    """shared/README.md: 81.0% / 83.2% on the full JPEG test set; here a seeded 1,000-image subset."""
    from advpure.data import load_dataset

    model = load_classifier(f"{arch}:{shared_dir / 'models' / fname}")  # checks the recorded sha256
    ds = load_dataset("cifar10", "test", data_dir=cifar10_jpeg).subset(1000, seed=0)
    x, y = ds.tensors()
    with torch.no_grad():
        acc = torch.cat([model(x[i:i + 250]).argmax(1) == y[i:i + 250] for i in range(0, 1000, 250)]).float().mean()
    # binomial std at n=1000 is ~1.2 points: allow 3 sigma
    assert abs(float(acc) - expected) < 0.036, float(acc)
