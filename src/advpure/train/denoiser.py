"""DAD denoiser training (Zhang et al., ICML 2025, Sec. 4): minimise

    L(g) = MMD^2_u(S_clean, g(S_adv + noise)) + alpha * CE(f(g(S_adv + noise)), y)

over the denoiser g with the MMD-OPT kernel and the classifier f frozen. The DAD code weighs
CE + 100 * MMD; we use the equivalent MMD + alpha * CE with alpha = 0.01 (default). Noise: Gaussian,
std 0.25, rectified (DAD code). Adam lr 1e-3, batch 100, 60 epochs in the paper (CIFAR-10).

Command line: ``advpure train denoiser --kernel K.safetensors --classifier SPEC --out D.safetensors``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..contracts import check_images, check_int, check_labels, check_positive
from ..defenses.dad import add_noise
from ..detect.kernels import DeepKernel, cat_embeddings
from ..detect.mmd import mmd2_unbiased, split_gram


@dataclass
class DenoiserHistory:
    loss: list[float] = field(default_factory=list)
    mmd2: list[float] = field(default_factory=list)
    ce: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)  # classifier accuracy on denoised training inputs


def train_denoiser(denoiser: nn.Module, kernel: DeepKernel, classifier: nn.Module, x_clean: torch.Tensor,
                   x_adv: torch.Tensor, y_adv: torch.Tensor, *, epochs: int = 60, lr: float = 1e-3,
                   batch_size: int = 100, alpha: float = 0.01, noise_std: float = 0.25, rectified_noise: bool = True,
                   seed: int = 0, progress: bool = False) -> DenoiserHistory:
    """Train ``denoiser`` in place; returns per-epoch means of the loss, MMD^2_u, CE and accuracy.

    Each step pairs a batch of adversarial inputs with a random clean batch of the same size.
    """
    check_images(x_clean, name="clean images")
    check_images(x_adv, name="adversarial images")
    check_labels(y_adv, x_adv.shape[0])
    kernel.check_input(x_adv, "adversarial images")
    check_int(epochs, "epochs")
    check_positive(lr, "lr")
    check_positive(alpha, "alpha", allow_zero=True)
    bs = check_int(batch_size, "batch_size", minimum=2)
    if bs > min(x_clean.shape[0], x_adv.shape[0]):
        raise ValueError(f"batch_size {bs} exceeds the clean ({x_clean.shape[0]}) or adversarial "
                         f"({x_adv.shape[0]}) training images")
    frozen = [p for p in list(kernel.parameters()) + list(classifier.parameters()) if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    kernel.eval()
    classifier.eval()
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(denoiser.parameters(), lr=lr)
    hist = DenoiserHistory()
    denoiser.train()
    try:
        for _ in tqdm(range(epochs), disable=not progress, desc="denoiser"):
            perm = torch.randperm(x_adv.shape[0], generator=g)
            sums = [0.0, 0.0, 0.0, 0.0]
            steps = 0
            for i in range(0, x_adv.shape[0] - bs + 1, bs):
                idx = perm[i:i + bs]
                cidx = torch.randperm(x_clean.shape[0], generator=g)[:bs]
                xin = add_noise(x_adv[idx], std=noise_std, rectified=rectified_noise, generator=g)
                xd = denoiser(xin)
                with torch.no_grad():
                    ec = kernel.embed(x_clean[cidx])
                e = cat_embeddings(ec, kernel.embed(xd))
                mmd2 = mmd2_unbiased(*split_gram(kernel.matrix(e, e), bs))
                logits = classifier(xd)
                ce = F.cross_entropy(logits, y_adv[idx])
                loss = mmd2 + alpha * ce
                opt.zero_grad()
                loss.backward()
                opt.step()
                acc = float((logits.argmax(1) == y_adv[idx]).float().mean())
                for j, v in enumerate((float(loss.detach()), float(mmd2.detach()), float(ce.detach()), acc)):
                    sums[j] += v
                steps += 1
            for lst, v in zip((hist.loss, hist.mmd2, hist.ce, hist.accuracy), sums):
                lst.append(v / steps)
    finally:
        for p in frozen:
            p.requires_grad_(True)
    denoiser.eval()
    return hist


def run_train_denoiser(*, dataset: str = "digits", data_dir: str | None = None, classifier: str, kernel: str,
                       out: str | os.PathLike, attack_eps: float | None = None, attack_steps: int = 10,
                       seed: int = 0, n_clean: int = 500, n_adv: int | None = None, n_test: int | None = None,
                       epochs: int = 60, lr: float = 1e-3, batch_size: int = 100, alpha: float = 0.01,
                       noise_std: float = 0.25, width: int = 32, depth: int = 2) -> dict:
    """Train the DAD denoiser on the dataset's train split (``n_clean`` clean images, the next ``n_adv`` attacked
    by PGD), save it to ``out``; returns its accuracies on the test split (clean and PGD, with and without it)."""
    from ..attacks.pgd import make_adversarial
    from ..defenses.dad import ResidualUNet, save_denoiser
    from ..detect.kernels import load_kernel
    from .kernel import load_inputs

    clf, train, test, eps = load_inputs(dataset=dataset, data_dir=data_dir, classifier=classifier,
                                        attack_eps=attack_eps)
    k = load_kernel(kernel, classifier=clf, input_shape=train.shape)
    if n_clean >= len(train):
        raise ValueError(f"--n-clean {n_clean}: the train split has only {len(train)} images")
    idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    x_clean, _ = train.batch(idx[:n_clean])
    end = None if n_adv is None else n_clean + n_adv
    x_src, y_src = train.batch(idx[n_clean:end])
    x_adv = make_adversarial(clf, x_src, y_src, eps=eps, steps=attack_steps, seed=seed)
    torch.manual_seed(seed)
    den = ResidualUNet(in_channels=train.shape[0], width=width, depth=depth)
    hist = train_denoiser(den, k, clf, x_clean, x_adv, y_src, epochs=epochs, lr=lr, batch_size=batch_size,
                          alpha=alpha, noise_std=noise_std, seed=seed, progress=True)
    if n_test is not None:
        if not 0 < n_test <= len(test):
            raise ValueError(f"--n-test {n_test}: expected 1..{len(test)} (size of the test split)")
        xt, yt = test.subset(n_test, seed=seed).tensors()
    else:
        xt, yt = test.tensors()
    xa = make_adversarial(clf, xt, yt, eps=eps, steps=attack_steps, seed=seed + 1)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        def acc(x):
            return float((clf(x).argmax(1) == yt).float().mean())

        def den_acc(x):
            return acc(den(add_noise(x, std=noise_std, generator=gen)))
        result = {"clean_accuracy": acc(xt), "pgd_accuracy": acc(xa), "denoised_clean_accuracy": den_acc(xt),
                  "denoised_pgd_accuracy_transfer": den_acc(xa), "final_train_loss": hist.loss[-1],
                  "final_train_mmd2": hist.mmd2[-1], "attack": {"eps": eps, "steps": attack_steps}}
    save_denoiser(den, out, input_shape=train.shape, dataset=dataset, classifier_spec=classifier,
                  kernel=str(kernel),
                  training={"epochs": epochs, "lr": lr, "alpha": alpha, "batch_size": batch_size,
                            "noise_std": noise_std, "seed": seed, "n_adv": n_adv},
                  result={**result, "n_test": len(yt)})
    return result
