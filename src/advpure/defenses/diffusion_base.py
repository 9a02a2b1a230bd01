"""Shared plumbing of the diffusion purifiers (DiffPure, GDMP, GNSP, distribution transfer, SSNI): [0, 1] <-> [-1, 1],
input checks, loading a denoiser from a spec parameter. It lives on the defenses floor (it is a purifier), above
:mod:`advpure.diffusion`, whose networks, schedules and samplers it uses."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..contracts import check_images
from ..diffusion.models import load_denoiser
from ..diffusion.schedule import DiscreteSchedule, VPSchedule, get_schedule
from .base import Purifier

REPO = Path(__file__).resolve().parents[3]
#: default diffusion model per dataset, used when a spec gives no ``model=``
DEFAULT_MODELS = {"digits": REPO / "zoo" / "digits-ddpm.safetensors"}


class DiffusionPurifier(Purifier):
    """Base: holds ``eps_model`` (frozen, eval mode), the schedule and the image shape it was trained on.

    ``grad_checkpoint``: wrap every sampler step in ``torch.utils.checkpoint`` when gradients are taken,
    so adaptive full-gradient attacks need memory independent of the number of steps (costs one extra
    forward per step in the backward pass).
    """

    def __init__(self, eps_model: nn.Module, *, schedule: VPSchedule | DiscreteSchedule | str | None = None,
                 image_shape: tuple[int, int, int] | None = None, grad_checkpoint: bool = False,
                 freeze: bool = True) -> None:
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

    def _copy(self, **changes: Any) -> "DiffusionPurifier":
        """A shallow copy sharing the network, with some attributes changed (for cheaper surrogates)."""
        new = copy.copy(self)
        new._modules = dict(self._modules)  # share submodules, own dict
        new._parameters = dict(self._parameters)
        new._buffers = dict(self._buffers)
        for k, v in changes.items():
            setattr(new, k, v)
        return new

    def describe(self) -> dict:
        return {"name": type(self).__name__, "nfe": self.nfe, "grad_checkpoint": self.grad_checkpoint,
                "schedule": self.schedule.describe()}


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
