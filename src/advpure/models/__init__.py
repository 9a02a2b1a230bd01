"""Classifier architectures, a name registry and checkpoint loading.

``build_classifier("resnet56")`` makes an architecture by name; ``load_classifier(spec)`` loads one:

- ``path/to/model.safetensors`` (with its JSON sidecar: architecture, arguments, sha256);
- ``ARCH:path/to/weights.{safetensors,pt,pth,th}``, e.g. ``resnet56:../shared/models/resnet56-4bfd9763.th``;
  files whose names are in :data:`KNOWN_SHA256` are checked against the recorded hash.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch.nn as nn

from ..checkpoint import load_into, load_state_dict, read_sidecar, save_weights, verify_sha256
from .classifiers import (
    CIFAR_MEAN_IMAGENET, CIFAR_STD_IMAGENET, FastCifarNet, ImageClassifier, PreActResNet18, ResNetCifar, SmallCNN, WideResNet,
)

# name -> (class, default keyword arguments)
ARCHS: dict[str, tuple[type[ImageClassifier], dict[str, Any]]] = {
    "resnet8": (ResNetCifar, {"depth": 8}),
    "resnet20": (ResNetCifar, {"depth": 20}),
    "resnet56": (ResNetCifar, {"depth": 56}),
    "wrn-16-4": (WideResNet, {"depth": 16, "widen_factor": 4}),
    "wrn-28-10": (WideResNet, {"depth": 28, "widen_factor": 10}),
    "wrn-70-16": (WideResNet, {"depth": 70, "widen_factor": 16}),
    "preact-resnet18": (PreActResNet18, {}),
    "small-cnn": (SmallCNN, {}),
    "fastnet": (FastCifarNet, {}),
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


def save_classifier(model: ImageClassifier, path: str | os.PathLike, **sidecar: Any) -> dict:
    """Save a classifier built by :func:`build_classifier` as safetensors + sidecar.

    Recommended sidecar fields: ``dataset``, ``accuracy``, ``command``.
    """
    spec = getattr(model, "arch_spec", None)
    if spec is None:
        raise ValueError("save_classifier needs a model made by build_classifier (it records the architecture)")
    meta = {"kind": "classifier", **spec,
            "normalization": {"mean": model.mean.flatten().tolist(), "std": model.std.flatten().tolist()},
            **sidecar}
    return save_weights(model.state_dict(), path, meta)


def load_classifier(spec: str | os.PathLike, *, sha256: str | None = None, **arch_kwargs: Any) -> ImageClassifier:
    """Load a classifier from a spec (see the module docstring); returns it in eval mode."""
    spec = str(spec)
    arch: str | None = None
    path_str = spec
    if ":" in spec and spec.split(":", 1)[0] in ARCHS:
        arch, path_str = spec.split(":", 1)
    elif spec in ARCHS:
        return build_classifier(spec, **arch_kwargs).eval()
    path = Path(path_str).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"classifier checkpoint {path} does not exist (spec {spec!r})")
    if arch is None:
        meta = read_sidecar(path)
        if meta.get("kind") != "classifier":
            raise ValueError(f"{path}: sidecar kind is {meta.get('kind')!r}, expected 'classifier'")
        verify_sha256(path, meta.get("sha256"))
        model = build_classifier(meta["arch"], **{**meta.get("kwargs", {}), **arch_kwargs})
        model.sidecar = meta
        sd = load_state_dict(path)
    else:
        expected = sha256 or KNOWN_SHA256.get(path.name)
        model = build_classifier(arch, **arch_kwargs)
        sd = load_state_dict(path, sha256=expected)
    load_into(model, sd, what=f"checkpoint {path}")
    return model.eval()


__all__ = ["ARCHS", "KNOWN_SHA256", "FastCifarNet", "ImageClassifier", "ResNetCifar", "WideResNet", "PreActResNet18", "SmallCNN",
           "build_classifier", "load_classifier", "save_classifier", "CIFAR_MEAN_IMAGENET", "CIFAR_STD_IMAGENET"]
