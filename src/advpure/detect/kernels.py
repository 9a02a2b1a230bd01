"""Kernels for MMD two-sample tests: Gaussian (fixed or median-heuristic bandwidth) and deep kernels.

Every kernel maps two batches to a Gram matrix, ``kernel(a, b) -> K`` with ``K[i, j] = k(a_i, b_j)``.
Leading batch dimensions are allowed for the Gaussian kernel (``a: (..., n, d)``), so many tests run at
once. Kernels that need an expensive representation expose :meth:`embed` (computed once per sample) and
:meth:`matrix` (the Gram matrix of two embeddings); ``kernel(a, b) == kernel.matrix(embed(a), embed(b))``.

The deep kernel (Liu et al., ICML 2020, "Learning Deep Kernels for Non-Parametric Two-Sample Tests",
Eq. (5): k(x, y) = [(1 - e) kappa(phi(x), phi(y)) + e] q(x, y), with kappa and q Gaussian, as implemented in
their DK-for-TST code's ``MMDu`` and in the DAD code) is::

    k(x, y) = (1 - e) exp(-||phi(x) - phi(y)||^2 / s_phi - ||x - y||^2 / s_q) + e exp(-||x - y||^2 / s_q)

i.e. the input-space Gaussian q multiplies both terms once (an earlier advpure version applied it twice).

with a featurizer ``phi``, ``e`` in (0, 1) (sigmoid-parametrised) and bandwidths ``s_phi, s_q > 0``
(log-parametrised). The semantic-aware variant (Gao et al., ICML 2021, "Maximum Mean Discrepancy Test is
Aware of Adversarial Attacks", SAMMD) uses the penultimate features of the frozen target classifier as
``phi`` (``classifier.features(x)``); only ``e, s_phi, s_q`` (and an optional linear projection) train.
"""

from __future__ import annotations

import hashlib
import math
from typing import Sequence

import torch
import torch.nn as nn

from ..contracts import check_positive


