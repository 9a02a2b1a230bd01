"""Clean and robust accuracy against t* and against the perturbation budget, for any diffusion purifier spec with
a ``t`` parameter (``advpure curves``; PNG + JSON)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence


def run_curves(*, dataset: str, classifier: str, defense: str, attack: str, t_values: Sequence[float],
               budgets: Sequence[float], n: int, out: Path, data_dir: str | None = None, seeds: Sequence[int] = (0,),
               batch_size: int = 100, votes: int = 0) -> dict:
    """Clean/robust accuracy vs t* (attack at its own eps) and vs eps (defense at its own t*); PNG + JSON.

    ``defense`` and ``attack`` are specs; ``t=`` of the defense and ``eps=`` of the attack are overridden.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..eval.runner import run_eval
    from ..specs import parse_spec

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
