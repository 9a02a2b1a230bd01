"""``advpure train {classifier,diffusion,consistency,kernel,denoiser}``: the options of each trainer of
:mod:`advpure.train`, and the call."""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any

from .. import threads
from ..contracts import linf_budget
from ..paths import check_writable
from ..specs import parse_spec
from ..train import consistency, diffusion
from .options import old_spelling


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train models (classifier, diffusion, kernel, denoiser, ...)")
    train_sub = p.add_subparsers(dest="what", metavar="WHAT", required=True)
    for add in (add_classifier, add_diffusion, add_consistency, add_kernel, add_denoiser):
        add(train_sub)


def _first_paragraph(module) -> str:
    return module.__doc__.split("\n\n")[0]


# --------------------------------------------------------------------------- classifier
def add_classifier(train_sub: argparse._SubParsersAction) -> None:
    p = train_sub.add_parser("classifier", help="train a classifier (seeded, resumable)")
    p.add_argument("--dataset", default="digits", help="digits | cifar10 | folder")
    p.add_argument("--data-dir", default=None, help="data location (cifar10/folder); or ADVPURE_CIFAR10")
    p.add_argument("--arch", default=None, help="architecture name (default per dataset: digits small-cnn, cifar10 resnet20)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default per dataset)")
    p.add_argument("--batch-size", type=int, default=None, help="batch size (default per dataset)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default per dataset)")
    p.add_argument("--weight-decay", type=float, default=None, help="weight decay (default per dataset)")
    p.add_argument("--seed", type=int, default=0, help="the training seed (initialisation, data order)")
    p.add_argument("--train-subset", type=int, default=None, help="train on a seeded subset of this many images")
    p.add_argument("--label-smoothing", type=float, default=0.0, help="label smoothing of the cross-entropy")
    p.add_argument("--schedule", choices=("cosine", "onecycle"), default="cosine", help="learning-rate schedule")
    p.add_argument("--warmup", type=float, default=0.2, help="one-cycle warm-up fraction")
    p.add_argument("--momentum", type=float, default=0.9, help="Nesterov momentum")
    p.add_argument("--pad", type=int, default=None, help="random-crop padding in pixels (default per dataset: 4 on CIFAR-10)")
    p.add_argument("--arch-kwargs", default=None, help="architecture options as key=value,... (e.g. head_scale=0.111)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, mps or auto")
    p.add_argument("--init", default=None, help="fine-tune: start from this classifier (spec or .safetensors)")
    p.add_argument("--weights-dtype", choices=("float32", "float16"), default="float32",
                   help="dtype of the saved weights (float16: half the file; the accuracy is measured on the rounded weights)")
    p.add_argument("--extra-train", action="append", default=[], metavar="FILE",
                   help="append an image set (advpure.data.imagefile, e.g. purified training images) to the "
                        "training set; repeatable")
    p.add_argument("--purify-aug", default=None, metavar="SPEC",
                   help="train on purified images drawn afresh every step: a purifier (--defense spec, e.g. "
                        "diffpure:model=PATH,t=0.1,steps=1,sampler=ddim) applied to a share of each batch")
    p.add_argument("--purify-frac", type=float, default=0.5,
                   help="the share of each batch replaced by its purification with --purify-aug (default 0.5)")
    p.add_argument("--out", required=True, help="output .safetensors (a .json sidecar is written beside it)")
    threads.add_argument(p)
    p.set_defaults(func=_classifier)


