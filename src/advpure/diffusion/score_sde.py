"""NCSN++ / DDPM++ score network of score_sde_pytorch (Song et al., ICLR 2021), loadable from its checkpoints.

DiffPure (Nie et al., ICML 2022) and the papers that follow it purify CIFAR-10 with score_sde's
``checkpoint_8.pth`` of ``cifar10_ddpmpp_deep_continuous`` (VP SDE, 106,632,579 parameters). This module
re-implements that network (``NCSNpp`` in score_sde's ``models/ncsnpp.py``) so the released file loads and
evaluates exactly, with no third-party code:

* :class:`NCSNpp` builds the same flat ``all_modules`` list, in the same order and with the same
  sub-module names (``GroupNorm_0``, ``Conv_0``, ``Dense_0``, ``NIN_0.W`` ...), so the parameter order,
  names and shapes equal the official ones and the EMA ``shadow_params`` list maps onto
  :meth:`torch.nn.Module.parameters` position by position.
* :func:`load_score_sde` reads a checkpoint (``{"optimizer", "model", "ema", "step"}``) with
  ``torch.load(weights_only=True)`` and uses the **EMA weights** (``ema.shadow_params``), as the paper's
  evaluation does (DiffPure loads ``model`` then copies the EMA over every trainable parameter). The
  ``model`` entry's *values* are never used; its key names and shapes, when present, are checked against
  this module so a config that builds a different network is refused.
* :class:`ScoreSDEEpsModel` is advpure's denoiser contract ``eps_model(x_t, t)``: it calls the network at
  ``labels = 999 t`` (score_sde's continuous VP convention) and returns the raw output. For the VP SDE,
  score_sde/DiffPure compute ``score = -model(x, 999 t) / std(t)``, so the raw output *is* ``eps``.

What is supported: the DDPM++ family (``resblock_type="biggan"``, ``embedding_type="positional"``,
``fir=False``, ``progressive="none"``, ``progressive_input="none"``; any ``nf``, ``ch_mult``,
``num_res_blocks``, ``attn_resolutions``, ``conditional``, ``skip_rescale``, ``scale_by_sigma``,
``nonlinearity``, ``centered``). That covers every DDPM++ CIFAR-10 configuration, the released DiffPure
one included. The NCSN++ options (FIR resampling, progressive growing, Fourier features; VE models) are
refused with a ValueError rather than approximated.

Why not diffusers: diffusers has no NCSN++/DDPM++ class with score_sde's module layout (its
``UNet2DModel`` "ncsnpp" conversion targets the VE FIR variant with renamed, re-ordered weights), so
loading ``checkpoint_8.pth`` through it would need a name/order conversion table that is itself
unverifiable; writing the ~300 lines here keeps the parameter order identical to the official
``nn.Module`` and lets the loader prove it against the published manifest.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..checkpoint import format_keys

log = logging.getLogger(__name__)

# The released cifar10_ddpmpp_deep_continuous configuration (DiffPure's configs/cifar10.yml "model" block)
# plus the three "data" fields the network reads. Flat keys; see :func:`score_sde_config`.
RELEASED_CONFIG: dict[str, Any] = {
    "sigma_min": 0.01, "sigma_max": 50, "num_scales": 1000, "beta_min": 0.1, "beta_max": 20.0,
    "dropout": 0.1, "name": "ncsnpp", "scale_by_sigma": False, "ema_rate": 0.9999,
    "normalization": "GroupNorm", "nonlinearity": "swish", "nf": 128, "ch_mult": [1, 2, 2, 2],
    "num_res_blocks": 8, "attn_resolutions": [16], "resamp_with_conv": True, "conditional": True,
    "fir": False, "fir_kernel": [1, 3, 3, 1], "skip_rescale": True, "resblock_type": "biggan",
    "progressive": "none", "progressive_input": "none", "progressive_combine": "sum",
    "attention_type": "ddpm", "init_scale": 0.0, "embedding_type": "positional", "fourier_scale": 16,
    "conv_size": 3,
    # data.* (DiffPure's cifar10.yml: 32x32 RGB, data centred to [-1, 1])
    "image_size": 32, "num_channels": 3, "centered": True,
}
RELEASED_PARAMETERS = 106_632_579

_DATA_KEYS = ("image_size", "num_channels", "centered")


def score_sde_config(config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A complete flat config: ``config`` over :data:`RELEASED_CONFIG`, validated.

    ``config`` may be flat (as stored in the interop files and the manifest) or score_sde-style nested
    (``{"model": {...}, "data": {...}}``, other sections ignored). Unknown keys are an error, as are the
    NCSN++ options this implementation does not provide.
    """
    cfg = dict(RELEASED_CONFIG)
    if config is not None:
        flat: dict[str, Any] = {}
        if "model" in config and isinstance(config["model"], Mapping):
            flat.update(config["model"])
            data = config.get("data", {}) or {}
            flat.update({k: data[k] for k in _DATA_KEYS if k in data})
        else:
            flat.update(config)
        unknown = sorted(k for k in flat if k not in RELEASED_CONFIG)
        if unknown:
            raise ValueError(f"score_sde config: unknown keys {unknown}; expected a subset of {sorted(RELEASED_CONFIG)}")
        cfg.update(flat)
    checks = {
        "name": ("ncsnpp",), "normalization": ("GroupNorm",), "resblock_type": ("biggan",),
        "embedding_type": ("positional",), "progressive": ("none",), "progressive_input": ("none",),
        "fir": (False,), "attention_type": ("ddpm",), "conv_size": (3,),
        "nonlinearity": ("swish", "elu", "relu", "lrelu"),
    }
    for key, allowed in checks.items():
        v = cfg[key].lower() if isinstance(cfg[key], str) and key != "normalization" else cfg[key]
        if v not in allowed:
            raise ValueError(f"score_sde config: {key}={cfg[key]!r} is not supported (supported: {list(allowed)}); "
                             "this implementation covers the DDPM++ family (biggan blocks, positional embedding, "
                             "no FIR, no progressive growing)")
    cfg["ch_mult"] = [int(m) for m in cfg["ch_mult"]]
    cfg["attn_resolutions"] = [int(r) for r in cfg["attn_resolutions"]]
    size = int(cfg["image_size"])
    if size % (2 ** (len(cfg["ch_mult"]) - 1)):
        raise ValueError(f"score_sde config: image_size {size} is not divisible by 2^{len(cfg['ch_mult']) - 1}")
    if int(cfg["nf"]) * min(cfg["ch_mult"]) < 4:
        raise ValueError("score_sde config: nf * min(ch_mult) must be >= 4 (GroupNorm uses channels // 4 groups)")
    return cfg


