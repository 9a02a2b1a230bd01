"""Denoisers behind one contract, and the UNet presets / loaders.

The contract every sampler and purifier uses::

    eps = eps_model(x_t, t)      # x_t in [-1, 1] data scale (N, C, H, W); t float tensor (N,) in [0, 1]

returns the noise prediction ``eps`` of ``x_t = alpha(t) x_0 + std(t) eps``; the score is
``-eps / std(t)`` (:func:`advpure.diffusion.schedule.eps_to_score`).

Time convention for networks that take a discrete timestep (diffusers ``UNet2DModel``, trained with
``DDPMScheduler`` where index ``k`` has noise level ``alphas_cumprod[k]``): continuous ``t`` is fed as
the (float) timestep ``k = t * N - 1`` with N = 1000, because ``alphas_cumprod[k] ~= alpha((k+1)/N)^2``
(:mod:`advpure.diffusion.schedule`). Our own training (:mod:`advpure.train.diffusion`) uses the same
map, so pretrained diffusers DDPMs (e.g. ``google/ddpm-cifar10-32``) and our checkpoints plug in alike.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

from ..ops.broadcast import per_sample
from .schedule import VPSchedule

log = logging.getLogger(__name__)


class DiscreteTimeAdapter(nn.Module):
    """Wrap ``net(x, timestep)`` (integer-timestep network; ``.sample`` outputs unwrapped) as ``eps_model(x, t)``.

    Feeds ``timestep = t * n_steps - 1`` (clamped at 0), see the module docstring.
    ``image_shape`` (C, H, W), when known, is checked on every call. ``t_max`` < 1 marks a network trained
    only on noise levels t <= t_max (``advpure train diffusion --t-max``); calling it above is an error.
    """

    def __init__(self, net: nn.Module, *, n_steps: int = 1000, image_shape: tuple[int, int, int] | None = None,
                 t_max: float = 1.0) -> None:
        super().__init__()
        self.net = net
        self.n_steps = int(n_steps)
        self.image_shape = tuple(image_shape) if image_shape is not None else None
        self.t_max = float(t_max)
        self.calls = 0  # network evaluations, counted per batch call

    def timestep(self, t: torch.Tensor) -> torch.Tensor:
        return (t * self.n_steps - 1.0).clamp(min=0.0)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.image_shape is not None and tuple(x.shape[1:]) != self.image_shape:
            c, h, w = self.image_shape
            raise ValueError(
                f"denoiser was trained on {c}x{h}x{w} images (CxHxW), got {tuple(x.shape[1:])}")
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        if self.t_max < 1.0 and float(t.max()) > self.t_max + 1e-6:
            raise ValueError(f"denoiser was trained on noise levels t <= {self.t_max:g} only, got t = "
                             f"{float(t.max()):.4g}; lower t (t*, SSNI's t_ceil) or use a model trained on that range")
        self.calls += 1
        out = self.net(x, self.timestep(t.to(x.dtype)))
        return out.sample if hasattr(out, "sample") else out


class GaussianScoreModel(nn.Module):
    """Exact eps-model for data ``x_0 ~ N(mu, diag(var))`` (per pixel), used to test samplers.

    Under the VP marginal, ``x_t ~ N(alpha mu, alpha^2 var + std^2)`` so the score is
    ``-(x_t - alpha mu) / (alpha^2 var + std^2)`` and ``eps = std (x_t - alpha mu) / (alpha^2 var + std^2)``.
    """

    def __init__(self, mean: torch.Tensor, var: torch.Tensor, schedule: Any | None = None) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("var", torch.as_tensor(var, dtype=torch.float32).expand_as(self.mean).clone())
        self.schedule = schedule or VPSchedule()
        self.calls = 0

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        a = per_sample(self.schedule.alpha(t), x, cast=True)
        s = per_sample(self.schedule.std(t), x, cast=True)
        return s * (x - a * self.mean) / (a * a * self.var + s * s)


# ------------------------------------------------------------------------------------------- UNet presets
PRESETS: dict[str, dict[str, Any]] = {
    # 8x8 grey digits: two resolutions (8, 4), no attention; ~0.27M parameters, CPU-trainable in minutes.
    "digits": dict(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(32, 64),
                   down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                   layers_per_block=1, norm_num_groups=8),
    # 32x32 RGB: three resolutions, attention at 16x16; ~4.4M parameters.
    "cifar10-small": dict(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(64, 128, 128),
                          down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
                          up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
                          layers_per_block=1, norm_num_groups=16),
    # 32x32 RGB, half the width of cifar10-small: ~1.1M parameters, a training step at batch 64 takes ~0.9 s on
    # 2 CPU threads (cifar10-small: ~2.8 s). Meant for small-t (purification-only) training on CPU.
    "cifar10-tiny": dict(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(32, 64, 64),
                         down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
                         up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
                         layers_per_block=1, norm_num_groups=16),
    # 32x32 RGB for purification (t <= 0.2): cifar10-tiny's widths with one attention head of dimension 64
    # instead of 8 heads of dimension 8 (attention was 41-45% of an attack iteration's time with 8 heads).
    # One training step at batch 64 on 1 CPU thread: 1.45 s (cifar10-tiny 1.69 s, no attention 1.22 s).
    "cifar10-purify": dict(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(32, 64, 64),
                           down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
                           up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
                           layers_per_block=1, norm_num_groups=16, attention_head_dim=64),
}

DATASET_PRESET = {"digits": "digits", "cifar10": "cifar10-small"}


def unet_config(preset: str) -> dict[str, Any]:
    if preset not in PRESETS:
        raise ValueError(f"unknown UNet preset {preset!r}; expected one of {', '.join(PRESETS)}")
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in PRESETS[preset].items()}


def build_unet(config: str | Mapping[str, Any]) -> nn.Module:
    """A diffusers ``UNet2DModel`` from a preset name or a config dict (random weights)."""
    from diffusers import UNet2DModel

    cfg = unet_config(config) if isinstance(config, str) else dict(config)
    cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
    try:
        return UNet2DModel(**cfg)
    except TypeError as e:
        raise ValueError(f"UNet config not understood by diffusers UNet2DModel: {e}") from None


def _shape_of(cfg: Mapping[str, Any]) -> tuple[int, int, int]:
    s = cfg.get("sample_size", 0)
    h, w = (s, s) if isinstance(s, int) else tuple(s)
    return int(cfg.get("in_channels", 3)), int(h), int(w)


def _check_shape(shape: tuple[int, int, int], expected: tuple[int, int, int] | None, where: str) -> None:
    if expected is not None and tuple(expected) != tuple(shape):
        raise ValueError(
            f"{where}: denoiser is for {shape[0]}x{shape[1]}x{shape[2]} images (CxHxW) but "
            f"{expected[0]}x{expected[1]}x{expected[2]} were requested; use a diffusion model trained on this data")


def load_unet(folder: str | os.PathLike, *, image_shape: tuple[int, int, int] | None = None,
              expect: str | Mapping[str, Any] | None = None) -> nn.Module:
    """Load a diffusers-format folder (``config.json`` + ``diffusion_pytorch_model.safetensors``) as is.

    ``expect`` (a preset name or config dict) and ``image_shape`` are checked against the folder's config.
    Never downloads: ``folder`` must be a local directory (e.g. a user's copy of google/ddpm-cifar10-32;
    a full pipeline folder with a ``unet/`` subfolder also works).
    """
    from diffusers import UNet2DModel

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"diffusion model folder {folder} does not exist")
    if not (folder / "config.json").is_file() and (folder / "unet" / "config.json").is_file():
        folder = folder / "unet"
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{folder}: no config.json (expected a diffusers UNet2DModel folder)")
    cfg = json.loads(cfg_path.read_text())
    cls = cfg.get("_class_name", "UNet2DModel")
    if cls != "UNet2DModel":
        raise ValueError(f"{folder}: config is for {cls}, expected UNet2DModel")
    if expect is not None:
        want = unet_config(expect) if isinstance(expect, str) else dict(expect)
        diff = [f"{k}: folder {cfg.get(k)!r} vs expected {v!r}" for k, v in want.items()
                if not k.startswith("_") and k in cfg and _norm(cfg[k]) != _norm(v)]
        if diff:
            raise ValueError(f"{folder}: UNet config does not match the requested network ({'; '.join(diff)})")
    _check_shape(_shape_of(cfg), image_shape, str(folder))
    check_scheduler(folder)
    net = UNet2DModel.from_pretrained(str(folder), local_files_only=True)
    return net.eval()


#: what advpure's samplers assume of a diffusers model: eps prediction on the linear-beta DDPM schedule
SUPPORTED_SCHEDULER = {"prediction_type": ("epsilon",), "beta_schedule": ("linear",)}


def check_scheduler(unet_folder: Path) -> dict | None:
    """Refuse (by name) a diffusers pipeline whose scheduler predicts something other than eps or uses another beta
    schedule: advpure would otherwise treat its outputs as eps on the linear VP schedule, a silently wrong model.
    Reads ``scheduler/scheduler_config.json`` beside a ``unet/`` folder, or ``scheduler_config.json`` in the folder
    itself; returns the config (None when there is none: the README documents the eps/linear assumption)."""
    candidates = [unet_folder / "scheduler_config.json", unet_folder.parent / "scheduler" / "scheduler_config.json"]
    path = next((c for c in candidates if c.is_file()), None)
    if path is None:
        return None
    cfg = json.loads(path.read_text())
    for key, allowed in SUPPORTED_SCHEDULER.items():
        value = cfg.get(key, allowed[0])
        if value not in allowed:
            raise ValueError(f"{path}: {key} is {value!r}; advpure's samplers support {key} "
                             f"{' or '.join(map(repr, allowed))} only (this model would be used wrongly)")
    return cfg


def _norm(v: Any) -> Any:
    return list(v) if isinstance(v, (list, tuple)) else v


#: the published checkpoint formats ``load_denoiser`` reads as ``FORMAT:PATH[@config.json]``
PUBLISHED_FORMATS = ("score_sde", "guided_diffusion")


def parse_published(spec: str | os.PathLike) -> tuple[str, Path, Path | None] | None:
    """``"score_sde:PATH[@config.json]"`` (or ``guided_diffusion:``) -> ``(format, checkpoint, config or None)``;
    None for anything else (an advpure checkpoint, a diffusers folder)."""
    kind, sep, rest = str(spec).partition(":")
    if not sep or kind not in PUBLISHED_FORMATS:
        return None
    ckpt, at, cfg = rest.partition("@")
    if not ckpt:
        raise ValueError(f"{str(spec)!r}: no checkpoint path after '{kind}:' (expected {kind}:PATH or "
                         f"{kind}:PATH@config.json)")
    if at and not cfg:
        raise ValueError(f"{str(spec)!r}: no config file after '@' (expected {kind}:PATH@config.json)")
    return kind, Path(ckpt).expanduser(), Path(cfg).expanduser() if at else None


def load_denoiser(path: str | os.PathLike, *, image_shape: tuple[int, int, int] | None = None
                  ) -> tuple[DiscreteTimeAdapter, dict]:
    """Load a diffusion model as an ``eps_model(x, t)`` plus metadata.

    ``path``: our ``.safetensors`` checkpoint with its JSON sidecar (records ``unet_config``, ``dataset``,
    ``t_max``, ``sha256``), its stem without suffix, a diffusers folder, or a published checkpoint as
    ``score_sde:PATH/checkpoint_8.pth`` (:mod:`advpure.diffusion.score_sde`) or
    ``guided_diffusion:PATH/256x256_diffusion_uncond.pt`` (:mod:`advpure.diffusion.adm`), with the released
    configuration, or another one from a JSON file: ``score_sde:PATH@config.json``. ``image_shape`` (C, H, W)
    must match what the model was trained on.
    """
    from ..checkpoint import load_artifact, load_into, resolve_artifact, sha256_file

    published = parse_published(path)
    if published is not None:
        # the papers' published networks in their own on-disk layouts (score_sde checkpoint_8.pth with its EMA
        # weights; guided-diffusion 256x256_diffusion_uncond.pt), built with the released configurations
        kind, ckpt, cfg_file = published
        if kind == "score_sde":
            from .score_sde import load_score_sde_denoiser as load_published
        else:
            from .adm import load_adm_denoiser as load_published
        config = None
        if cfg_file is not None:
            if not cfg_file.is_file():
                raise FileNotFoundError(f"{kind} config {cfg_file} does not exist (spec {str(path)!r})")
            config = json.loads(cfg_file.read_text())
        net, meta = load_published(ckpt, config)
        _check_shape(tuple(net.image_shape), image_shape, str(ckpt))
        # the file's sha256, as an advpure checkpoint's sidecar records it: what ties statistics computed with this
        # model (SSNI's EPS reference, EPS-AD's kernel) to it
        return net, {**meta, "sha256": sha256_file(ckpt)}
    p = Path(path).expanduser()
    if p.is_dir():
        net = load_unet(p, image_shape=image_shape)
        meta = {"source": str(p), "format": "diffusers", "unet_config": dict(net.config), "t_max": 1.0}
        return DiscreteTimeAdapter(net, image_shape=_shape_of(net.config)).eval(), meta
    p = resolve_artifact(p)
    # kind "diffusion" (sidecars written before the kind was recorded have none)
    sd, meta = load_artifact(p, kind=("diffusion", None), require=("unet_config",), what="diffusion model",
                             expected="a .safetensors file with a JSON sidecar, or a diffusers folder with config.json")
    shape = _shape_of(meta["unet_config"])
    _check_shape(shape, image_shape, str(p))
    net = build_unet(meta["unet_config"])
    load_into(net, sd, what=str(p))
    meta = {**meta, "source": str(p), "format": "advpure"}
    return DiscreteTimeAdapter(net.eval(), n_steps=int(meta.get("n_steps", 1000)), image_shape=shape,
                               t_max=float(meta.get("t_max", 1.0))).eval(), meta
