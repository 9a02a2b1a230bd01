"""The ADM UNet of openai/guided-diffusion (Dhariwal & Nichol, NeurIPS 2021), loadable from its state dicts.

DiffPure (Nie et al., ICML 2022) and its successors purify ImageNet with guided-diffusion's
``256x256_diffusion_uncond.pt`` (552,814,086 parameters, learned sigma). This module re-implements the
network (``UNetModel`` of ``guided_diffusion/unet.py`` built by ``script_util.create_model``) so that file,
a plain state dict, loads strictly and evaluates exactly:

* :class:`ADMUNet` registers the same modules under the same names (``time_embed``, ``input_blocks.i.j``,
  ``middle_block``, ``output_blocks``, ``out``; ResBlock ``in_layers.0/2``, ``emb_layers.1``,
  ``out_layers.0/3``, ``skip_connection``; attention ``norm``, ``qkv``, ``proj_out`` as 1-D convs), so the
  released state dict loads with ``strict=True`` and nothing renamed.
* Facts that change the output and are reproduced here: GroupNorm with 32 groups, eps 1e-5, computed in
  float32 (``GroupNorm32``); the timestep embedding ``[cos, sin]`` with frequencies
  ``10000^(-i/half)``; FiLM conditioning ``norm(h) * (1 + scale) + shift`` when ``use_scale_shift_norm``;
  the **legacy QKV head order** (``use_new_attention_order=False``: the qkv channels are split into heads
  first, then each head's block into q, k, v) with q and k each scaled by ``ch^(-1/4)`` and the softmax in
  float32; ``resblock_updown`` resampling inside the ResBlocks (nearest x2 / 2x2 average, applied after
  the first norm+SiLU on the main path and to the skip path); ``use_fp16`` converting only the torso's
  convolutions to half (used on CUDA only; on CPU the model stays float32 and a warning says so).
* :func:`load_adm` reads the file with ``torch.load(weights_only=True)``; a state dict that does not match
  the config raises a ValueError naming the first missing, unexpected and mismatching keys.
* :class:`ADMEpsModel` is advpure's ``eps_model(x_t, t)``: integer timesteps ``(1000 t).long()`` (as
  DiffPure's ``_scale_timesteps``), returns the first ``in_channels`` output channels (eps) when the model
  learns sigma. With ``diffusion_steps=1000`` guided-diffusion's ``rescale_timesteps`` is the identity.

Why not diffusers: diffusers' ``UNet2DModel`` has no module layout that matches guided-diffusion's state
dict key for key (different names and attention parameterisation, no legacy head order), so loading the
released file through it would need a hand-written key/weight conversion that is itself unverified. The
~300 lines here keep the official names and order, verified against the published manifest.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..checkpoint import format_keys

log = logging.getLogger(__name__)

# DiffPure's configs/imagenet.yml "model" block (the 256x256 unconditional, learned-sigma model).
RELEASED_CONFIG: dict[str, Any] = {
    "image_size": 256, "num_channels": 256, "num_res_blocks": 2, "num_heads": 4, "num_heads_upsample": -1,
    "num_head_channels": 64, "attention_resolutions": "32,16,8", "channel_mult": "", "dropout": 0.0,
    "class_cond": False, "use_checkpoint": False, "use_scale_shift_norm": True, "resblock_updown": True,
    "use_fp16": False, "use_new_attention_order": False, "learn_sigma": True, "diffusion_steps": 1000,
    "noise_schedule": "linear", "timestep_respacing": "1000", "use_kl": False, "predict_xstart": False,
    "rescale_timesteps": True, "rescale_learned_sigmas": False,
}
RELEASED_PARAMETERS = 552_814_086
NUM_CLASSES = 1000  # guided-diffusion's class-conditional ImageNet models

# Accepted besides RELEASED_CONFIG: the diffusion (not network) settings, ignored here, and in_channels (default 3).
_EXTRA_KEYS = {"diffusion_steps", "noise_schedule", "timestep_respacing", "use_kl", "predict_xstart",
                   "rescale_timesteps", "rescale_learned_sigmas", "use_checkpoint", "in_channels"}


def _parse_ints(v: Any) -> tuple[int, ...]:
    if isinstance(v, str):
        return tuple(int(s) for s in v.split(",") if s.strip())
    if isinstance(v, (int, float)):
        return (int(v),)
    return tuple(int(s) for s in v)


def adm_config(config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A complete config (``config`` over :data:`RELEASED_CONFIG`) with the derived network arguments.

    As guided-diffusion's ``create_model``: ``channel_mult=""`` picks the per-resolution default,
    ``attention_resolutions`` lists image resolutions (turned into downsampling rates), ``learn_sigma``
    doubles the output channels, ``class_cond`` adds a 1000-class label embedding.
    """
    cfg = dict(RELEASED_CONFIG)
    cfg["in_channels"] = 3
    if config is not None:
        unknown = sorted(k for k in config if k not in RELEASED_CONFIG and k not in _EXTRA_KEYS)
        if unknown:
            raise ValueError(f"guided-diffusion config: unknown keys {unknown}; expected a subset of "
                             f"{sorted(set(RELEASED_CONFIG) | _EXTRA_KEYS)}")
        cfg.update(config)
    size = int(cfg["image_size"])
    cm = cfg["channel_mult"]
    if cm in ("", None, ()):
        defaults = {512: (0.5, 1, 1, 2, 2, 4, 4), 256: (1, 1, 2, 2, 4, 4), 128: (1, 1, 2, 3, 4), 64: (1, 2, 3, 4)}
        if size not in defaults:
            raise ValueError(f"guided-diffusion config: no default channel_mult for image_size {size}; give one")
        mult = defaults[size]
    else:
        mult = tuple(float(s) for s in (cm.split(",") if isinstance(cm, str) else cm))
        mult = tuple(int(m) if float(m).is_integer() else m for m in mult)
    res = _parse_ints(cfg["attention_resolutions"])
    if any(size % r for r in res):
        raise ValueError(f"guided-diffusion config: attention_resolutions {res} must divide image_size {size}")
    if size % (2 ** (len(mult) - 1)):
        raise ValueError(f"guided-diffusion config: image_size {size} not divisible by 2^{len(mult) - 1}")
    cfg["_channel_mult"] = mult
    cfg["_attention_ds"] = tuple(size // r for r in res)
    cfg["_out_channels"] = int(cfg["in_channels"]) * (2 if cfg["learn_sigma"] else 1)
    cfg["_num_classes"] = NUM_CLASSES if cfg["class_cond"] else None
    return cfg


class GroupNorm32(nn.GroupNorm):
    """GroupNorm(32, C, eps=1e-5) evaluated in float32 and cast back (guided-diffusion's ``normalization``)."""

    def __init__(self, channels: int) -> None:
        super().__init__(32, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: int = 10000) -> torch.Tensor:
    """guided-diffusion's embedding: ``[cos(t f_i), sin(t f_i)]``, ``f_i = max_period^(-i/half)``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half)
    args = timesteps[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


class Upsample(nn.Module):
    """Nearest x2, then an optional 3x3 conv (named ``conv``)."""

    def __init__(self, ch: int, use_conv: bool, out_ch: int | None = None) -> None:
        super().__init__()
        self.use_conv = use_conv
        if use_conv:
            self.conv = nn.Conv2d(ch, out_ch or ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.use_conv else x


class Downsample(nn.Module):
    """Stride-2 3x3 conv or 2x2 average pooling (named ``op``)."""

    def __init__(self, ch: int, use_conv: bool, out_ch: int | None = None) -> None:
        super().__init__()
        self.op = nn.Conv2d(ch, out_ch or ch, 3, stride=2, padding=1) if use_conv else nn.AvgPool2d(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class ResBlock(nn.Module):
    """ADM residual block: GN-SiLU-conv, + embedding (FiLM scale/shift or bias), GN-SiLU-dropout-conv, skip."""

    def __init__(self, ch: int, emb_ch: int, dropout: float, out_ch: int | None = None, *,
                 use_scale_shift_norm: bool = False, up: bool = False, down: bool = False) -> None:
        super().__init__()
        out_ch = out_ch or ch
        self.in_layers = nn.Sequential(GroupNorm32(ch), nn.SiLU(), nn.Conv2d(ch, out_ch, 3, padding=1))
        self.updown = up or down
        if up:
            self.h_upd, self.x_upd = Upsample(ch, False), Upsample(ch, False)
        elif down:
            self.h_upd, self.x_upd = Downsample(ch, False), Downsample(ch, False)
        else:
            self.h_upd = self.x_upd = nn.Identity()
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_ch, 2 * out_ch if use_scale_shift_norm else out_ch))
        self.out_layers = nn.Sequential(GroupNorm32(out_ch), nn.SiLU(), nn.Dropout(p=dropout),
                                        nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip_connection = nn.Identity() if out_ch == ch else nn.Conv2d(ch, out_ch, 1)
        self.use_scale_shift_norm = use_scale_shift_norm

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.updown:
            h = self.in_layers[1](self.in_layers[0](x))
            h = self.in_layers[2](self.h_upd(h))
            x = self.x_upd(x)
        else:
            h = self.in_layers(x)
        e = self.emb_layers(emb).type(h.dtype)[:, :, None, None]
        if self.use_scale_shift_norm:
            scale, shift = e.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[3](self.out_layers[2](self.out_layers[1](h)))
        else:
            h = self.out_layers(h + e)
        return self.skip_connection(x) + h


def qkv_attention(qkv: torch.Tensor, n_heads: int, legacy: bool) -> torch.Tensor:
    """Multi-head attention on ``qkv`` (N, 3*H*C, T) -> (N, H*C, T).

    legacy (``QKVAttentionLegacy``): channels are laid out per head as ``[q_h, k_h, v_h]``;
    new order (``QKVAttention``): ``[q (all heads), k (all heads), v (all heads)]``.
    """
    bs, width, length = qkv.shape
    ch = width // (3 * n_heads)
    if legacy:
        q, k, v = qkv.reshape(bs * n_heads, 3 * ch, length).split(ch, dim=1)
    else:
        q, k, v = (z.reshape(bs * n_heads, ch, length) for z in qkv.chunk(3, dim=1))
    scale = 1.0 / math.sqrt(math.sqrt(ch))
    w = torch.einsum("bct,bcs->bts", q * scale, k * scale)
    w = torch.softmax(w.float(), dim=-1).type(w.dtype)
    return torch.einsum("bts,bcs->bct", w, v).reshape(bs, -1, length)


class AttentionBlock(nn.Module):
    """Self-attention over all positions: GroupNorm32, 1-D conv to qkv, heads, 1-D conv ``proj_out``, residual."""

    def __init__(self, ch: int, num_heads: int = 1, num_head_channels: int = -1, legacy: bool = True) -> None:
        super().__init__()
        if num_head_channels == -1:
            self.num_heads = num_heads
        else:
            if ch % num_head_channels:
                raise ValueError(f"attention channels {ch} not divisible by num_head_channels {num_head_channels}")
            self.num_heads = ch // num_head_channels
        self.norm = GroupNorm32(ch)
        self.qkv = nn.Conv1d(ch, 3 * ch, 1)
        self.proj_out = nn.Conv1d(ch, ch, 1)
        self.legacy = legacy

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        h = qkv_attention(self.qkv(self.norm(x)), self.num_heads, self.legacy)
        return (x + self.proj_out(h)).reshape(b, c, *spatial)


class TimestepEmbedSequential(nn.Sequential):
    """Sequential that passes the embedding to the ResBlocks."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


class ADMUNet(nn.Module):
    """guided-diffusion's ``UNetModel`` as built by ``create_model(**config)``; ``forward(x, timesteps, y=None)``."""

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        cfg = adm_config(config)
        self.config = cfg
        mc, nrb = int(cfg["num_channels"]), int(cfg["num_res_blocks"])
        mult, attn_ds = cfg["_channel_mult"], set(cfg["_attention_ds"])
        dropout, ssn = float(cfg["dropout"]), bool(cfg["use_scale_shift_norm"])
        heads, head_ch = int(cfg["num_heads"]), int(cfg["num_head_channels"])
        heads_up = heads if int(cfg["num_heads_upsample"]) == -1 else int(cfg["num_heads_upsample"])
        legacy = not bool(cfg["use_new_attention_order"])
        updown = bool(cfg["resblock_updown"])
        self.model_channels = mc
        self.num_classes = cfg["_num_classes"]
        self.in_channels, self.out_channels = int(cfg["in_channels"]), cfg["_out_channels"]
        self.dtype = torch.float32
        emb = 4 * mc

        self.time_embed = nn.Sequential(nn.Linear(mc, emb), nn.SiLU(), nn.Linear(emb, emb))
        if self.num_classes is not None:
            self.label_emb = nn.Embedding(self.num_classes, emb)

        ch = input_ch = int(mult[0] * mc)
        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(self.in_channels, ch, 3, padding=1))])
        chans = [ch]
        ds = 1
        for level, m in enumerate(mult):
            for _ in range(nrb):
                layers: list[nn.Module] = [ResBlock(ch, emb, dropout, int(m * mc), use_scale_shift_norm=ssn)]
                ch = int(m * mc)
                if ds in attn_ds:
                    layers.append(AttentionBlock(ch, heads, head_ch, legacy))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                chans.append(ch)
            if level != len(mult) - 1:
                self.input_blocks.append(TimestepEmbedSequential(
                    ResBlock(ch, emb, dropout, ch, use_scale_shift_norm=ssn, down=True) if updown
                    else Downsample(ch, True, ch)))
                chans.append(ch)
                ds *= 2
        self.middle_block = TimestepEmbedSequential(
            ResBlock(ch, emb, dropout, use_scale_shift_norm=ssn),
            AttentionBlock(ch, heads, head_ch, legacy),
            ResBlock(ch, emb, dropout, use_scale_shift_norm=ssn))
        self.output_blocks = nn.ModuleList()
        for level, m in list(enumerate(mult))[::-1]:
            for i in range(nrb + 1):
                layers = [ResBlock(ch + chans.pop(), emb, dropout, int(mc * m), use_scale_shift_norm=ssn)]
                ch = int(mc * m)
                if ds in attn_ds:
                    layers.append(AttentionBlock(ch, heads_up, head_ch, legacy))
                if level and i == nrb:
                    layers.append(ResBlock(ch, emb, dropout, ch, use_scale_shift_norm=ssn, up=True) if updown
                                  else Upsample(ch, True, ch))
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))
        self.out = nn.Sequential(GroupNorm32(ch), nn.SiLU(), nn.Conv2d(input_ch, self.out_channels, 3, padding=1))

    def convert_to_fp16(self) -> None:
        """Half-precision torso convolutions, as guided-diffusion's ``use_fp16`` (norms, linears, ``out`` stay fp32)."""
        for blocks in (self.input_blocks, self.middle_block, self.output_blocks):
            for mod in blocks.modules():
                if isinstance(mod, (nn.Conv1d, nn.Conv2d)):
                    mod.half()
        self.dtype = torch.float16

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if (y is not None) != (self.num_classes is not None):
            raise ValueError("pass class labels y if and only if the model is class-conditional")
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels))
        if self.num_classes is not None:
            emb = emb + self.label_emb(y)
        hs = []
        h = x.type(self.dtype)
        for block in self.input_blocks:
            h = block(h, emb)
            hs.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, hs.pop()], dim=1), emb)
        return self.out(h.type(x.dtype))


