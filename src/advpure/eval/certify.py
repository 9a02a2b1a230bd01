"""Randomized smoothing (Cohen, Rosenfeld & Kolter, ICML 2019) and denoised smoothing (Carlini et al., ICLR 2023).

The smoothed classifier is ``g(x) = argmax_c P(f(x + sigma * eps) = c)``, ``eps ~ N(0, I)``.
If the top class has probability ``pA > 1/2`` then ``g`` is constant within the L2 ball of radius
``sigma * Phi^-1(pA)`` (Cohen et al., Theorem 1 with pB = 1 - pA).

- :func:`certify` is CERTIFY (Cohen et al., Algorithm "certify"): ``n0`` noisy samples select the
  class cA, ``n`` fresh samples count its votes k, ``pA_lower`` is the one-sided Clopper-Pearson
  lower confidence bound at level ``1 - alpha`` (``Beta.ppf(alpha, k, n - k + 1)``); abstain (-1) if
  ``pA_lower < 1/2``, else return cA with radius ``sigma * Phi^-1(pA_lower)``.
- :func:`predict` is PREDICT: the top two counts nA, nB of ``n`` samples; abstain unless the
  two-sided binomial test of nA out of nA + nB at p = 1/2 has p-value <= alpha.

Noise space: the noise is added in [0, 1] pixel space (as Cohen et al. did on CIFAR-10, before the
classifier's normalisation), and noisy images are *not* clipped; the models' [0, 1] input checks are
switched off while sampling. Radii are therefore L2 distances in [0, 1] pixel units. Carlini et al.
(2023) state sigma in the diffusion model's [-1, 1] space, where the same noise has twice the std:
``sigma_diffusion = 2 * sigma``.

The one-shot diffusion denoiser of denoised smoothing is :class:`advpure.defenses.one_shot.OneShotDenoiser`
(a purifier: ``DefendedClassifier(classifier, OneShotDenoiser(...))`` is the base classifier to certify).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
import torch.nn as nn
from scipy.stats import beta as _beta
from scipy.stats import binomtest, norm

from ..contracts import check_images, check_int, check_labels, check_logits, check_positive

#: Cohen et al. (2019) CIFAR-10 defaults
DEFAULT_N0 = 100
DEFAULT_N = 100_000
DEFAULT_ALPHA = 0.001


def min_samples_certify(alpha: float) -> int:
    """Smallest n for which CERTIFY can ever certify: all n votes give ``pA_lower = alpha^(1/n)``,
    which exceeds 1/2 iff ``n > log2(1/alpha)``."""
    return int(math.floor(math.log2(1.0 / alpha))) + 1


def min_samples_predict(alpha: float) -> int:
    """Smallest n for which PREDICT can ever answer: the two-sided p-value of n-vs-0 votes is
    ``2 * 2^-n``, which must be <= alpha, i.e. ``n >= log2(2/alpha)``."""
    return int(math.ceil(math.log2(2.0 / alpha) - 1e-12))


def clopper_pearson_lower(k: int, n: int, alpha: float) -> float:
    """One-sided (1 - alpha) Clopper-Pearson lower bound on a binomial proportion: Beta.ppf(alpha, k, n-k+1)."""
    if k <= 0:
        return 0.0
    return float(_beta.ppf(alpha, k, n - k + 1))


@contextmanager
def _unchecked_inputs(model: nn.Module) -> Iterator[None]:
    """Turn off the [0, 1] input checks of every submodule that has them (noisy inputs leave [0, 1])."""
    saved = [(m, m.validate_inputs) for m in model.modules() if hasattr(m, "validate_inputs")]
    try:
        for m, _ in saved:
            m.validate_inputs = False
        yield
    finally:
        for m, v in saved:
            m.validate_inputs = v


@torch.no_grad()
def sample_counts(model: nn.Module, x1: torch.Tensor, *, sigma: float, num: int, batch_size: int,
                  num_classes: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Class counts of ``model`` on ``num`` noisy copies ``x1 + sigma * eps`` of one image (1CHW or CHW)."""
    if x1.dim() == 3:
        x1 = x1.unsqueeze(0)
    counts = torch.zeros(num_classes, dtype=torch.long)
    dev = x1.device
    remaining = num
    with _unchecked_inputs(model):
        while remaining > 0:
            b = min(batch_size, remaining)
            eps = torch.randn((b, *x1.shape[1:]), generator=generator, device=generator.device if generator else dev)
            logits = check_logits(model(x1.expand(b, *x1.shape[1:]) + sigma * eps.to(dev)), b)
            if logits.shape[1] != num_classes:
                raise ValueError(f"model returned {logits.shape[1]} classes, expected num_classes={num_classes}")
            counts += torch.bincount(logits.argmax(1).cpu(), minlength=num_classes)
            remaining -= b
    return counts


@dataclass
class Certification:
    """Per-image results of :func:`certify`; ``prediction`` is -1 where the smoothed classifier abstains."""

    prediction: torch.Tensor  # (N,) int64
    radius: torch.Tensor  # (N,) float64, 0 where abstained
    p_lower: torch.Tensor  # (N,) float64, Clopper-Pearson lower bound on pA
    counts: torch.Tensor  # (N,) int64, votes for the selected class among the n samples
    sigma: float
    n0: int
    n: int
    alpha: float

    def __len__(self) -> int:
        return int(self.prediction.shape[0])


def _num_classes(model: nn.Module, num_classes: int | None) -> int:
    if num_classes is not None:
        return check_int(num_classes, "num_classes", minimum=2)
    for m in (model, getattr(model, "classifier", None)):
        k = getattr(m, "num_classes", None)
        if isinstance(k, int):
            return k
    raise ValueError("num_classes: the model has no num_classes attribute; pass num_classes=")