def _classifier(args: argparse.Namespace) -> int:
    from ..train.classifier import ClassifierTrainConfig, train_classifier

    check_writable(args.out, "--out", "file", suffix=".safetensors")
    cfg = ClassifierTrainConfig(dataset=args.dataset, arch=args.arch, data_dir=args.data_dir, epochs=args.epochs,
                                batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay, seed=args.seed,
                                device=args.device, train_subset=args.train_subset, out=args.out,
                                label_smoothing=args.label_smoothing, schedule=args.schedule, warmup=args.warmup,
                                momentum=args.momentum, pad=args.pad, init=args.init,
                                extra_train=tuple(args.extra_train), weights_dtype=args.weights_dtype,
                                purify_aug=args.purify_aug, purify_frac=args.purify_frac,
                                arch_kwargs=parse_spec("arch:" + args.arch_kwargs)[1] if args.arch_kwargs else None)
    _, meta = train_classifier(cfg)
    print(f"saved {args.out}: {meta['arch']} on {meta['dataset']}, test accuracy {meta['accuracy']:.4f} "
          f"({meta['n_test']} images), {meta['train']['seconds']} s")
    return 0


# --------------------------------------------------------------------------- diffusion
def _diffusion(args: argparse.Namespace) -> int:
    from ..train.diffusion import train_diffusion

    check_writable(args.out, "--out", "dir")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    res = train_diffusion(dataset=args.dataset, steps=args.steps, batch_size=args.batch_size, out=args.out,
                          t_max=args.t_max, time_sampling=args.time, lr=args.lr, seed=args.seed, resume=args.resume,
                          preset=args.preset, data_dir=args.data_dir, device=args.device, name=args.name,
                          t_focus=args.t_focus, ema_decay=args.ema_decay, save_every=args.save_every)
    if "weights" in res:
        loss = "n/a (no step in this run)" if res["final_loss"] is None else f"{res['final_loss']:.4f}"
        print(f"saved {res['weights']} ({res['steps']} steps, {res['seconds']:.1f} s, final loss {loss})")
        if "grid" in res:
            print(f"sample grid: {res['grid']}")
    return 0


