"""Input validation shared by every entry point.

Every check raises ``ValueError`` (or ``TypeError`` for a wrong type) whose message names what was
wrong and what was expected. Nothing is silently clipped or converted.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

RANGE_TOL = 1e-5


def check_images(
    x: torch.Tensor,
    *,
    channels: int | None = None,
    size: int | Sequence[int] | None = None,
    name: str = "images",
    check_range: bool = True,
) -> torch.Tensor:
    """Check that ``x`` is a non-empty float NCHW batch in [0, 1] without NaN/Inf.

    ``channels`` and ``size`` (an int for square images or (H, W)) are checked when given.
    Returns ``x`` unchanged so it can be used inline.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(
            f"{name}: expected a float tensor with values in [0, 1], got dtype {x.dtype} "
            "(convert uint8 images with x.float() / 255)"
        )
    if x.dim() != 4:
        raise ValueError(f"{name}: expected a 4-D NCHW batch, got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name}: empty batch (shape {tuple(x.shape)}); expected at least one image")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(
            f"{name}: expected {channels} channel(s) (NCHW), got {x.shape[1]} in shape {tuple(x.shape)}"
        )
    if size is not None:
        hw = (size, size) if isinstance(size, int) else tuple(size)
        if tuple(x.shape[2:]) != tuple(hw):
            raise ValueError(
                f"{name}: expected image size {hw[0]}x{hw[1]}, got {x.shape[2]}x{x.shape[3]}"
            )
    with torch.no_grad():
        finite = torch.isfinite(x)
        if not bool(finite.all()):
            n_bad = int((~finite).sum())
            raise ValueError(f"{name}: {n_bad} NaN/Inf value(s); expected finite values in [0, 1]")
        if check_range:
            lo, hi = float(x.min()), float(x.max())
            if lo < -RANGE_TOL or hi > 1 + RANGE_TOL:
                raise ValueError(
                    f"{name}: values in [{lo:.4g}, {hi:.4g}], expected [0, 1] "
                    "(images are float in [0, 1]; normalisation belongs inside the model)"
                )
    return x


def check_labels(y: torch.Tensor, n: int, *, num_classes: int | None = None, name: str = "labels") -> torch.Tensor:
    """Check integer labels of length ``n`` (and within ``num_classes`` when given)."""
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(y).__name__}")
    if y.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
        raise TypeError(f"{name}: expected an integer tensor, got dtype {y.dtype}")
    if y.dim() != 1 or y.shape[0] != n:
        raise ValueError(f"{name}: expected shape ({n},) to match the batch, got {tuple(y.shape)}")
    if num_classes is not None and n > 0:
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(f"{name}: values in [{lo}, {hi}], expected class indices in [0, {num_classes - 1}]")
    return y


def check_logits(out: object, n: int, *, name: str = "model output") -> torch.Tensor:
    """Check that a model returned (n, classes) float logits."""
    if not isinstance(out, torch.Tensor):
        raise TypeError(
            f"{name}: expected a tensor of logits with shape ({n}, classes), got {type(out).__name__}"
        )
    if out.dim() != 2 or out.shape[0] != n or out.shape[1] < 2:
        raise ValueError(f"{name}: expected logits of shape ({n}, classes>=2), got {tuple(out.shape)}")
    if not out.is_floating_point():
        raise TypeError(f"{name}: expected float logits, got dtype {out.dtype}")
    return out


def check_positive(value: float, name: str, *, allow_zero: bool = False) -> float:
    """A finite positive (or non-negative) number, else a ValueError naming it."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a number, got {value!r}") from None
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        expected = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name}: expected a finite number {expected}, got {value!r}")
    return v


def parse_fraction(s: str) -> float:
    """A number written as ``"0.03"`` or as a fraction ``"8/255"`` (command-line budgets)."""
    a, sep, b = str(s).partition("/")
    return float(a) / float(b) if sep else float(s)


def linf_budget(s: str) -> float:
    """argparse type of an l_inf budget: ``0.03`` or ``8/255``, in [0, 1] (images are float in [0, 1])."""
    import argparse

    try:
        v = parse_fraction(s)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"expected a number like 0.03 or 8/255, got {s!r}") from None
    if not math.isfinite(v) or not 0 <= v <= 1:
        hint = f" (did you mean {s}/255?)" if math.isfinite(v) and v > 1 else ""
        raise argparse.ArgumentTypeError(f"an l_inf budget for images in [0, 1] must lie in [0, 1], got {s}{hint}")
    return v


def check_int(value: int, name: str, *, minimum: int = 1) -> int:
    """An integer >= ``minimum``, else a ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value}")
    return value


def check_device(name: "str | torch.device", option: str = "--device") -> torch.device:
    """A device this torch build can use (``cpu``, ``cuda``, ``cuda:N``, ``mps``), else a ValueError naming
    ``option`` and the value: an unknown name (``gpu0``) or CUDA asked of a CPU-only build."""
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"{option} {name!r}: not a device; expected cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch build has no CUDA support" if torch.version.cuda is None else "no CUDA device is visible"
            raise ValueError(f"{option} {name}: {why} (torch {torch.__version__}); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"{option} {name}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    elif dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ValueError(f"{option} {name}: MPS is not available here; use --device cpu")
    elif dev.type != "cpu":
        raise ValueError(f"{option} {name}: device type {dev.type!r} is not supported; expected cpu, cuda or mps")
    return dev
