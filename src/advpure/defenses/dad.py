"""DAD: Distributional-discrepancy-based Adversarial Defense (Zhang, Rubinstein, Zhang, Liu, ICML 2025,
"One Stone, Two Birds: Enhancing Adversarial Defense Through the Lens of Distributional Discrepancy").

Training (see :mod:`advpure.detect.mmd_opt` and :mod:`advpure.train.denoiser`):

1. MMD-OPT: a semantic-aware deep kernel trained to maximise the test power J between clean and PGD
   examples of the target classifier;
2. a denoiser g trained by minimising MMD^2_u(clean, g(noisy adversarial)) + alpha * CE(f(g(.)), y).

Inference (this module), two-pronged:

* ``mode="batch"`` (the paper's setting): the incoming batch X (size m) is tested against m clean
  reference images with the trained kernel (permutation or wild-bootstrap test at level alpha, or the
  MMD^2_u statistic against a threshold calibrated on clean batches). If H0 is kept the classifier sees X
  unchanged; otherwise it sees the denoised batch g(X + noise).
* ``mode="sample"``: each input x is scored by MMD^2(delta_x, R) = k(x,x) - 2/n sum_j k(x,r_j)
  + 1/(n(n-1)) sum_{j!=l} k(r_j,r_l) against the reference set R, and denoised when its score exceeds a
  threshold calibrated for a target false-positive rate on held-out clean images.

The denoiser (:class:`ResidualUNet`) is a small U-Net with residual output x + g(x), as in HGD (Liao et
al., CVPR 2018), the denoiser family DAD uses. Following the DAD code, Gaussian noise (std 0.25, rectified:
the authors clamp the noise itself to [0, 1]) is added before denoising, in training and at test time.
"""

from __future__ import annotations

import logging
from typing import Sequence

import torch
import torch.nn as nn

from ..contracts import check_images, check_int, check_positive
from ..detect.conformal import conformal_threshold
from ..detect.kernels import DeepKernel, cat_embeddings, index_embedding, load_kernel
from ..detect.mmd import min_sample_size, mmd2_unbiased, permutation_test, split_gram, wild_bootstrap_test
from ..specs import SpecContext, register
from .base import Purifier

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- the denoiser
class _Block(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(min(8, cout), cout), nn.SiLU(),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(min(8, cout), cout), nn.SiLU())