def _activation(name: str) -> nn.Module:
    return {"swish": nn.SiLU(), "elu": nn.ELU(), "relu": nn.ReLU(), "lrelu": nn.LeakyReLU(0.2)}[name.lower()]


def _group_norm(ch: int) -> nn.GroupNorm:
    # score_sde: min(C // 4, 32) groups, eps 1e-6 (guided-diffusion differs: 32 groups, eps 1e-5)
    return nn.GroupNorm(num_groups=min(ch // 4, 32), num_channels=ch, eps=1e-6)


def _conv(cin: int, cout: int, k: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=k, stride=1, padding=k // 2, bias=True)


def positional_embedding(labels: torch.Tensor, dim: int, max_positions: int = 10000) -> torch.Tensor:
    """score_sde's (DDPM's) sinusoidal embedding: ``[sin(l w_i), cos(l w_i)]``, ``w_i = 10000^(-i/(half-1))``.

    Note the order (sin first) and the ``half - 1`` denominator; guided-diffusion's embedding differs in both.
    """
    half = dim // 2
    step = math.log(max_positions) / (half - 1)
    freqs = torch.exp(torch.arange(half, dtype=torch.float32, device=labels.device) * -step)
    args = labels.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


class NIN(nn.Module):
    """Per-pixel dense layer ("network in network"): ``y[b, d] = sum_c x[b, c] W[c, d] + b[d]``, W is (in, out)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.W = nn.Parameter(nn.init.xavier_uniform_(torch.empty(cin, cout)))
        self.b = nn.Parameter(torch.zeros(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bchw,cd->bdhw", x, self.W) + self.b[None, :, None, None]


class AttnBlockpp(nn.Module):
    """Single-head self-attention over all pixels (DDPM's block, with the optional 1/sqrt(2) skip rescale)."""

    def __init__(self, ch: int, skip_rescale: bool) -> None:
        super().__init__()
        self.GroupNorm_0 = _group_norm(ch)
        self.NIN_0 = NIN(ch, ch)   # q
        self.NIN_1 = NIN(ch, ch)   # k
        self.NIN_2 = NIN(ch, ch)   # v
        self.NIN_3 = NIN(ch, ch)   # output projection
        self.skip_rescale = skip_rescale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hh, ww = x.shape
        h = self.GroupNorm_0(x)
        q = self.NIN_0(h).reshape(b, c, hh * ww)
        k = self.NIN_1(h).reshape(b, c, hh * ww)
        v = self.NIN_2(h).reshape(b, c, hh * ww)
        w = torch.softmax(torch.bmm(q.transpose(1, 2), k) * (c ** -0.5), dim=-1)   # (b, query, key)
        h = torch.bmm(v, w.transpose(1, 2)).reshape(b, c, hh, ww)
        h = self.NIN_3(h)
        return (x + h) / math.sqrt(2.0) if self.skip_rescale else x + h


class ResnetBlockBigGANpp(nn.Module):
    """BigGAN-style residual block; ``up``/``down`` resample both paths (nearest / 2x2 mean) before Conv_0."""

    def __init__(self, act: nn.Module, cin: int, cout: int | None, temb_dim: int | None, *, up: bool = False,
                 down: bool = False, dropout: float = 0.1, skip_rescale: bool = True) -> None:
        super().__init__()
        cout = cout or cin
        self.GroupNorm_0 = _group_norm(cin)
        self.Conv_0 = _conv(cin, cout, 3)
        if temb_dim is not None:
            self.Dense_0 = nn.Linear(temb_dim, cout)
        self.GroupNorm_1 = _group_norm(cout)
        self.Dropout_0 = nn.Dropout(dropout)
        self.Conv_1 = _conv(cout, cout, 3)
        self.shortcut = cin != cout or up or down
        if self.shortcut:
            self.Conv_2 = _conv(cin, cout, 1)
        self.act, self.up, self.down, self.skip_rescale = act, up, down, skip_rescale

    @staticmethod
    def _resample(x: torch.Tensor, up: bool, down: bool) -> torch.Tensor:
        if up:
            return x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
        if down:
            n, c, hh, ww = x.shape
            return x.reshape(n, c, hh // 2, 2, ww // 2, 2).mean(dim=(3, 5))
        return x

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None) -> torch.Tensor:
        h = self.act(self.GroupNorm_0(x))
        h = self._resample(h, self.up, self.down)
        x = self._resample(x, self.up, self.down)
        h = self.Conv_0(h)
        if temb is not None:
            h = h + self.Dense_0(self.act(temb))[:, :, None, None]
        h = self.act(self.GroupNorm_1(h))
        h = self.Conv_1(self.Dropout_0(h))
        if self.shortcut:
            x = self.Conv_2(x)
        return (x + h) / math.sqrt(2.0) if self.skip_rescale else x + h


def _sigmas(cfg: Mapping[str, Any]) -> torch.Tensor:
    """score_sde's ``sigmas`` buffer: geometric from sigma_max down to sigma_min (used only by scale_by_sigma)."""
    s = np.exp(np.linspace(np.log(cfg["sigma_max"]), np.log(cfg["sigma_min"]), int(cfg["num_scales"])))
    return torch.tensor(s, dtype=torch.float32)


class NCSNpp(nn.Module):
    """score_sde's NCSN++ network, DDPM++ configurations (see the module docstring).

    ``forward(x, labels)``: x (N, C, H, W) in [-1, 1] when ``centered`` (else [0, 1]); ``labels`` (N,) the
    noise-conditioning input (``999 t`` for continuous VP models). Returns the raw network output.
    """

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        cfg = score_sde_config(config)
        self.config = cfg
        self.act = act = _activation(cfg["nonlinearity"])
        self.register_buffer("sigmas", _sigmas(cfg))
        nf, ch_mult, nrb = int(cfg["nf"]), cfg["ch_mult"], int(cfg["num_res_blocks"])
        self.nf, self.num_res_blocks, self.num_resolutions = nf, nrb, len(ch_mult)
        self.conditional = bool(cfg["conditional"])
        self.centered = bool(cfg["centered"])
        self.scale_by_sigma = bool(cfg["scale_by_sigma"])
        resolutions = [int(cfg["image_size"]) // 2 ** i for i in range(len(ch_mult))]
        attn_res = set(cfg["attn_resolutions"])
        temb_dim = 4 * nf if self.conditional else None
        channels = int(cfg["num_channels"])

        def res(cin: int, cout: int | None = None, **kw: bool) -> ResnetBlockBigGANpp:
            return ResnetBlockBigGANpp(act, cin, cout, temb_dim, dropout=float(cfg["dropout"]),
                                       skip_rescale=bool(cfg["skip_rescale"]), **kw)

        def attn(ch: int) -> AttnBlockpp:
            return AttnBlockpp(ch, bool(cfg["skip_rescale"]))

        # The flat module list, in score_sde's order, and the forward plan that walks it.
        mods: list[nn.Module] = []
        plan: list[tuple[str, int]] = []

        def add(kind: str, m: nn.Module) -> None:
            plan.append((kind, len(mods)))
            mods.append(m)

        if self.conditional:
            mods += [nn.Linear(nf, 4 * nf), nn.Linear(4 * nf, 4 * nf)]
        add("conv_in", _conv(channels, nf, 3))
        skips = [nf]
        ch = nf
        for lvl, mult in enumerate(ch_mult):
            for _ in range(nrb):
                add("down_res", res(ch, nf * mult))
                ch = nf * mult
                if resolutions[lvl] in attn_res:
                    add("down_attn", attn(ch))
                plan.append(("push", -1))
                skips.append(ch)
            if lvl != len(ch_mult) - 1:
                add("down_res", res(ch, down=True))
                plan.append(("push", -1))
                skips.append(ch)
        add("mid_res", res(ch))
        add("mid_attn", attn(ch))
        add("mid_res", res(ch))
        for lvl in reversed(range(len(ch_mult))):
            for _ in range(nrb + 1):
                add("up_res_cat", res(ch + skips.pop(), nf * ch_mult[lvl]))
                ch = nf * ch_mult[lvl]
            if resolutions[lvl] in attn_res:
                add("up_attn", attn(ch))
            if lvl != 0:
                add("up_res", res(ch, up=True))
        assert not skips
        add("norm_out", _group_norm(ch))
        add("conv_out", _conv(ch, channels, 3))
        self.all_modules = nn.ModuleList(mods)
        self._plan = plan

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        m = self.all_modules
        temb = positional_embedding(labels, self.nf)
        if self.conditional:
            temb = m[1](self.act(m[0](temb)))
        else:
            temb = None
        if not self.centered:
            x = 2 * x - 1.0
        hs: list[torch.Tensor] = []
        h = x
        for kind, i in self._plan:
            if kind == "conv_in":
                h = m[i](h)
                hs.append(h)
            elif kind == "push":
                hs.append(h)
            elif kind == "down_res":
                h = m[i](hs[-1], temb)
            elif kind in ("down_attn", "mid_attn", "up_attn"):
                h = m[i](h)
            elif kind in ("mid_res", "up_res"):
                h = m[i](h, temb)
            elif kind == "up_res_cat":
                h = m[i](torch.cat([h, hs.pop()], dim=1), temb)
            elif kind == "norm_out":
                h = self.act(m[i](h))
            elif kind == "conv_out":
                h = m[i](h)
        if self.scale_by_sigma:
            h = h / self.sigmas[labels.long()].reshape(-1, *([1] * (h.dim() - 1)))
        return h


# ------------------------------------------------------------------------------------------------ loading
def build_score_sde(config: Mapping[str, Any] | None = None, *, device: str | torch.device | None = None) -> NCSNpp:
    """The network with freshly initialised weights (``device="meta"`` builds it without memory)."""
    if device is not None:
        with torch.device(device):
            return NCSNpp(config)
    return NCSNpp(config)


def load_score_sde(path: str | os.PathLike, config: Mapping[str, Any] | None = None, *,
                   sha256: str | None = None, device: str | torch.device = "cpu") -> NCSNpp:
    """Load a score_sde checkpoint's EMA weights into :class:`NCSNpp` (eval mode).

    ``config``: the network's configuration (flat or score_sde-nested; missing keys take the released
    ``cifar10_ddpmpp_deep_continuous`` values, so ``None`` is DiffPure's CIFAR-10 model). ``sha256``, when
    given, must match the file. The checkpoint must hold ``ema.shadow_params`` (one tensor per trainable
    parameter, in parameter order); their count and shapes must match the config exactly, else a
    ValueError names the first mismatching parameters. The ``model`` entry's values are never used.
    """
    from ..checkpoint import read_torch_file

    p = Path(path).expanduser()
    ckpt = read_torch_file(p, sha256=sha256, what="score_sde checkpoint")
    if not isinstance(ckpt, Mapping) or "ema" not in ckpt:
        keys = sorted(ckpt) if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise ValueError(f"{p}: not a score_sde training checkpoint: missing key 'ema' (the EMA weights the "
                         f"released model is evaluated with); found {keys}")
    ema = ckpt["ema"]
    if not isinstance(ema, Mapping) or "shadow_params" not in ema:
        found = sorted(ema) if isinstance(ema, Mapping) else type(ema).__name__
        raise ValueError(f"{p}: checkpoint 'ema' entry has no 'shadow_params' (found {found})")
    shadow = list(ema["shadow_params"])
    if not all(isinstance(t, torch.Tensor) for t in shadow):
        raise ValueError(f"{p}: ema.shadow_params must be a list of tensors")

    net = build_score_sde(config, device="meta")
    trainable = [(n, q) for n, q in net.named_parameters() if q.requires_grad]
    what = f"{p} does not match the score_sde config"
    mism = [f"{n}: checkpoint shadow_params[{i}] {tuple(shadow[i].shape)} vs model {tuple(q.shape)}"
            for i, (n, q) in enumerate(trainable[:len(shadow)]) if tuple(shadow[i].shape) != tuple(q.shape)]
    if mism or len(shadow) != len(trainable):
        count = (f"; checkpoint has {len(shadow)} EMA tensors, the config builds {len(trainable)} parameters"
                 if len(shadow) != len(trainable) else "")
        raise ValueError(f"{what}: shape mismatches [{format_keys(mism)}]{count}")
    # The raw-weights entry (values never used) names the parameters: check the names and shapes agree too.
    raw = ckpt.get("model")
    if isinstance(raw, Mapping) and raw:
        raw_shapes = {(k[len("module."):] if k.startswith("module.") else k): tuple(v.shape) for k, v in raw.items()}
        own = {n: tuple(q.shape) for n, q in net.named_parameters()}
        own_buffers = {n for n, _ in net.named_buffers()}
        missing = [n for n in own if n not in raw_shapes]
        unexpected = [n for n in raw_shapes if n not in own and n not in own_buffers]
        shapes = [f"{n}: checkpoint {raw_shapes[n]} vs model {own[n]}" for n in own
                  if n in raw_shapes and raw_shapes[n] != own[n]]
        if missing or unexpected or shapes:
            raise ValueError(f"{what} (parameter names of its 'model' entry): missing keys [{format_keys(missing)}]; "
                             f"unexpected keys [{format_keys(unexpected)}]; shape mismatches [{format_keys(shapes)}]")
    state = {n: t.detach().to(torch.float32) for (n, _), t in zip(trainable, shadow)}
    state["sigmas"] = _sigmas(net.config)
    net.load_state_dict(state, strict=True, assign=True)
    return net.to(device).eval()


class ScoreSDEEpsModel(nn.Module):
    """advpure's ``eps_model(x_t, t)`` on a score_sde continuous VP network: ``eps = net(x_t, 999 t)``.

    ``x_t`` in [-1, 1] (N, C, H, W); ``t`` (N,) or scalar continuous VP time in (0, 1]. score_sde's VP score
    is ``-net(x, 999 t) / std(t)`` (``std`` of the VP marginal with the config's beta_min/beta_max), i.e.
    the network predicts eps. ``image_shape`` is checked on every call.
    """

    def __init__(self, net: NCSNpp) -> None:
        super().__init__()
        self.net = net
        cfg = net.config
        self.image_shape = (int(cfg["num_channels"]), int(cfg["image_size"]), int(cfg["image_size"]))
        self.t_max = 1.0
        self.beta_min, self.beta_max = float(cfg["beta_min"]), float(cfg["beta_max"])
        self.calls = 0

    def labels(self, t: torch.Tensor) -> torch.Tensor:
        return t * 999.0

    def std(self, t: torch.Tensor) -> torch.Tensor:
        """The VP marginal std the network was trained with (score = -eps / std)."""
        log_mean = -0.25 * t ** 2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min
        return torch.sqrt(1.0 - torch.exp(2.0 * log_mean))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != self.image_shape:
            c, h, w = self.image_shape
            raise ValueError(f"score_sde denoiser was trained on {c}x{h}x{w} images (CxHxW), got {tuple(x.shape[1:])}")
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        self.calls += 1
        return self.net(x, self.labels(t.to(x.dtype)))


def load_score_sde_denoiser(path: str | os.PathLike, config: Mapping[str, Any] | None = None, *,
                            sha256: str | None = None, device: str | torch.device = "cpu"
                            ) -> tuple[ScoreSDEEpsModel, dict]:
    """:func:`load_score_sde` wrapped as an ``eps_model`` plus metadata (for ``load_denoiser``-style callers)."""
    net = load_score_sde(path, config, sha256=sha256, device=device)
    ad = ScoreSDEEpsModel(net).eval()
    meta = {"source": str(path), "format": "score_sde", "config": dict(net.config), "t_max": 1.0,
            "image_shape": list(ad.image_shape)}
    return ad, meta
