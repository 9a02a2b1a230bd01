"""``advpure eps reference`` and ``advpure eps observe``: the EPS statistics SSNI needs, and the
observation behind SSNI drawn as a figure (||EPS|| of clean vs PGD inputs at several budgets, and the
per-sample noise level each would get)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from .. import threads
from ..checkpoint import sha256_file
from .eps import DEFAULT_T_LEVELS, EPSReference, compute_reference, eps_norm, reference_path


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


def cmd_reference(args: argparse.Namespace) -> int:
    from ..data import load_dataset

    net, sched, path, sha = _load_model(args.model, args.dataset)
    ds = load_dataset(args.dataset, "train", data_dir=args.data_dir)
    n = min(args.n, len(ds))
    x, _ = ds.subset(n, args.seed).tensors()
    ref = compute_reference(net, x, schedule=sched, checkpoint_sha256=sha, batch_size=args.batch_size,
                            seed=args.seed, dataset=args.dataset, command="advpure " + " ".join(sys.argv[1:]))
    out = Path(args.out) if args.out else reference_path(path)
    ref.save(out)
    print(f"wrote {out}: ||EPS|| over {ref.n} clean {args.dataset} train images: mean {ref.mean:.2f}, "
          f"std {ref.std:.2f}, min {ref.min:.2f}, max {ref.max:.2f}")
    return 0


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


def cmd_observe(args: argparse.Namespace) -> int:
    budgets = [float(eval_fraction(b)) for b in args.budgets.split(",")]
    bad = [b for b in budgets if not 0 <= b <= 1]
    if bad:
        raise ValueError(f"--budgets {args.budgets}: l_inf budgets for images in [0, 1] must lie in [0, 1] (got "
                         f"{', '.join(f'{b:g}' for b in bad)}; 8/255 style fractions are accepted)")
    s = observe(dataset=args.dataset, data_dir=args.data_dir, model=args.model, classifier=args.classifier,
                budgets=budgets, n=args.n, seed=args.seed, steps=args.steps, out=Path(args.out), t_star=args.t,
                ref=args.ref)
    print("| budget | mean ||EPS|| | std | mean t (SSNI-N) | mean t (SSNI-L) | classifier acc |")
    print("| --- | --- | --- | --- | --- | --- |")
    for b, r in s["budgets"].items():
        print(f"| {b} | {r['eps_norm_mean']:.2f} | {r['eps_norm_std']:.2f} | {r['t_ssni_n_mean']:.4f} | "
              f"{r['t_ssni_l_mean']:.4f} | {r['classifier_accuracy']:.3f} |")
    print(f"wrote {args.out}/eps-histogram.png and eps-observe.json")
    return 0


def eval_fraction(s: str) -> float:
    from ..specs import _parse_value

    v = _parse_value(s)
    if not isinstance(v, (int, float)):
        raise ValueError(f"budget {s!r} is not a number (use 0.1 or 8/255)")
    return float(v)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eps", help="expected perturbation score: reference statistics and the SSNI observation")
    eps_sub = p.add_subparsers(dest="what", metavar="WHAT", required=True)
    r = eps_sub.add_parser("reference", help="||EPS|| statistics of clean training images, stored beside the model")
    r.add_argument("--dataset", default="digits")
    r.add_argument("--data-dir", default=None)
    r.add_argument("--model", default=None, help="diffusion checkpoint (default: the zoo model of the dataset)")
    r.add_argument("--n", type=int, default=5000, help="clean reference images (paper: 5,000 training images)")
    r.add_argument("--batch-size", type=int, default=64)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--out", default=None, help="default: <model>.eps-ref.json")
    threads.add_argument(r)
    r.set_defaults(func=cmd_reference)
    o = eps_sub.add_parser("observe", help="histogram PNG of ||EPS|| for clean and PGD inputs, and SSNI's t")
    o.add_argument("--dataset", default="digits")
    o.add_argument("--data-dir", default=None)
    o.add_argument("--model", default=None)
    o.add_argument("--ref", default=None)
    o.add_argument("--classifier", required=True)
    o.add_argument("--budgets", default="0,0.05,0.1,0.2,0.3", help="linf budgets, comma separated (8/255 allowed)")
    o.add_argument("--n", type=int, default=200)
    o.add_argument("--steps", type=int, default=20)
    o.add_argument("--t", type=float, default=0.1, help="t* of the wrapped purifier")
    o.add_argument("--seed", type=int, default=0)
    o.add_argument("--out", default="eps-observe")
    threads.add_argument(o)
    o.set_defaults(func=cmd_observe)
