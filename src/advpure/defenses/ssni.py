"""SSNI: sample-specific noise injection (Sun, Zhang, Ye, Xiao, Liu, ICML 2025, "Sample-specific Noise
Injection for Diffusion-based Adversarial Purification").

A diffusion purifier uses one noise level t* for every input. SSNI picks t_i per sample from how far
x_i sits from the clean data's high-density region, measured by ``s_i = ||EPS(x_i)||``
(:mod:`advpure.detect.eps`), relative to statistics of clean reference data (mean ``mu``, ``min``, ``max``):

- SSNI-N (sigmoid reweighting):   ``t_i = (t* + b) * sigmoid((s_i - mu) / tau)``
- SSNI-L (linear reweighting, ``mode=L``), as the authors' code normalises it: with ``min`` and ``max`` taken
  over the clean reference **and the current batch**, ``t_i = t* (s_i - min) / (max - min) + b`` and the bias
  ``b`` = 5 DDPM steps (0.005 in continuous time, t = step / 1000). So t_i always lies in ``[b, t* + b]``.
  Consequence: one image's t depends on the rest of its batch (an input with a large ||EPS|| lowers everyone
  else's t). In our evaluations the attacker controls the whole batch (every image in an attacked batch is
  adversarial), which is the setting the authors evaluate; a deployment that mixes users' images in one
  batch gives one user a lever on the others' purification strength.
- ``mode=L-ref``: the variant an earlier advpure version used, with min/max from the reference alone and
  clamping at ``t_ceil``; adversarial inputs then get t far above t* (kept as an option, not the method).

All are finally clamped to ``[t_floor, t_ceil]`` (``t_floor`` = 1e-3, one DDPM step, so every sample is
purified by a valid, positive time; ``t_ceil`` = the model's trained t_max, 1 for a full-range model). The per-sample t replaces the shared t* of the
wrapped purifier (:class:`~advpure.defenses.diffpure.DiffPure` or any purifier whose ``purify`` takes
``t=`` as a per-sample tensor); all samples run in one batch with their own time grids.

Defaults: ``mu``, ``min``, ``max`` from the reference statistics, ``tau`` = the reference standard deviation
of ||EPS|| (so the sigmoid moves over about one clean spread), ``b = 0`` for SSNI-N and ``b = 0.005`` (5 steps)
for SSNI-L.

``differentiable=False`` (the authors' evaluation): t is computed without gradient at every call, so an
attack that calls the defense at every iteration gets a freshly chosen t. ``differentiable=True`` lets
the gradient flow through EPS into the continuous t (the second adaptive attack of the issue).
Cost: the wrapped purifier's network evaluations plus one per EPS level (20 by default).
"""

from __future__ import annotations

import os

import torch

from ..contracts import check_int, check_positive
from ..detect.eps import DEFAULT_MAX_BATCH, DEFAULT_T_LEVELS, EPSReference, _levels, eps_norm, reference_path
from ..specs import SpecContext, register
from .base import Purifier
from .diffusion_base import autocast_dtype

T_FLOOR = 1e-3
#: SSNI-L's bias in the authors' code: 5 of the 1000 DDPM steps
SSNI_L_BIAS = 5 / 1000
MODES = ("N", "L", "L-ref")


def ssni_n(s: torch.Tensor, *, mu: float, tau: float, t_star: float, b: float = 0.0) -> torch.Tensor:
    """SSNI-N: ``(t* + b) * sigmoid((s - mu) / tau)``; tau must be > 0."""
    check_positive(tau, "tau")
    return (t_star + b) * torch.sigmoid((s - mu) / tau)


def ssni_l(s: torch.Tensor, *, s_min: float, s_max: float, t_star: float, b: float = 0.0) -> torch.Tensor:
    """Linear reweighting ``t* (s - min) / (max - min) + b`` with given min/max (clipping is done by the caller)."""
    if not s_max > s_min:
        raise ValueError(f"SSNI-L: reference max ({s_max}) must exceed min ({s_min})")
    return t_star * (s - s_min) / (s_max - s_min) + b


