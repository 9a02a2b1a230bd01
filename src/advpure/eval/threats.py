"""Non-adversarial threat models of ``advpure eval --threat ...``.

- ``--threat corruptions``: accuracy per corruption and severity (Hendrycks & Dietterich 2019,
  :mod:`advpure.eval.corruptions`), for the classifier alone and with the defense;
- ``--threat certify``: certified accuracy by randomized smoothing (Cohen et al. 2019,
  :mod:`advpure.eval.certify`), of the plain classifier and, with ``--model``, of denoised smoothing
  (a one-shot diffusion denoiser in front, Carlini et al. 2023, :mod:`advpure.defenses.one_shot`).

Accuracy curves against t* and the budget (``advpure curves``) are :mod:`advpure.experiments.curves`.
"""

from __future__ import annotations

import time
from typing import Sequence

import torch


def _setup(dataset: str, data_dir: str | None, classifier: str, n: int, subset_seed: int, defense: str | None,
           allow_random_weights: bool = False):
    from ..data import load_dataset
    from ..defenses import DefendedClassifier
    from ..models import load_classifier
    from ..specs import SpecContext, build

    ds = load_dataset(dataset, "test", data_dir=data_dir).subset(n, subset_seed)
    clf = load_classifier(classifier, allow_random_weights=allow_random_weights)
    ctx = SpecContext(classifier=clf, dataset=dataset, image_shape=ds.shape)
    defended = None
    if defense and defense != "none":
        defended = DefendedClassifier(clf, build("defense", defense, ctx)).eval()
    return ds, clf, defended


def run_corruptions(*, dataset: str, classifier: str, defense: str | None, names: Sequence[str],
                    severities: Sequence[int], n: int, subset_seed: int = 0, seed: int = 0, batch_size: int = 100,
                    data_dir: str | None = None, allow_random_weights: bool = False) -> dict:
    """Accuracy under each corruption and severity, without and (if given) with the defense."""
    from .corruptions import corruption_accuracy

    ds, clf, defended = _setup(dataset, data_dir, classifier, n, subset_seed, defense, allow_random_weights)
    x, y = ds.tensors()
    t0 = time.time()
    out = {"threat": "corruptions", "dataset": dataset, "n": n, "subset_seed": subset_seed, "seed": seed,
           "classifier": classifier, "defense": defense or "none",
           "undefended": corruption_accuracy(clf, x, y, names=names, severities=severities, seed=seed,
                                             batch_size=batch_size)}
    if defended is not None:
        defended.reseed(seed)
        with torch.no_grad():
            out["defended"] = corruption_accuracy(defended, x, y, names=names, severities=severities, seed=seed,
                                                  batch_size=batch_size)
    out["seconds"] = round(time.time() - t0, 1)
    return out


def corruptions_table(res: dict) -> str:
    cols = ["undefended"] + (["defended"] if "defended" in res else [])
    lines = ["| corruption | severity | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    lines.append("| clean | - | " + " | ".join(f"{100 * res[c]['clean']:.1f}%" for c in cols) + " |")
    for name, sev in res["undefended"]["corruptions"].items():
        for s in sev:
            lines.append(f"| {name} | {s} | " + " | ".join(f"{100 * res[c]['corruptions'][name][s]:.1f}%" for c in cols) + " |")
    return "\n".join(lines)


def run_certify(*, dataset: str, classifier: str, sigma: float, n0: int, n_mc: int, alpha: float, n: int,
                subset_seed: int = 0, seed: int = 0, denoiser: str | None = None, batch_size: int = 500,
                radii: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0), data_dir: str | None = None,
                allow_random_weights: bool = False) -> dict:
    """Certified accuracy at ``radii`` of randomized smoothing (optionally denoised smoothing)."""
    from ..defenses import DefendedClassifier
    from ..defenses.one_shot import OneShotDenoiser
    from .certify import certified_accuracy, certify

    ds, clf, _ = _setup(dataset, data_dir, classifier, n, subset_seed, None, allow_random_weights)
    x, y = ds.tensors()
    model = clf
    if denoiser:
        from ..diffusion.models import load_denoiser
        from ..diffusion.schedule import VPSchedule

        net, _ = load_denoiser(denoiser)
        model = DefendedClassifier(clf, OneShotDenoiser(net, VPSchedule(), sigma=sigma)).eval()
    t0 = time.time()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        res = certify(model, x, sigma=sigma, n0=n0, n=n_mc, alpha=alpha, batch_size=batch_size, generator=g,
                      num_classes=ds.num_classes, progress=True)
    acc = certified_accuracy(res, y, radii=tuple(radii))
    return {"threat": "certify", "dataset": dataset, "n": n, "subset_seed": subset_seed, "seed": seed,
            "classifier": classifier, "denoiser": denoiser, "sigma": sigma, "n0": n0, "n_mc": n_mc, "alpha": alpha,
            "certified_accuracy": {f"{r:g}": a for r, a in acc.items()},
            "abstain": int((res.prediction == -1).sum()), "seconds": round(time.time() - t0, 1)}