class ResidualUNet(nn.Module):
    """x_hat = clamp(x + g(x), 0, 1) with g a U-Net of ``depth`` down/up levels (widths width * 2^l).

    The last layer is zero-initialised, so an untrained denoiser is the identity. H and W must be
    divisible by 2^depth.
    """

    def __init__(self, *, in_channels: int = 3, width: int = 32, depth: int = 2) -> None:
        super().__init__()
        check_int(in_channels, "in_channels")
        check_int(width, "width")
        check_int(depth, "depth")
        self.in_channels, self.width, self.depth = in_channels, width, depth
        self.inc = _Block(in_channels, width)
        self.downs = nn.ModuleList()
        self.ups = nn.ModuleList()
        self.dec = nn.ModuleList()
        ch = [width * 2 ** l for l in range(depth + 1)]
        for l in range(depth):
            self.downs.append(nn.Sequential(nn.Conv2d(ch[l], ch[l + 1], 3, 2, 1), _Block(ch[l + 1], ch[l + 1])))
        for l in reversed(range(depth)):
            self.ups.append(nn.ConvTranspose2d(ch[l + 1], ch[l], 2, 2))
            self.dec.append(_Block(2 * ch[l], ch[l]))
        self.out = nn.Conv2d(width, in_channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        f = 2 ** self.depth
        if x.shape[-1] % f or x.shape[-2] % f:
            raise ValueError(f"ResidualUNet(depth={self.depth}): image size {x.shape[-2]}x{x.shape[-1]} must be "
                             f"divisible by {f}")
        h = self.inc(x * 2 - 1)
        skips = [h]
        for down in self.downs:
            h = down(h)
            skips.append(h)
        skips.pop()
        for up, dec in zip(self.ups, self.dec):
            h = dec(torch.cat([up(h), skips.pop()], 1))
        return self.out(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x + self.residual(x)).clamp(0, 1)

    def config(self) -> dict:
        return {"in_channels": self.in_channels, "width": self.width, "depth": self.depth}


def save_denoiser(denoiser: ResidualUNet, path, *, input_shape: Sequence[int], **sidecar) -> dict:
    from ..checkpoint import save_weights

    return save_weights(denoiser.state_dict(), path, {"kind": "dad-denoiser", "arch": "residual-unet",
                                                      "kwargs": denoiser.config(),
                                                      "input_shape": list(input_shape), **sidecar})


def load_denoiser(path, *, input_shape: Sequence[int] | None = None) -> ResidualUNet:
    from ..checkpoint import load_artifact, load_into

    sd, meta = load_artifact(path, kind="dad-denoiser", what="denoiser")
    if input_shape is not None and tuple(meta["input_shape"]) != tuple(input_shape):
        raise ValueError(f"{path}: denoiser trained for inputs {tuple(meta['input_shape'])}, data has {tuple(input_shape)}")
    model = ResidualUNet(**meta["kwargs"])
    load_into(model, sd, what=f"denoiser {path}")
    model.sidecar = meta
    return model.eval()


def add_noise(x: torch.Tensor, *, std: float, rectified: bool = True,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """clamp(x + n, 0, 1) with n ~ N(0, std^2); ``rectified`` clamps n to [0, 1] first, as the DAD code does."""
    if std == 0:
        return x
    n = torch.randn(x.shape, generator=generator, device=x.device if generator is None else generator.device)
    n = n.to(x) * std
    if rectified:
        n = n.clamp(0, 1)
    return (x + n).clamp(0, 1)


# --------------------------------------------------------------------------- the defense
class DAD(Purifier):
    """DAD at inference: detect with MMD-OPT, pass clean inputs through untouched, denoise the rest.

    Parameters (keyword-only after the first three):
        denoiser: maps images to images (e.g. :class:`ResidualUNet`).
        kernel: a trained :class:`~advpure.detect.kernels.DeepKernel`.
        reference: clean reference images (N, C, H, W); batch mode needs N >= the batch size.
        mode: ``"batch"`` (default; the paper) or ``"sample"``.
        test: batch mode's decision: ``"permutation"`` (default), ``"wild"`` (wild bootstrap, as the DAD
            code) or ``"threshold"`` (MMD^2_u above a threshold from :meth:`calibrate_batch`).
        alpha: test level, 0.05 (DAD).
        n_resamples: permutations / bootstrap draws per test, 100 (the DAD code's wild bootstrap).
        noise_std: noise added before denoising, 0.25 (DAD code); ``rectified_noise`` as in :func:`add_noise`.

    :meth:`replace` keeps the calibrated thresholds unless the kernel or the reference images change.
    """

    _carried = {"batch_thresholds": ("kernel", "reference"), "sample_threshold": ("kernel", "reference")}

    def __init__(self, denoiser: nn.Module, kernel: DeepKernel, reference: torch.Tensor, *, mode: str = "batch",
                 test: str = "permutation", alpha: float = 0.05, n_resamples: int = 100, noise_std: float = 0.25,
                 rectified_noise: bool = True) -> None:
        super().__init__()
        if mode not in ("batch", "sample"):
            raise ValueError(f"mode: expected 'batch' or 'sample', got {mode!r}")
        if test not in ("permutation", "wild", "threshold"):
            raise ValueError(f"test: expected 'permutation', 'wild' or 'threshold', got {test!r}")
        if not 0 < alpha < 1:
            raise ValueError(f"alpha: expected a level in (0, 1), got {alpha}")
        check_int(n_resamples, "n_resamples")
        check_positive(noise_std, "noise_std", allow_zero=True)
        check_images(reference, name="reference images")
        kernel.check_input(reference, "reference images")
        if reference.shape[0] < 2:
            raise ValueError(f"reference images: need at least 2, got {reference.shape[0]}")
        self.denoiser = denoiser
        self.kernel = kernel
        self.register_buffer("reference", reference.detach().clone(), persistent=False)
        self.mode, self.test, self.alpha, self.n_resamples = mode, test, float(alpha), n_resamples
        self.noise_std, self.rectified_noise = float(noise_std), rectified_noise
        self.batch_thresholds: dict[int, float] = {}
        self.sample_threshold: float | None = None
        self.last_flags: torch.Tensor | None = None  # which inputs the last call denoised
        # both networks are frozen (as every purifier's): attacks differentiate through them with respect to the
        # input only, and a backward pass must not leave gradients on the defense's weights
        den_params = list(denoiser.parameters()) if isinstance(denoiser, nn.Module) else []
        for p in [*self.kernel.parameters(), *den_params]:
            p.requires_grad_(False)
        with torch.no_grad():
            self._ref_emb = kernel.embed(self.reference)
            Krr = kernel.matrix(self._ref_emb, self._ref_emb)
            n = Krr.shape[0]
            self._ref_term = float((Krr.sum() - Krr.diagonal().sum()) / (n * (n - 1)))

    @property
    def stochastic(self) -> bool:  # type: ignore[override]
        return self.noise_std > 0 or (self.mode == "batch" and self.test != "threshold")

    @property
    def nfe(self) -> float:
        """One kernel featurisation (a classifier body pass) plus at most one denoiser pass per image."""
        return 2.0

    # ---------------------------------------------------------------- statistics
    def _check(self, x: torch.Tensor) -> None:
        check_images(x)
        self.kernel.check_input(x)

    def batch_statistic(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pooled Gram of [x; reference[:m]], MMD^2_u) for a batch of m images."""
        m = x.shape[0]
        if m > self.reference.shape[0]:
            raise ValueError(f"DAD batch mode: batch of {m} images but only {self.reference.shape[0]} reference "
                             f"images; the test needs at least as many reference images as the batch size")
        with torch.no_grad():
            e = cat_embeddings(self.kernel.embed(x), index_embedding(self._ref_emb, slice(0, m)))
            K = self.kernel.matrix(e, e)
        return K, mmd2_unbiased(*split_gram(K, m))

    def sample_scores(self, x: torch.Tensor) -> torch.Tensor:
        """MMD^2(delta_x, R) per input (the constant k(x,x) included; = 1 for the deep kernel's form)."""
        with torch.no_grad():
            ex = self.kernel.embed(x)
            Kxr = self.kernel.matrix(ex, self._ref_emb)
            kxx = torch.stack([self.kernel.matrix(index_embedding(ex, slice(i, i + 1)),
                                                  index_embedding(ex, slice(i, i + 1)))[0, 0]
                               for i in range(x.shape[0])])
            return kxx - 2 * Kxr.mean(1) + self._ref_term

    def detect(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Boolean flags (N,): True = judged adversarial (to be denoised). Batch mode flags all or none."""
        self._check(x)
        m = x.shape[0]
        if self.mode == "sample":
            if self.sample_threshold is None:
                raise ValueError("DAD sample mode: no threshold; call calibrate_sample(clean_images) first")
            return self.sample_scores(x) > self.sample_threshold
        if self.test == "threshold":
            if m not in self.batch_thresholds:
                raise ValueError(f"DAD threshold test: no threshold calibrated for batch size {m} "
                                 f"(calibrated: {sorted(self.batch_thresholds) or 'none'}); call calibrate_batch")
            _, stat = self.batch_statistic(x)
            reject = bool(stat > self.batch_thresholds[m])
        else:
            need = min_sample_size(self.alpha)
            if m < need:
                raise ValueError(f"DAD batch mode ({self.test} test at alpha={self.alpha}): a batch of {m} is too "
                                 f"small, the test can never reject; need >= {need} images (or mode='sample')")
            K, _ = self.batch_statistic(x)
            if self.test == "permutation":
                r = permutation_test(K, m, n_perm=self.n_resamples, alpha=self.alpha, generator=_cpu(generator))
            else:
                r = wild_bootstrap_test(*split_gram(K, m), n_boot=self.n_resamples, alpha=self.alpha,
                                        generator=_cpu(generator))
            reject = bool(r.reject)
        return torch.full((m,), reject, dtype=torch.bool, device=x.device)

    def denoise(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.denoiser(add_noise(x, std=self.noise_std, rectified=self.rectified_noise, generator=generator))

    def purify(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        flags = self.detect(x, generator=generator)
        self.last_flags = flags
        if not bool(flags.any()):
            return x
        if bool(flags.all()):
            return self.denoise(x, generator=generator)
        out = x.clone()
        out[flags] = self.denoise(x[flags], generator=generator)
        return out

    # ---------------------------------------------------------------- calibration
    def calibrate_batch(self, clean: torch.Tensor, *, batch_size: int, fpr: float = 0.05, n_batches: int = 200,
                        seed: int = 0) -> float:
        """Threshold on MMD^2_u for batches of ``batch_size``: the (1 - fpr) quantile over ``n_batches`` random
        clean batches (drawn from ``clean``, which must be disjoint from the reference set)."""
        self._check(clean)
        check_int(batch_size, "batch_size", minimum=2)
        if batch_size > clean.shape[0]:
            raise ValueError(f"calibrate_batch: batch_size {batch_size} exceeds the {clean.shape[0]} clean images")
        g = torch.Generator().manual_seed(seed)
        stats = torch.stack([self.batch_statistic(clean[torch.randperm(clean.shape[0], generator=g)[:batch_size]])[1]
                             for _ in range(n_batches)])
        t = conformal_threshold(stats, fpr)
        self.batch_thresholds[batch_size] = t
        return t

    def calibrate_sample(self, clean: torch.Tensor, *, fpr: float = 0.05) -> float:
        """Per-sample threshold: the (1 - fpr) quantile of held-out clean scores."""
        self._check(clean)
        self.sample_threshold = conformal_threshold(self.sample_scores(clean), fpr)
        return self.sample_threshold

    def describe(self) -> dict:
        return {"name": "DAD", "mode": self.mode, "test": self.test, "alpha": self.alpha,
                "n_resamples": self.n_resamples, "noise_std": self.noise_std,
                "reference": int(self.reference.shape[0]), "sample_threshold": self.sample_threshold,
                "batch_thresholds": dict(self.batch_thresholds)}


def _cpu(g: torch.Generator | None) -> torch.Generator | None:
    return g if g is None or g.device.type == "cpu" else None


# --------------------------------------------------------------------------- spec factory
@register("defense", "dad")
def _dad_factory(ctx: SpecContext, *, kernel: str, denoiser: str, mode: str = "batch", test: str = "permutation",
                 alpha: float = 0.05, n_resamples: int = 100, reference: int = 200, calib: int = 300,
                 fpr: float = 0.05, batch_size: int | None = None, noise_std: float = 0.25, seed: int = 0,
                 data_dir: str | None = None) -> DAD:
    """``dad:kernel=PATH,denoiser=PATH[,mode=batch|sample,test=permutation|wild|threshold,reference=200,...]``.

    Reference and calibration images are disjoint seeded subsets of the dataset's train split; per-sample
    mode calibrates its threshold for ``fpr`` on ``calib`` of them, the threshold test for ``batch_size``.
    """
    from ..data import load_dataset

    if ctx.classifier is None or ctx.dataset is None:
        raise ValueError("dad: needs the classifier (for the semantic kernel) and the dataset (reference images)")
    train = load_dataset(ctx.dataset, "train", data_dir=data_dir)
    k = load_kernel(kernel, classifier=ctx.classifier, input_shape=train.shape)
    g = load_denoiser(denoiser, input_shape=train.shape)
    need = reference + (calib if (mode == "sample" or test == "threshold") else 0)
    if need > len(train):
        raise ValueError(f"dad: reference={reference} + calib={calib} exceeds the {len(train)} training images")
    idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    ref, _ = train.batch(idx[:reference])
    d = DAD(g, k, ref.to(ctx.device), mode=mode, test=test, alpha=alpha, n_resamples=n_resamples,
            noise_std=noise_std).to(ctx.device)
    if mode == "sample" or test == "threshold":
        cal, _ = train.batch(idx[reference:reference + calib])
        if mode == "sample":
            d.calibrate_sample(cal.to(ctx.device), fpr=fpr)
        else:
            if batch_size is None:
                raise ValueError("dad: test=threshold needs batch_size=N (the batch size to calibrate for)")
            d.calibrate_batch(cal.to(ctx.device), batch_size=batch_size, fpr=fpr, seed=seed)
    return d


__all__ = ["DAD", "ResidualUNet", "add_noise", "load_denoiser", "save_denoiser"]
