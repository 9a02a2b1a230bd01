"""Checkpoint I/O shared by every model family.

Weights are written as safetensors with a JSON sidecar (``<name>.json`` beside ``<name>.safetensors``)
that records what the weights are (architecture and arguments, dataset, normalisation, measured
accuracy, the command that produced them) and their sha256. Pickle-based files (``.pt/.pth/.th``)
are read only with ``torch.load(weights_only=True)``. A recorded hash that does not match is an error.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn

PICKLE_SUFFIXES = (".pt", ".pth", ".th", ".bin", ".ckpt")


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sidecar_path(path: str | os.PathLike) -> Path:
    return Path(path).with_suffix(".json")


def read_sidecar(path: str | os.PathLike) -> dict:
    sc = sidecar_path(path)
    if not sc.is_file():
        raise FileNotFoundError(f"{path}: no JSON sidecar at {sc} (it records the architecture and sha256)")
    try:
        meta = json.loads(sc.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{sc}: the sidecar is not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{sc}: the sidecar is not a JSON object")
    return meta


def _weights_only_reason(msg: str) -> str:
    """What torch's weights-only unpickler refused, without its advice to retry with ``weights_only=False``
    (running a pickle's code is exactly what advpure never does)."""
    _, sep, rest = msg.partition("WeightsUnpickler error:")
    text = rest if sep else msg
    text = text.split("Check the documentation of torch.load")[0]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and "weights_only" not in ln]
    return " ".join(lines)[:300] or "objects other than tensors"


