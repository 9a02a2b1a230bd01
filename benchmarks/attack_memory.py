"""Peak memory and time of one full-gradient PGD step (forward + backward, EOT 1) through the real diffusion
purifiers, with and without gradient checkpointing (:func:`advpure.ops.checkpointing.checkpointed_loop`).

Configurations (``--quick``: DiffPure on digits, batch 4, K = 5 and 20, checkpointed only, two children: for the test):

- DiffPure (t* = 0.1, K reverse-SDE steps) on the digits zoo DDPM (``zoo/digits-ddpm.safetensors``), batch 16,
  classifier ``zoo/digits-small-cnn``;
- DiffPure on the CIFAR-10 zoo DDPM (``zoo/cifar10-ddpm-tiny-t0.2.safetensors``), batch 8, ``zoo/cifar10-resnet8``;
- SSNI-N (differentiable t, the full adaptive gradient through ||EPS|| and the sampler) over DiffPure on digits,
  batch 16, with the model's EPS reference statistics;

each at K = 10, 25, 50, 100. Every measurement runs in a fresh subprocess (so runs do not share a heap): the child
loads everything and warms up on one image with a 2-step copy of the purifier (lazy imports, allocator), then
reports the growth of peak resident memory (``ru_maxrss``) during one PGD step at the full batch, and its seconds.
With checkpointing the growth should be flat in K (goal: K=100 / K=10 <= 1.2); without it, it grows with K.

    OMP_NUM_THREADS=1 python benchmarks/attack_memory.py [--quick] [--threads 1] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ZOO = REPO / "zoo"
SETUPS = {  # name: (defense, diffusion model, classifier, batch)
    "diffpure-digits": ("diffpure", "digits-ddpm.safetensors", "digits-small-cnn.safetensors", 16),
    "diffpure-cifar10": ("diffpure", "cifar10-ddpm-tiny-t0.2.safetensors", "cifar10-resnet8.safetensors", 8),
    "ssni-digits": ("ssni", "digits-ddpm.safetensors", "digits-small-cnn.safetensors", 16),
}
KS = (10, 25, 50, 100)

CHILD = r"""
import json, resource, sys, time
import torch
cfg = json.loads(sys.argv[1])
torch.set_num_threads(cfg["threads"])
from advpure.attacks import PGD
from advpure.defenses import DefendedClassifier
from advpure.defenses.diffpure import DiffPure
from advpure.diffusion import load_denoiser
from advpure.models import load_classifier

net, meta = load_denoiser(cfg["model"])
clf = load_classifier(cfg["classifier"])
purifier = DiffPure(net, t=0.1, n_steps=cfg["k"])
if cfg["defense"] == "ssni":
    from advpure.defenses.ssni import SSNI
    from advpure.detect.eps import EPSReference, reference_path
    ref = EPSReference.load(reference_path(cfg["model"]), checkpoint_sha256=meta.get("sha256"))
    purifier = SSNI(purifier, reference=ref, mode="N", differentiable=True)
shape = tuple(net.image_shape)
g = torch.Generator().manual_seed(0)
x, y = torch.rand(cfg["batch"], *shape, generator=g), torch.randint(0, 10, (cfg["batch"],), generator=g)
attack = PGD(eps=8 / 255, steps=1, eot=1, grad_checkpoint=cfg["checkpoint"], seed=0)
attack(DefendedClassifier(clf, purifier.with_steps(2), seed=0), x[:1], y[:1])  # warm-up
model = DefendedClassifier(clf, purifier, seed=0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
x_adv = attack(model, x, y)
seconds = time.perf_counter() - t0
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"peak_growth_mib": (after - before) / 1024, "peak_mib": after / 1024, "seconds": seconds,
                  "finite": bool(torch.isfinite(x_adv).all()), "moved": float((x_adv - x).abs().max())}))
"""


def measure(setup: str, k: int, checkpoint: bool, *, batch: int | None = None, threads: int = 1) -> dict:
    defense, model, classifier, default_batch = SETUPS[setup]
    cfg = {"defense": defense, "model": str(ZOO / model), "classifier": str(ZOO / classifier), "k": k,
           "checkpoint": checkpoint, "batch": batch or default_batch, "threads": threads}
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cfg)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{setup} K={k} checkpoint={checkpoint} failed:\n{proc.stderr[-3000:]}")
    return {**cfg, **json.loads(proc.stdout.strip().splitlines()[-1])}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="DiffPure on digits, batch 4, K = 5 and 20, checkpointed only (for the test)")
    ap.add_argument("--setups", default=",".join(SETUPS), help=f"comma-separated, from {', '.join(SETUPS)}")
    ap.add_argument("--ks", default=",".join(map(str, KS)))
    ap.add_argument("--threads", type=int, default=1, help="torch threads in each child (default 1)")
    ap.add_argument("--out", default=None, help="write all measurements as JSON here")
    args = ap.parse_args(argv)
    setups = ["diffpure-digits"] if args.quick else args.setups.split(",")
    ks = [5, 20] if args.quick else [int(v) for v in args.ks.split(",")]
    batch = 4 if args.quick else None
    modes = (True,) if args.quick else (False, True)
    rows, summary = [], {}
    print("| setup | batch | K | plain: peak growth MiB | plain: s | checkpointed: peak growth MiB | checkpointed: s |")
    print("|---|---|---|---|---|---|---|")
    for setup in setups:
        by = {}
        for k in ks:
            by[k] = {c: measure(setup, k, c, batch=batch, threads=args.threads) for c in modes}
            rows += list(by[k].values())
            cells = [f"{by[k][c]['peak_growth_mib']:.1f} | {by[k][c]['seconds']:.2f}" if c in by[k] else "- | -"
                     for c in (False, True)]
            print(f"| {setup} | {by[k][True]['batch']} | {k} | {cells[0]} | {cells[1]} |", flush=True)
        lo, hi = min(ks), max(ks)
        summary[setup] = {
            "checkpointed_growth_ratio": by[hi][True]["peak_growth_mib"] / by[lo][True]["peak_growth_mib"],
            "plain_growth_ratio": by[hi][False]["peak_growth_mib"] / by[lo][False]["peak_growth_mib"]
            if False in by[hi] else None,
            "time_checkpointed_over_plain": by[hi][True]["seconds"] / by[hi][False]["seconds"] if False in by[hi] else None,
            "k_min": lo, "k_max": hi}
    print()
    print("| setup | checkpointed growth K=max/K=min (goal <= 1.2) | plain growth K=max/K=min | time checkpointed/plain at K=max |")
    print("|---|---|---|---|")
    fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    for setup, s in summary.items():
        print(f"| {setup} (K {s['k_max']}/{s['k_min']}) | {fmt(s['checkpointed_growth_ratio'])} | "
              f"{fmt(s['plain_growth_ratio'])} | {fmt(s['time_checkpointed_over_plain'])} |")
    result = {"command": "python benchmarks/attack_memory.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "measurements": rows, "summary": summary}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
