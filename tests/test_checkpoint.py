"""One loader for advpure's weight artifacts (checkpoint.load_artifact), used by every model family."""

import json

import pytest
import torch

from advpure.checkpoint import load_artifact, resolve_artifact, save_weights


@pytest.fixture()
def artifact(tmp_path):
    sd = {"w": torch.arange(6.0).view(2, 3), "b": torch.ones(3)}
    path = tmp_path / "m.safetensors"
    save_weights(sd, path, {"kind": "thing", "unet_config": {"x": 1}})
    return path, sd


def test_loads_by_path_stem_or_sidecar_name(artifact):
    path, sd = artifact
    for given in (path, path.with_suffix(""), path.with_suffix(".json")):
        assert resolve_artifact(given) == path
        got, meta = load_artifact(given, kind="thing", require=("unet_config",))
        assert got.keys() == sd.keys() and all(torch.equal(got[k], sd[k]) for k in sd)
        assert meta["kind"] == "thing" and len(meta["sha256"]) == 64


def test_kind_and_required_keys(artifact):
    path, _ = artifact
    with pytest.raises(ValueError, match=r"m\.safetensors: sidecar kind is 'thing', expected 'other'"):
        load_artifact(path, kind="other")
    load_artifact(path, kind=("other", "thing"))
    with pytest.raises(ValueError, match=r"sidecar has no 'sigma_max'; is this a thing checkpoint"):
        load_artifact(path, kind="thing", require=("sigma_max",))
    # None in a tuple of kinds accepts a sidecar without a kind (written before kinds were recorded)
    meta = json.loads(path.with_suffix(".json").read_text())
    del meta["kind"]
    path.with_suffix(".json").write_text(json.dumps(meta))
    load_artifact(path, kind=("thing", None))
    with pytest.raises(ValueError, match="sidecar kind is None, expected 'thing'"):
        load_artifact(path, kind="thing")


def test_errors_name_the_file_and_the_problem(artifact, tmp_path):
    path, _ = artifact
    with pytest.raises(FileNotFoundError, match=r"kernel .*nowhere\.safetensors not found \(expected a \.safetensors"):
        load_artifact(tmp_path / "nowhere.safetensors", kind="thing", what="kernel")
    side = path.with_suffix(".json")
    side.write_text("{not json")
    with pytest.raises(ValueError, match=r"m\.json: the sidecar is not valid JSON"):
        load_artifact(path, kind="thing")
    side.unlink()
    with pytest.raises(FileNotFoundError, match=r"no JSON sidecar at .*m\.json"):
        load_artifact(path, kind="thing")


def test_changed_or_corrupt_file(artifact):
    path, sd = artifact
    meta = json.loads(path.with_suffix(".json").read_text())
    data = path.read_bytes()
    path.write_bytes(data[:-4] + b"\x00\x00\x00\x01")
    with pytest.raises(ValueError, match=r"m\.safetensors: sha256 .* does not match the recorded"):
        load_artifact(path, kind="thing")
    path.write_bytes(data[: len(data) // 2])  # truncated, with a sidecar that records its hash
    meta["sha256"] = __import__("hashlib").sha256(path.read_bytes()).hexdigest()
    path.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"m\.safetensors: not a readable safetensors file"):
        load_artifact(path, kind="thing")


def test_every_model_family_loads_through_it(monkeypatch):
    """The classifier, diffusion, consistency, kernel and DAD-denoiser loaders all call load_artifact."""
    import advpure.checkpoint as ck
    from advpure.defenses.dad import load_denoiser as load_dad
    from advpure.detect.kernels import load_kernel
    from advpure.diffusion.consistency import load_consistency_model
    from advpure.diffusion.models import load_denoiser
    from advpure.models import load_classifier
    from advpure.paths import zoo_dir

    seen = []
    real = ck.load_artifact

    def spy(path, *, kind, **kw):
        seen.append(kind)
        return real(path, kind=kind, **kw)

    monkeypatch.setattr(ck, "load_artifact", spy)
    import advpure.models as models

    monkeypatch.setattr(models, "load_artifact", spy)
    zoo = zoo_dir()
    clf = load_classifier(zoo / "digits-small-cnn.safetensors")
    load_denoiser(zoo / "digits-ddpm.safetensors")
    load_consistency_model(zoo / "digits-cm.safetensors")
    load_kernel(zoo / "digits-dad-kernel.safetensors", classifier=clf)
    load_dad(zoo / "digits-dad-denoiser.safetensors")
    assert seen == ["classifier", ("diffusion", None), "consistency", "mmd-kernel", "dad-denoiser"]


def test_diffusion_loader_refuses_a_consistency_model():
    from advpure.diffusion.models import load_denoiser
    from advpure.paths import zoo_dir

    with pytest.raises(ValueError, match="sidecar kind is 'consistency', expected 'diffusion'"):
        load_denoiser(zoo_dir() / "digits-cm.safetensors")


def test_every_zoo_file_matches_its_sidecar_and_the_zoo_stays_small():
    """Each zoo/*.safetensors has a sidecar whose sha256 is the file's; each file < 10 MB, the folder < 40 MB."""
    import advpure.checkpoint as ck
    from advpure.paths import zoo_dir

    zoo = zoo_dir()
    files = sorted(zoo.glob("*.safetensors"))
    assert len(files) >= 10
    for f in files:
        assert ck.read_sidecar(f)["sha256"] == ck.sha256_file(f), f.name
        assert f.stat().st_size < 10_000_000, f.name
    assert sum(p.stat().st_size for p in zoo.iterdir() if p.is_file()) < 40_000_000
    # the float16 classifier loads into float32 and its measured accuracy is recorded
    from advpure.models import load_classifier

    m = load_classifier(zoo / "cifar10-fastnet-purified.safetensors")
    assert {p.dtype for p in m.parameters()} == {torch.float32}
    assert m.sidecar["weights_dtype"] == "float16" and m.sidecar["accuracy"] >= 0.90
