"""Plot the purification-model sweep (``run.sh sweep``): DiffPure's clean accuracy against t* (reverse SDE, dt 1e-3)
and, at t* = 0.1, with deterministic DDIM (100, 10 and 1 steps), for both classifiers, with 95% Wilson intervals and
the undefended accuracy. usage: python experiments/cifar10/purification-model/sweep_plot.py [OUT.png]"""
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

D = Path("reports/cifar10/purification-model")
REF = D / "paired-zoo-purify-t0.2.json"  # t* = 0.1, 100 SDE steps: the same images and noise draws
out = Path(sys.argv[1] if len(sys.argv) > 1 else D / "sweep" / "clean-accuracy-vs-t.png")
runs = {(0.1, "sde", 100): json.loads(REF.read_text())}
for f in sorted((D / "sweep").glob("*.json")):
    r = json.loads(f.read_text())
    p = r["purification"]
    runs[(p["t_star"], p["sampler"], p["steps"])] = r
fig, ax = plt.subplots(figsize=(6.4, 4.2))
for (name, colour) in (("fastnet (project)", "tab:blue"), ("ResNet-56 (shared)", "tab:orange")):
    sde = sorted((k[0], v["accuracy"][name]["diffpure"]) for k, v in runs.items() if k[1] == "sde")
    ts = [0.0] + [t for t, _ in sde]
    und = runs[(0.1, "sde", 100)]["accuracy"][name]["undefended"]
    acc = [und] + [a for _, a in sde]
    ax.errorbar(ts, [100 * a["mean"] for a in acc], yerr=[[100 * (a["mean"] - a["low"]) for a in acc],
                [100 * (a["high"] - a["mean"]) for a in acc]], color=colour, marker="o", capsize=3,
                label=f"{name}: reverse SDE (t* = 0: undefended)")
    for k, v in sorted(runs.items()):
        if k[1] == "ddim":
            a = v["accuracy"][name]["diffpure"]
            x = 0.1 + {1: 0.003, 10: 0.007, 100: 0.011}.get(k[2], 0.015)
            ax.errorbar([x], [100 * a["mean"]], yerr=[[100 * (a["mean"] - a["low"])], [100 * (a["high"] - a["mean"])]],
                        color=colour, marker="s", mfc="white", capsize=3, linestyle="none")
            ax.annotate(f"DDIM-{k[2]}", (x, 100 * a["mean"]), textcoords="offset points", fontsize=7,
                        xytext=(4, {1: -14, 10: -3, 100: 8}.get(k[2], 0)))
ax.set_xlabel("t* (DiffPure's diffusion time; 1000 DDPM steps = 1)")
ax.set_ylabel("clean accuracy after purification (%), 500 images")
ax.set_title("zoo/cifar10-purify-t0.2: where DiffPure's clean accuracy goes", fontsize=10)
ax.grid(alpha=0.3)
ax.legend(fontsize=7, loc="lower left")
fig.tight_layout()
out.parent.mkdir(parents=True, exist_ok=True)
fig.savefig(out, dpi=120)
print("wrote", out)
