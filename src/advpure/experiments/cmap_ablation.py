"""``advpure cmap-ablation``: CMAP's ablations and its robustness next to DiffPure, on a seeded test subset.

Figures (PNG, matplotlib Agg) written to ``--out``:

- ``iterations.png``: clean and robust accuracy (voted over K) after each number of latent-optimisation
  iterations, for ``lam = 0`` and ``lam > 0`` (robust = on adversarial examples crafted by PGD-linf
  against the undefended classifier, i.e. the purification-of-fixed-adversarial-examples curve);
- ``latents.png``: mean and standard deviation of the normalised latents ``u = z / sigma_max`` over the
  iterations, for both lam values, against the prior's (0 and 1);
- ``voting.png``: accuracy with the vote over K samples vs the lowest-loss sample alone;
- ``k.png``: clean and robust accuracy for K in {1, 2, 4, 8}.

``--attacks`` also runs the adaptive attacks on CMAP (consistency disruption, full-gradient PGD-EOT
through the unrolled optimisation, BPDA-EOT) and DiffPure on the same images, and writes ``report.json``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..data import DEFAULT_LINF_EPS
from ..paths import zoo_dir

log = logging.getLogger(__name__)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _vote(clf: nn.Module, samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(voted prediction, per-sample predictions (N, K)) for samples (N, K, C, H, W)."""
    from ..defenses.cmap import CMAPClassifier

    n, k = samples.shape[:2]
    with torch.no_grad():
        logits = clf(samples.flatten(0, 1)).view(n, k, -1)
    return CMAPClassifier.vote_from_logits(logits).argmax(1), logits.argmax(-1)


def _trace_accuracy(cmap, clf, x, y, seed: int, every: int) -> dict[str, list]:
    res = cmap.optimise(x, generator=torch.Generator().manual_seed(seed), trace_every=every)
    out: dict[str, list] = {"iteration": [], "acc_vote": [], "acc_best": [], "latent_mean": [], "latent_std": []}
    for rec in res.trace:
        voted, per = _vote(clf, rec["samples"])
        best = per[torch.arange(len(y)), rec["recon_loss"].argmin(1)]
        out["iteration"].append(rec["iteration"])
        out["acc_vote"].append(float((voted == y).float().mean()))
        out["acc_best"].append(float((best == y).float().mean()))
        out["latent_mean"].append(rec["latent_mean"])
        out["latent_std"].append(rec["latent_std"])
    return out


