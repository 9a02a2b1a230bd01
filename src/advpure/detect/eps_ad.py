"""EPS-AD (Zhang et al., ICML 2023, "Detecting Adversarial Data by Probing Multiple Perturbations Using
Expected Perturbation Score").

Pipeline (paper Sec. 4, Algorithm 1):

1. EPS features: ``EPS(x) = 1/K sum_k score(x_{t_k}, t_k)`` over K noise levels (paper: t = 1..20 of 1000),
   :func:`advpure.detect.eps.expected_perturbation_score`. Here each map is divided by one scalar ``scale``
   (the std of clean training EPS values) so the kernel bandwidths start in a sensible range; this is a
   fixed linear map and does not change what the kernel can separate.
2. A deep kernel (Liu et al. 2020, :class:`advpure.detect.kernels.DeepKernel` with the small CNN
   featurizer :class:`~advpure.detect.kernels.ConvFeaturizer`) trained by MMD-OPT on EPS features of clean
   vs adversarial training images: maximise J = MMD^2_u / sqrt(var + 1e-8) (Liu et al., Eq. 4).
3. Per-sample score, the MMD between the single-point sample {EPS(x)} and a clean reference set
   R = {r_1..r_n} of EPS features (paper Eq. 8 with one test point)::

       MMD^2(delta_x, R) = k(x, x) - 2/n sum_j k(x, r_j) + 1/(n(n-1)) sum_{j != l} k(r_j, r_l)

   For the deep kernel k(x, x) = 1, so this is a decreasing function of the mean similarity to R.
4. A threshold calibrated on held-out clean scores for a target false-positive rate (default 5%):
   the ceil((1 - fpr)(n + 1))-th smallest clean score (conformal quantile: P(clean score > t) <= fpr).

Alternative statistic (``statistic="witness"``), offered because a single-sample MMD only measures
"far from clean" in the kernel's geometry: the empirical MMD witness function between an adversarial
reference A and the clean reference R (Gretton et al. 2012, Sec. 2.3), ``w(x) = mean_j k(x, a_j) -
mean_j k(x, r_j)`` -- large when x is closer to adversarial EPS features than to clean ones.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from ..contracts import check_images, check_int, check_positive
from .conformal import conformal_min_scores, conformal_threshold
from .eps import DEFAULT_T_LEVELS, expected_perturbation_score
from .kernels import DeepKernel, build_deep_kernel, cat_embeddings
from .mmd import mmd2_unbiased, mmd2_variance, split_gram

log = logging.getLogger(__name__)

STATISTICS = ("mmd", "witness")


def eps_features(eps_model: Callable, x: torch.Tensor, *, schedule, t_levels: Sequence[float] = DEFAULT_T_LEVELS,
                 batch_size: int = 64, generator: torch.Generator | None = None,
                 progress: bool = False) -> torch.Tensor:
    """EPS maps (same shape as ``x``) of [0, 1] images, computed in batches without gradients."""
    check_images(x)
    check_int(batch_size, "batch_size")
    out = []
    with torch.no_grad():
        for i in tqdm(range(0, x.shape[0], batch_size), disable=not progress, desc="EPS", leave=False):
            out.append(expected_perturbation_score(eps_model, x[i:i + batch_size], schedule=schedule,
                                                   t_levels=t_levels, generator=generator))
    return torch.cat(out)


def auroc(neg: torch.Tensor, pos: torch.Tensor) -> float:
    """Area under the ROC curve for 'positive scores higher' (Mann-Whitney U / (n_neg n_pos), ties 1/2)."""
    neg, pos = neg.flatten().double(), pos.flatten().double()
    if neg.numel() == 0 or pos.numel() == 0:
        return float("nan")
    gt = (pos[:, None] > neg[None, :]).double().sum()
    eq = (pos[:, None] == neg[None, :]).double().sum()
    return float((gt + 0.5 * eq) / (neg.numel() * pos.numel()))


def tpr_at(pos: torch.Tensor, threshold: float) -> float:
    return float((pos.flatten() > threshold).double().mean()) if pos.numel() else float("nan")


@dataclass
class KernelHistory:
    objective: list[float] = field(default_factory=list)
    mmd2: list[float] = field(default_factory=list)


def train_eps_kernel(kernel: DeepKernel, f_clean: torch.Tensor, f_adv: torch.Tensor, *, epochs: int = 200,
                     lr: float = 1e-3, batch_size: int | None = None, eps: float = 1e-8, seed: int = 0,
                     progress: bool = False) -> KernelHistory:
    """MMD-OPT on EPS features: maximise J = MMD^2_u(clean, adv) / sqrt(var + eps) (Liu et al. 2020, Eq. 4).

    EPS features are unbounded real maps, so this loop does not require [0, 1] inputs (unlike
    :func:`advpure.detect.mmd_opt.train_kernel`, which trains on images); the objective is the same
    (:func:`~advpure.detect.mmd.mmd2_unbiased`, :func:`~advpure.detect.mmd.mmd2_variance`).
    """
    kernel.check_input(f_clean, "clean EPS features")
    kernel.check_input(f_adv, "adversarial EPS features")
    if f_clean.shape[0] != f_adv.shape[0]:
        raise ValueError(f"train_eps_kernel: equal clean and adversarial counts required, got {f_clean.shape[0]} "
                         f"and {f_adv.shape[0]}")
    n = f_clean.shape[0]
    if n < 4:
        raise ValueError(f"train_eps_kernel: need at least 4 clean/adversarial pairs, got {n}")
    check_int(epochs, "epochs")
    check_positive(lr, "lr")
    bs = n if batch_size is None else check_int(batch_size, "batch_size", minimum=2)
    if bs > n:
        raise ValueError(f"batch_size: expected 2..{n} (the training sample size), got {bs}")
    torch.manual_seed(seed)  # dropout in the featurizer
    kernel.init_sigma_phi(f_clean[:500], f_adv[:500])
    opt = torch.optim.Adam([p for p in kernel.parameters() if p.requires_grad], lr=lr)
    g = torch.Generator().manual_seed(seed)
    hist = KernelHistory()
    kernel.train()
    for _ in tqdm(range(epochs), disable=not progress, desc="MMD-OPT (EPS)"):
        perm = torch.randperm(n, generator=g) if bs < n else torch.arange(n)
        for i in range(0, n - bs + 1, bs):
            idx = perm[i:i + bs]
            e = cat_embeddings(kernel.embed(f_clean[idx]), kernel.embed(f_adv[idx]))
            Kxx, Kyy, Kxy = split_gram(kernel.matrix(e, e), bs)
            mmd2 = mmd2_unbiased(Kxx, Kyy, Kxy)
            J = mmd2 / torch.sqrt(mmd2_variance(Kxx, Kyy, Kxy).clamp_min(0) + eps)
            opt.zero_grad()
            (-J).backward()
            opt.step()
        hist.objective.append(float(J.detach()))
        hist.mmd2.append(float(mmd2.detach()))
    kernel.eval()
    return hist


class EPSAD(nn.Module):
    """EPS-AD detector: ``score(x)`` (higher = more adversarial), ``calibrate(clean)``, ``detect(x)``.

    Parameters:
        eps_model, schedule: the diffusion model (``eps_model(x_t, t)`` contract) and its VP schedule.
        kernel: a :class:`DeepKernel` on EPS features (``input_shape`` = image shape).
        reference: clean reference EPS features (already divided by ``scale``), at least 2.
        adv_reference: adversarial EPS features (for ``statistic="witness"`` only).
        scale: the scalar EPS maps are divided by before the kernel (default 1).
        t_levels: EPS noise levels (paper: t = 1..20 of 1000).
        statistic: ``"mmd"`` (paper: single-sample MMD^2 against the reference) or ``"witness"``.
    """

    def __init__(self, eps_model: Callable, kernel: DeepKernel, reference: torch.Tensor, *, schedule,
                 adv_reference: torch.Tensor | None = None, scale: float = 1.0,
                 t_levels: Sequence[float] = DEFAULT_T_LEVELS, statistic: str = "mmd",
                 batch_size: int = 64) -> None:
        super().__init__()
        if statistic not in STATISTICS:
            raise ValueError(f"statistic: expected one of {', '.join(STATISTICS)}, got {statistic!r}")
        kernel.check_input(reference, "reference EPS features")
        if reference.shape[0] < 2:
            raise ValueError(f"reference EPS features: the single-sample MMD needs at least 2 clean reference "
                             f"features, got {reference.shape[0]}")
        if statistic == "witness":
            if adv_reference is None:
                raise ValueError("statistic='witness' needs adv_reference (adversarial EPS features)")
            kernel.check_input(adv_reference, "adversarial reference EPS features")
            if adv_reference.shape[0] < 1:
                raise ValueError("adv_reference: need at least 1 adversarial EPS feature")
        self.eps_model = eps_model
        self.schedule = schedule
        self.kernel = kernel.eval()
        for p in self.kernel.parameters():
            p.requires_grad_(False)
        self.scale = check_positive(float(scale), "scale")
        self.t_levels = tuple(float(t) for t in t_levels)
        self.statistic = statistic
        self.batch_size = check_int(batch_size, "batch_size")
        self.threshold: float | None = None
        with torch.no_grad():
            self._ref = kernel.embed(reference)
            Krr = kernel.matrix(self._ref, self._ref)
            n = Krr.shape[0]
            self._ref_term = float((Krr.sum() - Krr.diagonal().sum()) / (n * (n - 1)))
            self._adv = kernel.embed(adv_reference) if adv_reference is not None else None

    def features(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Scaled EPS maps of [0, 1] images."""
        return eps_features(self.eps_model, x, schedule=self.schedule, t_levels=self.t_levels,
                            batch_size=self.batch_size, generator=generator) / self.scale

    def score_features(self, f: torch.Tensor, *, statistic: str | None = None) -> torch.Tensor:
        """Per-sample statistic of (scaled) EPS features; higher = more adversarial."""
        stat = statistic or self.statistic
        if stat not in STATISTICS:
            raise ValueError(f"statistic: expected one of {', '.join(STATISTICS)}, got {stat!r}")
        self.kernel.check_input(f, "EPS features")
        with torch.no_grad():
            e = self.kernel.embed(f)
            kr = self.kernel.matrix(e, self._ref).mean(1)
            if stat == "mmd":
                kxx = ((1 - self.kernel.epsilon) * 1.0 + self.kernel.epsilon)  # k(x, x) of the deep kernel
                return kxx - 2 * kr + self._ref_term
            if self._adv is None:
                raise ValueError("statistic='witness' needs an adversarial reference set (adv_reference)")
            return self.kernel.matrix(e, self._adv).mean(1) - kr

    def score(self, x: torch.Tensor, *, generator: torch.Generator | None = None,
              statistic: str | None = None) -> torch.Tensor:
        check_images(x)
        return self.score_features(self.features(x, generator=generator), statistic=statistic)

    def calibrate(self, clean: torch.Tensor, *, fpr: float = 0.05, generator: torch.Generator | None = None) -> float:
        """Threshold = conformal (1 - fpr) quantile of held-out clean scores (images disjoint from the reference)."""
        check_images(clean, name="calibration images")
        need = conformal_min_scores(fpr)
        if clean.shape[0] < need:
            raise ValueError(f"calibration: {clean.shape[0]} clean images cannot give a false-positive rate of "
                             f"{fpr}; need at least {need}")
        self.threshold = conformal_threshold(self.score(clean, generator=generator), fpr)
        return self.threshold

    def detect(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.threshold is None:
            raise ValueError("EPS-AD: no threshold; call calibrate(clean_images) first")
        return self.score(x, generator=generator) > self.threshold


def build_eps_kernel(input_shape: Sequence[int], *, width: int = 16, out_dim: int = 32) -> DeepKernel:
    """The deep kernel on EPS maps: :class:`ConvFeaturizer` (small CNN) + Gaussian on the raw maps."""
    return build_deep_kernel(input_shape=input_shape, featurizer="cnn", cnn_width=width, cnn_out_dim=out_dim)


__all__ = ["EPSAD", "auroc", "build_eps_kernel", "conformal_threshold", "eps_features", "tpr_at",
           "train_eps_kernel"]
