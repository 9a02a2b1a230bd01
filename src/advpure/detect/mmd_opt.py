"""MMD-OPT: train a deep kernel to maximise the test-power proxy J = MMD^2_u / sqrt(var + eps).

Liu et al. (ICML 2020, Eq. 4 and Algorithm 1) optimise the kernel parameters with Adam on the training
split of the two samples; DAD (Zhang et al., ICML 2025, Sec. 4, "MMD-OPT") does this on clean vs PGD
examples of the target classifier (500 + 500 images, PGD-10 at 8/255 on CIFAR-10, Adam lr 2e-4,
200 epochs, full batch) with the semantic-aware kernel of Gao et al. (2021).

The adversarial training examples come from the caller (``advpure train kernel`` makes them with
:func:`advpure.attacks.pgd.make_adversarial`). Also here: :func:`pgd_linf`, a plain L-inf PGD for quick checks
that need no attack suite, and :func:`test_power`, rejection rates of repeated tests.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..contracts import check_images, check_int, check_labels, check_positive
from .kernels import DeepKernel, cat_embeddings
from .mmd import mmd2_unbiased, mmd2_variance, mmd_test, split_gram

log = logging.getLogger(__name__)


def pgd_linf(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int = 10,
             step_size: float | None = None, random_start: bool = True,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """L-inf PGD on the cross-entropy (Madry et al. 2018): x_{t+1} = Proj(x_t + a sign(grad)), a = 2.5 eps/steps."""
    check_images(x)
    check_labels(y, x.shape[0])
    check_positive(eps, "eps")
    check_int(steps, "steps")
    a = step_size if step_size is not None else 2.5 * eps / steps
    was_training = model.training
    model.eval()
    delta = torch.zeros_like(x)
    if random_start:
        delta = (torch.rand(x.shape, generator=generator) * 2 - 1).to(x) * eps
    adv = (x + delta).clamp(0, 1).detach()
    for _ in range(steps):
        adv.requires_grad_(True)
        loss = F.cross_entropy(model(adv), y)
        (g,) = torch.autograd.grad(loss, adv)
        adv = (adv.detach() + a * g.sign()).clamp(x - eps, x + eps).clamp(0, 1).detach()
    model.train(was_training)
    return adv


@dataclass
class TrainHistory:
    objective: list[float] = field(default_factory=list)  # J per epoch
    mmd2: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)


def train_kernel(kernel: DeepKernel, x_clean: torch.Tensor, x_adv: torch.Tensor, *, epochs: int = 200,
                 lr: float = 2e-4, batch_size: int | None = None, eps: float = 1e-8, seed: int = 0,
                 progress: bool = False) -> TrainHistory:
    """Maximise J = MMD^2_u(clean, adv) / sqrt(var + eps) over the kernel's parameters with Adam.

    Defaults follow the DAD code: full batch (``batch_size=None``; equal clean/adv counts, paired in
    order), Adam lr 2e-4, 200 epochs, eps 1e-8 (Liu et al. 2020). s_phi is initialised to the median
    squared feature distance between the two samples. Returns J, MMD^2_u and sqrt(var) per epoch.
    """
    kernel.check_input(x_clean, "clean training images")
    kernel.check_input(x_adv, "adversarial training images")
    check_images(x_clean, name="clean training images")
    check_images(x_adv, name="adversarial training images")
    if x_clean.shape[0] != x_adv.shape[0]:
        raise ValueError(f"train_kernel: equal clean and adversarial counts required, got {x_clean.shape[0]} "
                         f"and {x_adv.shape[0]}")
    check_int(epochs, "epochs")
    check_positive(lr, "lr")
    n = x_clean.shape[0]
    bs = n if batch_size is None else check_int(batch_size, "batch_size", minimum=2)
    if bs > n or bs < 2:
        raise ValueError(f"batch_size: expected 2..{n} (the training sample size), got {bs}")
    kernel.init_sigma_phi(x_clean[: min(n, 500)], x_adv[: min(n, 500)])
    params = [p for p in kernel.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    # The semantic featurizer's classifier features and the flattened inputs do not change: compute once.
    semantic = hasattr(kernel.featurizer, "classifier")
    if semantic:
        with torch.no_grad():
            base_x = kernel.base_embed(x_clean)
            base_y = kernel.base_embed(x_adv)
    g = torch.Generator().manual_seed(seed)
    hist = TrainHistory()
    kernel.train()
    for _ in tqdm(range(epochs), disable=not progress, desc="MMD-OPT"):
        perm = torch.randperm(n, generator=g) if bs < n else torch.arange(n)
        for i in range(0, n - bs + 1, bs):
            idx = perm[i:i + bs]
            if semantic:
                ex = kernel.head(tuple(t[idx] for t in base_x))
                ey = kernel.head(tuple(t[idx] for t in base_y))
            else:
                ex, ey = kernel.embed(x_clean[idx]), kernel.embed(x_adv[idx])
            K = kernel.matrix(cat_embeddings(ex, ey), cat_embeddings(ex, ey))
            Kxx, Kyy, Kxy = split_gram(K, bs)
            mmd2 = mmd2_unbiased(Kxx, Kyy, Kxy)
            var = mmd2_variance(Kxx, Kyy, Kxy)
            J = mmd2 / torch.sqrt(var.clamp_min(0) + eps)
            opt.zero_grad()
            (-J).backward()
            opt.step()
        hist.objective.append(float(J.detach()))
        hist.mmd2.append(float(mmd2.detach()))
        hist.std.append(float(var.detach().clamp_min(0).sqrt()))
    kernel.eval()
    return hist


def objective(kernel: DeepKernel, x: torch.Tensor, y: torch.Tensor, *, eps: float = 1e-8) -> float:
    """J of ``kernel`` on two equal-size samples (no gradient)."""
    with torch.no_grad():
        z = torch.cat([x, y], 0)
        Kxx, Kyy, Kxy = split_gram(kernel(z, z), x.shape[0])
        return float(mmd2_unbiased(Kxx, Kyy, Kxy) / torch.sqrt(mmd2_variance(Kxx, Kyy, Kxy).clamp_min(0) + eps))


def test_power(kernel, x_pool: torch.Tensor, y_pool: torch.Tensor, *, m: int, n_tests: int = 100,
               method: str = "permutation", n_resamples: int = 100, alpha: float = 0.05, seed: int = 0) -> float:
    """Fraction of ``n_tests`` tests (random size-m draws from each pool) that reject at ``alpha``.

    With ``y_pool`` clean and disjoint from ``x_pool`` this is the type-I error; with adversarial
    ``y_pool`` it is the test power.
    """
    if m > x_pool.shape[0] or m > y_pool.shape[0]:
        raise ValueError(f"test_power: m={m} exceeds a pool ({x_pool.shape[0]}, {y_pool.shape[0]} samples)")
    g = torch.Generator().manual_seed(seed)
    g_test = torch.Generator().manual_seed(seed + 1)  # resampling stream kept apart from the data draws
    rejects = 0
    for _ in range(n_tests):
        ix = torch.randperm(x_pool.shape[0], generator=g)[:m]
        iy = torch.randperm(y_pool.shape[0], generator=g)[:m]
        r = mmd_test(kernel, x_pool[ix], y_pool[iy], method=method, n_resamples=n_resamples, alpha=alpha,
                     generator=g_test)
        rejects += int(r.reject)
    return rejects / n_tests


def type1_error(kernel, pool: torch.Tensor, *, m: int, n_tests: int = 100, method: str = "permutation",
                n_resamples: int = 100, alpha: float = 0.05, seed: int = 0) -> float:
    """Rejection rate on true nulls: each test draws 2m distinct images from one clean ``pool``, split in half."""
    if 2 * m > pool.shape[0]:
        raise ValueError(f"type1_error: 2m={2 * m} exceeds the pool of {pool.shape[0]} images")
    g = torch.Generator().manual_seed(seed)
    g_test = torch.Generator().manual_seed(seed + 1)
    rejects = 0
    for _ in range(n_tests):
        i = torch.randperm(pool.shape[0], generator=g)[:2 * m]
        r = mmd_test(kernel, pool[i[:m]], pool[i[m:]], method=method, n_resamples=n_resamples, alpha=alpha,
                     generator=g_test)
        rejects += int(r.reject)
    return rejects / n_tests