def _subset(dataset: str, data_dir: str | None, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    from ..data import load_dataset

    return load_dataset(dataset, "test", data_dir=data_dir).subset(n, seed).tensors()


def _cmap_options(iterations: int | None, k: int | None, lr: float | None, lam: float | None,
                  lam_s: float | None) -> dict[str, Any]:
    """CMAP's options with ``None`` meaning its documented default."""
    from ..defenses.cmap import DEFAULTS

    given = {"iterations": iterations, "k": k, "lr": lr, "lam": lam, "lam_s": lam_s}
    return {key: DEFAULTS[key] if v is None else v for key, v in given.items()}


def run_ablation(*, model: str, classifier: str, n: int = 100, seed: int = 0, out: str | Path,
                 iterations: int = 60, every: int = 5, lam: float = 3.0, eps: float = DEFAULT_LINF_EPS["digits"], k: int = 4,
                 lr: float | None = None, lam_s: float | None = None, k_iterations: int | None = None,
                 dataset: str = "digits", data_dir: str | None = None, ks: tuple[int, ...] = (1, 2, 4, 8)
                 ) -> dict[str, Any]:
    """The ablation figures (module docstring). ``iterations``: length of the iteration curves;
    ``k_iterations`` (default: CMAP's default iterations): iterations for the voting and K comparisons."""
    from ..attacks import PGD
    from ..defenses.cmap import DEFAULTS, load_cmap
    from ..models import load_classifier

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plt = _plt()
    clf = load_classifier(classifier).eval()
    x, y = _subset(dataset, data_dir, n, seed)
    x_adv = PGD(norm="linf", eps=eps, steps=20, step_size=2.5 * eps / 20, seed=seed)(clf, x, y)
    with torch.no_grad():
        base = {"clean": float((clf(x).argmax(1) == y).float().mean()),
                "pgd_on_classifier": float((clf(x_adv).argmax(1) == y).float().mean())}
    k_iterations = k_iterations or DEFAULTS["iterations"]
    opts = dict(lr=lr if lr is not None else DEFAULTS["lr"], lam_s=lam_s if lam_s is not None else DEFAULTS["lam_s"])
    report: dict[str, Any] = {"dataset": dataset, "n": n, "seed": seed, "eps_linf": eps, "undefended": base, "k": k,
                              **opts, "model": str(model), "classifier": str(classifier),
                              "adv_examples": "PGD-linf 20 steps against the undefended classifier"}
    # 1. iterations x lambda
    curves = {}
    for lam_v in (0.0, lam):
        c = load_cmap(model, image_shape=tuple(x.shape[1:]), k=k, iterations=iterations, lam=lam_v, **opts)
        curves[lam_v] = {"clean": _trace_accuracy(c, clf, x, y, seed, every),
                         "adv": _trace_accuracy(c, clf, x_adv, y, seed, every)}
    report["iterations"] = {str(kk): v for kk, v in curves.items()}
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    for lam_v, cv in curves.items():
        ax[0].plot(cv["clean"]["iteration"], cv["clean"]["acc_vote"], "-o", ms=3, label=f"clean, lam={lam_v:g}")
        ax[0].plot(cv["adv"]["iteration"], cv["adv"]["acc_vote"], "--s", ms=3, label=f"PGD adv, lam={lam_v:g}")
        ax[1].plot(cv["clean"]["iteration"], cv["clean"]["latent_mean"], "-", label=f"mean, lam={lam_v:g}")
        ax[1].plot(cv["clean"]["iteration"], cv["clean"]["latent_std"], "--", label=f"std, lam={lam_v:g}")
    ax[0].axhline(base["clean"], color="gray", lw=0.8, ls=":", label="undefended clean")
    ax[0].axhline(base["pgd_on_classifier"], color="red", lw=0.8, ls=":", label="undefended under PGD")
    ax[0].set(xlabel="latent optimisation iterations", ylabel=f"accuracy (vote over K={k})",
              title=f"CMAP on {dataset}, n={n}, eps={eps:.4g}")
    ax[0].legend(fontsize=7)
    ax[1].axhline(0, color="gray", lw=0.8, ls=":")
    ax[1].axhline(1, color="gray", lw=0.8, ls=":", label="prior: mean 0, std 1")
    ax[1].set(xlabel="iterations", ylabel="u = z / sigma_max", title="latent moments (clean inputs)")
    ax[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "iterations.png", dpi=110)
    plt.close(fig)
    # 2. voting vs lowest-loss sample (lam > 0, at the default number of iterations when it was traced)
    cv = curves[lam]
    its = cv["clean"]["iteration"]
    j = its.index(k_iterations) if k_iterations in its else len(its) - 1
    vote = {"iterations": its[j], "clean_vote": cv["clean"]["acc_vote"][j], "clean_best": cv["clean"]["acc_best"][j],
            "adv_vote": cv["adv"]["acc_vote"][j], "adv_best": cv["adv"]["acc_best"][j]}
    report["voting"] = vote
    fig, axv = plt.subplots(figsize=(5, 3.5))
    xs = torch.arange(2).float()
    axv.bar(xs - 0.2, [vote["clean_vote"], vote["adv_vote"]], 0.4, label=f"vote over K={k}")
    axv.bar(xs + 0.2, [vote["clean_best"], vote["adv_best"]], 0.4, label="lowest-loss sample")
    axv.set_xticks(xs.tolist(), ["clean", "PGD adv"])
    axv.set(ylabel="accuracy", ylim=(0, 1), title=f"CMAP voting ({its[j]} it., lam={lam:g})")
    axv.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "voting.png", dpi=110)
    plt.close(fig)
    # 3. K
    ks = list(ks)
    kres = {"clean": [], "adv": []}
    for kv in ks:
        c = load_cmap(model, image_shape=tuple(x.shape[1:]), k=kv, iterations=k_iterations, lam=lam, **opts)
        for part, xx in (("clean", x), ("adv", x_adv)):
            r = c.optimise(xx, generator=torch.Generator().manual_seed(seed))
            kres[part].append(float((_vote(clf, r.samples)[0] == y).float().mean()))
    report["k_sweep"] = {"k": ks, **kres}
    fig, axk = plt.subplots(figsize=(5, 3.5))
    axk.plot(ks, kres["clean"], "-o", label="clean")
    axk.plot(ks, kres["adv"], "-s", label="PGD adv")
    axk.set(xscale="log", xticks=ks, xlabel="K (latents per input)", ylabel="accuracy (vote)", ylim=(0, 1),
            title=f"CMAP: number of latents ({k_iterations} it., lam={lam:g})")
    axk.set_xticks(ks, [str(v) for v in ks])
    axk.xaxis.set_minor_formatter(plt.NullFormatter())
    axk.legend()
    fig.tight_layout()
    fig.savefig(out / "k.png", dpi=110)
    plt.close(fig)
    # a few purified examples
    from ..train.diffusion import save_grid

    c = load_cmap(model, image_shape=tuple(x.shape[1:]), k=k, iterations=k_iterations, lam=lam, **opts)
    r = c.optimise(x_adv[:8], generator=torch.Generator().manual_seed(seed))
    grid = torch.cat([x[:8], x_adv[:8], r.samples.transpose(0, 1).flatten(0, 1)])
    save_grid(grid, out / "examples.png", nrow=8, title="rows: clean, PGD adv, then CMAP samples k=1..K of adv")
    (out / "ablation.json").write_text(json.dumps(report, indent=1))
    return report


