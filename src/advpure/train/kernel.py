"""``advpure train kernel``: MMD-OPT training of a (semantic-aware) deep kernel on clean vs PGD examples.

Data: the dataset's train split, seeded-permuted; the first ``n`` images are the clean sample, the next
``n`` are attacked (PGD, L-inf) to form the adversarial sample (DAD: 500 + 500, PGD-10 at 8/255).
Afterwards the test power and type-I error at alpha are measured on the test split (clean batches of
``m`` vs PGD batches of ``m``; clean vs clean) and written to the sidecar.
"""

from __future__ import annotations

import argparse
import json
import logging

import torch

from .. import threads
from ..contracts import linf_budget
from ..paths import check_writable
from ..data import DEFAULT_LINF_EPS

log = logging.getLogger(__name__)



def add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="digits", choices=["digits", "cifar10", "folder"])
    p.add_argument("--data-dir", default=None, help="dataset location (cifar10/folder)")
    p.add_argument("--classifier", required=True, help="classifier spec, e.g. zoo/digits-small-cnn.safetensors")
    p.add_argument("--attack-eps", type=linf_budget, default=None,
                   help="L-inf PGD radius (default: 0.2 digits, 8/255 cifar10)")
    p.add_argument("--attack-steps", type=int, default=10, help="PGD steps (DAD: 10)")
    p.add_argument("--seed", type=int, default=0)
    threads.add_argument(p)


def load_inputs(args: argparse.Namespace):
    from ..data import load_dataset
    from ..models import load_classifier

    clf = load_classifier(args.classifier)
    for p in clf.parameters():
        p.requires_grad_(False)
    train = load_dataset(args.dataset, "train", data_dir=args.data_dir)
    test = load_dataset(args.dataset, "test", data_dir=args.data_dir)
    eps = args.attack_eps if args.attack_eps is not None else DEFAULT_LINF_EPS.get(args.dataset, 8 / 255)
    return clf, train, test, eps


def run_train_kernel(args: argparse.Namespace) -> int:
    from ..detect.kernels import build_deep_kernel, classifier_fingerprint, save_kernel
    from ..detect.mmd_opt import make_adversarial, test_power, train_kernel, type1_error

    check_writable(args.out, "--out", "file", suffix=".safetensors")
    clf, train, test, eps = load_inputs(args)
    n = args.n_train
    if 2 * n > len(train):
        raise ValueError(f"--n-train {n}: needs {2 * n} training images, the train split has {len(train)}")
    idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(args.seed))
    x_clean, _ = train.batch(idx[:n])
    x_src, y_src = train.batch(idx[n:2 * n])
    x_adv = make_adversarial(clf, x_src, y_src, eps=eps, steps=args.attack_steps, seed=args.seed)
    with torch.no_grad():
        adv_acc = float((clf(x_adv).argmax(1) == y_src).float().mean())
    torch.manual_seed(args.seed)
    kernel = build_deep_kernel(input_shape=train.shape, featurizer=args.featurizer, classifier=clf,
                               proj_dim=args.proj_dim)
    hist = train_kernel(kernel, x_clean, x_adv, epochs=args.epochs, lr=args.lr, seed=args.seed, progress=True)
    result = {"J_first": hist.objective[0], "J_last": hist.objective[-1], "train_adv_accuracy": adv_acc,
              "attack": {"name": "pgd-linf", "eps": eps, "steps": args.attack_steps}}
    if args.eval_m:
        xt, yt = test.tensors()
        half = len(test) // 2
        perm = torch.randperm(len(test), generator=torch.Generator().manual_seed(args.seed + 1))
        xa = make_adversarial(clf, xt[perm[half:]], yt[perm[half:]], eps=eps, steps=args.attack_steps,
                              seed=args.seed + 1)
        pool_clean = xt[perm[:half]]
        result["eval"] = {
            "m": args.eval_m, "alpha": 0.05, "n_tests": args.eval_tests,
            "power": test_power(kernel, pool_clean, xa, m=args.eval_m, n_tests=args.eval_tests, seed=args.seed),
            "type1": type1_error(kernel, xt, m=args.eval_m, n_tests=args.eval_tests, seed=args.seed),
        }
    save_kernel(kernel, args.out, dataset=args.dataset, classifier_spec=args.classifier,
                training={"n": n, "epochs": args.epochs, "lr": args.lr, "seed": args.seed}, result=result)
    print(json.dumps({"out": str(args.out), **result}, indent=2))
    return 0


def register(train_subparsers) -> argparse.ArgumentParser:
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
    p.set_defaults(func=run_train_kernel)
    return p