def sq_dists(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances between rows, ``(..., n, d), (..., m, d) -> (..., n, m)``, clamped >= 0."""
    a2 = (a * a).sum(-1, keepdim=True)
    b2 = (b * b).sum(-1, keepdim=True)
    d = a2 - 2.0 * a @ b.transpose(-1, -2) + b2.transpose(-1, -2)
    return d.clamp_min(0.0)


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1) if x.dim() > 2 else x


def median_sq_dist(z: torch.Tensor) -> torch.Tensor:
    """Median of the off-diagonal squared pairwise distances of the pooled sample ``z: (..., n, d)``."""
    d = sq_dists(z, z)
    n = d.shape[-1]
    off = ~torch.eye(n, dtype=torch.bool, device=d.device)
    vals = d[..., off]
    return vals.median(dim=-1).values


class GaussianKernel(nn.Module):
    """k(x, y) = exp(-||x - y||^2 / (2 sigma^2)).

    ``bandwidth`` is sigma; ``None`` (default) selects the median heuristic (Gretton et al. 2012, Sec. 8):
    sigma^2 = median of the squared pairwise distances of the pooled sample passed to :meth:`pooled_gram`,
    or of ``[a; b]`` when called as ``kernel(a, b)``. Inputs with more than 2 dims are flattened per row
    when 4-D images are given (``(n, C, H, W) -> (n, CHW)``).
    """

    def __init__(self, *, bandwidth: float | None = None) -> None:
        super().__init__()
        self.bandwidth = None if bandwidth is None else check_positive(bandwidth, "bandwidth")

    def _sigma2(self, z: torch.Tensor) -> torch.Tensor:
        if self.bandwidth is not None:
            return torch.as_tensor(self.bandwidth ** 2, dtype=z.dtype, device=z.device)
        med = median_sq_dist(z)
        return torch.where(med > 0, med, torch.ones_like(med))[..., None, None]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return _flat(x) if x.dim() == 4 else x

    def matrix(self, ea: torch.Tensor, eb: torch.Tensor, *, sigma2: torch.Tensor | None = None) -> torch.Tensor:
        if sigma2 is None:
            sigma2 = self._sigma2(torch.cat([ea, eb], dim=-2))
        return torch.exp(-sq_dists(ea, eb) / (2.0 * sigma2))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        ea = self.embed(a)
        if b is a:  # the pooled sample: the median heuristic over its distinct pairs
            return self.matrix(ea, ea, sigma2=self._sigma2(ea))
        return self.matrix(ea, self.embed(b))

    def config(self) -> dict:
        return {"type": "gaussian", "bandwidth": self.bandwidth}


# --------------------------------------------------------------------------- featurizers
class SemanticFeaturizer(nn.Module):
    """phi(x) = classifier.features(x) of a frozen classifier (Gao et al. 2021), optionally followed by a
    trainable linear projection to ``proj_dim`` dims.

    The classifier is held outside the module tree (it is not part of this featurizer's state dict and its
    parameters are never trained); gradients still flow to the *input* so denoisers and attacks can
    backpropagate through phi.
    """

    def __init__(self, classifier: nn.Module, *, feature_dim: int, proj_dim: int | None = None) -> None:
        super().__init__()
        if not hasattr(classifier, "features"):
            raise TypeError(f"semantic featurizer: {type(classifier).__name__} has no features(x) method")
        self.__dict__["classifier"] = classifier  # not a submodule: frozen, not saved with the kernel
        self.feature_dim = int(feature_dim)
        self.proj_dim = proj_dim
        self.proj = nn.Linear(self.feature_dim, int(proj_dim)) if proj_dim else None

    def base(self, x: torch.Tensor) -> torch.Tensor:
        return _flat(self.classifier.features(x))

    def head(self, f: torch.Tensor) -> torch.Tensor:
        return self.proj(f) if self.proj is not None else f

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.base(x))

    def config(self) -> dict:
        return {"type": "semantic", "feature_dim": self.feature_dim, "proj_dim": self.proj_dim,
                "classifier": classifier_fingerprint(self.classifier)}


class ConvFeaturizer(nn.Module):
    """A small trainable CNN featurizer (the MMD-D featurizer of Liu et al. 2020, scaled down): conv blocks
    (3x3, stride 2, LeakyReLU, dropout) then a linear map to ``out_dim`` features."""

    def __init__(self, *, input_shape: Sequence[int], width: int = 16, out_dim: int = 64) -> None:
        super().__init__()
        c, h, w = (int(v) for v in input_shape)
        layers: list[nn.Module] = []
        ch, size = c, min(h, w)
        n_blocks = 0
        while size > 2 and n_blocks < 4:
            layers += [nn.Conv2d(ch, width * 2 ** n_blocks, 3, 2, 1), nn.LeakyReLU(0.2), nn.Dropout2d(0.1)]
            ch = width * 2 ** n_blocks
            h, w, size = (h + 1) // 2, (w + 1) // 2, (size + 1) // 2
            n_blocks += 1
        self.body = nn.Sequential(*layers, nn.Flatten())
        self.out = nn.Linear(ch * h * w, out_dim)
        self.input_shape = (c, int(input_shape[1]), int(input_shape[2]))
        self.width, self.out_dim = width, out_dim

    def base(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def head(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)

    def config(self) -> dict:
        return {"type": "cnn", "width": self.width, "out_dim": self.out_dim}


def classifier_fingerprint(model: nn.Module) -> dict:
    """Architecture and a sha256 over the classifier's state dict (names, shapes and values): identifies the
    classifier a semantic kernel was trained for, whatever file it was loaded from."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(str(tuple(v.shape)).encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    spec = getattr(model, "arch_spec", None)
    return {"arch": spec.get("arch") if isinstance(spec, dict) else type(model).__name__, "state_sha256": h.hexdigest()}


# --------------------------------------------------------------------------- deep kernel
class DeepKernel(nn.Module):
    """The deep kernel of Liu et al. (2020) / SAMMD (Gao et al. 2021); see the module docstring.

    Parameters (keyword-only):
        featurizer: phi; its ``base(x)`` part is what can be precomputed when frozen, ``head`` trains.
        input_shape: (C, H, W) the kernel is built for (checked on every call and on loading).
        epsilon: initial e (Liu et al. initialise near 0; default 1e-3 keeps the logit finite).
        sigma_phi: initial s_phi; ``None`` = median squared feature distance of the first training sample
            (as the DAD/SAMMD code does with ``Dxy.median()``).
        sigma_q: initial s_q; ``None`` = 2 * input dimension (the DAD code's sqrt(2*32*32)^2 for CIFAR-10).
    """

    def __init__(self, featurizer: nn.Module, *, input_shape: Sequence[int], epsilon: float = 1e-3,
                 sigma_phi: float | None = None, sigma_q: float | None = None) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(f"input_shape: expected (C, H, W), got {tuple(input_shape)}")
        self.input_shape = tuple(int(v) for v in input_shape)
        if not 0 < epsilon < 1:
            raise ValueError(f"epsilon: expected a number in (0, 1), got {epsilon}")
        self.featurizer = featurizer
        d = math.prod(self.input_shape)
        self.eps_logit = nn.Parameter(torch.tensor(math.log(epsilon / (1 - epsilon))))
        self.log_sigma_q = nn.Parameter(torch.tensor(math.log(sigma_q if sigma_q else 2.0 * d)))
        self.log_sigma_phi = nn.Parameter(torch.tensor(math.log(sigma_phi if sigma_phi else 1.0)))
        self.register_buffer("sigma_phi_initialised", torch.tensor(sigma_phi is not None))

    @property
    def epsilon(self) -> torch.Tensor:
        return torch.sigmoid(self.eps_logit)

    @property
    def sigma_phi(self) -> torch.Tensor:
        return self.log_sigma_phi.exp()

    @property
    def sigma_q(self) -> torch.Tensor:
        return self.log_sigma_q.exp()

    def check_input(self, x: torch.Tensor, name: str = "images") -> None:
        if x.dim() != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(
                f"{name}: this kernel was trained for inputs of shape {self.input_shape} (C, H, W), "
                f"got a batch of shape {tuple(x.shape)}"
            )

    def base_embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(flattened x, featurizer.base(x)): the part that does not depend on trainable kernel parameters
        when the featurizer's trainable part is only its head."""
        self.check_input(x)
        return _flat(x), self.featurizer.base(x)

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat, base = self.base_embed(x)
        return flat, self.featurizer.head(base)

    def head(self, base: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return base[0], self.featurizer.head(base[1])

    def init_sigma_phi(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Set s_phi to the median squared feature distance between ``x`` and ``y`` (once)."""
        if bool(self.sigma_phi_initialised):
            return
        with torch.no_grad():
            fx, fy = self.embed(x)[1], self.embed(y)[1]
            med = sq_dists(fx, fy).median().clamp_min(1e-6)
            self.log_sigma_phi.fill_(float(med.log()))
            self.sigma_phi_initialised.fill_(True)

    def matrix(self, ea: tuple[torch.Tensor, torch.Tensor], eb: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        dq = sq_dists(ea[0], eb[0]) / self.sigma_q
        dphi = sq_dists(ea[1], eb[1]) / self.sigma_phi
        e = self.epsilon
        return (1 - e) * torch.exp(-dphi - dq) + e * torch.exp(-dq)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.matrix(self.embed(a), self.embed(b))

    def config(self) -> dict:
        return {"type": "deep", "input_shape": list(self.input_shape), "featurizer": self.featurizer.config()}


def cat_embeddings(*es):
    """Concatenate embeddings (tensors or tuples of tensors) along the sample dimension."""
    if isinstance(es[0], tuple):
        return tuple(torch.cat(parts, 0) for parts in zip(*es))
    return torch.cat(es, 0)


def index_embedding(e, idx):
    if isinstance(e, tuple):
        return tuple(p[idx] for p in e)
    return e[idx]


def build_deep_kernel(*, input_shape: Sequence[int], featurizer: str = "semantic", classifier: nn.Module | None = None,
                      proj_dim: int | None = None, cnn_width: int = 16, cnn_out_dim: int = 64,
                      epsilon: float = 1e-3, sigma_phi: float | None = None, sigma_q: float | None = None) -> DeepKernel:
    """A :class:`DeepKernel` with a ``semantic`` (frozen classifier features, SAMMD; default) or ``cnn``
    (trainable, MMD-D) featurizer."""
    if featurizer == "semantic":
        if classifier is None:
            raise ValueError("semantic featurizer: a classifier (with .features(x)) is required")
        with torch.no_grad():
            probe = torch.full((2, *[int(v) for v in input_shape]), 0.5)
            feature_dim = int(_flat(classifier.features(probe)).shape[1])
        feat: nn.Module = SemanticFeaturizer(classifier, feature_dim=feature_dim, proj_dim=proj_dim)
    elif featurizer == "cnn":
        feat = ConvFeaturizer(input_shape=input_shape, width=cnn_width, out_dim=cnn_out_dim)
    else:
        raise ValueError(f"featurizer: expected 'semantic' or 'cnn', got {featurizer!r}")
    return DeepKernel(feat, input_shape=input_shape, epsilon=epsilon, sigma_phi=sigma_phi, sigma_q=sigma_q)


def save_kernel(kernel: DeepKernel, path, **sidecar) -> dict:
    """Save a deep kernel's own parameters (not the frozen classifier) as safetensors + JSON sidecar that
    records the input shape, the featurizer configuration and (semantic) the classifier fingerprint."""
    from ..checkpoint import save_weights

    return save_weights(kernel.state_dict(), path, {"kind": "mmd-kernel", **kernel.config(), **sidecar})


def load_kernel(path, *, classifier: nn.Module | None = None, input_shape: Sequence[int] | None = None) -> DeepKernel:
    """Load a kernel saved by :func:`save_kernel`.

    A semantic kernel needs the ``classifier`` it was trained for (same architecture and weights, checked by
    fingerprint); ``input_shape``, when given, must equal the recorded one. Mismatches raise ValueError.
    """
    from ..checkpoint import load_artifact, load_into

    sd, meta = load_artifact(path, kind="mmd-kernel", what="kernel")
    shape = tuple(meta["input_shape"])
    if input_shape is not None and tuple(int(v) for v in input_shape) != shape:
        raise ValueError(f"{path}: kernel trained for inputs of shape {shape} (C, H, W), "
                         f"but the data has shape {tuple(input_shape)}")
    fz = meta["featurizer"]
    if fz["type"] == "semantic":
        if classifier is None:
            raise ValueError(f"{path}: a semantic kernel needs the classifier it was trained for "
                             f"({fz['classifier']['arch']})")
        fp = classifier_fingerprint(classifier)
        if fp != fz["classifier"]:
            raise ValueError(
                f"{path}: kernel trained for classifier {fz['classifier']['arch']} "
                f"(state sha256 {fz['classifier']['state_sha256'][:12]}...), got {fp['arch']} "
                f"(state sha256 {fp['state_sha256'][:12]}...); train a kernel for this classifier"
            )
        kernel = build_deep_kernel(input_shape=shape, featurizer="semantic", classifier=classifier,
                                   proj_dim=fz.get("proj_dim"))
    elif fz["type"] == "cnn":
        kernel = build_deep_kernel(input_shape=shape, featurizer="cnn", cnn_width=fz["width"],
                                   cnn_out_dim=fz["out_dim"])
    else:
        raise ValueError(f"{path}: unknown featurizer type {fz['type']!r}")
    load_into(kernel, sd, what=f"kernel {path}")
    kernel.sidecar = meta
    return kernel.eval()
