"""The papers' own networks in their published state-dict layouts, a user's own module, and DiffPure end to end.

The expected key lists are written here from reading the original code, not derived from advpure's modules:

- RobustBench ``robustbench/model_zoo/architectures/wide_resnet.py`` (``WideResNet``, TRADES code; "Standard" is
  ``WideResNet(depth=28, widen_factor=10)``, ``sub_block1=False``, ``bias_last=True``, no normalisation):
  ``conv1``, ``block{1,2,3}.layer.i.{bn1, conv1, bn2, conv2[, convShortcut]}``, ``bn1``, ``fc``;
- RobustBench ``robustbench/model_zoo/architectures/dm_wide_resnet.py`` (``DMWideResNet``; the WRN-70-16 of DiffPure:
  ``DMWideResNet(num_classes=10, depth=70, width=16, activation_fn=Swish)``, and RobustBench's
  ``Gowal2021Improving_70_16_ddpm_100m`` / ``Rebuffi2021Fixing_70_16_cutmix_extra``, with CIFAR-10 mean/std):
  ``[mean, std]``, ``init_conv``, ``layer.{0,1,2}.block.i.{batchnorm_0, conv_0, batchnorm_1, conv_1[, shortcut]}``,
  ``batchnorm``, ``logits``; ``conv_0`` has padding 0 after a TF-"SAME" pad ((1,1,1,1) at stride 1, (0,1,0,1) at 2);
- torchvision ``torchvision/models/resnet.py`` (``resnet50 = ResNet(Bottleneck, [3, 4, 6, 3])``): ``conv1``, ``bn1``,
  ``layer{1..4}.i.{conv1, bn1, conv2, bn2, conv3, bn3[, downsample.0, downsample.1]}``, ``fc``; stride on ``conv2``.

The functional reference forwards below are transcriptions of those ``forward`` methods over a plain state dict.
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from advpure.models import ARCHS, ImageClassifier, build_classifier, classifier_info, load_classifier, save_classifier

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("ADVPURE_SHARED", REPO.parent / "shared"))
INTEROP = SHARED / "interop"
CIFAR_JPEG = SHARED / "data" / "cifar10-jpeg.tar.gz"
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)  # dm_wide_resnet.py
CIFAR10_STD = (0.2471, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------- expected layouts (hand-written)
def _bn(p: str, c: int) -> list[tuple[str, tuple]]:
    return [(f"{p}.weight", (c,)), (f"{p}.bias", (c,)), (f"{p}.running_mean", (c,)), (f"{p}.running_var", (c,)),
            (f"{p}.num_batches_tracked", ())]


def robustbench_wrn_keys(depth: int = 28, widen: int = 10, num_classes: int = 10) -> list[tuple[str, tuple]]:
    n = (depth - 4) // 6
    ch = [16, 16 * widen, 32 * widen, 64 * widen]
    keys = [("conv1.weight", (16, 3, 3, 3))]
    for b in (1, 2, 3):
        for i in range(n):
            cin, cout, p = (ch[b - 1] if i == 0 else ch[b]), ch[b], f"block{b}.layer.{i}"
            keys += _bn(f"{p}.bn1", cin) + [(f"{p}.conv1.weight", (cout, cin, 3, 3))]
            keys += _bn(f"{p}.bn2", cout) + [(f"{p}.conv2.weight", (cout, cout, 3, 3))]
            if cin != cout:
                keys.append((f"{p}.convShortcut.weight", (cout, cin, 1, 1)))
    return keys + _bn("bn1", ch[3]) + [("fc.weight", (num_classes, ch[3])), ("fc.bias", (num_classes,))]


def robustbench_dm_wrn_keys(depth: int = 70, width: int = 16, num_classes: int = 10,
                            mean_std: bool = False) -> list[tuple[str, tuple]]:
    n = (depth - 4) // 6
    ch = [16, 16 * width, 32 * width, 64 * width]
    keys = [("mean", (3, 1, 1)), ("std", (3, 1, 1))] if mean_std else []
    keys.append(("init_conv.weight", (16, 3, 3, 3)))
    for g in range(3):
        for i in range(n):
            cin, cout, p = (ch[g] if i == 0 else ch[g + 1]), ch[g + 1], f"layer.{g}.block.{i}"
            keys += _bn(f"{p}.batchnorm_0", cin) + [(f"{p}.conv_0.weight", (cout, cin, 3, 3))]
            keys += _bn(f"{p}.batchnorm_1", cout) + [(f"{p}.conv_1.weight", (cout, cout, 3, 3))]
            if cin != cout:
                keys.append((f"{p}.shortcut.weight", (cout, cin, 1, 1)))
    return keys + _bn("batchnorm", ch[3]) + [("logits.weight", (num_classes, ch[3])), ("logits.bias", (num_classes,))]


def torchvision_resnet_keys(layers=(3, 4, 6, 3), width_per_group: int = 64,
                            num_classes: int = 1000) -> list[tuple[str, tuple]]:
    keys = [("conv1.weight", (64, 3, 7, 7))] + _bn("bn1", 64)
    inplanes = 64
    for li, (planes, n) in enumerate(zip((64, 128, 256, 512), layers), start=1):
        stride, width, out = (1 if li == 1 else 2), planes * width_per_group // 64, planes * 4
        for i in range(n):
            p = f"layer{li}.{i}"
            keys += [(f"{p}.conv1.weight", (width, inplanes, 1, 1))] + _bn(f"{p}.bn1", width)
            keys += [(f"{p}.conv2.weight", (width, width, 3, 3))] + _bn(f"{p}.bn2", width)
            keys += [(f"{p}.conv3.weight", (out, width, 1, 1))] + _bn(f"{p}.bn3", out)
            if i == 0 and (stride != 1 or inplanes != out):
                keys += [(f"{p}.downsample.0.weight", (out, inplanes, 1, 1))] + _bn(f"{p}.downsample.1", out)
            inplanes = out
    return keys + [("fc.weight", (num_classes, 2048)), ("fc.bias", (num_classes,))]


def _layout(arch: str, **kw) -> list[tuple[str, tuple]]:
    with torch.device("meta"):  # no memory, no init time: WRN-70-16 has 267M parameters
        m = build_classifier(arch, **kw)
    return [(k, tuple(v.shape)) for k, v in m.state_dict().items()]


def _n_params(keys: list[tuple[str, tuple]]) -> int:
    import math

    return sum(math.prod(s) for k, s in keys if not k.rsplit(".", 1)[-1].startswith(("running_", "num_batches"))
               and k not in ("mean", "std"))


def test_wrn_28_10_is_robustbench_standard_layout():
    expected = robustbench_wrn_keys(28, 10)
    assert _layout("wrn-28-10") == expected  # names, order and shapes
    assert len(expected) == 155 and _n_params(expected) == 36_479_194


def test_wrn_70_16_is_robustbench_dm_wide_resnet_layout():
    expected = robustbench_dm_wrn_keys(70, 16)
    assert _layout("wrn-70-16") == expected
    assert len(expected) == 407 and _n_params(expected) == 266_796_506
    assert _layout("dm-wrn-28-10") == robustbench_dm_wrn_keys(28, 10)
    with torch.device("meta"):
        m = build_classifier("wrn-70-16")
    assert isinstance(m.relu, nn.SiLU)  # Swish
    cpu = build_classifier("wrn-70-16", width=1)
    assert cpu.mean.flatten().tolist() == pytest.approx(CIFAR10_MEAN)
    assert cpu.std.flatten().tolist() == pytest.approx(CIFAR10_STD)


def test_resnet50_is_torchvision_layout():
    expected = torchvision_resnet_keys()
    assert _layout("resnet50") == expected
    assert len(expected) == 320 and _n_params(expected) == 25_557_032
    assert _layout("wide-resnet50-2") == torchvision_resnet_keys(width_per_group=128)
    assert _n_params(torchvision_resnet_keys(width_per_group=128)) == 68_883_240
    assert "resnet50" in ARCHS and classifier_info("resnet50", allow_random_weights=True)["image_size"] == 224


# --------------------------------------------------------------------------- functional references
def _bnf(sd, p, x):
    return F.batch_norm(x, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"], sd[p + ".bias"],
                        False, 0.0, 1e-5)


def ref_robustbench_wrn(sd, x, depth):
    """wide_resnet.py WideResNet.forward (no normalisation) over a state dict."""
    n = (depth - 4) // 6
    out = F.conv2d(x, sd["conv1.weight"], padding=1)
    for b in (1, 2, 3):
        for i in range(n):
            p = f"block{b}.layer.{i}"
            stride = 2 if (b > 1 and i == 0) else 1
            equal = p + ".convShortcut.weight" not in sd
            if not equal:
                out = F.relu(_bnf(sd, p + ".bn1", out))
                h = out
            else:
                h = F.relu(_bnf(sd, p + ".bn1", out))
            h = F.relu(_bnf(sd, p + ".bn2", F.conv2d(h, sd[p + ".conv1.weight"], stride=stride, padding=1)))
            h = F.conv2d(h, sd[p + ".conv2.weight"], padding=1)
            out = (out if equal else F.conv2d(out, sd[p + ".convShortcut.weight"], stride=stride)) + h
    out = F.avg_pool2d(F.relu(_bnf(sd, "bn1", out)), 8).flatten(1)
    return F.linear(out, sd["fc.weight"], sd["fc.bias"])


def ref_dm_wrn(sd, x, depth, mean, std):
    """dm_wide_resnet.py DMWideResNet.forward (Swish, padding 0) over a state dict."""
    n = (depth - 4) // 6
    act = lambda t: t * torch.sigmoid(t)  # noqa: E731 - _Swish
    out = F.conv2d((x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1),
                   sd["init_conv.weight"], padding=1)
    for g in range(3):
        for i in range(n):
            p = f"layer.{g}.block.{i}"
            stride = 2 if (g > 0 and i == 0) else 1
            has_sc = p + ".shortcut.weight" in sd
            if has_sc:
                out = act(_bnf(sd, p + ".batchnorm_0", out))
                v = out
            else:
                v = act(_bnf(sd, p + ".batchnorm_0", out))
            v = F.pad(v, (1, 1, 1, 1) if stride == 1 else (0, 1, 0, 1))
            h = act(_bnf(sd, p + ".batchnorm_1", F.conv2d(v, sd[p + ".conv_0.weight"], stride=stride)))
            h = F.conv2d(h, sd[p + ".conv_1.weight"], padding=1)
            out = (F.conv2d(out, sd[p + ".shortcut.weight"], stride=stride) if has_sc else out) + h
    out = F.avg_pool2d(act(_bnf(sd, "batchnorm", out)), 8).flatten(1)
    return F.linear(out, sd["logits.weight"], sd["logits.bias"])


def ref_torchvision_resnet50(sd, x):
    """torchvision resnet.py ResNet.forward (Bottleneck, v1.5) after the ImageNet normalisation."""
    x = (x - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)
    x = F.max_pool2d(F.relu(_bnf(sd, "bn1", F.conv2d(x, sd["conv1.weight"], stride=2, padding=3))), 3, 2, 1)
    for li, n in enumerate((3, 4, 6, 3), start=1):
        for i in range(n):
            p = f"layer{li}.{i}"
            stride = 2 if (li > 1 and i == 0) else 1
            h = F.relu(_bnf(sd, p + ".bn1", F.conv2d(x, sd[p + ".conv1.weight"])))
            h = F.relu(_bnf(sd, p + ".bn2", F.conv2d(h, sd[p + ".conv2.weight"], stride=stride, padding=1)))
            h = _bnf(sd, p + ".bn3", F.conv2d(h, sd[p + ".conv3.weight"]))
            idn = x
            if p + ".downsample.0.weight" in sd:
                idn = _bnf(sd, p + ".downsample.1", F.conv2d(x, sd[p + ".downsample.0.weight"], stride=stride))
            x = F.relu(h + idn)
    return F.linear(F.adaptive_avg_pool2d(x, 1).flatten(1), sd["fc.weight"], sd["fc.bias"])


def _randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial running statistics and affine parameters, so that a mixed-up BN would show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=g) * 0.5 + 0.75)
                m.weight.copy_(torch.rand(c, generator=g) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(c, generator=g) * 0.1)
    return model


# --------------------------------------------------------------------------- round trips
def test_wrn_28_10_robustbench_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    m = _randomise_bn(build_classifier("wrn-28-10")).eval()
    sd = m.state_dict()
    assert [(k, tuple(v.shape)) for k, v in sd.items()] == robustbench_wrn_keys(28, 10)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = ref_robustbench_wrn(sd, x, 28)
        torch.testing.assert_close(m(x), ref, rtol=1e-4, atol=1e-4)
        # RobustBench's files: {"state_dict": ...} with DataParallel's "module." prefix, or a plain dict
        for i, obj in enumerate(({"state_dict": {"module." + k: v for k, v in sd.items()}}, dict(sd))):
            p = tmp_path / f"Standard{i}.pt"
            torch.save(obj, p)
            m2 = load_classifier(f"wrn-28-10:{p}")
            torch.testing.assert_close(m2(x), m(x), rtol=0, atol=0)


@pytest.mark.parametrize("with_mean_std", [False, True])
def test_dm_wrn_70_16_checkpoint_round_trip(tmp_path, with_mean_std):
    """Depth 70 with width 1 (same key set as WRN-70-16, 1/256 of the weights). RobustBench versions that register
    mean/std as buffers store them in the file; those values are used."""
    torch.manual_seed(0)
    m = _randomise_bn(build_classifier("wrn-70-16", width=1)).eval()
    sd = m.state_dict()
    mean, std = (CIFAR10_MEAN, CIFAR10_STD)
    if with_mean_std:
        mean, std = (0.5, 0.4, 0.3), (0.2, 0.3, 0.25)
        sd = {"mean": torch.tensor(mean).view(3, 1, 1), "std": torch.tensor(std).view(3, 1, 1), **sd}
    assert [(k, tuple(v.shape)) for k, v in sd.items()] == robustbench_dm_wrn_keys(70, 1, mean_std=with_mean_std)
    p = tmp_path / "Rebuffi2021Fixing_70_16_cutmix_extra.pt"
    torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}}, p)
    m2 = load_classifier(f"wrn-70-16:{p}", width=1)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(m2(x), ref_dm_wrn(sd, x, 70, mean, std), rtol=1e-4, atol=1e-4)
        if not with_mean_std:
            torch.testing.assert_close(m2(x), m(x), rtol=0, atol=0)
        m3 = build_classifier("wrn-70-16", width=1).eval()
        m3.load_state_dict(sd)  # torch's own strict load takes the RobustBench dict too
        torch.testing.assert_close(m3(x), m2(x), rtol=0, atol=0)
        # DiffPure's own WRN-70-16 was saved from DataParallel(Sequential(model)): keys "module.0.*"
        p2 = tmp_path / "weights-best.pt"
        torch.save({"state_dict": {"module.0." + k: v for k, v in sd.items()}}, p2)
        torch.testing.assert_close(load_classifier(f"wrn-70-16:{p2}", width=1)(x), m2(x), rtol=0, atol=0)
    assert "mean" not in m2.state_dict() and "std" not in m2.state_dict()


def test_resnet50_torchvision_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    m = _randomise_bn(build_classifier("resnet50")).eval()
    sd = m.state_dict()
    p = tmp_path / "resnet50-0676ba61.pth"
    torch.save(sd, p)  # torchvision's files are plain state dicts
    m2 = load_classifier(f"resnet50:{p}")
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = m2(x)
        assert out.shape == (2, 1000)
        torch.testing.assert_close(out, m(x), rtol=0, atol=0)
        torch.testing.assert_close(out, ref_torchvision_resnet50(sd, x), rtol=1e-4, atol=1e-4)
        with pytest.raises(ValueError, match="224x224"):
            m2(torch.rand(1, 3, 64, 64))
        # image_size=256, resize_to=224: takes the 256x256 images the ADM purifies, resizes them as DiffPure does
        m3 = load_classifier(f"resnet50:{p}", image_size=256, resize_to=224)
        x256 = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(2))
        torch.testing.assert_close(m3(x256), m(F.interpolate(x256, size=(224, 224), mode="bilinear",
                                                             align_corners=False)), rtol=1e-4, atol=1e-4)
        # the command-line route for those arguments: safetensors + sidecar recording them
        save_classifier(m3, tmp_path / "resnet50-256.safetensors", dataset="imagenet256")
        assert classifier_info(tmp_path / "resnet50-256.safetensors")["image_size"] == 256
        torch.testing.assert_close(load_classifier(tmp_path / "resnet50-256.safetensors")(x256), m3(x256),
                                   rtol=0, atol=0)


def test_key_mismatch_names_missing_and_unexpected_keys(tmp_path):
    m = build_classifier("wrn-28-10", widen_factor=1)
    sd = m.state_dict()
    sd.pop("block2.layer.0.convShortcut.weight")
    sd["block1.layer.0.extra.weight"] = torch.zeros(1)
    p = tmp_path / "bad.pt"
    torch.save({"state_dict": sd}, p)
    with pytest.raises(ValueError, match=r"missing keys \[block2\.layer\.0\.convShortcut\.weight\].*"
                                         r"unexpected keys \[block1\.layer\.0\.extra\.weight\]"):
        load_classifier(f"wrn-28-10:{p}", widen_factor=1)
    # a DMWideResNet file given as the Standard layout: named, with the architecture to use
    p2 = tmp_path / "dm.pt"
    torch.save(build_classifier("dm-wrn-28-10", width=1).state_dict(), p2)
    with pytest.raises(ValueError, match=r"(?s)missing keys \[conv1\.weight.*unexpected keys \[init_conv\.weight.*"
                                         r"DMWideResNet layout.*dm-wrn-28-10"):
        load_classifier(f"wrn-28-10:{p2}", widen_factor=1)
    # a wrapper prefix on every key ("model." of RobustBench's normalising wrappers) is stripped
    p3 = tmp_path / "wrapped.pt"
    torch.save({"model": {"model." + k: v for k, v in m.state_dict().items()}}, p3)
    load_classifier(f"wrn-28-10:{p3}", widen_factor=1)


# --------------------------------------------------------------------------- a user's own module
USER_FILE = '''
import torch.nn as nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * 8 * 8, 5)

    def forward(self, x):
        return self.fc(x.flatten(1))

def make():
    return Net()

def not_a_module():
    return 42

def needs_args(width):
    return Net()

VALUE = 3
'''


def test_module_spec_loads_a_users_callable(tmp_path, monkeypatch):
    f = tmp_path / "my_models.py"
    f.write_text(textwrap.dedent(USER_FILE))
    clf = load_classifier(f"module:{f}:make")
    x = torch.rand(2, 3, 8, 8)
    assert clf(x).shape == (2, 5) and not clf.training
    torch.testing.assert_close(clf(x), clf.net(x))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):  # the input contract is checked
        clf(x * 3)
    assert classifier_info(f"module:{f}:make")["arch"] == "module"

    # the same file as a package module on the path
    pkg = tmp_path / "userpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(textwrap.dedent(USER_FILE))
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_classifier("module:userpkg.nets:make")(x).shape == (2, 5)

    # an advpure classifier is returned as it is
    (pkg / "adv.py").write_text("from advpure.models import build_classifier\n"
                                "def make():\n    return build_classifier('resnet8')\n")
    assert isinstance(load_classifier("module:userpkg.adv:make"), ImageClassifier)


def test_module_spec_errors_name_the_module_and_callable(tmp_path):
    f = tmp_path / "my_models2.py"
    f.write_text(textwrap.dedent(USER_FILE))
    with pytest.raises(AttributeError, match=r"my_models2\.py has no callable 'missing'.*make"):
        load_classifier(f"module:{f}:missing")
    with pytest.raises(ModuleNotFoundError, match=r"cannot import module 'no_such_pkg_xyz\.mod'"):
        load_classifier("module:no_such_pkg_xyz.mod:make")
    with pytest.raises(FileNotFoundError, match=r"nowhere\.py does not exist"):
        load_classifier(f"module:{tmp_path / 'nowhere.py'}:make")
    with pytest.raises(TypeError, match=r"not_a_module\(\) returned a int"):
        load_classifier(f"module:{f}:not_a_module")
    with pytest.raises(TypeError, match=r"calling needs_args\(\) with no arguments failed"):
        load_classifier(f"module:{f}:needs_args")
    with pytest.raises(TypeError, match=r"'VALUE' .* is a int, not a callable"):
        load_classifier(f"module:{f}:VALUE")
    with pytest.raises(ValueError, match="expected module:package.module:callable"):
        load_classifier("module:only_a_name")


# --------------------------------------------------------------------------- end to end: DiffPure + paper classifiers
def _needs_shared(*paths: Path) -> None:
    for p in paths:
        if not p.exists():
            pytest.skip(f"{p} missing (../shared not found; set ADVPURE_SHARED)")


def test_run_identity_hashes_batchnorm_classifiers():
    """0-dim buffers (BatchNorm's num_batches_tracked) are part of the digest, and a change in them shows."""
    from advpure.eval.journal import content_digest

    m = build_classifier("wrn-28-10", widen_factor=1)
    d = content_digest(m)
    with torch.no_grad():
        next(b for n, b in m.named_buffers() if n.endswith("num_batches_tracked")).add_(1)
    assert d and content_digest(m) != d


def _score_sde_model(tmp_path: Path) -> str:
    """``score_sde:CKPT@CONFIG`` for the small interop checkpoint, linked into ``tmp_path`` (so statistics written
    beside it land there, not in ../shared)."""
    _needs_shared(CIFAR_JPEG, INTEROP / "score_sde_small_checkpoint.pth", INTEROP / "score_sde_small_io.pt")
    cfg = torch.load(INTEROP / "score_sde_small_io.pt", weights_only=True)["config"]
    (tmp_path / "score_sde.json").write_text(json.dumps(cfg))
    ckpt = tmp_path / "checkpoint_8.pth"
    ckpt.symlink_to(INTEROP / "score_sde_small_checkpoint.pth")
    return f"score_sde:{ckpt}@{tmp_path / 'score_sde.json'}"


#: each purifier's spec options beside model=score_sde:..., and the network evaluations they make per purification
SCORE_SDE_PURIFIERS = {
    "diffpure": ("t=0.01,steps=2", 2),
    "gdmp": ("t=0.01,steps=2,iterations=1,guide=ssim", 2),
    "ssni": ("t=0.01,steps=2,mode=N,ref={ref}", 2 + 2),  # + one per EPS level of the reference (2 here)
}


@pytest.mark.parametrize("name", list(SCORE_SDE_PURIFIERS))
def test_score_sde_purifiers_with_robustbench_wrn_28_10(tmp_path, name):
    """DiffPure, GDMP and SSNI take the published score_sde format through ``model=score_sde:PATH@config.json``."""
    from advpure.checkpoint import sha256_file
    from advpure.detect.eps import compute_reference
    from advpure.diffusion.models import load_denoiser
    from advpure.diffusion.schedule import VPSchedule
    from advpure.eval.runner import run_eval
    from advpure.specs import SpecContext, build

    model = _score_sde_model(tmp_path)
    torch.manual_seed(0)
    m = build_classifier("wrn-28-10", widen_factor=2)  # the WRN-28-10 key set at 1/5 of the width
    ckpt = tmp_path / "Standard.pt"
    torch.save({"state_dict": {"module." + k: v for k, v in m.state_dict().items()}}, ckpt)
    clf = load_classifier(f"wrn-28-10:{ckpt}", widen_factor=2)
    opts, nfe = SCORE_SDE_PURIFIERS[name]
    ref = tmp_path / "ref.eps-ref.json"
    if name == "ssni":  # reference statistics of this checkpoint at 2 EPS levels (SSNI's pass then costs 2 calls)
        net, meta = load_denoiser(model)
        assert meta["sha256"] == sha256_file(INTEROP / "score_sde_small_checkpoint.pth")
        x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        compute_reference(net, x, schedule=VPSchedule(), checkpoint_sha256=meta["sha256"], t_levels=(0.001, 0.002),
                          progress=False).save(ref)
    spec = f"{name}:model={model},{opts.format(ref=ref)}"
    res = run_eval(dataset="cifar10", data_dir=CIFAR_JPEG, classifier=clf, defense=spec,
                   attack="none", n=2, eval_draws=1, sanity=False, progress=False)
    assert 0.0 <= res["clean_accuracy"]["mean"] <= 1.0 and res["identity"]["classifier"]
    assert res["defense"]["spec"] == spec and res["defense"]["nfe"] == nfe
    if name == "ssni":  # statistics of another checkpoint are refused, naming the file and both checkpoints
        bad = json.loads(ref.read_text())
        bad["checkpoint_sha256"] = "0" * 64
        (tmp_path / "other.eps-ref.json").write_text(json.dumps(bad))
        with pytest.raises(ValueError, match=r"other\.eps-ref\.json: EPS reference statistics were computed with "
                                             r"diffusion checkpoint sha256 0{64}, but the model in use has [0-9a-f]{64}"):
            build("defense", f"ssni:model={model},ref={tmp_path / 'other.eps-ref.json'}", SpecContext())


def test_ssni_score_sde_through_the_cli(tmp_path, capsys):
    """The README's CIFAR-10 commands on the small checkpoint: ``advpure eps reference --model score_sde:...`` writes
    the statistics beside the checkpoint (``checkpoint_8.eps-ref.json``, with its sha256), where ``advpure eval
    --defense ssni:model=score_sde:...`` finds them without ``ref=``; the classifier is a RobustBench-layout
    WRN-28-10 file given as ``wrn-28-10:PATH``."""
    import numpy as np
    from PIL import Image

    from advpure.checkpoint import sha256_file
    from advpure.cli import main
    from advpure.data.folders import CIFAR10_CLASSES

    model = _score_sde_model(tmp_path)
    torch.manual_seed(0)
    clf = tmp_path / "Standard.pt"
    torch.save({"state_dict": {"module." + k: v for k, v in build_classifier("wrn-28-10").state_dict().items()}}, clf)
    # the statistics of 2 images of a 10-image train split in the CIFAR-10 folder layout (decoding the 50,000 JPEG
    # train images would cost 15 s); the evaluation runs on CIFAR-10 test images
    rng = np.random.default_rng(0)
    for cls in CIFAR10_CLASSES:
        (tmp_path / "mini" / "train" / cls).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "mini/train" / cls / "0.png")
    assert main(["eps", "reference", "--dataset", "cifar10", "--data-dir", str(tmp_path / "mini"), "--model", model,
                 "--n", "2", "--batch-size", "2"]) == 0
    ref = tmp_path / "checkpoint_8.eps-ref.json"
    assert f"wrote {ref}" in capsys.readouterr().out
    stats = json.loads(ref.read_text())
    assert stats["checkpoint_sha256"] == sha256_file(INTEROP / "score_sde_small_checkpoint.pth")
    assert len(stats["t_levels"]) == 20
    stats["t_levels"] = stats["t_levels"][:2]  # SSNI's own EPS pass then costs 2 network calls instead of 20
    ref.write_text(json.dumps(stats))
    out = tmp_path / "ssni.json"
    assert main(["eval", "--dataset", "cifar10", "--data-dir", str(CIFAR_JPEG), "--classifier", f"wrn-28-10:{clf}",
                 "--defense", f"ssni:model={model},t=0.01,steps=1", "--attack", "none", "--n", "2", "--eval-draws", "1",
                 "--no-sanity", "--no-progress", "--out", str(out)]) == 0, capsys.readouterr().err
    res = json.loads(out.read_text())
    assert res["defense"]["describe"]["defense"]["name"] == "SSNI-N" and res["defense"]["nfe"] == 1 + 2
    assert 0.0 <= res["clean_accuracy"]["mean"] <= 1.0