def run_attacks(*, model: str, classifier: str, teacher: str | None, n: int = 100, seed: int = 0,
                out: str | Path, eps: float = DEFAULT_LINF_EPS["digits"], pgd_steps: int = 10, eot: int = 2, iterations: int | None = None,
                k: int | None = None, diffpure_steps: int = 20, diffpure_t: float = 0.1,
                skip_full: bool = False, full_steps: int = 5, parts: str = "cmap,full,diffpure",
                dataset: str = "digits", data_dir: str | None = None, lr: float | None = None,
                lam: float | None = None, lam_s: float | None = None, disruption_steps: int = 30) -> dict[str, Any]:
    """Clean and robust accuracy of CMAP (vote) and DiffPure under adaptive attacks on the same images.

    ``parts``: comma-separated subset of ``cmap`` (clean, consistency disruption, BPDA-EOT), ``disruption``
    (the consistency-disruption row alone), ``full``
    (full-gradient PGD-EOT through CMAP) and ``diffpure`` (clean, BPDA-EOT, full-gradient PGD-EOT)."""
    todo = set(parts.split(","))
    if not todo <= {"cmap", "disruption", "full", "diffpure"}:
        raise ValueError(f"parts: expected a subset of cmap,disruption,full,diffpure, got {parts!r}")
    from ..attacks import BPDA, PGD
    from ..defenses import DefendedClassifier
    from ..defenses.cmap import CMAPClassifier, load_cmap
    from ..models import load_classifier

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    clf = load_classifier(classifier).eval()
    x, y = _subset(dataset, data_dir, n, seed)
    opts = _cmap_options(iterations, k, lr, lam, lam_s)
    cmap = load_cmap(model, image_shape=tuple(x.shape[1:]), **opts)
    voted = CMAPClassifier(clf, cmap, seed=seed)
    single = DefendedClassifier(clf, cmap, seed=seed)
    step = 2.5 * eps / pgd_steps
    report: dict[str, Any] = {"dataset": dataset, "n": n, "seed": seed, "eps_linf": eps, "cmap": cmap.describe(),
                              "model": str(model), "classifier": str(classifier), "teacher": teacher,
                              "pgd_steps": pgd_steps, "eot": eot, "rows": []}

    def acc(m: nn.Module, xx: torch.Tensor, s: int) -> float:
        m.reseed(s) if hasattr(m, "reseed") else None
        with torch.no_grad():
            return float((m(xx).argmax(1) == y).float().mean())

    def row(name: str, m_eval: nn.Module, xx: torch.Tensor, t0: float, extra: dict | None = None) -> None:
        r = {"defense_attack": name, "accuracy": acc(m_eval, xx, seed + 1), "seconds": round(time.perf_counter() - t0, 1),
             **(extra or {})}
        log.info("%s", r)
        report["rows"].append(r)
        (out / "report.json").write_text(json.dumps(report, indent=1))

    t0 = time.perf_counter()
    row("undefended / clean", clf, x, t0)
    if todo & {"cmap", "disruption"}:
        _cmap_rows(voted, single, x, y, eps, pgd_steps, step, eot, seed, row, todo, disruption_steps)
    if "full" in todo and not skip_full:
        t0 = time.perf_counter()
        pgd = PGD(norm="linf", eps=eps, steps=full_steps, step_size=2.5 * eps / full_steps, eot=eot, seed=seed,
                  grad_checkpoint=True)
        xa = pgd(voted, x, y)
        row(f"cmap-vote / PGD-EOT full gradient (PGD {full_steps} steps, EOT {eot}, through {opts['iterations']} "
            "unrolled Adam steps, surrogate = mean softmax over K)", voted, xa, t0)
    if teacher and "diffpure" in todo:
        from ..defenses.diffpure import DiffPure
        from ..diffusion.models import load_denoiser

        net, _ = load_denoiser(teacher, image_shape=tuple(x.shape[1:]))
        dp = DefendedClassifier(clf, DiffPure(net, t=diffpure_t, n_steps=diffpure_steps), seed=seed)
        t0 = time.perf_counter()
        row(f"diffpure(t={diffpure_t}, {diffpure_steps} steps) / clean", dp, x, t0)
        t0 = time.perf_counter()
        xa = BPDA(norm="linf", eps=eps, steps=pgd_steps, step_size=step, eot=eot, seed=seed)(dp, x, y)
        row(f"diffpure / BPDA-EOT (PGD {pgd_steps} steps, EOT {eot})", dp, xa, t0)
        t0 = time.perf_counter()
        xa = PGD(norm="linf", eps=eps, steps=full_steps, step_size=2.5 * eps / full_steps, eot=eot, seed=seed,
                 grad_checkpoint=True)(dp, x, y)
        row(f"diffpure / PGD-EOT full gradient (PGD {full_steps} steps, EOT {eot})", dp, xa, t0)
    return report


