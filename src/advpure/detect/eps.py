"""Expected perturbation score (EPS; Zhang et al., ICML 2023 "Detecting adversarial data by probing
multiple perturbations using expected perturbation score"; used by SSNI, Sun et al., ICML 2025).

For an image x (mapped to [-1, 1]) and noise levels t_1..t_K of the VP diffusion::

    x_{t_k} = alpha(t_k) x + std(t_k) z_k,     z_k ~ N(0, I)           (one draw per level)
    EPS(x)  = 1/K sum_k score(x_{t_k}, t_k),   score = -eps_model(x_{t_k}, t_k) / std(t_k)

and the statistic is ``||EPS(x)||_2`` over all pixels. SSNI's setting (Sec. 4): t = 1..20 of 1000
(t_S = 0.02), i.e. continuous t_k = k / 1000. All levels and all samples go through the network in
batched calls of ``max_batch`` images (default 64: on CPU larger calls cost more per image, 1.34x DiffPure's time
for SSNI with calls of 1280 CIFAR-10 images against about 1.2x with 64, ``benchmarks/ssni_overhead.py``; and the
pass then needs no more activation memory than a purification step of a 64-image batch).
``autocast_dtype=torch.bfloat16`` runs the network calls under ``torch.autocast`` (measured there too).

Reference statistics (:class:`EPSReference`) summarise ||EPS|| over clean data; they belong to one
diffusion checkpoint and record its sha256, which is checked when they are loaded.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..contracts import check_images, check_int

#: SSNI / EPS-AD default: t = 1..20 of 1000
DEFAULT_T_LEVELS = tuple(k / 1000 for k in range(1, 21))
#: images per network call of the EPS pass (benchmarks/ssni_overhead.py)
DEFAULT_MAX_BATCH = 64


def _levels(t_levels: Sequence[float] | torch.Tensor, schedule) -> torch.Tensor:
    t = torch.as_tensor(t_levels, dtype=torch.float32).flatten()
    if t.numel() == 0:
        raise ValueError("t_levels: need at least one noise level")
    t_max = float(getattr(schedule, "t_max", 1.0))
    if not bool(torch.isfinite(t).all()) or float(t.min()) <= 0 or float(t.max()) > t_max:
        raise ValueError(f"t_levels: noise levels must lie in (0, {t_max}] for this diffusion model, got "
                         f"[{float(t.min()):.4g}, {float(t.max()):.4g}]")
    return t


def expected_perturbation_score(
    eps_model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    *,
    schedule,
    t_levels: Sequence[float] | torch.Tensor = DEFAULT_T_LEVELS,
    generator: torch.Generator | None = None,
    max_batch: int = DEFAULT_MAX_BATCH,
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """EPS(x) for a batch of [0, 1] images: a tensor of x's shape (in the model's [-1, 1] scale).

    Differentiable with respect to x when called with gradients enabled (the SSNI adaptive attack uses it).
    ``autocast_dtype`` (``torch.bfloat16`` or ``torch.float16``) runs the network calls under ``torch.autocast``
    on x's device; the noise, the scaling and the mean stay in x's dtype.
    """
    check_images(x)
    check_int(max_batch, "max_batch")
    if autocast_dtype not in (None, torch.bfloat16, torch.float16):
        raise ValueError(f"autocast_dtype: expected torch.bfloat16, torch.float16 or None (x's dtype), "
                         f"got {autocast_dtype!r}")
    t = _levels(t_levels, schedule).to(x.device)
    n, k = x.shape[0], t.numel()
    z0 = 2.0 * x - 1.0
    # level-major layout: rows [k*n:(k+1)*n] hold level k for every sample
    tt = t.repeat_interleave(n).to(x.dtype)
    noise = torch.randn((k * n, *x.shape[1:]), generator=generator, device=x.device, dtype=x.dtype)
    alpha = schedule.alpha(tt).to(x.dtype).view(-1, 1, 1, 1)
    std = schedule.std(tt).to(x.dtype).view(-1, 1, 1, 1)
    xt = alpha * z0.repeat(k, 1, 1, 1) + std * noise
    scores = []
    for i in range(0, k * n, max_batch):
        sl = slice(i, i + max_batch)
        with torch.autocast(x.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            e = eps_model(xt[sl], tt[sl])
        scores.append(-e.to(x.dtype) / std[sl])
    score = torch.cat(scores).view(k, n, *x.shape[1:])
    return score.mean(0)


def eps_norm(eps_model, x: torch.Tensor, **kw) -> torch.Tensor:
    """``||EPS(x)||_2`` per image, shape (N,)."""
    return expected_perturbation_score(eps_model, x, **kw).flatten(1).norm(dim=1)


@dataclass
class EPSReference:
    """||EPS|| over a clean reference set, tied to one diffusion checkpoint by its sha256."""

    mean: float
    std: float
    min: float
    max: float
    quantiles: dict[str, float]
    norms: list[float]
    t_levels: list[float]
    n: int
    checkpoint_sha256: str | None
    dataset: str | None = None
    command: str | None = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_norms(cls, norms: torch.Tensor, *, t_levels: Sequence[float], checkpoint_sha256: str | None,
                   dataset: str | None = None, command: str | None = None) -> "EPSReference":
        v = norms.detach().double().cpu()
        qs = {f"{q:.2f}": float(torch.quantile(v, q)) for q in (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)}
        return cls(mean=float(v.mean()), std=float(v.std()) if len(v) > 1 else 0.0, min=float(v.min()),
                   max=float(v.max()), quantiles=qs, norms=[float(a) for a in v], t_levels=[float(a) for a in t_levels],
                   n=len(v), checkpoint_sha256=checkpoint_sha256, dataset=dataset, command=command)

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike, *, checkpoint_sha256: str | None = None) -> "EPSReference":
        """Load and check that the statistics belong to the diffusion checkpoint with ``checkpoint_sha256``."""
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"EPS reference statistics {p} do not exist (compute them with "
                                    "`advpure eps reference`, or give the path of existing ones)")
        ref = cls(**json.loads(p.read_text()))
        if checkpoint_sha256 is not None and ref.checkpoint_sha256 != checkpoint_sha256:
            raise ValueError(
                f"{p}: EPS reference statistics were computed with diffusion checkpoint sha256 "
                f"{ref.checkpoint_sha256}, but the model in use has {checkpoint_sha256}; recompute them for this model")
        return ref


def reference_path(checkpoint: str | os.PathLike) -> Path:
    """Where the reference statistics of a diffusion checkpoint live: ``<checkpoint>.eps-ref.json`` (for a published
    checkpoint, ``score_sde:DIR/checkpoint_8.pth[@config.json]``: ``DIR/checkpoint_8.eps-ref.json``), or
    ``eps-ref.json`` inside a diffusers folder."""
    from ..diffusion.models import parse_published

    published = parse_published(checkpoint)
    p = published[1] if published is not None else Path(checkpoint)
    return p.with_name(p.stem + ".eps-ref.json") if published is not None or p.is_file() else p / "eps-ref.json"


def compute_reference(eps_model, x: torch.Tensor, *, schedule, checkpoint_sha256: str | None,
                      t_levels: Sequence[float] = DEFAULT_T_LEVELS, batch_size: int = 64, seed: int = 0,
                      dataset: str | None = None, command: str | None = None, progress: bool = True) -> EPSReference:
    """||EPS|| statistics of clean images ``x`` (the SSNI paper uses 5,000 training images)."""
    from tqdm import tqdm

    g = torch.Generator(device=x.device).manual_seed(seed)
    norms = []
    with torch.no_grad():
        for i in tqdm(range(0, len(x), batch_size), desc="EPS reference", disable=not progress, leave=False):
            norms.append(eps_norm(eps_model, x[i:i + batch_size], schedule=schedule, t_levels=t_levels, generator=g))
    return EPSReference.from_norms(torch.cat(norms), t_levels=t_levels, checkpoint_sha256=checkpoint_sha256,
                                   dataset=dataset, command=command)