def _tiny_imagenet(root: Path, wnids: list[str], sizes=((90, 70), (64, 100))) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for w in wnids:
        (root / "val" / w).mkdir(parents=True)
        for j, (W, H) in enumerate(sizes):
            Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(root / "val" / w / f"{w}_{j}.JPEG",
                                                                                  quality=90)
    (root / "classes.txt").write_text("".join(f"n{i:08d}\n" for i in range(1000)))  # the 1000-class index order


def test_diffpure_adm_with_torchvision_resnet50_on_imagenet_folder(tmp_path):
    """The small ADM is 64x64, so the data is ``imagenet64`` (resize 64 -> center crop 64) and the ResNet-50 is built
    with ``image_size=64`` (torchvision's network pools adaptively; at full scale: ``imagenet256`` data with
    ``image_size=256, resize_to=224``)."""
    from advpure.data import load_dataset
    from advpure.eval.runner import run_eval

    _needs_shared(INTEROP / "guided_diffusion_small.pt", INTEROP / "guided_diffusion_small_io.pt")
    cfg = torch.load(INTEROP / "guided_diffusion_small_io.pt", weights_only=True)["config"]
    (tmp_path / "adm.json").write_text(json.dumps(cfg))
    root = tmp_path / "imagenet"
    _tiny_imagenet(root, ["n00000003", "n00000007"])
    ds = load_dataset("imagenet64", "val", data_dir=root)
    assert ds.shape == (3, 64, 64) and ds.num_classes == 1000 and ds.labels.tolist() == [3, 3, 7, 7]
    torch.manual_seed(0)
    ckpt = tmp_path / "resnet50.pth"
    torch.save(build_classifier("resnet50").state_dict(), ckpt)
    clf = load_classifier(f"resnet50:{ckpt}", image_size=64)
    res = run_eval(dataset="imagenet64", data_dir=root, classifier=clf,
                   defense=f"diffpure:model=guided_diffusion:{INTEROP / 'guided_diffusion_small.pt'}"
                           f"@{tmp_path / 'adm.json'},t=0.01,steps=1",
                   attack="none", n=2, eval_draws=1, sanity=False, progress=False)
    assert 0.0 <= res["clean_accuracy"]["mean"] <= 1.0
