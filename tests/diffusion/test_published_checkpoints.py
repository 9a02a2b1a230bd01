"""The two published score networks (score_sde NCSN++/DDPM++, guided-diffusion ADM) load and evaluate exactly.

Reference files: ``shared/interop/`` (see shared/README.md, "interop/"): small-config checkpoints in the
released files' on-disk layout, with reference outputs computed by the official code, and the full-size
parameter manifests. Everything skips with a reason when the folder is absent.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from advpure.checkpoint import sha256_file
from advpure.diffusion.adm import RELEASED_PARAMETERS as ADM_PARAMS
from advpure.diffusion.adm import ADMEpsModel, build_adm, load_adm, load_adm_denoiser
from advpure.diffusion.score_sde import RELEASED_PARAMETERS as SDE_PARAMS
from advpure.diffusion.score_sde import ScoreSDEEpsModel, build_score_sde, load_score_sde, load_score_sde_denoiser

pytestmark = pytest.mark.shared

REPO = Path(__file__).resolve().parents[2]
INTEROP = Path(os.environ.get("ADVPURE_SHARED", REPO.parent / "shared")) / "interop"

SHA256 = {  # shared/README.md, "interop/"
    "guided_diffusion_imagenet256_manifest.json": "f5db0898dfdd89ba12e22575bd0af9341065ef7965acec1612a2d8523b751a2a",
    "guided_diffusion_small.pt": "6042ad9d66a9e64f9f1bd426b6b9d9bb533a8c3fa9bcec15cb52e376154b340b",
    "guided_diffusion_small_io.pt": "a354c02ac2a88d9ff588837ec4c49b8c2b9dbc087ef14ba75bec09ca0ca09c43",
    "score_sde_cifar10_manifest.json": "4c02eba0b89d99af113a5c7b4c129e9c07d7b07164df73f4b9d4cb4ff1a7aa84",
    "score_sde_small_checkpoint.pth": "3c2f2867e24a8aeafe4a1a73947bab3a53e09faff9b08408faf637d69d4657a3",
    "score_sde_small_io.pt": "906323d3241f44c558cfe137ffcf23618650d5d5cd6581879cf28dfd49667154",
}
SDE_CKPT, SDE_IO, SDE_MANIFEST = "score_sde_small_checkpoint.pth", "score_sde_small_io.pt", "score_sde_cifar10_manifest.json"
ADM_CKPT, ADM_IO, ADM_MANIFEST = ("guided_diffusion_small.pt", "guided_diffusion_small_io.pt",
                                  "guided_diffusion_imagenet256_manifest.json")
RTOL = 1e-4


def _file(name: str) -> Path:
    if not INTEROP.is_dir():
        pytest.skip(f"{INTEROP} not found (set ADVPURE_SHARED): published-checkpoint reference files unavailable")
    p = INTEROP / name
    if not p.is_file():
        pytest.skip(f"{p} missing")
    return p


@pytest.fixture(scope="module")
def verified():
    """Paths of the interop files, each checked against its sha256 in shared/README.md."""
    paths = {}
    for name, digest in SHA256.items():
        p = _file(name)
        assert sha256_file(p) == digest, f"{p}: sha256 differs from shared/README.md"
        paths[name] = p
    return paths


def _load(p: Path):
    if p.suffix == ".json":
        return json.loads(p.read_text())
    return torch.load(p, map_location="cpu", weights_only=True)


def _rel(out: torch.Tensor, ref: torch.Tensor) -> float:
    """max |out - ref| / max |ref|."""
    return float((out.double() - ref.double()).abs().max() / ref.double().abs().max())


def _vp_std(t: torch.Tensor, b0: float = 0.1, b1: float = 20.0) -> torch.Tensor:
    return torch.sqrt(1 - torch.exp(-0.5 * t ** 2 * (b1 - b0) - t * b0))


# ------------------------------------------------------------------------------------------ (a) score_sde
def test_interop_sha256(verified):
    assert set(verified) == set(SHA256)


def test_score_sde_reproduces_reference_outputs(verified):
    io = _load(verified[SDE_IO])
    ad, meta = load_score_sde_denoiser(verified[SDE_CKPT], io["config"], sha256=SHA256[SDE_CKPT])
    assert isinstance(ad, ScoreSDEEpsModel) and ad.t_max == 1.0
    assert ad.image_shape == tuple(io["x"].shape[1:]) == (3, 32, 32)
    assert meta["format"] == "score_sde"
    assert torch.allclose(ad.labels(io["t"]), io["labels"])
    with torch.no_grad():
        eps = ad(io["x"], io["t"])
    rel_out = _rel(eps, io["model_output"])
    score = -eps / _vp_std(io["t"]).view(-1, 1, 1, 1)
    rel_score = _rel(score, io["score"])
    print(f"\nscore_sde max relative error: model_output {rel_out:.3e}, score {rel_score:.3e}")
    assert rel_out < RTOL, f"score_sde model_output max relative error {rel_out:.3e} >= {RTOL}"
    assert rel_score < RTOL, f"score_sde score max relative error {rel_score:.3e} >= {RTOL}"
    # the adapter's own std is the same VP marginal
    assert torch.allclose(ad.std(io["t"]), _vp_std(io["t"]), rtol=1e-6)
    # scalar t broadcasts; wrong image size is refused
    with torch.no_grad():
        one = ad(io["x"][:1], io["t"][0])
    assert _rel(one, eps[:1]) < 1e-5  # batch-size dependent kernels: not bit-identical
    with pytest.raises(ValueError, match="32x32"):
        ad(torch.zeros(1, 3, 16, 16), torch.tensor([0.5]))


# ------------------------------------------------------------------------------------------ (b) EMA is used
def test_score_sde_uses_ema_not_raw_weights(verified, tmp_path):
    io = _load(verified[SDE_IO])
    ckpt = _load(verified[SDE_CKPT])
    # the raw `model` entry (all zeros here) would give a constant output ...
    raw = build_score_sde(io["config"]).eval()
    raw.load_state_dict({k[len("module."):]: v for k, v in ckpt["model"].items()}, strict=True)
    with torch.no_grad():
        const = raw(io["x"], io["labels"])
    assert float(const.std()) == 0.0
    assert float(io["model_output"].std()) > 1e-3
    # ... while the loader's weights are exactly the EMA shadow params, in parameter order
    net = load_score_sde(verified[SDE_CKPT], io["config"])
    params = list(net.parameters())
    shadow = ckpt["ema"]["shadow_params"]
    assert len(params) == len(shadow) == len(ckpt["model"]) - 1  # `model` also holds the `sigmas` buffer
    assert all(torch.equal(p, s) for p, s in zip(params, shadow))

    bad = tmp_path / "no_ema.pth"
    torch.save({"model": {}, "step": 0}, bad)
    with pytest.raises(ValueError, match="missing key 'ema'"):
        load_score_sde(bad, io["config"])
    bad2 = tmp_path / "no_shadow.pth"
    torch.save({"ema": {"decay": 0.9999, "num_updates": 1}}, bad2)
    with pytest.raises(ValueError, match="shadow_params"):
        load_score_sde(bad2, io["config"])
    with pytest.raises(ValueError, match="sha256"):
        load_score_sde(verified[SDE_CKPT], io["config"], sha256="0" * 64)


# ------------------------------------------------------------------------------------------ (c) guided-diffusion
def test_adm_reproduces_reference_outputs(verified):
    io = _load(verified[ADM_IO])
    ad, meta = load_adm_denoiser(verified[ADM_CKPT], io["config"], sha256=SHA256[ADM_CKPT])
    assert isinstance(ad, ADMEpsModel) and ad.t_max == 1.0
    assert ad.image_shape == tuple(io["x"].shape[1:]) == (3, 64, 64)
    assert meta["format"] == "guided_diffusion"
    with torch.no_grad():
        out = ad.net(io["x"], io["timesteps"])
    rel = _rel(out, io["model_output"])
    assert out.shape[1] == 6
    # the adapter: t -> (1000 t).long() (DiffPure), first 3 channels (eps)
    t = (io["timesteps"].double() + 0.5) / 1000
    assert torch.equal(ad.timestep(t.float()), io["timesteps"])
    with torch.no_grad():
        eps = ad(io["x"], t.float())
    assert eps.shape == (2, 3, 64, 64)
    rel_eps = _rel(eps, io["model_output"][:, :3])
    print(f"\nguided-diffusion max relative error: model_output {rel:.3e}, eps {rel_eps:.3e}")
    assert rel < RTOL, f"ADM model_output max relative error {rel:.3e} >= {RTOL}"
    assert rel_eps < RTOL, f"ADM eps (adapter) max relative error {rel_eps:.3e} >= {RTOL}"


def test_adm_legacy_head_order_matters(verified):
    io = _load(verified[ADM_IO])
    cfg = dict(io["config"], use_new_attention_order=True)
    net = load_adm(verified[ADM_CKPT], cfg)
    with torch.no_grad():
        out = net(io["x"], io["timesteps"])
    assert _rel(out, io["model_output"]) > 1e-2  # two heads: splitting q/k/v before heads is another network


# ------------------------------------------------------------------------------------------ (d) full-size manifests
@pytest.mark.parametrize("which", ["score_sde", "adm"])
def test_full_size_architecture_matches_manifest(verified, which):
    name, build, total = {"score_sde": (SDE_MANIFEST, build_score_sde, SDE_PARAMS),
                          "adm": (ADM_MANIFEST, build_adm, ADM_PARAMS)}[which]
    manifest = _load(verified[name])
    want = [(d["name"], tuple(d["shape"])) for d in manifest["parameters"]]
    assert sum(torch.Size(s).numel() for _, s in want) == total
    for config in (manifest["config"], None):  # the released defaults build the same network
        net = build(config, device="meta")
        own = [(n, tuple(p.shape)) for n, p in net.named_parameters()]
        own_names, want_names = [n for n, _ in own], [n for n, _ in want]
        assert not [n for n in want_names if n not in own_names], "manifest parameters missing from the module"
        assert not [n for n in own_names if n not in want_names], "module parameters not in the manifest"
        diff = [(a, b) for a, b in zip(own, want) if a != b]
        assert not diff, f"first differences (module vs manifest, in order): {diff[:3]}"
        assert sum(p.numel() for p in net.parameters()) == total


# ------------------------------------------------------------------------------------------ (e) mismatches
def test_score_sde_mismatched_weights_raise(verified, tmp_path):
    io = _load(verified[SDE_IO])
    with pytest.raises(ValueError, match=r"all_modules\.0\.weight: checkpoint shadow_params\[0\] \(512, 128\)"):
        load_score_sde(verified[SDE_CKPT], dict(io["config"], nf=64))
    with pytest.raises(ValueError, match="EMA tensors"):
        load_score_sde(verified[SDE_CKPT], dict(io["config"], num_res_blocks=1))
    with pytest.raises(ValueError, match="unknown keys"):
        load_score_sde(verified[SDE_CKPT], dict(io["config"], nff=1))
    with pytest.raises(ValueError, match="fir=True is not supported"):
        load_score_sde(verified[SDE_CKPT], dict(io["config"], fir=True))
    ckpt = _load(verified[SDE_CKPT])
    shadow = list(ckpt["ema"]["shadow_params"])
    shadow[4] = shadow[4][:64]  # conv_in weight (128, 3, 3, 3) -> (64, 3, 3, 3)
    bad = tmp_path / "bad.pth"
    torch.save({"ema": {"decay": 0.9999, "num_updates": 1, "shadow_params": shadow}}, bad)
    with pytest.raises(ValueError, match=r"all_modules\.2\.weight: checkpoint shadow_params\[4\] \(64, 3, 3, 3\)"):
        load_score_sde(bad, io["config"])


def test_adm_mismatched_state_dict_raises(verified, tmp_path):
    io = _load(verified[ADM_IO])
    with pytest.raises(ValueError, match=r"time_embed\.0\.weight: checkpoint \(128, 32\) vs model \(256, 64\)"):
        load_adm(verified[ADM_CKPT], dict(io["config"], num_channels=64))
    sd = dict(_load(verified[ADM_CKPT]))
    sd["out.2.weight"] = sd["out.2.weight"][:3]
    del sd["middle_block.1.qkv.bias"]
    sd["extra.weight"] = torch.zeros(1)
    bad = tmp_path / "bad.pt"
    torch.save(sd, bad)
    with pytest.raises(ValueError) as e:
        load_adm(bad, io["config"])
    msg = str(e.value)
    assert "out.2.weight: checkpoint (3, 32, 3, 3) vs model (6, 32, 3, 3)" in msg
    assert "missing keys [middle_block.1.qkv.bias]" in msg and "unexpected keys [extra.weight]" in msg


def test_adm_fp16_option(verified, caplog):
    """use_fp16 halves the torso convolutions only (norms, linears and ``out`` stay fp32) and only on CUDA."""
    io = _load(verified[ADM_IO])
    with caplog.at_level("WARNING", logger="advpure.diffusion.adm"):
        net = load_adm(verified[ADM_CKPT], dict(io["config"], use_fp16=True))
    assert "CUDA only" in caplog.text and net.dtype == torch.float32
    net.convert_to_fp16()  # exercise the half-precision path on CPU where the kernels exist
    assert net.input_blocks[0][0].weight.dtype == torch.float16
    assert net.time_embed[0].weight.dtype == net.out[2].weight.dtype == net.middle_block[1].norm.weight.dtype == torch.float32
    try:
        with torch.no_grad():
            out = net(io["x"], io["timesteps"])
    except RuntimeError as e:  # older CPU builds lack half convolutions
        pytest.skip(f"no float16 convolution on this CPU build: {e}")
    assert out.dtype == torch.float32
    assert _rel(out, io["model_output"]) < 2e-2


def test_load_denoiser_spec_for_published_formats(tmp_path, verified):
    """``model=score_sde:PATH@config.json`` / ``guided_diffusion:PATH@config.json`` through the common loader give the
    official outputs (eps = model_output; for ADM its first 3 channels)."""
    import json

    from advpure.diffusion.models import load_denoiser

    inter = verified["score_sde_small_io.pt"].parent
    io = torch.load(inter / "score_sde_small_io.pt", weights_only=True)
    cfg = tmp_path / "score_sde.json"
    cfg.write_text(json.dumps(io["config"]))
    net, meta = load_denoiser(f"score_sde:{inter / 'score_sde_small_checkpoint.pth'}@{cfg}")
    with torch.no_grad():
        out = net(io["x"], io["t"])
    assert float((out - io["model_output"]).abs().max() / io["model_output"].abs().max()) < 1e-4
    gio = torch.load(inter / "guided_diffusion_small_io.pt", weights_only=True)
    gcfg = tmp_path / "adm.json"
    gcfg.write_text(json.dumps(gio["config"]))
    gnet, _ = load_denoiser(f"guided_diffusion:{inter / 'guided_diffusion_small.pt'}@{gcfg}")
    t = gio["timesteps"].float() / 1000 + 1e-7  # (1000 t).long() gives back the integer timesteps
    with torch.no_grad():
        gout = gnet(gio["x"], t)
    ref = gio["model_output"][:, :3]
    assert float((gout - ref).abs().max() / ref.abs().max()) < 1e-4
    with pytest.raises(FileNotFoundError, match="config"):
        load_denoiser(f"score_sde:{inter / 'score_sde_small_checkpoint.pth'}@{tmp_path / 'missing.json'}")
