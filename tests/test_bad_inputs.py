"""Never a wrong number in silence: every bad input is one clear error, raised before any compute.

Each command-line case runs ``advpure.cli.main([...])`` in-process and checks the exit status (2), a one-line
message without a traceback that names the culprit (the option, file or value), and that nothing was written: the
outputs go to the test's own ``tmp_path``, which must stay empty. Python-API cases check the exception and its
message. Then: image decoding converts every accepted mode correctly, the decode cache follows the files, and two
property-based fuzzes (spec parsing; journals of random bytes). Only the bundled digits data, the committed digits
classifier and tiny files written here are used.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import shutil
import struct
import tarfile
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from advpure.cli import main

REPO = Path(__file__).resolve().parents[1]
CLF = REPO / "zoo" / "digits-small-cnn.safetensors"
DDPM = REPO / "zoo" / "digits-ddpm.safetensors"

pytestmark = pytest.mark.skipif(not CLF.is_file(), reason="zoo/digits-small-cnn.safetensors missing")


# --------------------------------------------------------------------------- files written once for the module
class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def _png16(a: np.ndarray) -> bytes:
    """A 16-bit PNG (grayscale (H, W) or RGB (H, W, 3)) written by hand: Pillow cannot write 16-bit RGB."""
    h, w = a.shape[:2]
    raw = b"".join(b"\x00" + a[i].astype(">u2").tobytes() for i in range(h))

    def chunk(t: bytes, d: bytes) -> bytes:
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2 if a.ndim == 3 else 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def _folder(root: Path, n_classes: int, make, splits=("train", "test"), per_class: int = 2) -> Path:
    """<root>/<split>/c<k>/<i>.png with images from ``make(k, i) -> PIL image or bytes``."""
    for split in splits:
        for k in range(n_classes):
            d = root / split / f"c{k}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                img = make(k, i)
                if isinstance(img, bytes):
                    (d / f"{i}.png").write_bytes(img)
                else:
                    img.save(d / f"{i}.png")
    return root


def _gray(v: int, size: int = 8) -> Image.Image:
    return Image.fromarray(np.full((size, size), v, np.uint8))


@pytest.fixture(scope="module")
def a(tmp_path_factory) -> Path:
    """Assets: classifier checkpoints in good and broken forms, image folders, archives."""
    from advpure.models import build_classifier

    root = tmp_path_factory.mktemp("assets")
    side = json.loads(CLF.with_suffix(".json").read_text())
    shutil.copy(CLF, root / "clf.safetensors")
    shutil.copy(CLF.with_suffix(".json"), root / "clf.json")
    (root / "nosidecar").mkdir()
    shutil.copy(CLF, root / "nosidecar" / "clf.safetensors")
    (root / "badjson").mkdir()
    shutil.copy(CLF, root / "badjson" / "clf.safetensors")
    (root / "badjson" / "clf.json").write_text("{not json")
    (root / "trunc").mkdir()
    data = CLF.read_bytes()[:-100]
    (root / "trunc" / "clf.safetensors").write_bytes(data)
    (root / "trunc" / "clf.json").write_text(json.dumps({**side, "sha256": hashlib.sha256(data).hexdigest()}))
    (root / "badsha").mkdir()
    shutil.copy(CLF, root / "badsha" / "clf.safetensors")
    (root / "badsha" / "clf.json").write_text(json.dumps({**side, "sha256": "0" * 64}))
    (root / "evil.pt").write_bytes(pickle.dumps({"w": _Evil()}, protocol=2))
    torch.save(build_classifier("small-cnn").state_dict(), root / "ok.pt")
    (root / "trunc.pt").write_bytes((root / "ok.pt").read_bytes()[:300])
    (root / "junk.pt").write_bytes(b"hello, I am not a checkpoint")
    torch.save(build_classifier("resnet8").state_dict(), root / "resnet8.pt")
    (root / "notes.txt").write_text("a file, not a folder")
    (root / "dir.safetensors").mkdir()
    # image folders
    _folder(root / "f3", 3, lambda k, i: _gray(40 * k + i))
    _folder(root / "f16rgb", 10, lambda k, i: Image.fromarray(np.full((16, 16, 3), k, np.uint8)))
    good = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (8, 8), dtype=np.uint8)).save(good, "PNG")
    half = good.getvalue()[:len(good.getvalue()) // 2]  # cut inside the pixel data
    _folder(root / "ftrunc", 10, lambda k, i: half if (k, i) == (3, 1) else good.getvalue())
    _folder(root / "fjpg", 10, lambda k, i: _gray(k))
    (root / "fjpg" / "test" / "c2" / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    _folder(root / "falpha", 10, lambda k, i: Image.fromarray(np.zeros((8, 8, 4), np.uint8), "RGBA"))
    _folder(root / "ffloat", 10, lambda k, i: _gray(k))
    Image.fromarray(np.full((8, 8), 0.5, np.float32)).save(root / "ffloat" / "test" / "c0" / "f.tif")
    # archives
    (root / "notar.tar.gz").write_text("this is not an archive")
    with tarfile.open(root / "f3.tar.gz", "w:gz") as tf:
        tf.add(root / "f3", arcname="f3")
    (root / "trunc.tar.gz").write_bytes((root / "f3.tar.gz").read_bytes()[:-60])
    (root / "data.zip").write_bytes(b"PK\x03\x04 zip")
    return root


# --------------------------------------------------------------------------- command-line cases
EVAL = ["eval", "--dataset", "digits", "--classifier", "{clf}", "--no-progress"]
PGD = "pgd:eps=0.1,steps=1"

# (id, argv, strings the one-line message must contain)
CLI_CASES = [
    # classifier specs and checkpoint files
    ("bare-architecture", ["eval", "--dataset", "digits", "--classifier", "small-cnn"], ["--classifier", "small-cnn",
                                                                                        "--allow-random-weights"]),
    ("surrogate-bare-architecture", EVAL + ["--attack", "transfer:eps=0.1", "--surrogate-classifier", "resnet8"],
     ["--surrogate-classifier", "resnet8"]),
    ("classifier-missing", ["eval", "--dataset", "digits", "--classifier", "{a}/none.safetensors"], ["none.safetensors"]),
    ("classifier-arch-missing", ["eval", "--dataset", "digits", "--classifier", "small-cnn:{a}/none.pt"], ["none.pt"]),
    ("sidecar-missing", ["eval", "--dataset", "digits", "--classifier", "{a}/nosidecar/clf.safetensors"],
     ["sidecar", "clf.json"]),
    ("sidecar-not-json", ["eval", "--dataset", "digits", "--classifier", "{a}/badjson/clf.safetensors"],
     ["badjson/clf.json", "not valid JSON"]),
    ("safetensors-truncated", ["eval", "--dataset", "digits", "--classifier", "{a}/trunc/clf.safetensors"],
     ["trunc/clf.safetensors", "not a readable safetensors"]),
    ("sha256-mismatch", ["eval", "--dataset", "digits", "--classifier", "{a}/badsha/clf.safetensors"],
     ["badsha/clf.safetensors", "sha256"]),
    ("pickle-with-code", ["eval", "--dataset", "digits", "--classifier", "small-cnn:{a}/evil.pt"],
     ["evil.pt", "refused"]),
    ("pickle-truncated", ["eval", "--dataset", "digits", "--classifier", "small-cnn:{a}/trunc.pt"],
     ["trunc.pt", "not a readable torch checkpoint"]),
    ("pickle-junk", ["eval", "--dataset", "digits", "--classifier", "small-cnn:{a}/junk.pt"],
     ["junk.pt", "not a readable torch checkpoint"]),
    ("weights-of-another-arch", ["eval", "--dataset", "digits", "--classifier", "small-cnn:{a}/resnet8.pt"],
     ["resnet8.pt", "does not match"]),
    # attack and defense specs
    ("attack-unknown", EVAL + ["--attack", "nope"], ["--attack", "'nope'"]),
    ("defense-unknown", EVAL + ["--defense", "nope:t=0.1"], ["--defense", "'nope'"]),
    ("spec-duplicate-key", EVAL + ["--attack", "pgd:eps=0.1,eps=0.2"], ["'eps'", "twice"]),
    ("spec-duplicate-key-dash", EVAL + ["--attack", "pgd:step-size=0.1,step_size=0.2"], ["'step_size'", "twice"]),
    ("spec-not-key-value", EVAL + ["--attack", "pgd:eps"], ["'eps'", "key=value"]),
    ("spec-empty-key", EVAL + ["--attack", "pgd:=0.1"], ["no name"]),
    ("spec-unknown-key", EVAL + ["--attack", "pgd:bogus=1"], ["bogus"]),
    ("linf-budget-above-1", EVAL + ["--attack", "pgd:eps=5"], ["eps=5", "l_inf", "5/255"]),
    ("l2-budget-above-diameter", EVAL + ["--attack", "pgd:norm=l2,eps=9"], ["eps=9", "l_2"]),
    ("negative-budget", EVAL + ["--attack", "pgd:eps=-0.1"], ["eps", "-0.1"]),
    ("nan-budget", EVAL + ["--attack", "pgd:eps=nan"], ["eps", "nan"]),
    ("unknown-norm", EVAL + ["--attack", "pgd:norm=l3,eps=0.1"], ["norm", "l3"]),
    ("standard-l2-without-eps", EVAL + ["--attack", "standard:norm=l2"], ["eps"]),
    # conflicting or ignored options
    ("votes-without-defense", EVAL + ["--votes", "3"], ["--votes 3", "--defense"]),
    ("votes-one-not-cmap", EVAL + ["--votes", "1", "--defense", "diffpure:t=0.1"], ["--votes 1"]),
    ("votes-negative", EVAL + ["--votes", "-1"], ["--votes -1"]),
    ("corruptions-journal", EVAL + ["--threat", "corruptions", "--journal", "{t}/res/j.jsonl"], ["--journal",
                                                                                                 "corruptions"]),
    ("corruptions-attack", EVAL + ["--threat", "corruptions", "--attack", PGD], ["--attack", "corruptions"]),
    ("corruptions-votes", EVAL + ["--threat", "corruptions", "--votes", "2"], ["--votes", "corruptions"]),
    ("certify-seeds", EVAL + ["--threat", "certify", "--seeds", "0,1"], ["--seeds 0,1", "certify"]),
    ("certify-corruptions", EVAL + ["--threat", "certify", "--corruptions", "gaussian_noise"], ["--corruptions"]),
    ("certify-convergence", EVAL + ["--threat", "certify", "--convergence"], ["--convergence"]),
    ("certify-split", EVAL + ["--threat", "certify", "--split", "train"], ["--split", "certify"]),
    ("adversarial-sigma", EVAL + ["--attack", PGD, "--sigma", "0.5"], ["--sigma", "adversarial"]),
    ("adversarial-model", EVAL + ["--model", "{a}/none.safetensors"], ["--model", "certify"]),
    ("sanity-n-zero", EVAL + ["--attack", PGD, "--sanity-n", "0"], ["--sanity-n 0", ">= 8"]),
    ("sanity-n-seven", EVAL + ["--attack", PGD, "--sanity-n", "7"], ["--sanity-n 7"]),
    ("eval-draws-zero", EVAL + ["--eval-draws", "0"], ["--eval-draws 0"]),
    ("n-zero", EVAL + ["--n", "0"], ["--n 0"]),
    ("batch-size-zero", EVAL + ["--batch-size", "0"], ["--batch-size 0"]),
    ("n-below-sanity-minimum", EVAL + ["--attack", PGD, "--n", "4"], ["--n 4", "--no-sanity"]),
    ("convergence-factor-one", EVAL + ["--attack", PGD, "--convergence", "--convergence-max-factor", "1"],
     ["--convergence-max-factor 1"]),
    ("n-above-dataset", EVAL + ["--n", "1000"], ["1000", "exceeds"]),
    ("split-unknown", EVAL + ["--split", "val"], ["'val'"]),
    ("out-is-journal", EVAL + ["--out", "{t}/res/x", "--journal", "{t}/res/x"], ["--out", "--journal", "same file"]),
    # output paths
    ("out-is-a-directory", EVAL + ["--out", "{a}"], ["--out", "is a directory"]),
    ("out-parent-is-a-file", EVAL + ["--out", "{a}/notes.txt/r.json"], ["--out", "notes.txt", "not a directory"]),
    ("out-read-only", EVAL + ["--out", "/proc/advpure-test/r.json"], ["--out", "/proc/advpure-test/r.json"]),
    ("journal-is-a-directory", EVAL + ["--journal", "{a}/dir.safetensors"], ["--journal", "is a directory"]),
    ("journal-read-only", EVAL + ["--journal", "/proc/advpure-test/j.jsonl"], ["--journal", "/proc/advpure-test"]),
    # devices
    ("device-cuda-on-cpu", EVAL + ["--device", "cuda"], ["--device cuda"]),
    ("device-unknown", EVAL + ["--device", "gpu0"], ["--device", "gpu0"]),
    # data
    ("dataset-unknown", ["eval", "--dataset", "svhn", "--classifier", "{clf}"], ["'svhn'"]),
    ("cifar10-data-dir-missing", ["eval", "--dataset", "cifar10", "--data-dir", "{a}/none", "--classifier", "{clf}"],
     ["{a}/none"]),
    ("folder-without-data-dir", ["eval", "--dataset", "folder", "--classifier", "{clf}"], ["--data-dir"]),
    ("folder-class-count", ["eval", "--dataset", "folder", "--data-dir", "{a}/f3", "--classifier", "{clf}"],
     ["--classifier", "10 output classes", "3 classes"]),
    ("folder-image-shape", ["eval", "--dataset", "folder", "--data-dir", "{a}/f16rgb", "--classifier", "{clf}"],
     ["--classifier", "1x8x8", "3x16x16"]),
    ("png-truncated", ["eval", "--dataset", "folder", "--data-dir", "{a}/ftrunc", "--classifier", "{clf}"],
     ["ftrunc/test/c3/1.png", "cannot decode"]),
    ("jpeg-corrupt", ["eval", "--dataset", "folder", "--data-dir", "{a}/fjpg", "--classifier", "{clf}"],
     ["fjpg/test/c2/bad.jpg", "cannot decode"]),
    ("png-transparent", ["eval", "--dataset", "folder", "--data-dir", "{a}/falpha", "--classifier", "{clf}"],
     ["falpha/test/c0/0.png", "transparent"]),
    ("tiff-float-mode", ["eval", "--dataset", "folder", "--data-dir", "{a}/ffloat", "--classifier", "{clf}"],
     ["ffloat/test/c0/f.tif", "mode 'F'"]),
    ("archive-not-tar", ["eval", "--dataset", "folder", "--data-dir", "{a}/notar.tar.gz", "--classifier", "{clf}"],
     ["notar.tar.gz", "not a readable tar archive"]),
    ("archive-truncated", ["eval", "--dataset", "folder", "--data-dir", "{a}/trunc.tar.gz", "--classifier", "{clf}"],
     ["trunc.tar.gz", "not a readable tar archive"]),
    ("archive-other-type", ["eval", "--dataset", "folder", "--data-dir", "{a}/data.zip", "--classifier", "{clf}"],
     ["data.zip", ".tar.gz"]),
    ("cifar10-archive-not-tar", ["eval", "--dataset", "cifar10", "--data-dir", "{a}/notar.tar.gz", "--classifier",
                                 "{clf}"], ["notar.tar.gz"]),
    # demo
    ("demo-steps-zero", ["demo", "--steps", "0", "--out", "{t}/res/demo"], ["--steps", "steps=0"]),
    ("demo-sanity-n-zero", ["demo", "--sanity-n", "0", "--out", "{t}/res/demo"], ["--sanity-n", "sanity_n=0"]),
    ("demo-eot-zero", ["demo", "--eot", "0", "--out", "{t}/res/demo"], ["--eot", "eot=0"]),
    ("demo-n-too-small", ["demo", "--n", "2", "--out", "{t}/res/demo"], ["--n", "n=2"]),
    ("demo-out-is-a-file", ["demo", "--out", "{a}/notes.txt"], ["--out", "notes.txt", "not a directory"]),
    ("demo-out-read-only", ["demo", "--out", "/proc/advpure-test/demo"], ["--out", "/proc/advpure-test/demo"]),
    # trainers
    ("train-out-suffix", ["train", "classifier", "--out", "{t}/res/m.pt"], ["--out", "m.pt", ".safetensors"]),
    ("train-out-is-a-directory", ["train", "classifier", "--out", "{a}/dir.safetensors"], ["--out",
                                                                                           "is a directory"]),
    ("train-out-read-only", ["train", "classifier", "--out", "/proc/advpure-test/m.safetensors"], ["--out"]),
    ("train-dataset-unknown", ["train", "classifier", "--dataset", "svhn", "--out", "{t}/res/m.safetensors"],
     ["'svhn'"]),
    ("train-arch-unknown", ["train", "classifier", "--arch", "resnet19", "--epochs", "1", "--out",
                            "{t}/res/m.safetensors"], ["'resnet19'"]),
    ("train-device-unknown", ["train", "classifier", "--device", "gpu0", "--out", "{t}/res/m.safetensors"],
     ["--device", "gpu0"]),
    ("train-device-cuda", ["train", "diffusion", "--device", "cuda", "--out", "{t}/res/ddpm"], ["--device cuda"]),
    ("train-diffusion-out-is-a-file", ["train", "diffusion", "--out", "{a}/notes.txt"], ["--out", "notes.txt"]),
    ("train-consistency-out-read-only", ["train", "consistency", "--out", "/proc/advpure-test/cm"], ["--out"]),
    ("train-kernel-out-is-a-directory", ["train", "kernel", "--classifier", "{clf}", "--out", "{a}/dir.safetensors"],
     ["--out", "is a directory"]),
    ("train-kernel-bare-classifier", ["train", "kernel", "--classifier", "small-cnn", "--out",
                                      "{t}/res/k.safetensors"], ["'small-cnn'"]),
    ("train-denoiser-out-suffix", ["train", "denoiser", "--classifier", "{clf}", "--kernel", "{a}/none.safetensors",
                                   "--out", "{t}/res/d.pt"], ["--out", ".safetensors"]),
    ("train-denoiser-kernel-missing", ["train", "denoiser", "--classifier", "{clf}", "--kernel",
                                       "{a}/none.safetensors", "--out", "{t}/res/d.safetensors"], ["none.safetensors"]),
    # other compute commands
    ("curves-duplicate-key", ["curves", "--classifier", "{clf}", "--defense", "diffpure:steps=2",
                              "--attack", "pgd:eps=0.1,eps=0.2", "--out", "{t}/res/c"], ["'eps'", "twice"]),
    ("eps-observe-bare-classifier", ["eps", "observe", "--classifier", "small-cnn", "--out", "{t}/res/o"],
     ["'small-cnn'"]),
    ("eps-observe-budget-above-1", ["eps", "observe", "--classifier", "{clf}", "--eps", "0,8", "--out",
                                    "{t}/res/o"], ["--eps", "8"]),
]


def _fill(argv: list[str], a: Path, t: Path) -> list[str]:
    return [s.format(a=a, t=t, clf=CLF) for s in argv]


def _has_option(argv: list[str], opt: str) -> bool:
    return any(s == opt for s in argv)


@pytest.mark.parametrize("argv,culprits", [pytest.param(c[1], c[2], id=c[0]) for c in CLI_CASES])
def test_cli_bad_input_is_one_clear_line_and_writes_nothing(argv, culprits, a, tmp_path, capsys):
    argv = _fill(argv, a, tmp_path)
    if argv[0] == "eval" and not _has_option(argv, "--out"):
        argv += ["--out", str(tmp_path / "res" / "r.json")]  # must not appear
        if not _has_option(argv, "--threat") and not _has_option(argv, "--journal"):
            argv += ["--journal", str(tmp_path / "res" / "j.jsonl")]
    rc = main(argv)
    captured = capsys.readouterr()
    assert rc == 2, f"exit {rc}; stderr: {captured.err}"
    assert "Traceback" not in captured.err and "Traceback" not in captured.out
    # one line; besides it only transient progress bars (tqdm, overwritten with carriage returns on a terminal)
    lines = [ln for ln in captured.err.replace("\r", "\n").splitlines() if ln.strip()]
    err = lines[-1]
    assert all("it/s]" in ln or "%|" in ln for ln in lines[:-1]), captured.err
    assert err.startswith(f"advpure {argv[0]}") and ": error: " in err, err
    for c in culprits:
        assert c.format(a=a, t=tmp_path) in err, f"{c!r} not in: {err}"
    assert "weights_only=False" not in err and "Re-running" not in err
    assert not any(tmp_path.iterdir()), f"left behind: {sorted(map(str, tmp_path.rglob('*')))}"


ARGPARSE_CASES = [
    ("seeds-not-integers", ["eval", "--dataset", "digits", "--classifier", "x", "--seeds", "a,b"], "--seeds"),
    ("threads-zero", ["train", "classifier", "--threads", "0", "--out", "x.safetensors"], "--threads"),
    ("threads-not-integer", ["demo", "--threads", "many"], "--threads"),
    ("threat-unknown", ["eval", "--dataset", "digits", "--classifier", "x", "--threat", "rain"], "--threat"),
    ("option-unknown", ["eval", "--dataset", "digits", "--classifier", "x", "--bogus"], "--bogus"),
    ("dad-attacks-eps-above-1", ["dad-attacks", "--eps", "8"], "8/255"),
    ("kernel-eps-above-1", ["train", "kernel", "--classifier", "x", "--out", "k.safetensors",
                            "--eps", "2"], "--eps"),
    ("cmap-ablation-eps-not-a-number", ["cmap-ablation", "--out", "x", "--eps", "eight"], "--eps"),
]


@pytest.mark.parametrize("argv,culprit", [pytest.param(c[1], c[2], id=c[0]) for c in ARGPARSE_CASES])
def test_cli_usage_errors_exit_2(argv, culprit, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and culprit in err.splitlines()[-1]


def test_version_debug_and_interrupt(a, tmp_path, capsys, monkeypatch):
    import advpure
    import advpure.cli.eval as eval_cli

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and advpure.__version__ in capsys.readouterr().out
    bad = ["eval", "--dataset", "digits", "--classifier", str(CLF), "--attack", "nope"]
    for argv in (["--debug", *bad], [*bad, "--debug"]):  # the traceback, not one line
        with pytest.raises(ValueError, match="unknown attack"):
            main(argv)
    with pytest.raises(ValueError, match="'svhn'"):
        main(["train", "classifier", "--dataset", "svhn", "--out", str(tmp_path / "m.safetensors"), "--debug"])

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(eval_cli, "check_data_fits", interrupted)
    capsys.readouterr()
    journal = tmp_path / "j.jsonl"
    assert main([*bad[:-2], "--journal", str(journal)]) == 130
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "interrupted" in err and "resume with the same command" in err
    assert main(bad[:-2]) == 130
    assert "resume" not in capsys.readouterr().err
    assert not journal.exists()


# --------------------------------------------------------------------------- Python-API cases
def _api_cases():
    from advpure.checkpoint import load_state_dict
    from advpure.contracts import check_device, check_images, check_labels
    from advpure.data import load_dataset
    from advpure.data.folders import _safe_unpickle
    from advpure.models import load_classifier
    from advpure.paths import check_writable
    from advpure.specs import SpecContext, build, parse_spec

    r = torch.rand(2, 1, 8, 8)
    ctx = SpecContext(image_shape=(1, 8, 8))
    return [
        ("images-out-of-range", lambda a: check_images(r * 3), ValueError, "expected [0, 1]"),
        ("images-3d", lambda a: check_images(r[0]), ValueError, "4-D"),
        ("images-nan", lambda a: check_images(r.masked_fill(r > 0.5, float("nan"))), ValueError, "NaN"),
        ("images-uint8", lambda a: check_images((r * 255).byte()), TypeError, "x.float() / 255"),
        ("images-empty", lambda a: check_images(r[:0]), ValueError, "empty batch"),
        ("images-wrong-channels", lambda a: load_classifier(CLF)(torch.rand(2, 3, 8, 8)), ValueError, "channel"),
        ("images-wrong-size", lambda a: load_classifier(CLF)(torch.rand(2, 1, 9, 9)), ValueError, "8x8"),
        ("labels-out-of-range", lambda a: check_labels(torch.tensor([0, 12]), 2, num_classes=10), ValueError, "[0, 9]"),
        ("labels-float", lambda a: check_labels(torch.zeros(2), 2), TypeError, "integer"),
        ("spec-empty", lambda a: parse_spec(""), ValueError, "empty spec"),
        ("spec-duplicate", lambda a: parse_spec("pgd:steps=1,steps=2"), ValueError, "'steps' is given twice"),
        ("build-linf-budget", lambda a: build("attack", "apgd:eps=8"), ValueError, "eps=8"),
        ("build-l2-budget", lambda a: build("attack", "pgd:norm=l2,eps=8.5", ctx), ValueError, "l_2 diameter"),
        ("build-unknown-key", lambda a: build("attack", "square:bogus=1"), ValueError, "bogus"),
        ("build-unknown-defense", lambda a: build("defense", "nope"), ValueError, "unknown defense 'nope'"),
        ("classifier-bare-name", lambda a: load_classifier("resnet20"), ValueError, "allow_random_weights"),
        ("state-dict-wrong-sha", lambda a: load_state_dict(a / "ok.pt", sha256="1" * 64), ValueError, "sha256"),
        ("state-dict-unknown-type", lambda a: load_state_dict(a / "notes.txt"), ValueError, "unknown checkpoint type"),
        ("state-dict-missing", lambda a: load_state_dict(a / "none.pt"), FileNotFoundError, "none.pt"),
        ("cifar-batch-with-code", lambda a: _safe_unpickle(pickle.dumps({b"data": _Evil()})), pickle.UnpicklingError,
         "refusing"),
        ("cifar-batch-truncated", lambda a: _safe_unpickle(pickle.dumps({b"data": [1, 2, 3]})[:-5], "data_batch_1"),
         ValueError, "data_batch_1"),
        ("digits-split", lambda a: load_dataset("digits", "val"), ValueError, "'val'"),
        ("folder-archive-truncated", lambda a: load_dataset("folder", "train", data_dir=a / "trunc.tar.gz"),
         ValueError, "trunc.tar.gz"),
        ("writable-file-is-dir", lambda a: check_writable(a, "--x", "file"), ValueError, "--x"),
        ("writable-dir-is-file", lambda a: check_writable(a / "notes.txt", "--y", "dir"), ValueError, "--y"),
        ("writable-kind", lambda a: check_writable(a, "--z", "folder"), ValueError, "kind"),
        ("device-unknown", lambda a: check_device("gpu0"), ValueError, "gpu0"),
    ]


@pytest.mark.parametrize("case", _api_cases(), ids=lambda c: c[0])
def test_api_bad_input_raises_a_named_error(case, a):
    _, fn, exc, match = case
    with pytest.raises(exc) as e:
        fn(a)
    assert match in str(e.value)
    assert "\n" not in str(e.value)


def test_random_weights_only_when_asked(tmp_path, capsys):
    from advpure.models import load_classifier

    assert load_classifier("small-cnn", allow_random_weights=True).num_classes == 10
    out = tmp_path / "r.json"
    assert main(["eval", "--dataset", "digits", "--classifier", "small-cnn", "--allow-random-weights", "--n", "8",
                 "--no-progress", "--out", str(out)]) == 0
    assert "random weights" in json.loads(out.read_text())["classifier"]


def test_threads_default_is_sane(monkeypatch):
    from advpure import threads

    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.default_threads() == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "0")  # not a valid count: ignored
    monkeypatch.setattr(threads, "_TORCH_DEFAULT", 8)
    # the documented rule, case by case: 1 thread on <= 2 CPUs; else min(CPUs, torch's default, 4)
    for cpus, torch_default, expected in [(1, 8, 1), (2, 8, 1), (3, 8, 3), (3, 2, 2), (16, 8, 4), (16, 16, 4)]:
        monkeypatch.setattr(threads, "usable_cpus", lambda c=cpus: c)
        monkeypatch.setattr(threads, "_TORCH_DEFAULT", torch_default)
        assert threads.default_threads() == expected, (cpus, torch_default)
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(threads, "usable_cpus", lambda: 2)
    assert threads.default_threads() == 1
    before = torch.get_num_threads()
    try:
        assert threads.apply(1) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


# --------------------------------------------------------------------------- decoding converts correctly
def _load_one(tmp_path: Path, files: dict[str, bytes | Image.Image]):
    from advpure.data import load_folder_dataset

    d = tmp_path / "train" / "c"
    d.mkdir(parents=True, exist_ok=True)
    for name, img in files.items():
        if isinstance(img, bytes):
            (d / name).write_bytes(img)
        else:
            img.save(d / name)
    return load_folder_dataset(tmp_path, "train", use_cache=False).images.numpy()


def test_16bit_grayscale_png_is_scaled_not_saturated(tmp_path):
    x = _load_one(tmp_path, {"a.png": _png16(np.array([[0, 257, 32896, 65535]], np.uint16))})
    assert x.shape == (1, 1, 1, 4) and x.ravel().tolist() == [0, 1, 128, 255]  # was all 255 (white)


def test_16bit_rgb_png_keeps_its_colours(tmp_path):
    a16 = np.array([[[65535, 0, 32896], [257, 514, 771]]], np.uint16)
    x = _load_one(tmp_path, {"a.png": _png16(a16)})
    assert x.shape == (1, 3, 1, 2) and x[0, :, 0, 0].tolist() == [255, 0, 128] and x[0, :, 0, 1].tolist() == [1, 2, 3]


def test_palette_bilevel_opaque_alpha_and_cmyk_convert(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    rgba = np.concatenate([rgb, np.full((4, 4, 1), 255, np.uint8)], axis=2)
    pal = Image.fromarray(rgb).quantize(colors=256)
    x = _load_one(tmp_path / "1", {"a.png": Image.fromarray(rgba, "RGBA"), "b.png": pal})
    np.testing.assert_array_equal(x[0].transpose(1, 2, 0), rgb)
    np.testing.assert_array_equal(x[1].transpose(1, 2, 0), np.asarray(pal.convert("RGB")))
    x = _load_one(tmp_path / "2", {"a.png": Image.fromarray(np.array([[0, 255]], np.uint8)).convert("1"),
                                   "b.png": Image.fromarray(np.array([[[9, 255], [77, 255]]], np.uint8), "LA")})
    assert x.shape == (2, 1, 1, 2) and x[0].ravel().tolist() == [0, 255] and x[1].ravel().tolist() == [9, 77]
    cmyk = Image.frombytes("CMYK", (2, 1), bytes([0, 0, 0, 0, 255, 0, 0, 128]))
    x = _load_one(tmp_path / "3", {"a.tif": cmyk})
    assert x[0, :, 0, 0].tolist() == [255, 255, 255] and x[0, :, 0, 1].tolist() == [0, 127, 127]


def test_grayscale_among_rgb_is_replicated(tmp_path):
    x = _load_one(tmp_path, {"a.png": _gray(50, 2), "b.png": Image.fromarray(np.full((2, 2, 3), 9, np.uint8))})
    assert x.shape == (2, 3, 2, 2) and (x[0] == 50).all() and (x[1] == 9).all()


def test_decode_cache_follows_the_files(tmp_path):
    from advpure.data import load_folder_dataset

    root = _folder(tmp_path / "ds", 2, lambda k, i: _gray(10 * k + i, 4), splits=("train",))
    first = load_folder_dataset(root, "train")
    f = root / "train" / "c1" / "0.png"
    st = f.stat()
    _gray(200, 4).save(f)  # overwritten: same name, same size, new pixels
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    second = load_folder_dataset(root, "train")
    assert int(first.images[2].max()) == 10 and int(second.images[2].max()) == 200
    _gray(99, 4).save(root / "train" / "c0" / "9.png")  # added
    assert len(load_folder_dataset(root, "train")) == len(first) + 1


# --------------------------------------------------------------------------- property-based fuzz
SPEC_ALPHABET = "apgdeps=,:|/-._0123456789 eEnaifNtruTF"


@settings(max_examples=400, deadline=None, database=None)
@given(st.one_of(st.text(), st.text(alphabet=SPEC_ALPHABET, max_size=40), st.binary().map(repr)))
def test_parse_spec_returns_name_and_dict_or_value_error(s):
    from advpure.specs import parse_spec

    try:
        name, params = parse_spec(s)
    except ValueError:
        return
    assert isinstance(name, str) and isinstance(params, dict)
    assert all(isinstance(k, str) and k for k in params)


@settings(max_examples=100, deadline=None, database=None)
@given(st.dictionaries(st.from_regex(r"[a-z][a-z_]{0,8}", fullmatch=True),
                       st.one_of(st.integers(-10**6, 10**6), st.sampled_from(["linf", "l2", "true", "none"])),
                       max_size=5))
def test_parse_spec_round_trips_key_value_lists(params):
    from advpure.specs import parse_spec

    spec = "pgd" + (":" + ",".join(f"{k}={v}" for k, v in params.items()) if params else "")
    name, got = parse_spec(spec)
    assert name == "pgd" and set(got) == set(params)


def _journal_open(data: bytes):
    from advpure.eval.journal import Journal, JournalError

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "j.jsonl"
        p.write_bytes(data)
        try:
            j = Journal(p, "k")
        except (JournalError, ValueError):
            return None
        j.close()
        return j.records


@settings(max_examples=150, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_journal_reading_random_bytes_raises_only_journal_errors(data):
    _journal_open(data)


@settings(max_examples=150, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200), st.integers(0, 10**6))
def test_journal_never_drops_a_valid_line_after_garbage(garbage, value):
    line = json.dumps({"key": "k", "type": "batch", "value": value}).encode()
    records = _journal_open(garbage + b"\n" + line + b"\n")
    assert records is not None and any(r.get("value") == value and r.get("type") == "batch" for r in records)


def test_journal_deeply_nested_garbage_line_is_skipped():
    records = _journal_open(b"[" * 100_000 + b"\n" + json.dumps({"key": "k", "type": "batch"}).encode() + b"\n")
    assert records is not None and len(records) == 1
