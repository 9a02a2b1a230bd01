"""CMAP's cost per image next to DiffPure's: what a user pays, measured on the same images in the same run.

For each dataset (digits; CIFAR-10 when its data file exists) and each CMAP iteration count, prints and writes
(``--out``, JSON):

- wall-clock seconds per image of CMAP (K latents, Adam on them) and of DiffPure (t* = 0.1, 100 reverse-SDE
  steps), and their ratio; the same for the process's CPU time (``time.process_time``), which at one thread on a
  shared machine counts only this process's work (the ratio to trust when other jobs compete for the cores). Runs are interleaved (DiffPure, CMAP at each iteration count, DiffPure, ...) and the
  minimum of ``--reps`` is kept, so load changes on a shared machine hit all of them;
- network evaluations per image, forward and backward. A forward hook on the network (the consistency model,
  DiffPure's eps-model; one UNet call each) adds the batch size of every call; when the call's output requires grad, the hook also
  registers a tensor hook on that output, which autograd runs once for every backward pass that reaches it and
  which adds the batch size of the incoming gradient. So a backward pass counts where gradients actually flow
  through the network: CMAP takes one per latent per Adam step (``K * iterations``), DiffPure none. A backward
  pass costs about two forward passes.

Models (zoo): CMAP ``digits-cm`` / ``cifar10-cm-cd-tiny``; DiffPure ``digits-ddpm`` / ``cifar10-ddpm-tiny-t0.2``.

    OMP_NUM_THREADS=1 python benchmarks/cmap_cost.py [--datasets digits,cifar10] [--n 32] [--iterations 30,100]
        [--reps 2] [--data-dir ../shared/data/cifar10-jpeg.tar.gz] [--out cmap_cost.json]
    python benchmarks/cmap_cost.py --quick     # digits, 4 images, 2 iterations, 3 steps: checks the counting (s)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "zoo"
MODELS = {  # dataset: (consistency model for CMAP, diffusion model for DiffPure)
    "digits": (ZOO / "digits-cm.safetensors", ZOO / "digits-ddpm.safetensors"),
    "cifar10": (ZOO / "cifar10-cm-cd-tiny.safetensors", ZOO / "cifar10-ddpm-tiny-t0.2.safetensors"),
}
DEFAULT_CIFAR = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"


class EvalCounter:
    """Images through ``module``'s forward and backward passes (module docstring)."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.forward = self.backward = 0
        self._handle = module.register_forward_hook(self._hook)

    def _hook(self, _module, _args, out) -> None:
        self.forward += int(out.shape[0])
        if out.requires_grad:
            out.register_hook(self._on_grad)

    def _on_grad(self, grad: torch.Tensor) -> None:
        self.backward += int(grad.shape[0])

    def remove(self) -> None:
        self._handle.remove()


def measure(dataset: str, x: torch.Tensor, *, iterations: list[int], k: int | None, steps: int, reps: int) -> list[dict]:
    from advpure.defenses.cmap import DEFAULTS, load_cmap
    from advpure.defenses.diffpure import DiffPure
    from advpure.diffusion.models import load_denoiser

    cm_path, ddpm_path = MODELS[dataset]
    shape = tuple(x.shape[1:])
    net, _ = load_denoiser(ddpm_path, image_shape=shape)
    methods = {"DiffPure": (DiffPure(net, t=0.1, n_steps=steps), net)}
    for it in iterations:
        cmap = load_cmap(cm_path, image_shape=shape, k=k or DEFAULTS["k"], iterations=it)
        methods[f"CMAP-{it}"] = (cmap, cmap.cm)

    def run(p) -> None:
        with torch.no_grad():
            p.purify(x, generator=torch.Generator().manual_seed(0))

    run(methods["DiffPure"][0].with_steps(1))  # warm-up
    run(load_cmap(cm_path, image_shape=shape, k=k or DEFAULTS["k"], iterations=1))
    counters = {name: EvalCounter(inner) for name, (_, inner) in methods.items()}
    wall: dict[str, list[float]] = {name: [] for name in methods}
    cpu: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(reps):
        for name, (p, _) in methods.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            run(p)
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    n_img = reps * x.shape[0]
    base_s, base_cpu = min(wall["DiffPure"]) / x.shape[0], min(cpu["DiffPure"]) / x.shape[0]
    rows = []
    for name, (p, inner) in methods.items():
        counters[name].remove()
        sec, sec_cpu = min(wall[name]) / x.shape[0], min(cpu[name]) / x.shape[0]
        rows.append({"dataset": dataset, "method": name, "settings": _settings(p), "n": x.shape[0],
                     "forward_per_image": counters[name].forward / n_img,
                     "backward_per_image": counters[name].backward / n_img,
                     "seconds_per_image": sec, "seconds_ratio_vs_diffpure": sec / base_s,
                     "cpu_seconds_per_image": sec_cpu, "cpu_seconds_ratio_vs_diffpure": sec_cpu / base_cpu,
                     "network_params_m": sum(q.numel() for q in inner.parameters()) / 1e6})
    return rows


