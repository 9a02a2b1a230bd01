"""Shared plumbing of the diffusion purifiers (DiffPure, GDMP, GNSP, distribution transfer, SSNI): [0, 1] <-> [-1, 1],
input checks, loading a denoiser from a spec parameter. It lives on the defenses floor (it is a purifier), above
:mod:`advpure.diffusion`, whose networks, schedules and samplers it uses."""

from __future__ import annotations

import os
from typing import Any, Callable

import torch
import torch.nn as nn

from ..contracts import check_images, check_int, check_positive
from ..diffusion.models import load_denoiser
from ..diffusion.schedule import DiscreteSchedule, VPSchedule, get_schedule
from ..paths import zoo_dir
from .base import Purifier

#: default diffusion model per dataset, used when a spec gives no ``model=``
DEFAULT_MODELS = {"digits": zoo_dir() / "digits-ddpm.safetensors"}
#: ``autocast=`` values: the dtype the eps-model call runs in under ``torch.autocast`` (``none``: float32)
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_time(t: float, name: str = "t") -> float:
    """A diffusion time t* in (0, 1] (the purifiers' noise level)."""
    v = check_positive(t, name)
    if v > 1.0:
        raise ValueError(f"{name}: diffusion time t* must be in (0, 1], got {t}")
    return v


def ddpm_steps(steps: int | None, t: float) -> int:
    """Reverse DDPM steps from ``t`` to 0: ``steps`` (checked), by default the full discrete chain ``round(1000 t)``
    (at least 1)."""
    return check_int(steps, "steps") if steps is not None else max(1, round(t * 1000))


def autocast_dtype(value: str | torch.dtype | None, name: str = "autocast") -> torch.dtype | None:
    """``"bf16"``/``"fp16"`` (or the torch dtype) -> that dtype; ``None``/``"none"`` -> None (autocast off)."""
    if value is None or value == "none":
        return None
    if isinstance(value, torch.dtype) and value in AUTOCAST_DTYPES.values():
        return value
    if isinstance(value, str) and value in AUTOCAST_DTYPES:
        return AUTOCAST_DTYPES[value]
    raise ValueError(f"{name}: expected one of {', '.join(AUTOCAST_DTYPES)} or none (float32), got {value!r}")


def autocast_eps(eps_model: Callable, dtype: torch.dtype | None) -> Callable:
    """``eps_model`` run under ``torch.autocast(dtype)`` on its input's device, the output cast back to the input's
    dtype, so a sampler's own arithmetic stays float32; ``eps_model`` itself when ``dtype`` is None."""
    if dtype is None:
        return eps_model

    def call(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, dtype=dtype):
            out = eps_model(x, t)
        return out.to(x.dtype)

    return call


class DiffusionPurifier(Purifier):
    """Base: holds ``eps_model`` (frozen, eval mode), the schedule and the image shape it was trained on.

    ``grad_checkpoint``: run the sampler loop through :func:`advpure.ops.checkpointing.checkpointed_loop` when
    gradients are taken (forward without a graph, each step recomputed in the backward pass), so adaptive
    full-gradient attacks need memory that does not grow with the steps' activations (costs one extra forward
    per step in the backward pass). The network's parameters get no gradient on that path.

    ``autocast``: ``"bf16"`` or ``"fp16"`` runs every eps-model call under ``torch.autocast`` in that dtype
    (:attr:`eps_call`; the sampler's arithmetic stays float32); ``None`` (default) runs it in float32. Only
    purifiers that call the network through :attr:`eps_call` take the option (DiffPure, and SSNI over it).
    Off by default: ``benchmarks/bf16_purify.py`` measures its speed and effect on accuracy.
    """

    def __init__(self, eps_model: nn.Module, *, schedule: VPSchedule | DiscreteSchedule | str | None = None,
                 image_shape: tuple[int, int, int] | None = None, grad_checkpoint: bool = False,
                 freeze: bool = True, autocast: str | torch.dtype | None = None) -> None:
        super().__init__()
        if not callable(eps_model):
            raise TypeError(f"eps_model: expected a module eps_model(x_t, t), got {type(eps_model).__name__}")
        self.eps_model = eps_model
        if freeze and isinstance(eps_model, nn.Module):
            eps_model.eval().requires_grad_(False)
        self.schedule = get_schedule(schedule) if isinstance(schedule, str) else (schedule or VPSchedule())
        shape = image_shape or getattr(eps_model, "image_shape", None)
        self.image_shape = tuple(shape) if shape is not None else None
        self.grad_checkpoint = bool(grad_checkpoint)
        self.autocast = autocast_dtype(autocast)

    @property
    def eps_call(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The eps-model as the samplers should call it (under ``torch.autocast`` when ``autocast`` is set)."""
        return autocast_eps(self.eps_model, self.autocast)

    def to_model_space(self, x: torch.Tensor) -> torch.Tensor:
        """Check the images and map [0, 1] -> [-1, 1]."""
        if self.image_shape is None:
            check_images(x)
        else:
            check_images(x, channels=self.image_shape[0], size=self.image_shape[1:])
        return 2.0 * x - 1.0

    @staticmethod
    def to_image_space(x: torch.Tensor) -> torch.Tensor:
        """[-1, 1] -> [0, 1], clamped (as DiffPure does before classifying)."""
        return ((x + 1.0) * 0.5).clamp(0.0, 1.0)

    def describe(self) -> dict:
        d = {"name": type(self).__name__, "nfe": self.nfe, "grad_checkpoint": self.grad_checkpoint,
             "schedule": self.schedule.describe()}
        if self.autocast is not None:
            d["autocast"] = str(self.autocast).removeprefix("torch.")
        return d


def resolve_denoiser(model: str | os.PathLike | None, ctx: Any) -> tuple[nn.Module, dict]:
    """The eps-model for a spec's ``model=`` parameter (path to our .safetensors or a diffusers folder);
    without one, the zoo model for ``ctx.dataset`` (digits). ``ctx.image_shape``, when set, must match."""
    shape = getattr(ctx, "image_shape", None)
    if model is None:
        ds = getattr(ctx, "dataset", None)
        if ds not in DEFAULT_MODELS:
            raise ValueError(f"no default diffusion model for dataset {ds!r}; pass model=PATH "
                             "(an advpure .safetensors with sidecar, or a diffusers folder like google/ddpm-cifar10-32)")
        model = DEFAULT_MODELS[ds]
    net, meta = load_denoiser(model, image_shape=shape)
    dev = getattr(ctx, "device", None)
    if dev is not None:
        net = net.to(dev)
    return net, meta