def _validate(x: torch.Tensor, sigma: float, alpha: float, batch_size: int) -> tuple[float, float]:
    check_images(x)
    sigma = check_positive(sigma, "sigma")
    alpha = check_positive(alpha, "alpha")
    if not alpha < 1:
        raise ValueError(f"alpha: expected a failure probability in (0, 1), got {alpha}")
    check_int(batch_size, "batch_size")
    return sigma, alpha


def _check_n(n: int, alpha: float, n_min: int, why: str) -> None:
    """``n`` samples must reach ``n_min``, below which the procedure never answers (``why``)."""
    check_int(n, "n", minimum=1)
    if n < n_min:
        raise ValueError(f"n={n} is too small for alpha={alpha}: {why}; need n >= {n_min}")


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """``model`` in eval mode, its training flag restored on exit."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def certify(model: nn.Module, x: torch.Tensor, *, sigma: float, n0: int = DEFAULT_N0, n: int = DEFAULT_N,
            alpha: float = DEFAULT_ALPHA, batch_size: int = 1000, generator: torch.Generator | None = None,
            num_classes: int | None = None, progress: bool = False) -> Certification:
    """CERTIFY (Cohen et al. 2019) for each image of ``x`` (float [0, 1] NCHW).

    Args:
        model: base classifier f (logits); any classifier or DefendedClassifier (denoised smoothing).
        sigma: noise std in [0, 1] pixel units (Cohen et al.: 0.12, 0.25, 0.5, 1.0).
        n0: selection samples (default 100); n: estimation samples (default 100,000); alpha: failure
            probability (default 0.001), all as in Cohen et al.
        generator: torch generator for the noise (None: the global RNG).
        num_classes: number of classes; default ``model.num_classes`` (or its ``.classifier``'s).
    Returns a :class:`Certification` (prediction -1 = abstain, radius = sigma * Phi^-1(pA_lower)).
    """
    sigma, alpha = _validate(x, sigma, alpha, batch_size)
    check_int(n0, "n0", minimum=1)
    _check_n(n, alpha, min_samples_certify(alpha),
             "even n of n votes gives pA_lower = alpha^(1/n) <= 1/2, so nothing can be certified")
    k_classes = _num_classes(model, num_classes)
    preds, radii, lows, cnts = [], [], [], []
    with _eval_mode(model):
        it = range(x.shape[0])
        if progress:
            from tqdm import tqdm

            it = tqdm(it, desc=f"certify sigma={sigma}")
        for i in it:
            c0 = sample_counts(model, x[i], sigma=sigma, num=n0, batch_size=batch_size,
                               num_classes=k_classes, generator=generator)
            c_a = int(c0.argmax())
            c = sample_counts(model, x[i], sigma=sigma, num=n, batch_size=batch_size,
                              num_classes=k_classes, generator=generator)
            k = int(c[c_a])
            p_low = clopper_pearson_lower(k, n, alpha)
            if p_low < 0.5:
                preds.append(-1)
                radii.append(0.0)
            else:
                preds.append(c_a)
                radii.append(sigma * float(norm.ppf(p_low)))
            lows.append(p_low)
            cnts.append(k)
    return Certification(torch.tensor(preds, dtype=torch.long), torch.tensor(radii, dtype=torch.float64),
                         torch.tensor(lows, dtype=torch.float64), torch.tensor(cnts, dtype=torch.long),
                         sigma, n0, n, alpha)


def predict(model: nn.Module, x: torch.Tensor, *, sigma: float, n: int = DEFAULT_N, alpha: float = DEFAULT_ALPHA,
            batch_size: int = 1000, generator: torch.Generator | None = None,
            num_classes: int | None = None) -> torch.Tensor:
    """PREDICT (Cohen et al. 2019): the smoothed prediction per image, -1 where the binomial test abstains."""
    sigma, alpha = _validate(x, sigma, alpha, batch_size)
    _check_n(n, alpha, min_samples_predict(alpha),
             "even n of n votes has a two-sided binomial p-value 2^(1-n) > alpha, so PREDICT always abstains")
    k_classes = _num_classes(model, num_classes)
    out = []
    with _eval_mode(model):
        for i in range(x.shape[0]):
            c = sample_counts(model, x[i], sigma=sigma, num=n, batch_size=batch_size,
                              num_classes=k_classes, generator=generator)
            top2 = torch.topk(c, 2)
            n_a, n_b = int(top2.values[0]), int(top2.values[1])
            p = binomtest(n_a, n_a + n_b, 0.5).pvalue
            out.append(int(top2.indices[0]) if p <= alpha else -1)
    return torch.tensor(out, dtype=torch.long)


def certified_accuracy(results: Certification, labels: torch.Tensor,
                       radii: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0)) -> dict[float, float]:
    """Fraction of images predicted correctly with certified radius >= r, for each r (Cohen et al., Table 1).

    At r = 0 this is the smoothed classifier's (non-abstaining) clean accuracy.
    """
    check_labels(labels, len(results))
    out = {}
    for r in radii:
        r = check_positive(r, "radius", allow_zero=True)
        ok = (results.prediction == labels.cpu()) & (results.radius >= r)
        out[r] = float(ok.float().mean())
    return out


__all__ = ["certify", "predict", "certified_accuracy", "Certification", "sample_counts",
           "clopper_pearson_lower", "min_samples_certify", "min_samples_predict", "DEFAULT_N0", "DEFAULT_N",
           "DEFAULT_ALPHA"]
