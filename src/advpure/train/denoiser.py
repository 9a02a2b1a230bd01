"""DAD denoiser training (Zhang et al., ICML 2025, Sec. 4): minimise

    L(g) = MMD^2_u(S_clean, g(S_adv + noise)) + alpha * CE(f(g(S_adv + noise)), y)

over the denoiser g with the MMD-OPT kernel and the classifier f frozen. The DAD code weighs
CE + 100 * MMD; we use the equivalent MMD + alpha * CE with alpha = 0.01 (default). Noise: Gaussian,
std 0.25, rectified (DAD code). Adam lr 1e-3, batch 100, 60 epochs in the paper (CIFAR-10).

``advpure train denoiser --kernel K.safetensors --classifier SPEC --out D.safetensors``.
"""

from __future__ import annotations

import argparse
import json
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


def run_train_denoiser(args: argparse.Namespace) -> int:
    from ..defenses.dad import ResidualUNet, save_denoiser
    from ..detect.kernels import load_kernel
    from ..detect.mmd_opt import make_adversarial
    from .kernel import load_inputs

    from ..paths import check_writable

    check_writable(args.out, "--out", "file", suffix=".safetensors")
    clf, train, test, eps = load_inputs(args)
    kernel = load_kernel(args.kernel, classifier=clf, input_shape=train.shape)
    n_clean = args.n_clean
    if n_clean >= len(train):
        raise ValueError(f"--n-clean {n_clean}: the train split has only {len(train)} images")
    idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(args.seed))
    x_clean, _ = train.batch(idx[:n_clean])
    end = None if args.n_adv is None else n_clean + args.n_adv
    x_src, y_src = train.batch(idx[n_clean:end])
    x_adv = make_adversarial(clf, x_src, y_src, eps=eps, steps=args.attack_steps, seed=args.seed)
    torch.manual_seed(args.seed)
    den = ResidualUNet(in_channels=train.shape[0], width=args.width, depth=args.depth)
    hist = train_denoiser(den, kernel, clf, x_clean, x_adv, y_src, epochs=args.epochs, lr=args.lr,
                          batch_size=args.batch_size, alpha=args.alpha, noise_std=args.noise_std, seed=args.seed,
                          progress=True)
    if args.n_test is not None:
        if not 0 < args.n_test <= len(test):
            raise ValueError(f"--n-test {args.n_test}: expected 1..{len(test)} (size of the test split)")
        xt, yt = test.subset(args.n_test, seed=args.seed).tensors()
    else:
        xt, yt = test.tensors()
    xa = make_adversarial(clf, xt, yt, eps=eps, steps=args.attack_steps, seed=args.seed + 1)
    gen = torch.Generator().manual_seed(args.seed)
    with torch.no_grad():
        def acc(x):
            return float((clf(x).argmax(1) == yt).float().mean())

        def den_acc(x):
            return acc(den(add_noise(x, std=args.noise_std, generator=gen)))
        result = {"clean_accuracy": acc(xt), "pgd_accuracy": acc(xa), "denoised_clean_accuracy": den_acc(xt),
                  "denoised_pgd_accuracy_transfer": den_acc(xa), "final_train_loss": hist.loss[-1],
                  "final_train_mmd2": hist.mmd2[-1], "attack": {"eps": eps, "steps": args.attack_steps}}
    save_denoiser(den, args.out, input_shape=train.shape, dataset=args.dataset, classifier_spec=args.classifier,
                  kernel=str(args.kernel),
                  training={"epochs": args.epochs, "lr": args.lr, "alpha": args.alpha, "batch_size": args.batch_size,
                            "noise_std": args.noise_std, "seed": args.seed, "n_adv": args.n_adv},
                  result={**result, "n_test": len(yt)})
    print(json.dumps({"out": str(args.out), **result}, indent=2))
    return 0


def register(train_subparsers) -> argparse.ArgumentParser:
    """Add ``denoiser`` to the ``advpure train`` sub-commands."""
    from .kernel import add_data_args

    p = train_subparsers.add_parser("denoiser", help="DAD denoiser: minimise MMD-OPT(clean, g(noisy adv)) + alpha CE")
    add_data_args(p)
    p.add_argument("--kernel", required=True, help="MMD-OPT kernel from `advpure train kernel`")
    p.add_argument("--out", required=True, help="output .safetensors")
    p.add_argument("--n-clean", type=int, default=500, help="clean images for the MMD term; the rest are attacked")
    p.add_argument("--n-adv", type=int, default=None,
                   help="attack only this many of the remaining train images (default: all; use e.g. 2000 on CIFAR-10)")
    p.add_argument("--n-test", type=int, default=None,
                   help="evaluate on a seeded subset of this many test images (default: the whole test split)")
    p.add_argument("--epochs", type=int, default=60, help="(DAD: 60)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam (DAD: 1e-3)")
    p.add_argument("--batch-size", type=int, default=100, help="(DAD: 100)")
    p.add_argument("--alpha", type=float, default=0.01, help="CE weight (DAD: CE + 100 MMD, i.e. 0.01)")
    p.add_argument("--noise-std", type=float, default=0.25, help="Gaussian noise before denoising (DAD: 0.25)")
    p.add_argument("--width", type=int, default=32, help="U-Net base width")
    p.add_argument("--depth", type=int, default=2, help="U-Net levels (image size divisible by 2^depth)")
    p.set_defaults(func=run_train_denoiser)
    return p
