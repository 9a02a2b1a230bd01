"""The EPS statistics SSNI needs (:func:`make_reference`, ``advpure eps reference``), and the observation behind SSNI
drawn as a figure (:func:`observe`, ``advpure eps observe``: ||EPS|| of clean vs PGD inputs at several budgets,
and the per-sample noise level each would get)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..checkpoint import sha256_file
from ..detect.eps import EPSReference, compute_reference, eps_norm, reference_path


def _load_model(model: str | None, dataset: str):
    from ..defenses.diffusion_base import DEFAULT_MODELS
    from ..diffusion.models import load_denoiser
    from ..diffusion.schedule import VPSchedule

    path = Path(model) if model else DEFAULT_MODELS.get(dataset)
    if path is None:
        raise ValueError(f"no default diffusion model for dataset {dataset!r}; pass --model PATH")
    net, meta = load_denoiser(path)
    sha = meta.get("sha256") or (sha256_file(path) if Path(path).is_file() else None)
    return net, VPSchedule(), Path(path), sha


def make_reference(*, dataset: str, data_dir: str | None, model: str | None, n: int, batch_size: int, seed: int,
                   out: str | None, command: str) -> tuple[EPSReference, Path]:
    """||EPS|| statistics of ``n`` clean training images (a seeded subset), saved to ``out`` (default: beside the
    model, :func:`advpure.detect.eps.reference_path`); returns the reference and where it was written."""
    from ..data import load_dataset

    net, sched, path, sha = _load_model(model, dataset)
    ds = load_dataset(dataset, "train", data_dir=data_dir)
    n = min(n, len(ds))
    x, _ = ds.subset(n, seed).tensors()
    ref = compute_reference(net, x, schedule=sched, checkpoint_sha256=sha, batch_size=batch_size,
                            seed=seed, dataset=dataset, command=command)
    out_path = Path(out) if out else reference_path(path)
    ref.save(out_path)
    return ref, out_path


def observe(*, dataset: str, data_dir: str | None, model: str | None, classifier: str, budgets: list[float],
            n: int, seed: int, steps: int, out: Path, t_star: float = 0.1, ref: str | None = None) -> dict:
    """||EPS|| of clean and PGD-linf inputs at each budget (budget 0 = clean) and SSNI-N/L's t for them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..attacks import PGD
    from ..data import load_dataset
    from ..defenses.ssni import T_FLOOR, ssni_l, ssni_n
    from ..models import load_classifier

    net, sched, path, sha = _load_model(model, dataset)
    reference = EPSReference.load(ref or reference_path(path), checkpoint_sha256=sha)
    clf = load_classifier(classifier)
    x, y = load_dataset(dataset, "test", data_dir=data_dir).subset(n, seed).tensors()
    g = torch.Generator().manual_seed(seed)
    rows = {}
    for b in budgets:
        xb = x if b == 0 else PGD(norm="linf", eps=b, steps=steps, step_size=2.5 * b / steps, seed=seed)(clf, x, y)
        with torch.no_grad():
            s = torch.cat([eps_norm(net, xb[i:i + 64], schedule=sched, generator=g) for i in range(0, len(xb), 64)])
            acc = float((clf(xb).argmax(1) == y).float().mean())
        t_n = ssni_n(s, mu=reference.mean, tau=reference.std, t_star=t_star).clamp(T_FLOOR, 1)
        t_l = ssni_l(s, s_min=reference.min, s_max=reference.max, t_star=t_star).clamp(T_FLOOR, 1)
        rows[b] = {"norms": s, "t_n": t_n, "t_l": t_l, "accuracy": acc}
    out.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))

    def _bins(key: str):  # shared bins over all budgets (a constant t would break per-set bins)
        lo = min(float(r[key].min()) for r in rows.values())
        hi = max(float(r[key].max()) for r in rows.values())
        return torch.linspace(lo, hi + max(1e-6, 1e-3 * abs(hi)), 31).numpy()

    bins_s, bins_t = _bins("norms"), _bins("t_n")
    for b, r in rows.items():
        label = "clean" if b == 0 else f"PGD eps={b:.3g}"
        axes[0].hist(r["norms"].numpy(), bins=bins_s, alpha=0.5, label=label)
        axes[1].hist(r["t_n"].numpy(), bins=bins_t, alpha=0.5, label=label)
    axes[0].set_xlabel("||EPS(x)||")
    axes[0].set_ylabel("count")
    axes[0].set_title(f"{dataset}: ||EPS|| of clean and PGD inputs (n={n})")
    axes[1].set_xlabel("SSNI-N noise level t")
    axes[1].set_title(f"per-sample t (t*={t_star}, mu={reference.mean:.1f}, tau={reference.std:.1f})")
    for a in axes:
        a.legend()
    fig.tight_layout()
    fig.savefig(out / "eps-histogram.png", dpi=110)
    plt.close(fig)
    summary = {
        "dataset": dataset, "n": n, "seed": seed, "pgd_steps": steps, "t_star": t_star,
        "reference": {"mean": reference.mean, "std": reference.std, "min": reference.min, "max": reference.max},
        "budgets": {f"{b:.6g}": {"eps_norm_mean": float(r["norms"].mean()), "eps_norm_std": float(r["norms"].std()),
                                 "t_ssni_n_mean": float(r["t_n"].mean()), "t_ssni_l_mean": float(r["t_l"].mean()),
                                 "classifier_accuracy": r["accuracy"]} for b, r in rows.items()},
    }
    (out / "eps-observe.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