def _focus(text: str) -> tuple[float, float]:
    try:
        t, share = (float(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--t-focus expects T:SHARE such as 0.1:0.75, got {text!r}") from None
    return t, share


def add_diffusion(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``diffusion`` to the ``advpure train`` sub-commands."""
    p = subparsers.add_parser("diffusion", help="train a small diffusion denoiser (eps prediction) for purification",
                              description=_first_paragraph(diffusion))
    p.add_argument("--dataset", default="digits", help="digits or cifar10")
    p.add_argument("--steps", type=int, default=3000, help="total optimisation steps")
    p.add_argument("--batch-size", type=int, default=128, help="batch size per process")
    p.add_argument("--out", required=True, help="output directory (weights, sidecar, state, sample grid)")
    p.add_argument("--t-max", type=float, default=1.0, help="train noise levels t in (t_min, t_max] only")
    p.add_argument("--time", choices=("continuous", "discrete"), default="continuous", help="time sampling")
    p.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate")
    p.add_argument("--t-focus", type=_focus, default=None, metavar="T:SHARE",
                   help="draw SHARE of each batch from t <= T, the rest from T < t <= t_max (default: uniform)")
    p.add_argument("--ema-decay", type=float, default=0.999, help="EMA decay of the saved weights")
    p.add_argument("--save-every", type=int, default=1000, help="write the resumable state every N steps")
    p.add_argument("--seed", type=int, default=0, help="the training seed")
    p.add_argument("--preset", default=None, help="UNet preset (default from dataset: digits, cifar10-small)")
    p.add_argument("--data-dir", default=None, help="dataset source (e.g. CIFAR-10 tar.gz)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--name", default=None, help="file stem (default <dataset>-ddpm)")
    p.add_argument("--resume", action="store_true", help="continue from <out>/<name>.state.pt")
    threads.add_argument(p)
    p.set_defaults(func=_diffusion)
    return p


# --------------------------------------------------------------------------- consistency
def _consistency(args: argparse.Namespace) -> int:
    from ..train.consistency import train_consistency

    check_writable(args.out, "--out", "dir")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    res = train_consistency(dataset=args.dataset, mode=args.mode, teacher=args.teacher, steps=args.steps,
                            batch_size=args.batch_size, out=args.out, lr=args.lr, n_cd=args.n_discretisation, metric=args.metric,
                            seed=args.seed, resume=args.resume, preset=args.preset, data_dir=args.data_dir, device=args.device,
                            name=args.name, classifier=args.classifier)
    print(f"saved {res['weights']} ({res['steps']} steps, {res['seconds']:.1f} s, final loss {res['final_loss']:.4g})")
    print(f"sample grid: {res['grid']}")
    if "recognisability" in res:
        r = res["recognisability"]
        print(f"one-step samples classified with confidence > {r['threshold']}: {r['confident_fraction']:.3f}; "
              f"class histogram {r['class_histogram']}")
    return 0


def add_consistency(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``consistency`` to the ``advpure train`` sub-commands."""
    p = subparsers.add_parser("consistency", help="train a consistency model (CD from a diffusion teacher, or CT)",
                              description=_first_paragraph(consistency))
    p.add_argument("--dataset", default="digits", help="digits or cifar10")
    p.add_argument("--mode", choices=("cd", "ct"), default="cd", help="distillation (needs --teacher) or training")
    p.add_argument("--teacher", default=None, help="VP diffusion eps-model (.safetensors + sidecar) for --mode cd")
    p.add_argument("--steps", type=int, default=3000, help="total optimisation steps")
    p.add_argument("--batch-size", type=int, default=128, help="batch size")
    p.add_argument("--out", required=True, help="output directory (weights, sidecar, state, sample grid)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument("--n-discretisation", type=int, default=consistency.CD_N,
                   help="CD discretisation steps N of the teacher's ODE")
    p.add_argument("--metric", choices=("l2", "pseudo-huber"), default=None,
                   help="default l2 for cd, pseudo-huber for ct")
    p.add_argument("--preset", default=None,
                   help="UNet for F: digits-cm (default for digits, channels 16/32), digits, "
                        "cifar10-tiny (1.1M), cifar10-small (default for cifar10)")
    p.add_argument("--seed", type=int, default=0, help="the training seed")
    p.add_argument("--data-dir", default=None, help="dataset source (e.g. CIFAR-10 tar.gz)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--name", default=None, help="file stem (default <dataset>-cm-<mode>)")
    p.add_argument("--classifier", default=None, help="classifier spec to measure sample recognisability")
    p.add_argument("--resume", action="store_true", help="continue from <out>/<name>.state.pt")
    threads.add_argument(p)
    p.set_defaults(func=_consistency)
    return p


# --------------------------------------------------------------------------- kernel, denoiser (DAD)
def add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="digits", choices=["digits", "cifar10", "folder"], help="training data")
    p.add_argument("--data-dir", default=None, help="dataset location (cifar10/folder)")
    p.add_argument("--classifier", required=True, help="classifier spec, e.g. zoo/digits-small-cnn.safetensors")
    p.add_argument("--eps", type=linf_budget, default=None,
                   help="l_inf budget of the PGD training examples (default: 0.2 digits, 8/255 cifar10)")
    p.add_argument("--attack-steps", type=int, default=10, help="PGD steps of the training examples (DAD: 10; "
                                                                "--steps in training means optimiser steps)")
    p.add_argument("--seed", type=int, default=0, help="the training seed")
    threads.add_argument(p)
    old_spelling(p, "--attack-eps", "--eps")


def _kernel(args: argparse.Namespace) -> int:
    from ..train.kernel import run_train_kernel

    check_writable(args.out, "--out", "file", suffix=".safetensors")
    result = run_train_kernel(dataset=args.dataset, data_dir=args.data_dir, classifier=args.classifier, out=args.out,
                              attack_eps=args.eps, attack_steps=args.attack_steps, seed=args.seed,
                              featurizer=args.featurizer, proj_dim=args.proj_dim, n_train=args.n_train,
                              epochs=args.epochs, lr=args.lr, eval_m=args.eval_m, eval_tests=args.eval_tests)
    print(json.dumps({"out": str(args.out), **result}, indent=2))
    return 0


def add_kernel(train_subparsers) -> argparse.ArgumentParser:
    """Add ``kernel`` to the ``advpure train`` sub-commands."""
    p = train_subparsers.add_parser("kernel", help="MMD-OPT: train a deep kernel on clean vs PGD examples (DAD)")
    add_data_args(p)
    p.add_argument("--out", required=True, help="output .safetensors (a JSON sidecar is written beside it)")
    p.add_argument("--featurizer", default="semantic", choices=["semantic", "cnn"],
                   help="semantic: frozen classifier features (SAMMD, DAD); cnn: trainable CNN (MMD-D)")
    p.add_argument("--proj-dim", type=int, default=None, help="trainable linear projection of semantic features")
    p.add_argument("--n-train", type=int, default=500, help="clean and adversarial training images each (DAD: 500)")
    p.add_argument("--epochs", type=int, default=200, help="Adam steps, full batch (DAD: 200)")
    p.add_argument("--lr", type=float, default=2e-4, help="Adam learning rate (DAD: 2e-4)")
    p.add_argument("--eval-m", type=int, default=50, help="test-set batch size for the power check (0 = skip)")
    p.add_argument("--eval-tests", type=int, default=100, help="number of tests for power / type-I error")
    p.set_defaults(func=_kernel)
    return p


def _denoiser(args: argparse.Namespace) -> int:
    from ..train.denoiser import run_train_denoiser

    check_writable(args.out, "--out", "file", suffix=".safetensors")
    result = run_train_denoiser(dataset=args.dataset, data_dir=args.data_dir, classifier=args.classifier,
                                kernel=args.kernel, out=args.out, attack_eps=args.eps,
                                attack_steps=args.attack_steps, seed=args.seed, n_clean=args.n_clean,
                                n_adv=args.n_adv, n_test=args.n_test, epochs=args.epochs, lr=args.lr,
                                batch_size=args.batch_size, alpha=args.alpha, noise_std=args.noise_std,
                                width=args.width, depth=args.depth)
    print(json.dumps({"out": str(args.out), **result}, indent=2))
    return 0


def add_denoiser(train_subparsers) -> argparse.ArgumentParser:
    """Add ``denoiser`` to the ``advpure train`` sub-commands."""
    p = train_subparsers.add_parser("denoiser", help="DAD denoiser: minimise MMD-OPT(clean, g(noisy adv)) + alpha CE")
    add_data_args(p)
    p.add_argument("--kernel", required=True, help="MMD-OPT kernel from `advpure train kernel`")
    p.add_argument("--out", required=True, help="output .safetensors")
    p.add_argument("--n-clean", type=int, default=500, help="clean images for the MMD term; the rest are attacked")
    p.add_argument("--n-adv", type=int, default=None,
                   help="attack only this many of the remaining train images (default: all; use e.g. 2000 on CIFAR-10)")
    p.add_argument("--n-test", type=int, default=None,
                   help="evaluate on a seeded subset of this many test images (default: the whole test split)")
    p.add_argument("--epochs", type=int, default=60, help="training epochs (DAD: 60)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (DAD: 1e-3)")
    p.add_argument("--batch-size", type=int, default=100, help="batch size (DAD: 100)")
    p.add_argument("--alpha", type=float, default=0.01, help="CE weight (DAD: CE + 100 MMD, i.e. 0.01)")
    p.add_argument("--noise-std", type=float, default=0.25, help="Gaussian noise before denoising (DAD: 0.25)")
    p.add_argument("--width", type=int, default=32, help="U-Net base width")
    p.add_argument("--depth", type=int, default=2, help="U-Net levels (image size divisible by 2^depth)")
    p.set_defaults(func=_denoiser)
    return p