def _cmap_rows(voted, single, x, y, eps, pgd_steps, step, eot, seed, row, todo, disruption_steps) -> None:
    from ..attacks import BPDA
    from ..attacks.cmap_attack import ConsistencyDisruption

    if "cmap" in todo:
        t0 = time.perf_counter()
        row("cmap-vote / clean", voted, x, t0)
        t0 = time.perf_counter()
        row("cmap-best / clean", single, x, t0)
    if "cmap" in todo or "disruption" in todo:
        t0 = time.perf_counter()
        atk = ConsistencyDisruption(eps=eps, steps=disruption_steps, seed=seed)
        xa = atk(voted, x, y)
        any_fooled = atk.last_fooled_any
        row(f"cmap-vote / consistency-disruption (gamma=1, {disruption_steps} steps)", voted, xa, t0,
            {"accuracy_no_candidate_fooled_at_attack_time": float(1 - any_fooled.float().mean())})
    if "cmap" not in todo:
        return
    t0 = time.perf_counter()
    xa = BPDA(norm="linf", eps=eps, steps=pgd_steps, step_size=step, eot=eot, seed=seed)(single, x, y)
    row(f"cmap-vote / BPDA-EOT (PGD {pgd_steps} steps, EOT {eot}, identity backward)", voted, xa, t0)


#: the classifier each dataset is evaluated with unless told (CIFAR-10: the user's, e.g. the shared ResNet-56);
#: the consistency model defaults to CMAP's zoo model and the budget to the dataset's l_inf default
DEFAULT_CLASSIFIERS = {"digits": str(zoo_dir() / "digits-small-cnn.safetensors"), "cifar10": None}