def ssni_l_batch(s: torch.Tensor, *, ref_min: float, ref_max: float, t_star: float,
                 b: float = SSNI_L_BIAS) -> torch.Tensor:
    """SSNI-L as the authors normalise it: min and max over the clean reference together with the batch ``s``
    (N,), so the result lies in ``[b, t* + b]``. Differentiable in ``s`` (through the batch min/max too)."""
    if not ref_max > ref_min:
        raise ValueError(f"SSNI-L: reference max ({ref_max}) must exceed min ({ref_min})")
    lo = torch.minimum(s.min(), torch.as_tensor(ref_min, dtype=s.dtype, device=s.device))
    hi = torch.maximum(s.max(), torch.as_tensor(ref_max, dtype=s.dtype, device=s.device))
    return t_star * (s - lo) / (hi - lo) + b


class SSNI(Purifier):
    """Wrap a diffusion purifier so each sample gets its own noise level from ||EPS||.

    :meth:`replace` passes the changes that are no argument of SSNI (``n_steps``, ``sampler``, ...) on to the
    wrapped purifier, so ``with_steps``/``with_sampler`` give the same SSNI over a cheaper surrogate process.
    """

    def __init__(self, base: Purifier, *, reference: EPSReference, mode: str = "N", t_star: float | None = None,
                 tau: float | None = None, b: float | None = None, t_floor: float = T_FLOOR,
                 t_ceil: float | None = None, differentiable: bool = False, max_batch: int = DEFAULT_MAX_BATCH,
                 eps_autocast: str | torch.dtype | None = None) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"SSNI mode must be 'N' (sigmoid), 'L' (linear, the authors' batch normalisation) or "
                             f"'L-ref' (linear, reference-only min/max), got {mode!r}")
        for attr in ("eps_model", "schedule"):
            if not hasattr(base, attr):
                raise TypeError(f"SSNI wraps a diffusion purifier with .{attr}; got {type(base).__name__}")
        self.base = base
        self.reference = reference
        self.mode = mode
        self.t_star = float(t_star if t_star is not None else base.t)
        self.tau = check_positive(tau if tau is not None else reference.std, "tau")
        self.b = float(b if b is not None else (SSNI_L_BIAS if mode == "L" else 0.0))
        model_t_max = min(float(getattr(base.schedule, "t_max", 1.0)), float(getattr(base.eps_model, "t_max", 1.0)))
        t_ceil = model_t_max if t_ceil is None else t_ceil
        if not 0 < t_floor < t_ceil <= model_t_max:
            raise ValueError(f"SSNI: need 0 < t_floor < t_ceil <= the model's t_max ({model_t_max:g}), "
                             f"got t_floor={t_floor}, t_ceil={t_ceil}")
        self.t_floor, self.t_ceil = float(t_floor), float(t_ceil)
        self.t_levels = _levels(reference.t_levels or DEFAULT_T_LEVELS, base.schedule)
        self.differentiable = bool(differentiable)
        self.max_batch = check_int(max_batch, "max_batch")
        self.eps_autocast = autocast_dtype(eps_autocast, "eps_autocast")
        self.last_t: torch.Tensor | None = None  # the noise levels of the last call, for reports

    @property
    def stochastic(self) -> bool:  # type: ignore[override]
        return True

    @property
    def steps_arg(self) -> str | None:  # type: ignore[override]
        return self.base.steps_arg

    @property
    def sampler_arg(self) -> str | None:  # type: ignore[override]
        return self.base.sampler_arg

    @property
    def grad_checkpoint(self) -> bool:
        return bool(getattr(self.base, "grad_checkpoint", False))

    @grad_checkpoint.setter
    def grad_checkpoint(self, v: bool) -> None:
        self.base.grad_checkpoint = v

    @property
    def nfe(self) -> float:
        return float(self.base.nfe) + float(self.t_levels.numel())

    def noise_levels(self, s: torch.Tensor) -> torch.Tensor:
        """Per-sample t from ||EPS|| values ``s`` (N,)."""
        if self.mode == "N":
            t = ssni_n(s, mu=self.reference.mean, tau=self.tau, t_star=self.t_star, b=self.b)
        elif self.mode == "L":
            t = ssni_l_batch(s, ref_min=self.reference.min, ref_max=self.reference.max, t_star=self.t_star, b=self.b)
        else:
            t = ssni_l(s, s_min=self.reference.min, s_max=self.reference.max, t_star=self.t_star, b=self.b)
        return t.clamp(self.t_floor, self.t_ceil)

    def _levels(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        with torch.set_grad_enabled(self.differentiable and torch.is_grad_enabled()):
            s = eps_norm(self.base.eps_model, x, schedule=self.base.schedule, t_levels=self.t_levels,
                         generator=generator, max_batch=self.max_batch, autocast_dtype=self.eps_autocast)
        t = self.noise_levels(s if self.differentiable else s.detach())
        self.last_t = t.detach()
        return t

    def purify(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.base.purify(x, generator=generator, t=self._levels(x, generator))

    @property
    def schedule(self):
        """The wrapped purifier's diffusion schedule."""
        return self.base.schedule

    def purify_path(self, x: torch.Tensor, *, generator: torch.Generator | None = None, every: int = 0
                    ) -> list[tuple[torch.Tensor | float, torch.Tensor]]:
        """The wrapped purifier's reverse-process states (its ``purify_path``) at the per-sample noise levels, the
        same random draws as :meth:`purify`: what the deviated-reconstruction attack reads."""
        if not callable(getattr(self.base, "purify_path", None)):
            raise TypeError(f"SSNI: the wrapped {type(self.base).__name__} does not expose its reverse process "
                            "(purify_path)")
        return self.base.purify_path(x, generator=generator, every=every, t=self._levels(x, generator))

    def describe(self) -> dict:
        return {"name": f"SSNI-{self.mode}", "base": self.base.describe(), "t_star": self.t_star, "tau": self.tau,
                "b": self.b, "mu": self.reference.mean, "min": self.reference.min, "max": self.reference.max,
                "differentiable": self.differentiable, "t_levels": len(self.t_levels), "nfe": self.nfe,
                **({"eps_autocast": str(self.eps_autocast).removeprefix("torch.")} if self.eps_autocast else {})}


@register("defense", "ssni")
def _ssni(ctx: SpecContext, model: str | os.PathLike | None = None, ref: str | os.PathLike | None = None,
          mode: str = "N", t: float = 0.1, tau: float | None = None, b: float | None = None, base: str = "diffpure",
          differentiable: bool = False, steps: int | None = None, checkpoint: bool = False,
          t_ceil: float | None = None, eps_batch: int = DEFAULT_MAX_BATCH, eps_autocast: str | None = None,
          autocast: str | None = None) -> SSNI:
    """``ssni:model=PATH,ref=PATH.eps-ref.json,mode=N|L|L-ref,t=0.1,tau=..,b=..,t_ceil=..,differentiable=false,
    eps_batch=64,eps_autocast=none|bf16|fp16,autocast=none|bf16|fp16``.

    ``b`` defaults to 0 for SSNI-N and to 5 DDPM steps (0.005) for SSNI-L.

    ``t_ceil`` defaults to the model's trained t_max (1 for a full-range model).

    ``ref`` defaults to ``<model>.eps-ref.json`` (written by ``advpure eps reference``); its recorded checkpoint
    sha256 must match the model's.

    ``eps_batch``: images per network call of the EPS pass; ``eps_autocast=bf16`` runs the EPS pass in bfloat16
    (``benchmarks/ssni_overhead.py``: the change of ||EPS|| and of the chosen t), ``autocast=bf16`` the
    purification's network (as ``diffpure:autocast=``). Both off by default.
    """
    from .diffpure import DiffPure
    from .diffusion_base import DEFAULT_MODELS, resolve_denoiser

    if base != "diffpure":
        raise ValueError(f"ssni: base {base!r} not available from the command line; expected 'diffpure' "
                         "(in Python, wrap any purifier whose purify() takes t=)")
    autocast_dtype(eps_autocast, "eps_autocast")  # bad values fail before the model is loaded
    autocast_dtype(autocast)
    net, meta = resolve_denoiser(model, ctx)
    model_path = model or DEFAULT_MODELS.get(getattr(ctx, "dataset", None) or "")
    reference = EPSReference.load(ref or reference_path(model_path), checkpoint_sha256=meta.get("sha256"))
    purifier = DiffPure(net, t=t, n_steps=steps, grad_checkpoint=checkpoint, autocast=autocast)
    return SSNI(purifier, reference=reference, mode=mode, tau=tau, b=b, t_ceil=t_ceil, differentiable=differentiable,
                max_batch=eps_batch, eps_autocast=eps_autocast)
