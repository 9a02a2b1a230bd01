"""CMAP: "Adversarial Purification by Consistency-aware Latent Space Optimization on Data Manifolds"
(Zhang, Yang, Luo, Chen, Wang, Liu, Han & Tan).

A consistency model's one-step generator ``G(z) = f(z, sigma_max)`` (:mod:`advpure.diffusion.consistency`)
maps latents ``z ~ N(0, sigma_max^2 I)`` onto the data manifold. CMAP purifies an input ``x`` by searching
that latent space for K latents whose generated images are *consistent* with ``x``, and classifies the
generated images (majority vote over the K). For each input, K latents are drawn from the prior and
optimised jointly with Adam for ``iterations`` steps to minimise

    L(z_1..K; x) = 1/K sum_k [ MAE(G(z_k), x) + lam_s (1 - SSIM(G(z_k), x)) ]        (consistency-aware loss)
                 + lam * L_lat(z_1..K)                                                (latent distribution consistency)

with ``G(z)`` mapped to [0, 1] (``(f + 1) / 2``, clamped) and SSIM from :func:`advpure.ops.ssim.ssim`
(7-tap window on 8x8 digits). The latent term is an MSE between the empirical first two moments of the
latents and the prior's, computed on the normalised latents ``u = z / sigma_max`` (so ``lam`` does not depend
on sigma_max; the prior is ``u ~ N(0, I)``):

- ``stats="latent"`` (default): each latent's mean and (unbiased) variance over its C*H*W entries,
  ``L_lat = 1/K sum_k [ mean_d(u_k)^2 + (var_d(u_k) - 1)^2 ]``: does each latent still look like a draw
  from the prior? Works for any K, including K = 1.
- ``stats="k"``: per-pixel statistics across the K latents,
  ``L_lat = mean_pixels[ mean_k(u)^2 ] + mean_pixels[ (var_k(u) - 1)^2 ]`` (needs K >= 2; with small K
  this is a noisy target: even prior draws have ``E (var_k - 1)^2 = 2 / (K - 1)``).

Adam runs on ``u`` (learning rate in units of sigma_max), implemented with tensor operations so that the
whole unrolled optimisation is differentiable with respect to ``x`` when the caller records gradients
(full-gradient adaptive attacks): each step then takes the inner gradient with ``create_graph=True``, and
``grad_checkpoint=True`` recomputes each step in the backward pass (memory independent of ``iterations``,
:func:`advpure.ops.checkpointing.checkpointed_loop`). Otherwise the latents are optimised on a detached
copy of ``x``. The consistency model's weights never receive gradients (frozen at construction).

Outputs: :meth:`CMAP.optimise` returns all K generated samples per input; :meth:`CMAP.purify` returns, per
input, the sample with the lowest final consistency-aware loss (MAE + lam_s (1 - SSIM)), the one most
consistent with the input. :class:`CMAPClassifier` classifies all K samples and majority-votes.

Defaults (measured on digits, see ``DEFAULTS`` and ``advpure cmap-ablation``): K = 4, iterations = 30,
lr = 0.1, lam = 3 (per-latent stats), lam_s = 1. On CIFAR-10 (32x32x3, ``zoo/cifar10-cm-cd-tiny``) 30 iterations
reconstruct too little (the ResNet-56 labels 19-31% of the samples correctly after 25-50 iterations, 56-75% after
100-150; ``reports/cifar10/cmap/ablation``), so the CIFAR-10 runs use ``iterations=100``. Cost: ``nfe = K (iterations + 1)`` consistency-model forward
evaluations per image, plus one backward pass per iteration.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn as nn

from ..contracts import check_images, check_int, check_logits, check_positive
from ..diffusion.consistency import ConsistencyModel, load_consistency_model
from ..ops.ssim import ssim
from ..paths import zoo_dir
from ..specs import SpecContext, register
from .base import Purifier
from .voting import VotingClassifier, vote_log_frequencies

DEFAULT_MODELS = {"digits": zoo_dir() / "digits-cm.safetensors",
                  "cifar10": zoo_dir() / "cifar10-cm-cd-tiny.safetensors"}

#: Adam's constants (Kingma & Ba 2015)
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8

#: measured on digits (zoo/digits-cm, 60 test images, clean and PGD-on-classifier eps 0.2; see the report):
#: more iterations / a larger lr reconstruct the adversarial perturbation too (robust accuracy falls),
#: lam and lam_s trade a little clean accuracy for robustness.
DEFAULTS = dict(k=4, iterations=30, lr=0.1, lam=3.0, lam_s=1.0, stats="latent")


def _twice_differentiable_attention(enabled: bool) -> contextlib.AbstractContextManager:
    """The UNet's attention through the plain math kernel: the fused CPU/flash kernels' backward has no
    derivative, and the full-gradient attack differentiates the inner gradient (double backward)."""
    if not enabled:
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.MATH])


@dataclass
class CMAPResult:
    """What :meth:`CMAP.optimise` found, for inputs ``x`` of shape (N, C, H, W)."""

    samples: torch.Tensor          #: (N, K, C, H, W) generated images in [0, 1]
    latents: torch.Tensor          #: (N, K, C, H, W) normalised latents u = z / sigma_max
    recon_loss: torch.Tensor       #: (N, K) final MAE + lam_s (1 - SSIM) per sample (detached)
    trace: list[dict] = field(default_factory=list)  #: per-iteration records when asked for

    def best(self) -> torch.Tensor:
        """(N, C, H, W): per input, the sample with the lowest final consistency-aware loss."""
        idx = self.recon_loss.argmin(1)
        return self.samples[torch.arange(self.samples.shape[0], device=idx.device), idx]


class CMAP(Purifier):
    """Consistency-aware latent-space optimisation purifier (module docstring for the objective).

    Args:
        cm: a trained :class:`~advpure.diffusion.consistency.ConsistencyModel` (frozen here).
        k: latents (generated samples) per input (default 4).
        iterations: Adam steps on the latents (default 30).
        lr: Adam learning rate on ``u = z / sigma_max`` (default 0.1).
        lam: weight of the latent distribution consistency term (default 3).
        lam_s: weight of the (1 - SSIM) term (default 1).
        stats: ``"latent"`` or ``"k"``, how the latent moments are taken (module docstring).
        select: what :meth:`purify` returns: ``"best"`` (lowest final recon loss, default) or ``"first"``.
            On digits the lowest-loss sample is also the one that best reproduces an adversarial
            perturbation (46% vs 62% for the vote under PGD-on-classifier, eps 0.2), so prefer the vote.
        grad_checkpoint: checkpoint each step when the outer graph needs gradients.
    """

    stochastic = True

    def __init__(self, cm: ConsistencyModel, *, k: int = DEFAULTS["k"], iterations: int = DEFAULTS["iterations"],
                 lr: float = DEFAULTS["lr"], lam: float = DEFAULTS["lam"], lam_s: float = DEFAULTS["lam_s"],
                 stats: str = DEFAULTS["stats"], select: str = "best", grad_checkpoint: bool = False,
                 freeze: bool = True) -> None:
        super().__init__()
        if not isinstance(cm, ConsistencyModel):
            raise TypeError(f"cm: expected an advpure.diffusion.consistency.ConsistencyModel, got {type(cm).__name__}")
        self.cm = cm
        if freeze:
            cm.eval().requires_grad_(False)
        self.k = check_int(k, "k", minimum=1)
        self.iterations = check_int(iterations, "iterations", minimum=0)
        self.lr = check_positive(lr, "lr")
        self.lam = check_positive(lam, "lam", allow_zero=True)
        self.lam_s = check_positive(lam_s, "lam_s", allow_zero=True)
        if stats not in ("latent", "k"):
            raise ValueError(f"stats: expected 'latent' or 'k', got {stats!r}")
        if stats == "k" and self.k < 2 and self.lam > 0:
            raise ValueError("stats='k' takes the variance across the K latents and needs k >= 2 (or use stats='latent')")
        self.stats = stats
        if select not in ("best", "first"):
            raise ValueError(f"select: expected 'best' (lowest-loss sample) or 'first', got {select!r}")
        self.select = select
        self.grad_checkpoint = bool(grad_checkpoint)

    # ------------------------------------------------------------------ pieces of the objective
    @property
    def nfe(self) -> float:
        """Consistency-model forward evaluations per image: K per Adam step plus K for the final samples."""
        return float(self.k * (self.iterations + 1))

    def generate(self, u: torch.Tensor) -> torch.Tensor:
        """``G(z) = (f(sigma_max u, sigma_max) + 1) / 2`` clamped to [0, 1]; ``u`` (M, C, H, W)."""
        out = self.cm.generate(u * self.cm.sigma_max)
        return ((out + 1.0) * 0.5).clamp(0.0, 1.0)

    def recon_loss(self, gen: torch.Tensor, xr: torch.Tensor) -> torch.Tensor:
        """Per sample ``MAE + lam_s (1 - SSIM)``; ``gen``, ``xr`` (M, C, H, W)."""
        mae = (gen - xr).abs().flatten(1).mean(1)
        if self.lam_s == 0:
            return mae
        return mae + self.lam_s * (1.0 - ssim(gen, xr))

    def latent_loss(self, u: torch.Tensor) -> torch.Tensor:
        """Latent distribution consistency per input, ``u`` (N, K, C, H, W) -> (N,)."""
        n, k = u.shape[:2]
        if self.stats == "latent":
            flat = u.reshape(n, k, -1)
            return (flat.mean(2).pow(2) + (flat.var(2, unbiased=True) - 1.0).pow(2)).mean(1)
        flat = u.reshape(n, k, -1)
        return flat.mean(1).pow(2).mean(1) + (flat.var(1, unbiased=True) - 1.0).pow(2).mean(1)

    def objective(self, u: torch.Tensor, x: torch.Tensor, extra: Callable[[torch.Tensor], torch.Tensor] | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(per-input loss (N,), generated (N, K, C, H, W), per-sample recon loss (N, K)); ``u`` (N*K, C, H, W).

        ``extra(gen)`` -> (N,) is added to the loss (used by the consistency-disruption attack)."""
        n, k = x.shape[0], self.k
        gen = self.generate(u)
        if not bool(torch.isfinite(gen).all()):
            raise FloatingPointError("CMAP: the consistency model produced non-finite images during the latent "
                                     "optimisation (lower lr, or check the model)")
        xr = x.repeat_interleave(k, dim=0)
        rec = self.recon_loss(gen, xr).view(n, k)
        gen5 = gen.view(n, k, *x.shape[1:])
        loss = rec.mean(1)
        if self.lam > 0:
            loss = loss + self.lam * self.latent_loss(u.view(n, k, *x.shape[1:]))
        if extra is not None:
            loss = loss + extra(gen5)
        if not bool(torch.isfinite(loss).all()):
            raise FloatingPointError(f"CMAP: non-finite objective during the latent optimisation (lr={self.lr}, "
                                     f"lam={self.lam}, lam_s={self.lam_s})")
        return loss, gen5, rec

    # ------------------------------------------------------------------ the optimisation
    def _check(self, x: torch.Tensor) -> None:
        shape = self.cm.image_shape
        if shape is None:
            check_images(x)
        else:
            check_images(x, channels=shape[0], size=shape[1:])

    def init_latents(self, n: int, *, generator: torch.Generator | None = None, device=None, dtype=None
                     ) -> torch.Tensor:
        """``u ~ N(0, I)`` of shape (n*K, C, H, W), input-major (rows n*K .. n*K+K-1 belong to input n)."""
        shape = self.cm.image_shape
        return torch.randn((n * self.k, *shape), generator=generator, device=device, dtype=dtype)

    def optimise(self, x: torch.Tensor, *, generator: torch.Generator | None = None, u0: torch.Tensor | None = None,
                 iterations: int | None = None, extra: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 trace_every: int = 0, lr: float | None = None) -> CMAPResult:
        """Run the latent optimisation for every input and all K latents in one batch (N*K).

        ``u0`` (N*K, C, H, W) replaces the prior draw (the attack starts from CMAP's own latents);
        ``iterations``/``lr`` override the configured ones; ``trace_every`` > 0 records, every that many
        steps (and at 0 and the end), the samples, the recon loss and the latent moments (no gradients).
        """
        self._check(x)
        n_it = self.iterations if iterations is None else check_int(iterations, "iterations", minimum=0)
        lr_ = self.lr if lr is None else check_positive(lr, "lr")
        n = x.shape[0]
        outer = torch.is_grad_enabled() and x.requires_grad
        if not outer:
            x = x.detach()
        if u0 is None:
            u = self.init_latents(n, generator=generator, device=x.device, dtype=x.dtype)
        else:
            if u0.shape != (n * self.k, *x.shape[1:]):
                raise ValueError(f"u0: expected shape {(n * self.k, *x.shape[1:])}, got {tuple(u0.shape)}")
            u = u0.detach().clone()
        b1, b2 = ADAM_BETAS
        trace: list[dict] = []

        def record(i: int, uu: torch.Tensor) -> None:
            with torch.no_grad():
                _, g5, rec = self.objective(uu.detach(), x.detach(), None)
                flat = uu.detach().view(n, self.k, -1)
                trace.append({"iteration": i, "samples": g5.detach().clone(), "recon_loss": rec.detach().clone(),
                              "latent_mean": float(flat.mean()), "latent_std": float(flat.std()),
                              "latent_loss": float(self.latent_loss(flat.view(n, self.k, *x.shape[1:])).mean())})

        def step(state: torch.Tensor, i: int, x: torch.Tensor = x) -> torch.Tensor:
            uu, m, v = state[0], state[1], state[2]
            # a graph of the inner gradient only when the outer one is being recorded (not in the checkpointed
            # loop's graph-free forward)
            create = outer and torch.is_grad_enabled()
            with torch.enable_grad(), _twice_differentiable_attention(outer):
                if not create or not uu.requires_grad:
                    uu = uu.detach().requires_grad_(True)
                loss, _, _ = self.objective(uu, x, extra)
                g, = torch.autograd.grad(loss.sum(), uu, create_graph=create)
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            mh = m / (1 - b1 ** (i + 1))
            vh = v / (1 - b2 ** (i + 1))
            new_u = uu - lr_ * mh / (torch.sqrt(vh + 1e-20) + ADAM_EPS)
            out = torch.stack([new_u, m, v])
            return out if outer else out.detach()

        state = torch.stack([u, torch.zeros_like(u), torch.zeros_like(u)])
        if outer:
            state = state.requires_grad_(True)  # a leaf, so the first inner gradient exists
        if trace_every:
            record(0, state[0])
        if outer and self.grad_checkpoint:
            from ..ops.checkpointing import checkpointed_loop

            state = checkpointed_loop(step, state, n_it, extras=(x,))  # x as an argument: it gets its gradient
        else:
            for i in range(n_it):
                state = step(state, i)
                if trace_every and ((i + 1) % trace_every == 0 or i + 1 == n_it):
                    record(i + 1, state[0])
        u = state[0]
        with torch.set_grad_enabled(outer), _twice_differentiable_attention(outer):
            _, gen5, rec = self.objective(u, x, None)
        return CMAPResult(samples=gen5, latents=u, recon_loss=rec.detach(), trace=trace)

    def purify(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """One image per input: the generated sample with the lowest final MAE + lam_s (1 - SSIM)
        (``select="best"``, default) or the first of the K (``select="first"``)."""
        res = self.optimise(x, generator=generator)
        return res.best() if self.select == "best" else res.samples[:, 0]

    def voting_classifier(self, classifier: nn.Module, votes: int) -> "CMAPClassifier":
        """The majority vote over CMAP's own K latents (any ``votes >= 1``: the vote's size is ``k``)."""
        return CMAPClassifier(classifier, self, vote=True)

    def describe(self) -> dict:
        return {"name": "CMAP", "k": self.k, "iterations": self.iterations, "lr": self.lr, "lam": self.lam,
                "lam_s": self.lam_s, "stats": self.stats, "select": self.select, "nfe": self.nfe,
                "sigma_max": self.cm.sigma_max,
                "output": "purify: lowest-loss sample of K; CMAPClassifier: vote over K"}


class CMAPClassifier(VotingClassifier):
    """Classify CMAP's K generated samples per input and vote (``vote=True``), or classify the lowest-loss sample.

    With ``vote=True`` this is a :class:`~advpure.defenses.voting.VotingClassifier` whose K draws are CMAP's K
    latents: ``forward`` returns **log vote frequencies** (ties broken by the mean softmax), so ``argmax`` is the
    voted class and ``voting = True``, and when gradients are being recorded the output carries the gradient of
    the differentiable surrogate ``log mean_k softmax(classifier(G(z_k)))`` (straight-through: value = the
    vote, gradient = the surrogate's), so gradient attacks (PGD-EOT through the unrolled optimisation) run
    on this model directly and their success is judged on the real vote.
    """

    def __init__(self, classifier: nn.Module, cmap: CMAP, *, vote: bool = True, seed: int = 0) -> None:
        if not isinstance(cmap, CMAP):
            raise TypeError(f"cmap: expected a CMAP purifier, got {type(cmap).__name__}")
        super().__init__(classifier, cmap, seed=seed)
        self.vote = bool(vote)
        self.voting = self.vote

    @property
    def nfe(self) -> float:
        return self.defense.nfe

    def sample_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of all K samples, (N, K, classes)."""
        res = self.defense.optimise(x, generator=self.generator)
        n, k = res.samples.shape[:2]
        logits = check_logits(self.classifier(res.samples.flatten(0, 1)), n * k, name="classifier output")
        return logits.view(n, k, -1)

    def draw_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the K samples as the vote's draws, (K, N, classes)."""
        check_images(x)
        return self.sample_logits(x).transpose(0, 1)

    @staticmethod
    def vote_from_logits(logits: torch.Tensor) -> torch.Tensor:
        """(N, K, classes) -> log vote frequencies (N, classes), ties broken by mean softmax."""
        return vote_log_frequencies(logits, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.vote:
            check_images(x)
            return self.classifier(self.purify(x))
        return super().forward(x)

    def describe(self) -> dict:
        return {"defense": self.defense.describe(), "vote": self.vote, "seed": self._seed}


def load_cmap(model: str | os.PathLike | None = None, *, dataset: str | None = "digits",
              image_shape: tuple[int, int, int] | None = None, **options: Any) -> CMAP:
    """CMAP around a saved consistency model (``model`` path, or the zoo model of ``dataset``)."""
    if model is None:
        if dataset not in DEFAULT_MODELS:
            raise ValueError(f"cmap: no default consistency model for dataset {dataset!r}; pass model=PATH")
        model = DEFAULT_MODELS[dataset]
    cm, _ = load_consistency_model(model, image_shape=image_shape)
    return CMAP(cm, **options)


@register("defense", "cmap")
def _cmap(ctx: SpecContext, model: str | None = None, k: int = DEFAULTS["k"], iterations: int = DEFAULTS["iterations"],
          lr: float = DEFAULTS["lr"], lam: float = DEFAULTS["lam"], lam_s: float = DEFAULTS["lam_s"],
          stats: str = DEFAULTS["stats"], select: str = "best", checkpoint: bool = False) -> CMAP:
    """``cmap:model=PATH,k=4,iterations=30,lr=0.1,lam=3,lam_s=1,stats=latent|k,select=best|first,checkpoint=false``
    (purify = lowest-loss sample; wrap in :class:`CMAPClassifier` for the vote)."""
    cm = load_cmap(model, dataset=ctx.dataset or "digits", image_shape=ctx.image_shape, k=k, iterations=iterations,
                   lr=lr, lam=lam, lam_s=lam_s, stats=stats, select=select, grad_checkpoint=checkpoint)
    return cm.to(ctx.device)


__all__ = ["CMAP", "CMAPClassifier", "CMAPResult", "DEFAULTS", "load_cmap"]
