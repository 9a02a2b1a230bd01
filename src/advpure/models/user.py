"""A user's own classifier: ``module:package.module:callable`` or ``module:/path/to/file.py:callable``.

The callable is imported and called with no arguments; it returns a ``torch.nn.Module`` that maps float [0, 1]
NCHW images to logits (N, classes), with its own normalisation and weights (it loads them itself). A module that is
already an :class:`~advpure.models.ImageClassifier` is used as it is; any other module is wrapped in
:class:`UserClassifier`, which checks inputs (range, NaN, shape) as advpure's classifiers do and checks that the
output is a batch of logits. The Python API (``run_eval(classifier=module)``) takes any ``nn.Module`` directly.

Importing runs the module's code: only name modules and files you trust.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..contracts import check_images

PREFIX = "module:"


def is_module_spec(spec: Any) -> bool:
    return isinstance(spec, str) and spec.startswith(PREFIX)


def parse_module_spec(spec: str) -> tuple[str, str]:
    """(module name or .py path, callable name) of ``module:TARGET:CALLABLE``."""
    body = spec[len(PREFIX):]
    target, sep, name = body.rpartition(":")
    if not sep or not target or not name or not name.replace(".", "_").isidentifier():
        raise ValueError(f"classifier spec {spec!r}: expected module:package.module:callable or "
                         "module:/path/to/file.py:callable (a callable that takes no arguments and returns the "
                         "nn.Module)")
    return target, name


def _is_file_target(target: str) -> bool:
    return target.endswith(".py") or "/" in target or "\\" in target


def _import_file(path: Path, spec: str):
    if not path.is_file():
        raise FileNotFoundError(f"classifier spec {spec!r}: Python file {path} does not exist")
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    mod_name = f"advpure_user_{path.stem}_{digest}"
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    ispec = importlib.util.spec_from_file_location(mod_name, path)
    if ispec is None or ispec.loader is None:
        raise ImportError(f"classifier spec {spec!r}: cannot import {path} as a Python module")
    module = importlib.util.module_from_spec(ispec)
    sys.modules[mod_name] = module
    parent = str(path.resolve().parent)
    added = parent not in sys.path
    if added:  # as `python file.py` would: the file's own folder is importable while it runs
        sys.path.insert(0, parent)
    try:
        ispec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(mod_name, None)
        raise
    finally:
        if added and parent in sys.path:
            sys.path.remove(parent)
    return module


def resolve_callable(spec: str):
    """Import the callable a ``module:`` spec names (without calling it); errors name the module and callable."""
    target, name = parse_module_spec(spec)
    if _is_file_target(target):
        module = _import_file(Path(target).expanduser(), spec)
        where = str(Path(target).expanduser())
    else:
        try:
            module = importlib.import_module(target)
        except ModuleNotFoundError as e:
            raise ModuleNotFoundError(f"classifier spec {spec!r}: cannot import module {target!r} ({e}); is it "
                                      "installed or on PYTHONPATH? A file is given by its path: "
                                      "module:/path/to/file.py:callable") from None
        where = f"module {target!r}"
    obj: Any = module
    for part in name.split("."):
        if not hasattr(obj, part):
            available = sorted(n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n)))
            raise AttributeError(f"classifier spec {spec!r}: {where} has no callable {name!r} (callables there: "
                                 f"{', '.join(available[:20]) or 'none'})")
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"classifier spec {spec!r}: {name!r} in {where} is a {type(obj).__name__}, not a callable")
    return obj


class UserClassifier(nn.Module):
    """Wraps a user's ``nn.Module`` in advpure's classifier contract: float [0, 1] NCHW in (checked, as
    :class:`~advpure.models.ImageClassifier` does; ``validate_inputs = False`` skips it), logits (N, classes) out.

    ``in_channels``/``image_size``/``num_classes`` are taken from the wrapped module when it has those attributes
    (else None: not checked)."""

    def __init__(self, net: nn.Module, name: str = "user module") -> None:
        super().__init__()
        self.net = net
        self.name = name
        self.validate_inputs = True
        self.in_channels = getattr(net, "in_channels", None)
        self.image_size = getattr(net, "image_size", None)
        self.num_classes = getattr(net, "num_classes", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.validate_inputs:
            check_images(x, channels=self.in_channels, size=self.image_size)
        out = self.net(x)
        if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != x.shape[0]:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"{self.name}: expected logits of shape ({x.shape[0]}, classes), got {shape}")
        return out

    def features(self, x: torch.Tensor) -> torch.Tensor:
        fn = getattr(self.net, "features", None)
        if not callable(fn):
            raise AttributeError(f"{self.name} has no features(x) method (needed by semantic-aware kernels)")
        return fn(x)

    def describe(self) -> str:
        return self.name


def load_module_classifier(spec: str) -> nn.Module:
    """Import, call (no arguments) and check the module a ``module:`` spec names; returned in eval mode."""
    from .classifiers import ImageClassifier

    fn = resolve_callable(spec)
    _, name = parse_module_spec(spec)
    try:
        net = fn()
    except TypeError as e:
        raise TypeError(f"classifier spec {spec!r}: calling {name}() with no arguments failed ({e}); the callable "
                        "must build the model (and load its weights) by itself") from e
    if not isinstance(net, nn.Module):
        raise TypeError(f"classifier spec {spec!r}: {name}() returned a {type(net).__name__}, expected a "
                        "torch.nn.Module mapping [0, 1] images to logits")
    if isinstance(net, (ImageClassifier, UserClassifier)):
        return net.eval()
    return UserClassifier(net, name=spec).eval()


__all__ = ["UserClassifier", "is_module_spec", "load_module_classifier", "parse_module_spec", "resolve_callable"]
