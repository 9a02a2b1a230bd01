"""Detector-aware adaptive attacks on detect-then-denoise defenses such as DAD (Zhang et al., ICML 2025).

DAD routes an input along one of two paths: inputs the MMD detector accepts reach the classifier
unchanged (``f(x)``); rejected inputs are denoised first (``f(g(x + n))``). An adaptive attacker can

(a) :class:`DADPathPGD` with ``mmd_weight=1`` (the DAD authors' adaptive attack, ``dad-adaptive``): ascend
    CE(f(g(x + n)), y) + w * MMD^2_u(X_adv, R), the kernel's MMD between the adversarial batch and the clean
    reference (EOT over the denoiser's noise). Raising the MMD makes detection, hence the denoiser path,
    certain, and the CE term attacks that path.
(c) :class:`DADPathPGD` with ``mmd_weight=0`` (``dad-denoiser``): PGD with full gradients through the
    denoiser, i.e. assume the detector fires.
(b) :class:`DetectorAwarePGD` (``detector-aware``): attack the path the defense takes for *undetected*
    inputs, ``f(x)``, while keeping the detector statistic below its threshold: maximise the Lagrangian

        L(x, lam) = sum_i CE(f(x_i), y_i) - N * lam * relu(S(x) - m T(x)) / |T(x)|

    (S the detector statistic, T its decision threshold, m < 1 a safety margin), with dual updates
    lam <- 2 lam while the constraint is violated and lam <- lam / 1.5 otherwise. The returned point is
    the best *undetected and misclassified* iterate (per sample in per-sample mode; in batch mode the
    undetected iterate with the most misclassified images, improved per sample when the combination stays
    undetected), else the final iterate.

Detector statistics are given by a :class:`DetectorStatistic`; :func:`dad_statistic` builds the one of a
:class:`~advpure.defenses.dad.DAD` instance (batch mode: MMD^2_u of the batch against the reference, with
threshold the permutation null's (1 - alpha) quantile at the current point or the calibrated threshold;
sample mode: the per-sample MMD score and its calibrated threshold).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..contracts import check_int, check_positive
from ..data import DEFAULT_LINF_EPS
from .base import FirstSuccess, PathAttack, ascent_step, check_step_size, random_start


# --------------------------------------------------------------------------- detector statistics
class DetectorStatistic:
    """A differentiable detector statistic: inputs are flagged when ``statistic(x) > threshold(x)``.

    ``per_sample``: ``statistic`` returns (N,) and each input is judged alone; otherwise it returns a
    scalar and the whole batch is judged at once. ``threshold(x)`` is evaluated without gradients (it may
    depend on x, as a permutation test's null quantile does) and returns a float or an (N,) tensor.
    """

    def __init__(self, statistic: Callable[[torch.Tensor], torch.Tensor],
                 threshold: Callable[[torch.Tensor], float | torch.Tensor] | float, *, per_sample: bool,
                 min_batch: int = 1) -> None:
        self._statistic = statistic
        self._threshold = threshold
        self.per_sample = bool(per_sample)
        self.min_batch = check_int(min_batch, "min_batch", minimum=1)

    def statistic(self, x: torch.Tensor) -> torch.Tensor:
        return self._statistic(x)

    def threshold(self, x: torch.Tensor) -> torch.Tensor:
        if callable(self._threshold):
            with torch.no_grad():
                t = self._threshold(x)
        else:
            t = self._threshold
        return torch.as_tensor(t, dtype=x.dtype, device=x.device)

    def flags(self, x: torch.Tensor, *, margin: float = 1.0) -> torch.Tensor:
        """(N,) booleans: would the statistic exceed ``margin`` times the threshold?"""
        with torch.no_grad():
            s = self.statistic(x)
            t = self.threshold(x)
            over = s > _margin_threshold(t, margin)
        return over if self.per_sample else over.expand(x.shape[0]).clone()


def _margin_threshold(t: torch.Tensor, margin: float) -> torch.Tensor:
    """m * T for a positive threshold, T - (1 - m) |T| in general (stays below T for any sign)."""
    return t - (1.0 - margin) * t.abs()


def dad_statistic(dad, *, n_perm: int = 200, seed: int = 0) -> DetectorStatistic:
    """The detector statistic of a :class:`~advpure.defenses.dad.DAD` instance, differentiable in x.

    Batch mode: S = MMD^2_u([x; reference[:m]]) with the trained kernel; T = the calibrated threshold for
    batch size m (``test='threshold'``), else the (1 - alpha) quantile of ``n_perm`` permutation statistics
    of the pooled sample at the current x (what the permutation / wild-bootstrap test compares S with).
    Sample mode: S_i = k(x_i, x_i) - 2 mean_j k(x_i, r_j) + const, T = the calibrated per-sample threshold.
    """
    from ..detect.kernels import cat_embeddings, index_embedding
    from ..detect.mmd import mmd2_unbiased, permutation_stats, split_gram

    kernel = dad.kernel
    ref_emb = dad._ref_emb
    if dad.mode == "sample":
        if dad.sample_threshold is None:
            raise ValueError("DAD sample mode: no threshold; call calibrate_sample(clean_images) first")

        def stat(x: torch.Tensor) -> torch.Tensor:
            ex = kernel.embed(x)
            kxx = (1 - kernel.epsilon) + kernel.epsilon  # k(x, x) of the deep kernel
            return kxx - 2 * kernel.matrix(ex, ref_emb).mean(1) + dad._ref_term

        return DetectorStatistic(stat, float(dad.sample_threshold), per_sample=True)

    n_ref = dad.reference.shape[0]

    def gram(x: torch.Tensor) -> torch.Tensor:
        m = x.shape[0]
        if m > n_ref:
            raise ValueError(f"DAD batch mode: batch of {m} images but only {n_ref} reference images")
        e = cat_embeddings(kernel.embed(x), index_embedding(ref_emb, slice(0, m)))
        return kernel.matrix(e, e)

    def stat(x: torch.Tensor) -> torch.Tensor:
        return mmd2_unbiased(*split_gram(gram(x), x.shape[0]))

    if dad.test == "threshold":
        def thr(x: torch.Tensor) -> float:
            m = x.shape[0]
            if m not in dad.batch_thresholds:
                raise ValueError(f"DAD threshold test: no threshold calibrated for batch size {m}")
            return dad.batch_thresholds[m]
    else:
        g = torch.Generator().manual_seed(seed)

        def thr(x: torch.Tensor) -> torch.Tensor:
            null = permutation_stats(gram(x), x.shape[0], n_perm=n_perm, generator=g)
            return torch.quantile(null, 1 - dad.alpha)

    from ..detect.mmd import min_sample_size

    return DetectorStatistic(stat, thr, per_sample=False, min_batch=min_sample_size(dad.alpha))


def _dad_parts(model: nn.Module):
    defense = getattr(model, "defense", None)
    clf = getattr(model, "classifier", None)
    if defense is None or clf is None or not hasattr(defense, "denoise") or not hasattr(defense, "kernel"):
        raise TypeError(f"expected a DefendedClassifier wrapping a DAD defense (with .kernel and .denoise), got "
                        f"{type(model).__name__} with defense {type(defense).__name__}")
    return defense, clf


# --------------------------------------------------------------------------- (a) and (c): the denoiser path
class DADPathPGD(PathAttack):
    """linf/l2 PGD on CE(f(g(x + n)), y) + mmd_weight * MMD^2_u(x, R) through DAD's denoiser, EOT over n.

    ``mmd_weight=1`` is the DAD authors' adaptive attack (CE + MMD), ``0`` the plain full-gradient attack
    on the denoiser path. Defaults: 100 steps, step size 2.5 eps / steps (Madry et al.), EOT 8, random start.
    The model must be a DefendedClassifier around a DAD defense; the MMD term is the batch's MMD^2_u in batch
    mode and the mean per-sample score in sample mode. Against a deterministic model (DAD without noise and with
    a deterministic decision) misclassified clean images are returned unchanged and ``early_stop`` keeps each
    image's first iterate that fools the real model (the protocol of :mod:`advpure.attacks.base`).
    """

    name = "dad-path-pgd"

    def __init__(self, *, norm: str = "linf", eps: float = DEFAULT_LINF_EPS["digits"], steps: int = 100,
                 step_size: float | None = None, mmd_weight: float = 1.0, eot: int = 8, random_start: bool = True, seed: int | None = None) -> None:
        super().__init__(eps=eps, norm=norm, eot=eot, seed=seed)
        self.steps = check_int(steps, "steps", minimum=1)
        self.step_size = check_step_size(step_size)
        self.mmd_weight = check_positive(mmd_weight, "mmd_weight", allow_zero=True)
        self.random_start = bool(random_start)

    def _run(self, model, x, y, *, logits0, eot, generator):
        dad, clf = _dad_parts(model)
        det = dad_statistic(dad) if self.mmd_weight > 0 else None
        if det is not None and x.shape[0] < 2:
            raise ValueError(f"{self.name}: the MMD term needs a batch of at least 2 images, got {x.shape[0]}")
        alpha = self.step_size or 2.5 * self.eps / self.steps
        x_adv = random_start(x, norm=self.norm, eps=self.eps, generator=generator) if self.random_start else x.clone()
        # deterministic model (the protocol of advpure.attacks.base): misclassified clean images stay as they are,
        # and with early_stop each image keeps the first iterate that fools the real model
        skip = self.skip_mask(logits0, y)
        tracker = FirstSuccess(x) if self.early_stop_active else None
        for _ in range(self.steps):
            xr = x_adv.detach().repeat(eot, 1, 1, 1).requires_grad_(True)
            with torch.enable_grad():
                logits = clf(dad.denoise(xr, generator=generator))
                self._path_images += xr.shape[0]
                ce = F.cross_entropy(logits, y.repeat(eot), reduction="none").view(eot, -1).mean(0)
                obj = ce.mean()
                if det is not None:
                    stat = det.statistic(xr[: x.shape[0]])  # batch mode: a scalar; sample mode: (N,)
                    obj = obj + self.mmd_weight * (stat.mean() if det.per_sample else stat)
                grad, = torch.autograd.grad(obj, xr)
            grad = grad.view(eot, *x.shape).sum(0)
            x_adv = ascent_step(x_adv, grad, x, norm=self.norm, eps=self.eps, alpha=alpha)
            if tracker is not None:
                with torch.no_grad():
                    tracker.update(x_adv, model(x_adv).argmax(1) != y)
        self.last_stats.iterations = self.steps
        if tracker is not None:
            x_adv = tracker.result(x_adv)
        return torch.where(skip.view(-1, *([1] * (x.dim() - 1))), x, x_adv)


# --------------------------------------------------------------------------- (b) stay undetected
class DetectorAwarePGD(PathAttack):
    """Maximise the classifier's loss on the undetected path under the constraint S(x) <= margin * T(x).

    Options: ``steps`` (100), ``step_size`` (2.5 eps / steps), ``margin`` (0.5: stay well below the threshold,
    against the randomness of resampling tests; on digits DAD 0.9 left 22% of batches flagged by the permutation
    test, 0.5 none), ``lam0`` (1.0, initial multiplier), ``random_start``
    (False: start from the clean, undetected point), ``detector`` (a :class:`DetectorStatistic`; default
    :func:`dad_statistic` of ``model.defense``), ``classifier`` (the undetected path; default
    ``model.classifier``).
    """

    name = "detector-aware"

    def __init__(self, *, norm: str = "linf", eps: float = DEFAULT_LINF_EPS["digits"], steps: int = 100,
                 step_size: float | None = None, margin: float = 0.5, lam0: float = 1.0, random_start: bool = False,
                 detector: DetectorStatistic | None = None, classifier: nn.Module | None = None,
                 seed: int | None = None) -> None:
        super().__init__(eps=eps, norm=norm, seed=seed)
        self.steps = check_int(steps, "steps", minimum=1)
        self.step_size = check_step_size(step_size)
        if not 0 < margin <= 1:
            raise ValueError(f"margin: expected a fraction in (0, 1], got {margin}")
        self.margin = float(margin)
        self.lam0 = check_positive(lam0, "lam0")
        self.random_start = bool(random_start)
        self._detector = detector
        self._classifier = classifier
        self.last_undetected: torch.Tensor | None = None

    def _parts(self, model):
        det, clf = self._detector, self._classifier
        if det is None or clf is None:
            dad, dclf = _dad_parts(model)
            det = det or dad_statistic(dad, seed=self.seed or 0)
            clf = clf or dclf
        return det, clf

    def _run(self, model, x, y, *, logits0, eot, generator):
        det, clf = self._parts(model)
        n = x.shape[0]
        if n < det.min_batch:
            raise ValueError(f"{self.name}: the batch detector needs batches of at least {det.min_batch} images "
                             f"(its test cannot reject smaller ones), got {n}")
        alpha = self.step_size or 2.5 * self.eps / self.steps
        x_adv = random_start(x, norm=self.norm, eps=self.eps, generator=generator) if self.random_start else x.clone()
        lam = torch.full((n,) if det.per_sample else (), self.lam0)
        found = torch.zeros(n, dtype=torch.bool)
        best = x_adv.clone()  # per sample: first undetected & misclassified iterate
        batch_best, batch_count = None, -1
        for it in range(self.steps + 1):  # the last pass only evaluates the final iterate
            x_adv.requires_grad_(True)
            with torch.enable_grad():
                logits = clf(x_adv)
                self._path_images += n
                ce = F.cross_entropy(logits, y, reduction="none")
                s = det.statistic(x_adv)
                t = det.threshold(x_adv)
                tm = _margin_threshold(t, self.margin)
                viol = F.relu(s - tm) / (t.abs() + 1e-12)
                # batch: one constraint for the batch, weighted like the N summed CE terms
                obj = ce.sum() - ((lam * viol).sum() if det.per_sample else n * lam * viol)
                grad, = torch.autograd.grad(obj, x_adv)
            with torch.no_grad():
                ok = (s <= tm).expand(n) if not det.per_sample else s <= tm
                wrong = logits.argmax(1) != y
                new = ok & wrong & ~found
                best[new], found = x_adv.detach()[new], found | new
                if not det.per_sample and bool(ok.all()) and int(wrong.sum()) > batch_count:
                    batch_best, batch_count = x_adv.detach().clone(), int(wrong.sum())
                lam = torch.where(s > tm, lam * 2.0, (lam / 1.5).clamp_min(1e-3))
            if it == self.steps:
                break
            x_adv = ascent_step(x_adv, grad, x, norm=self.norm, eps=self.eps, alpha=alpha)
        self.last_stats.iterations = self.steps
        if det.per_sample:
            out = torch.where(found.view(-1, 1, 1, 1), best, x_adv)
        else:
            out = batch_best if batch_best is not None else x_adv
            if batch_best is not None and bool(found.any()):
                combined = torch.where(found.view(-1, 1, 1, 1), best, batch_best)
                if not bool(det.flags(combined, margin=self.margin).any()):
                    out = combined
        self.last_undetected = ~det.flags(out, margin=1.0)
        return out


__all__ = ["DADPathPGD", "DetectorAwarePGD", "DetectorStatistic", "dad_statistic"]