def torch_load_weights(path: str | os.PathLike, *, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with errors that name the file: a pickle holding code or objects
    other than tensors is refused (never retried unsafely); a truncated or corrupt file says so."""
    import pickle

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        if "Weights only load failed" in msg or "WeightsUnpickler" in msg:
            raise ValueError(f"{path}: refused: the pickle holds more than tensors ({_weights_only_reason(msg)}); "
                             "advpure reads pickle checkpoints only with torch.load(weights_only=True). Convert the "
                             "file to safetensors where you trust its origin") from None
        first = msg.splitlines()[0] if msg else "unpickling failed"
        raise ValueError(f"{path}: not a readable torch checkpoint (truncated or corrupt: {first})") from None
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except Exception as e:  # torch raises RuntimeError (zip), EOFError, KeyError, ... on damaged files
        first = (str(e).splitlines() or [""])[0][:200]
        raise ValueError(f"{path}: not a readable torch checkpoint (truncated or corrupt: "
                         f"{type(e).__name__}{': ' + first if first else ''})") from None


def load_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """``safetensors.torch.load_file`` with an error naming the file when it is truncated or not safetensors."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except SafetensorError as e:
        raise ValueError(f"{path}: not a readable safetensors file (truncated or corrupt: {e})") from None


def verify_sha256(path: str | os.PathLike, expected: str | None) -> str:
    actual = sha256_file(path)
    if expected is not None and actual != expected:
        raise ValueError(f"{path}: sha256 {actual} does not match the recorded {expected}; the file changed or is another checkpoint")
    return actual


def save_weights(state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike, sidecar: dict) -> dict:
    """Write ``state_dict`` as safetensors and the sidecar JSON (with sha256 and creation metadata)."""
    from safetensors.torch import save_file

    from . import __version__

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: weights are saved as .safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp))
    os.replace(tmp, path)
    meta = dict(sidecar)
    meta.setdefault("command", " ".join(sys.argv))
    meta["sha256"] = sha256_file(path)
    meta["advpure_version"] = __version__
    meta["torch_version"] = torch.__version__
    meta["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    sidecar_path(path).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return meta


def existing_file(path: str | os.PathLike, what: str = "checkpoint") -> Path:
    """``path`` (``~`` expanded) when it is a file, else FileNotFoundError ``"<what> <path> does not exist"``."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"{what} {p} does not exist")
    return p


def read_torch_file(path: str | os.PathLike, *, sha256: str | None = None, what: str = "checkpoint",
                    map_location: Any = "cpu") -> Any:
    """A torch file that must exist, match ``sha256`` when given, and load with ``weights_only=True``
    (:func:`torch_load_weights`); published checkpoints and training states."""
    p = existing_file(path, what)
    verify_sha256(p, sha256)
    return torch_load_weights(p, map_location=map_location)


def load_state_dict(path: str | os.PathLike, *, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Read a state dict from safetensors or (weights-only) torch pickle; strip a ``module.`` prefix.

    Dicts that wrap the weights under ``state_dict``/``model``/``net`` are unwrapped. ``sha256``, when
    given, must match the file.
    """
    path = existing_file(path)
    verify_sha256(path, sha256)
    if path.suffix == ".safetensors":
        sd: Any = load_safetensors(path)
    elif path.suffix in PICKLE_SUFFIXES:
        sd = torch_load_weights(path)
    else:
        raise ValueError(f"{path}: unknown checkpoint type {path.suffix!r}; expected .safetensors or one of {PICKLE_SUFFIXES}")
    for key in ("state_dict", "model_state_dict", "model", "net", "ema"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
            break
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{path}: does not hold a state dict of tensors")
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def resolve_artifact(path: str | os.PathLike) -> Path:
    """An artifact's weights file: ``path`` (``~`` expanded), or ``<path>.safetensors`` when ``path`` is its stem,
    its sidecar or another name beside it."""
    p = Path(path).expanduser()
    if p.suffix != ".safetensors" and p.with_suffix(".safetensors").is_file():
        p = p.with_suffix(".safetensors")
    return p


def artifact_meta(path: str | os.PathLike, *, kind: str | tuple[str | None, ...] | None = None,
                  require: Sequence[str] = ()) -> dict:
    """The sidecar of the weights file ``path``, checked: its ``kind`` is ``kind`` (or one of a tuple of kinds,
    ``None`` in the tuple accepting a sidecar without one) and it records every key in ``require``."""
    meta = read_sidecar(path)
    if kind is not None:
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if meta.get("kind") not in kinds:
            named = " or ".join(repr(k) for k in kinds if k is not None)
            raise ValueError(f"{path}: sidecar kind is {meta.get('kind')!r}, expected {named}")
    missing = [k for k in require if k not in meta]
    if missing:
        what = kind[0] if isinstance(kind, tuple) else kind
        raise ValueError(f"{path}: sidecar has no {missing[0]!r}"
                         + (f"; is this a {what} checkpoint?" if what else ""))
    return meta


def load_artifact(path: str | os.PathLike, *, kind: str | tuple[str | None, ...] | None,
                  require: Sequence[str] = (), what: str = "checkpoint",
                  expected: str = "a .safetensors file with a JSON sidecar") -> tuple[dict[str, torch.Tensor], dict]:
    """Load one of advpure's weight artifacts (``<name>.safetensors`` + ``<name>.json``) in one way for every model
    family: resolve the path (:func:`resolve_artifact`), read the sidecar, check its ``kind`` and ``require``d keys
    (:func:`artifact_meta`), verify the file's sha256 against the sidecar's, and load the tensors (safetensors, or a torch file read with ``weights_only=True``). Every failure names the file and
    the problem: a missing file (``"<what> <path> not found (expected <expected>)"``), a missing or malformed
    sidecar, another kind, a changed file, a corrupt one. Returns ``(state_dict, sidecar)``."""
    p = resolve_artifact(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} {path} not found (expected {expected})")
    meta = artifact_meta(p, kind=kind, require=require)
    verify_sha256(p, meta.get("sha256"))
    return load_state_dict(p), meta


def format_keys(items: Sequence[str], n: int = 8) -> str:
    """The first ``n`` of ``items`` for an error message (``"... (+k more)"`` after them), ``"none"`` when empty."""
    return ", ".join(items[:n]) + (f" ... (+{len(items) - n} more)" if len(items) > n else "") if items else "none"


def load_into(model: nn.Module, state_dict: Mapping[str, torch.Tensor], *, what: str = "checkpoint") -> nn.Module:
    """Strict load that names missing and unexpected keys and mismatched shapes on failure."""
    own = model.state_dict()
    # Checkpoints from before BatchNorm counted its updates lack num_batches_tracked: keep the model's.
    state_dict = {**{k: v for k, v in own.items() if k.endswith("num_batches_tracked")}, **state_dict}
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state_dict and tuple(own[k].shape) != tuple(state_dict[k].shape)]
    if missing or unexpected or shapes:
        raise ValueError(
            f"{what} does not match {type(model).__name__}: missing keys [{format_keys(missing)}]; "
            f"unexpected keys [{format_keys(unexpected)}]; shape mismatches [{format_keys(shapes)}]"
        )
    model.load_state_dict(state_dict, strict=True)
    return model
