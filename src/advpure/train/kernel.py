"""MMD-OPT training of a (semantic-aware) deep kernel on clean vs PGD examples (``advpure train kernel``).

Data: the dataset's train split, seeded-permuted; the first ``n`` images are the clean sample, the next
``n`` are attacked (PGD, L-inf) to form the adversarial sample (DAD: 500 + 500, PGD-10 at 8/255).
Afterwards the test power and type-I error at alpha are measured on the test split (clean batches of
``m`` vs PGD batches of ``m``; clean vs clean) and written to the sidecar.
"""

from __future__ import annotations

import logging
import os

import torch

from ..attacks.base import DEFAULT_EPS
from ..data import DEFAULT_LINF_EPS

log = logging.getLogger(__name__)


def load_inputs(*, dataset: str, data_dir: str | None, classifier: str, attack_eps: float | None):
    """(frozen classifier, train split, test split, l_inf budget: ``attack_eps`` or the dataset's default)."""
    from ..data import load_dataset
    from ..models import load_classifier

    clf = load_classifier(classifier)
    for p in clf.parameters():
        p.requires_grad_(False)
    train = load_dataset(dataset, "train", data_dir=data_dir)
    test = load_dataset(dataset, "test", data_dir=data_dir)
    eps = attack_eps if attack_eps is not None else DEFAULT_LINF_EPS.get(dataset, DEFAULT_EPS["linf"])
    return clf, train, test, eps


def run_train_kernel(*, dataset: str = "digits", data_dir: str | None = None, classifier: str,
                     out: str | os.PathLike, attack_eps: float | None = None, attack_steps: int = 10, seed: int = 0,
                     featurizer: str = "semantic", proj_dim: int | None = None, n_train: int = 500,
                     epochs: int = 200, lr: float = 2e-4, eval_m: int = 50, eval_tests: int = 100) -> dict:
    """Train the kernel (module docstring), save it to ``out`` with its sidecar; returns the measured results."""
    from ..attacks.pgd import make_adversarial
    from ..detect.kernels import build_deep_kernel, save_kernel
    from ..detect.mmd_opt import test_power, train_kernel, type1_error

    clf, train, test, eps = load_inputs(dataset=dataset, data_dir=data_dir, classifier=classifier,
                                        attack_eps=attack_eps)
    n = n_train
    if 2 * n > len(train):
        raise ValueError(f"--n-train {n}: needs {2 * n} training images, the train split has {len(train)}")
    idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    x_clean, _ = train.batch(idx[:n])
    x_src, y_src = train.batch(idx[n:2 * n])
    x_adv = make_adversarial(clf, x_src, y_src, eps=eps, steps=attack_steps, seed=seed)
    with torch.no_grad():
        adv_acc = float((clf(x_adv).argmax(1) == y_src).float().mean())
    torch.manual_seed(seed)
    kernel = build_deep_kernel(input_shape=train.shape, featurizer=featurizer, classifier=clf, proj_dim=proj_dim)
    hist = train_kernel(kernel, x_clean, x_adv, epochs=epochs, lr=lr, seed=seed, progress=True)
    result = {"J_first": hist.objective[0], "J_last": hist.objective[-1], "train_adv_accuracy": adv_acc,
              "attack": {"name": "pgd-linf", "eps": eps, "steps": attack_steps}}
    if eval_m:
        xt, yt = test.tensors()
        half = len(test) // 2
        perm = torch.randperm(len(test), generator=torch.Generator().manual_seed(seed + 1))
        xa = make_adversarial(clf, xt[perm[half:]], yt[perm[half:]], eps=eps, steps=attack_steps, seed=seed + 1)
        pool_clean = xt[perm[:half]]
        result["eval"] = {
            "m": eval_m, "alpha": 0.05, "n_tests": eval_tests,
            "power": test_power(kernel, pool_clean, xa, m=eval_m, n_tests=eval_tests, seed=seed),
            "type1": type1_error(kernel, xt, m=eval_m, n_tests=eval_tests, seed=seed),
        }
    save_kernel(kernel, out, dataset=dataset, classifier_spec=classifier,
                training={"n": n, "epochs": epochs, "lr": lr, "seed": seed}, result=result)
    return result
