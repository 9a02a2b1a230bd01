"""Non-adversarial threat models of ``advpure eval --threat ...``, and accuracy curves.

- ``--threat corruptions``: accuracy per corruption and severity (Hendrycks & Dietterich 2019,
  :mod:`advpure.eval.corruptions`), for the classifier alone and with the defense;
- ``--threat certify``: certified accuracy by randomized smoothing (Cohen et al. 2019,
  :mod:`advpure.eval.certify`), of the plain classifier and, with ``--denoiser``, of denoised smoothing
  (a one-shot diffusion denoiser in front, Carlini et al. 2023);
- ``advpure curves``: clean and robust accuracy against t* and against the perturbation budget, for any
  diffusion purifier spec with a ``t`` parameter (PNG + JSON).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Sequence

import torch

from .. import threads


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
    from .certify import OneShotDenoiser, certified_accuracy, certify

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


def run_curves(*, dataset: str, classifier: str, defense: str, attack: str, t_values: Sequence[float],
               budgets: Sequence[float], n: int, out: Path, data_dir: str | None = None, seeds: Sequence[int] = (0,),
               batch_size: int = 100, votes: int = 0) -> dict:
    """Clean/robust accuracy vs t* (attack at its own eps) and vs eps (defense at its own t*); PNG + JSON.

    ``defense`` and ``attack`` are specs; ``t=`` of the defense and ``eps=`` of the attack are overridden.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..specs import parse_spec
    from .runner import run_eval

    def with_param(spec: str, key: str, value: float) -> str:
        name, params = parse_spec(spec)
        params[key] = value
        return name + ":" + ",".join(f"{k}={v}" for k, v in params.items())

    def acc(dspec: str, aspec: str) -> dict:
        r = run_eval(dataset=dataset, data_dir=data_dir, classifier=classifier, defense=dspec, attack=aspec, n=n,
                     seeds=seeds, batch_size=batch_size, sanity=False, votes=votes, progress=False)
        return {"clean": r["clean_accuracy"]["mean"], "robust": r["robust_accuracy"]["mean"]}

    vs_t = {f"{t:g}": acc(with_param(defense, "t", t), attack) for t in t_values}
    vs_eps = {f"{e:g}": acc(defense, with_param(attack, "eps", e) if e > 0 else attack) for e in budgets}
    res = {"dataset": dataset, "n": n, "defense": defense, "attack": attack, "seeds": list(seeds), "vs_t": vs_t,
           "vs_eps": vs_eps}
    out.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    ts = [float(k) for k in vs_t]
    axes[0].plot(ts, [v["clean"] for v in vs_t.values()], "o-", label="clean")
    axes[0].plot(ts, [v["robust"] for v in vs_t.values()], "s-", label="robust")
    axes[0].set_xlabel("diffusion time t*")
    axes[0].set_title(f"{defense.split(':')[0]} vs t* ({attack.split(':')[0]})")
    es = [float(k) for k in vs_eps]
    axes[1].plot(es, [v["robust"] if e > 0 else v["clean"] for e, v in zip(es, vs_eps.values())], "s-",
                 label="accuracy under attack (eps=0: clean)")
    axes[1].set_xlabel("perturbation budget eps")
    axes[1].set_title("vs budget")
    for a in axes:
        a.set_ylabel("accuracy")
        a.set_ylim(0, 1.02)
        a.grid(alpha=0.3)
        a.legend()
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=110)
    plt.close(fig)
    (out / "curves.json").write_text(json.dumps(res, indent=2) + "\n")
    return res


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("curves", help="clean/robust accuracy vs t* and vs the budget for a diffusion purifier (PNG)")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--classifier", required=True)
    p.add_argument("--defense", required=True, help="a purifier spec with a t parameter, e.g. diffpure:steps=20")
    p.add_argument("--attack", required=True, help="attack spec; its eps is overridden on the budget axis")
    p.add_argument("--t-values", default="0.025,0.05,0.1,0.2,0.3")
    p.add_argument("--budgets", default="0,0.05,0.1,0.2,0.3")
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--seeds", default="0")
    p.add_argument("--votes", type=int, default=0)
    p.add_argument("--out", default="curves")
    threads.add_argument(p)
    p.set_defaults(func=_curves_main)


def _floats(s: str) -> list[float]:
    from ..detect.eps_cli import eval_fraction

    return [eval_fraction(v) for v in s.split(",") if v]


def _curves_main(args: argparse.Namespace) -> int:
    res = run_curves(dataset=args.dataset, data_dir=args.data_dir, classifier=args.classifier, defense=args.defense,
                     attack=args.attack, t_values=_floats(args.t_values), budgets=_floats(args.budgets), n=args.n,
                     out=Path(args.out), seeds=[int(s) for s in args.seeds.split(",")], votes=args.votes)
    print("| t* | clean | robust |\n|---|---|---|")
    for t, v in res["vs_t"].items():
        print(f"| {t} | {100 * v['clean']:.1f}% | {100 * v['robust']:.1f}% |")
    print("\n| eps | accuracy |\n|---|---|")
    for e, v in res["vs_eps"].items():
        print(f"| {e} | {100 * (v['robust'] if float(e) > 0 else v['clean']):.1f}% |")
    print(f"\nwrote {args.out}/curves.png and curves.json")
    return 0