# ------------------------------------------------------------------------------------------------ loading
def build_adm(config: Mapping[str, Any] | None = None, *, device: str | torch.device | None = None) -> ADMUNet:
    """The network with freshly initialised weights (``device="meta"`` builds it without memory)."""
    if device is not None:
        with torch.device(device):
            return ADMUNet(config)
    return ADMUNet(config)


def check_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], what: str) -> None:
    """Raise a ValueError naming the first missing / unexpected / shape-mismatching keys (never a partial load)."""
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {own[k]}"
              for k in own if k in state_dict and tuple(state_dict[k].shape) != own[k]]
    if missing or unexpected or shapes:
        raise ValueError(f"{what} does not match the guided-diffusion config: shape mismatches "
                         f"[{format_keys(shapes)}]; missing keys [{format_keys(missing)}]; unexpected keys "
                         f"[{format_keys(unexpected)}]")


def load_adm(path: str | os.PathLike, config: Mapping[str, Any] | None = None, *, sha256: str | None = None,
             device: str | torch.device = "cpu") -> ADMUNet:
    """Load a guided-diffusion UNet state dict (e.g. ``256x256_diffusion_uncond.pt``) strictly, eval mode.

    ``config``: guided-diffusion's model arguments (``image_size``, ``num_channels``, ``channel_mult``,
    ``attention_resolutions`` ...; missing keys take DiffPure's ImageNet values, so ``None`` is the released
    256x256 unconditional model). ``use_fp16`` converts the torso to half precision on CUDA devices only.
    Weights are read with ``torch.load(weights_only=True)`` and cast to float32 before any fp16 conversion.
    """
    from ..checkpoint import read_torch_file

    p = Path(path).expanduser()
    sd = read_torch_file(p, sha256=sha256, what="guided-diffusion checkpoint")
    if isinstance(sd, Mapping) and "state_dict" in sd and isinstance(sd["state_dict"], Mapping):
        sd = sd["state_dict"]
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{p}: not a guided-diffusion UNet state dict (expected a mapping of names to tensors)")
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    net = build_adm(config, device="meta")
    check_state_dict(net, sd, str(p))
    net.load_state_dict({k: v.to(torch.float32) for k, v in sd.items()}, strict=True, assign=True)
    net = net.to(device).eval()
    if net.config["use_fp16"]:
        if torch.device(device).type == "cuda":
            net.convert_to_fp16()
        else:
            log.warning("%s: use_fp16 is honoured on CUDA only; running in float32 on %s", p, device)
    return net