def _settings(p) -> str:
    if hasattr(p, "n_steps"):
        return f"t*={p.t:g}, {p.n_steps} steps"
    return f"K={p.k}, {p.iterations} iterations"


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", "--dataset", default="digits,cifar10")
    ap.add_argument("--n", type=int, default=32, help="images per dataset, purified as one batch")
    ap.add_argument("--iterations", default="30,100", help="CMAP iteration counts, comma-separated")
    ap.add_argument("--k", type=int, default=None, help="CMAP latents per image (default: CMAP's)")
    ap.add_argument("--diffpure-steps", type=int, default=100)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--data-dir", default=str(DEFAULT_CIFAR), help="CIFAR-10 data (default: %(default)s)")
    ap.add_argument("--cm", default=None, help="consistency model instead of the zoo one (one dataset only)")
    ap.add_argument("--ddpm", default=None, help="diffusion model instead of the zoo one (one dataset only)")
    ap.add_argument("--out", default=None, help="write the rows as JSON here")
    ap.add_argument("--quick", action="store_true", help="digits, 4 images, 2 iterations, 3 steps, 1 rep")
    a = ap.parse_args(argv)
    if a.quick:
        a.datasets, a.n, a.iterations, a.diffpure_steps, a.reps = "digits", 4, "2", 3, 1

    from advpure.data import load_dataset

    datasets = a.datasets.split(",")
    for ds in datasets:
        if ds not in MODELS:
            raise SystemExit(f"--datasets: expected names from {', '.join(MODELS)}, got {ds!r}")
    if a.cm or a.ddpm:
        if len(datasets) != 1:
            raise SystemExit("--cm/--ddpm replace one dataset's models: give a single --datasets NAME")
        cm, ddpm = MODELS[datasets[0]]
        MODELS[datasets[0]] = (Path(a.cm) if a.cm else cm, Path(a.ddpm) if a.ddpm else ddpm)
    rows = []
    for ds in datasets:
        if ds == "cifar10" and not Path(a.data_dir).exists():
            print(f"CIFAR-10 skipped: no CIFAR-10 data at {a.data_dir} (pass --data-dir PATH)")
            continue
        x, _ = load_dataset(ds, "test", data_dir=a.data_dir if ds == "cifar10" else None).subset(a.n, 0).tensors()
        rows += measure(ds, x, iterations=[int(i) for i in a.iterations.split(",")], k=a.k,
                        steps=a.diffpure_steps, reps=a.reps)
    print(f"torch threads {torch.get_num_threads()}, minimum of {a.reps} interleaved runs, one batch of {a.n} images")
    print("| dataset | method | settings | forward evals / image | backward evals / image | s / image (CPU s) | "
          "wall-s ratio vs DiffPure | CPU-s ratio vs DiffPure | network params (M) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['dataset']} | {r['method']} | {r['settings']} | {r['forward_per_image']:g} | "
              f"{r['backward_per_image']:g} | {r['seconds_per_image']:.3g} ({r['cpu_seconds_per_image']:.3g}) | "
              f"{r['seconds_ratio_vs_diffpure']:.2f} | {r['cpu_seconds_ratio_vs_diffpure']:.2f} | "
              f"{r['network_params_m']:.2f} |")
    if a.out:
        Path(a.out).write_text(json.dumps({"command": " ".join(sys.argv), "torch_threads": torch.get_num_threads(),
                                           "reps": a.reps, "rows": rows}, indent=1) + "\n")
    return rows


if __name__ == "__main__":
    main()
