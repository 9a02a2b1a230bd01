"""Classifier architectures, a name registry and checkpoint loading.

``build_classifier("resnet56")`` makes an architecture by name; ``load_classifier(spec)`` loads one:

- ``path/to/model.safetensors`` (with its JSON sidecar: architecture, arguments, sha256);
- ``ARCH:path/to/weights.{safetensors,pt,pth,th}``, e.g. ``resnet56:../shared/models/resnet56-4bfd9763.th``;
  files whose names are in :data:`KNOWN_SHA256` are checked against the recorded hash;
- a bare architecture name (``small-cnn``) only with ``allow_random_weights=True``: it is a random network;
- ``module:package.module:callable`` or ``module:/path/to/file.py:callable``: a user's own model, built by calling
  the callable with no arguments (:mod:`advpure.models.user`).

The papers' networks in their published layouts: ``wrn-28-10`` is RobustBench's "Standard" WRN-28-10
(``robustbench.model_zoo.architectures.wide_resnet.WideResNet``, inputs not normalised); ``wrn-70-16`` and
``dm-wrn-28-10`` are RobustBench's ``DMWideResNet`` (Swish, CIFAR-10 mean/std inside: the WRN-70-16 DiffPure
evaluates, e.g. ``Gowal2021Improving_70_16_ddpm_100m``, ``Rebuffi2021Fixing_70_16_cutmix_extra``); ``resnet50`` and
``wide-resnet50-2`` are torchvision's ImageNet models (:mod:`advpure.models.imagenet`, ImageNet mean/std inside,
224x224 inputs). RobustBench / DataParallel wrappers (``{"state_dict": ...}``, ``module.`` or ``model.`` prefixes)
are unwrapped.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch.nn as nn

from ..checkpoint import artifact_meta, load_artifact, load_into, load_state_dict, save_weights
from .classifiers import (
    CIFAR_MEAN_IMAGENET,
    CIFAR_STD_IMAGENET,
    DMWideResNet,
    FastCifarNet,
    ImageClassifier,
    PreActResNet18,
    ResNetCifar,
    SmallCNN,
    WideResNet,
)
from .imagenet import IMAGENET_MEAN, IMAGENET_STD, TORCHVISION_RESNETS, ImageNetResNet
from .user import UserClassifier, is_module_spec, load_module_classifier, resolve_callable

# name -> (class, default keyword arguments)
ARCHS: dict[str, tuple[type[ImageClassifier], dict[str, Any]]] = {
    "resnet8": (ResNetCifar, {"depth": 8}),
    "resnet20": (ResNetCifar, {"depth": 20}),
    "resnet56": (ResNetCifar, {"depth": 56}),
    "wrn-16-4": (WideResNet, {"depth": 16, "widen_factor": 4}),
    "wrn-28-10": (WideResNet, {"depth": 28, "widen_factor": 10}),
    "wrn-70-16": (DMWideResNet, {"depth": 70, "width": 16, "activation": "swish"}),
    "dm-wrn-28-10": (DMWideResNet, {"depth": 28, "width": 10, "activation": "swish"}),
    "preact-resnet18": (PreActResNet18, {}),
    "small-cnn": (SmallCNN, {}),
    "fastnet": (FastCifarNet, {}),
    "resnet50": (ImageNetResNet, {"layers": TORCHVISION_RESNETS["resnet50"][0], "block": "bottleneck"}),
    "wide-resnet50-2": (ImageNetResNet, {"layers": TORCHVISION_RESNETS["wide_resnet50_2"][0], "block": "bottleneck",
                                         "width_per_group": 128}),
}

# Recorded hashes of third-party weights this project knows (see shared/README.md).
KNOWN_SHA256 = {
    "resnet20-12fca82f.th": "12fca82f0bebc4135bf1f32f6e3710e61d5108578464b84fd6d7f5c1b04036c8",
    "resnet56-4bfd9763.th": "4bfd97631478d6b638d2764fd2baff3edb1d7d82252d54439343b6596b9b5367",
}


def build_classifier(arch: str, **kwargs: Any) -> ImageClassifier:
    """Instantiate an architecture by name; ``kwargs`` override its defaults."""
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; expected one of {', '.join(ARCHS)}")
    cls, defaults = ARCHS[arch]
    args = {**defaults, **kwargs}
    model = cls(**args)
    model.arch_spec = {"arch": arch, "kwargs": {k: list(v) if isinstance(v, tuple) else v for k, v in args.items()}}
    return model


def save_classifier(model: ImageClassifier, path: str | os.PathLike, *, weights_dtype: str = "float32",
                    **sidecar: Any) -> dict:
    """Save a classifier built by :func:`build_classifier` as safetensors + sidecar.

    Recommended sidecar fields: ``dataset``, ``accuracy``, ``command``. ``weights_dtype="float16"`` stores every
    floating-point tensor in half precision (half the file; loading casts back to the model's float32), recorded in
    the sidecar: measure the accuracy of the rounded weights before saving.
    """
    if weights_dtype not in ("float32", "float16"):
        raise ValueError(f"weights_dtype: expected float32 or float16, got {weights_dtype!r}")
    spec = getattr(model, "arch_spec", None)
    if spec is None:
        raise ValueError("save_classifier needs a model made by build_classifier (it records the architecture)")
    meta = {"kind": "classifier", **spec,
            "normalization": {"mean": model.mean.flatten().tolist(), "std": model.std.flatten().tolist()},
            **sidecar}
    sd = model.state_dict()
    if weights_dtype == "float16":
        sd = {k: v.half() if v.is_floating_point() else v for k, v in sd.items()}
        meta["weights_dtype"] = "float16"
    return save_weights(sd, path, meta)


def _split_spec(spec: str, allow_random_weights: bool, what: str = "classifier") -> tuple[str | None, Path | None]:
    """(architecture or None, weights path or None) of a classifier spec; a bare architecture name is refused
    unless ``allow_random_weights``."""
    if ":" in spec and spec.split(":", 1)[0] in ARCHS:
        arch, path_str = spec.split(":", 1)
        return arch, Path(path_str).expanduser()
    if spec in ARCHS:
        if not allow_random_weights:
            raise ValueError(f"{what} {spec!r} is an architecture name without weights: it would be a randomly "
                             f"initialised network. Give weights ({spec}:path/weights.pt, or a .safetensors with its "
                             "sidecar), or allow random weights explicitly (allow_random_weights=True; "
                             "advpure eval --allow-random-weights)")
        return spec, None
    return None, Path(spec).expanduser()


def classifier_info(spec: str | os.PathLike, *, allow_random_weights: bool = False,
                    what: str = "classifier") -> dict[str, Any]:
    """What a classifier spec will build, without loading its weights: ``arch``, ``num_classes``, ``in_channels``,
    ``image_size`` (from the JSON sidecar, or the architecture's defaults for ``ARCH:path`` and bare names).
    ``what`` names the spec in errors (e.g. ``--classifier``)."""
    import inspect

    spec = str(spec)
    if is_module_spec(spec):  # a user's module: import it to check it exists; its sizes are known once built
        resolve_callable(spec)
        return {"arch": "module", "num_classes": None, "in_channels": None, "image_size": None}
    arch, path = _split_spec(spec, allow_random_weights, what)
    kwargs: dict[str, Any] = {}
    if path is not None and not path.is_file():
        raise FileNotFoundError(f"{what} {spec}: checkpoint {path} does not exist")
    if arch is None:
        assert path is not None
        meta = artifact_meta(path, kind="classifier")
        arch, kwargs = meta.get("arch"), dict(meta.get("kwargs") or {})
        if arch not in ARCHS:
            raise ValueError(f"{path}: sidecar names architecture {arch!r}; expected one of {', '.join(ARCHS)}")
    cls, defaults = ARCHS[arch]
    sig = {k: v.default for k, v in inspect.signature(cls.__init__).parameters.items()
           if v.default is not inspect.Parameter.empty}
    args = {**sig, **defaults, **kwargs}
    return {"arch": arch, **{k: args.get(k) for k in ("num_classes", "in_channels", "image_size")}}


def load_classifier(spec: str | os.PathLike, *, sha256: str | None = None, allow_random_weights: bool = False,
                    **arch_kwargs: Any) -> ImageClassifier:
    """Load a classifier from a spec (see the module docstring); returns it in eval mode. A bare architecture name
    (``"small-cnn"``) is refused unless ``allow_random_weights=True`` (then it is built with random weights)."""
    spec = str(spec)
    if is_module_spec(spec):
        if arch_kwargs or sha256:
            raise ValueError(f"classifier spec {spec!r}: a user module builds and loads itself; architecture "
                             "arguments and sha256 do not apply")
        return load_module_classifier(spec)
    arch, path = _split_spec(spec, allow_random_weights)
    if path is None:
        assert arch is not None
        return build_classifier(arch, **arch_kwargs).eval()
    if not path.is_file():
        raise FileNotFoundError(f"classifier checkpoint {path} does not exist (spec {spec!r})")
    if arch is None:
        sd, meta = load_artifact(path, kind="classifier", what="classifier checkpoint")
        model = build_classifier(meta["arch"], **{**meta.get("kwargs", {}), **arch_kwargs})
        model.sidecar = meta
    else:
        expected = sha256 or KNOWN_SHA256.get(path.name)
        model = build_classifier(arch, **arch_kwargs)
        sd = load_state_dict(path, sha256=expected)
    sd = _fit_layout(model, sd)
    try:
        load_into(model, sd, what=f"checkpoint {path}")
    except ValueError as e:
        hint = _layout_hint(model, sd)
        raise ValueError(f"{e}{hint}") from None
    return model.eval()


_WRAPPER_PREFIXES = ("module.", "model.", "0.")


def _fit_layout(model: nn.Module, sd: dict) -> dict:
    """A checkpoint's state dict in the model's layout: the model's own conversion (``adapt_state_dict``, e.g.
    RobustBench's stored mean/std), and wrapper prefixes every key carries (``module.`` of DataParallel,
    ``model.`` of RobustBench's normalising wrappers, ``0.`` of an ``nn.Sequential``) stripped while the model's own
    keys do not start with them."""
    own = model.state_dict().keys()
    changed = True
    while changed and sd:
        changed = False
        for p in _WRAPPER_PREFIXES:
            if all(k.startswith(p) for k in sd) and not any(k.startswith(p) for k in own):
                sd = {k[len(p):]: v for k, v in sd.items()}
                changed = True
    adapt = getattr(model, "adapt_state_dict", None)
    return adapt(sd) if callable(adapt) else sd


def _layout_hint(model: nn.Module, sd: dict) -> str:
    """A pointer to the architecture a mismatching checkpoint's keys belong to, when they are a known layout."""
    keys = set(sd)
    if "init_conv.weight" in keys and "logits.weight" in keys and not isinstance(model, DMWideResNet):
        return (". The checkpoint is in RobustBench's DMWideResNet layout (init_conv, layer.i.block.j, logits): use "
                "wrn-70-16 (depth 70, width 16) or dm-wrn-28-10")
    if "block1.layer.0.conv1.weight" in keys and not isinstance(model, WideResNet):
        return (". The checkpoint is in RobustBench's WideResNet layout (conv1, block1..3, bn1, fc): use wrn-28-10 "
                "(or wrn-16-4)")
    if "layer1.0.conv1.weight" in keys and "fc.weight" in keys and not isinstance(model, ImageNetResNet):
        return ". The checkpoint is in torchvision's ResNet layout (layer1..4, fc): use resnet50 or wide-resnet50-2"
    return ""


__all__ = ["ARCHS", "KNOWN_SHA256", "DMWideResNet", "FastCifarNet", "ImageClassifier", "ImageNetResNet", "ResNetCifar",
           "WideResNet", "PreActResNet18", "SmallCNN", "UserClassifier", "build_classifier", "classifier_info",
           "load_classifier", "save_classifier", "CIFAR_MEAN_IMAGENET", "CIFAR_STD_IMAGENET", "IMAGENET_MEAN",
           "IMAGENET_STD"]