class ADMEpsModel(nn.Module):
    """advpure's ``eps_model(x_t, t)`` on a guided-diffusion UNet: ``net(x_t, (1000 t).long())[:, :C]``.

    The integer timestep is DiffPure's ``_scale_timesteps`` (truncation; t = 1 gives 1000). With learned
    sigma the network outputs ``[eps, v]`` (v: variance interpolation); the adapter returns eps only.
    """

    def __init__(self, net: ADMUNet, *, n_steps: int = 1000) -> None:
        super().__init__()
        if net.num_classes is not None:
            raise ValueError("ADMEpsModel wraps unconditional models; this one is class-conditional")
        self.net = net
        size = int(net.config["image_size"])
        self.image_shape = (net.in_channels, size, size)
        self.t_max = 1.0
        self.n_steps = int(n_steps)
        self.learn_sigma = bool(net.config["learn_sigma"])
        self.calls = 0

    def timestep(self, t: torch.Tensor) -> torch.Tensor:
        return (t.float() * self.n_steps).long()

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != self.image_shape:
            c, h, w = self.image_shape
            raise ValueError(f"guided-diffusion denoiser was trained on {c}x{h}x{w} images (CxHxW), "
                             f"got {tuple(x.shape[1:])}")
        t = torch.as_tensor(t, device=x.device)
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        self.calls += 1
        out = self.net(x, self.timestep(t))
        return out[:, : self.image_shape[0]] if self.learn_sigma else out


def load_adm_denoiser(path: str | os.PathLike, config: Mapping[str, Any] | None = None, *,
                      sha256: str | None = None, device: str | torch.device = "cpu") -> tuple[ADMEpsModel, dict]:
    """:func:`load_adm` wrapped as an ``eps_model`` plus metadata (for ``load_denoiser``-style callers)."""
    net = load_adm(path, config, sha256=sha256, device=device)
    ad = ADMEpsModel(net).eval()
    meta = {"source": str(path), "format": "guided_diffusion",
            "config": {k: v for k, v in net.config.items() if not k.startswith("_")}, "t_max": 1.0,
            "image_shape": list(ad.image_shape)}
    return ad, meta
