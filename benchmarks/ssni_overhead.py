"""EPS overhead of SSNI: time of SSNI-N purification / time of plain DiffPure, same network, same images, same run.

SSNI adds one EPS evaluation (20 noise levels of every image, in network calls of ``max_batch`` images) to
DiffPure's 100 reverse steps. The paper reports a ratio of about 1.14 for DiffPure on GPU; the goal here is
<= 1.15 on CPU at batch 64. Networks and data are what a user runs: the zoo digits DDPM (1x8x8) on digits test
images, and the zoo CIFAR-10 DDPM ``cifar10-ddpm-tiny-t0.2`` (3x32x32) on CIFAR-10 test images (skipped, with a
message, when the data file is absent), each with its recorded EPS reference statistics
(``<model>.eps-ref.json``).

Times: wall clock and the process's CPU time (``time.process_time``; at one thread it leaves out the time other
jobs hold the core, though not their slowing of a shared core). Whole runs last a minute or more on CIFAR-10, long
enough for the load of a shared machine to change between them, so the ratio is also estimated from components
timed in shorter interleaved units (``--component-repeats``, order reversed every other round):
``1 + T(EPS pass) / (5 T(steps/5 reverse steps))``; the reverse steps are the same in DiffPure and SSNI.

Each SSNI variant ``MAXBATCH[:bf16]`` sets the EPS pass's images per network call and whether it runs under
``torch.autocast(bfloat16)``. Measurements are interleaved (DiffPure, variant 1, variant 2, ..., DiffPure, ...)
and the minimum of ``--repeats`` is kept, so load changes on a shared machine hit all of them. Accuracy, next to
the times: with the same noise (same generator), the relative difference of ||EPS|| from the first variant
(float32) per image (mean and max over the batch), and the largest change of SSNI-N's chosen t over the batch
(in continuous time; 0.001 = one DDPM step). For scale, the mean relative difference of ||EPS|| between two
noise draws (seeds 0 and 1) of the first variant and the largest change of t it causes: the Monte-Carlo noise SSNI
accepts by drawing one noise per level.

    OMP_NUM_THREADS=1 python benchmarks/ssni_overhead.py [--batch 64] [--steps 100] [--repeats 3]
        [--component-repeats 5] [--variants 1280,64,64:bf16] [--data-dir ../shared/data/cifar10-jpeg.tar.gz] [--skip-cifar] [--skip-digits]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from advpure.data import load_dataset
from advpure.defenses.diffpure import DiffPure
from advpure.defenses.ssni import SSNI
from advpure.detect.eps import EPSReference, eps_norm, reference_path
from advpure.diffusion import load_denoiser

ROOT = Path(__file__).resolve().parents[1]
NETWORKS = {  # name: (checkpoint, dataset)
    "digits-ddpm": (ROOT / "zoo" / "digits-ddpm.safetensors", "digits"),
    "cifar10-ddpm-tiny-t0.2": (ROOT / "zoo" / "cifar10-ddpm-tiny-t0.2.safetensors", "cifar10"),
}
DEFAULT_CIFAR = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"


def parse_variant(v: str) -> tuple[int, str | None]:
    """``"64"`` -> (64, None); ``"64:bf16"`` -> (64, "bf16")."""
    mb, _, ac = v.partition(":")
    return int(mb), (ac or None)


def interleaved(units: dict, repeats: int) -> tuple[dict[str, float], dict[str, float]]:
    """Minimum wall and CPU seconds of each callable over ``repeats`` rounds; every other round runs them in
    reverse order, so a unit is not always the one that follows the same neighbour."""
    wall: dict[str, list[float]] = {k: [] for k in units}
    cpu: dict[str, list[float]] = {k: [] for k in units}
    for i in range(repeats):
        for key in (list(units) if i % 2 == 0 else list(units)[::-1]):
            start, start_cpu = time.perf_counter(), time.process_time()
            units[key]()
            wall[key].append(time.perf_counter() - start)
            cpu[key].append(time.process_time() - start_cpu)
    return {k: min(v) for k, v in wall.items()}, {k: min(v) for k, v in cpu.items()}


def measure(name: str, x: torch.Tensor, *, variants: list[str], steps: int, repeats: int,
            component_repeats: int) -> list[dict]:
    ckpt, _ = NETWORKS[name]
    net, meta = load_denoiser(ckpt)
    ref = EPSReference.load(reference_path(ckpt), checkpoint_sha256=meta.get("sha256"))
    base = DiffPure(net, t=0.1, n_steps=steps)
    ssnis = {v: SSNI(base, reference=ref, mode="N", max_batch=parse_variant(v)[0],
                     eps_autocast=parse_variant(v)[1]) for v in variants}

    # accuracy: ||EPS|| and the chosen t with the same noise draw, against the first (float32) variant
    with torch.no_grad():
        s = {v: eps_norm(net, x, schedule=base.schedule, t_levels=p.t_levels, max_batch=p.max_batch,
                         autocast_dtype=p.eps_autocast, generator=torch.Generator().manual_seed(0))
             for v, p in ssnis.items()}
        p0 = ssnis[variants[0]]  # EPS's own Monte-Carlo noise: the same images with another noise draw
        s_seed = eps_norm(net, x, schedule=base.schedule, t_levels=p0.t_levels, max_batch=p0.max_batch,
                          generator=torch.Generator().manual_seed(1))
    s0, t0 = s[variants[0]], p0.noise_levels(s[variants[0]])
    seed = {"rel_eps_other_noise_mean": float(((s_seed - s0).abs() / s0).mean()),
            "max_dt_other_noise": float((p0.noise_levels(s_seed) - t0).abs().max())}

    def run(p):
        with torch.no_grad():
            p(x, generator=torch.Generator().manual_seed(0))

    def eps_pass(p):
        with torch.no_grad():
            eps_norm(net, x, schedule=base.schedule, t_levels=p.t_levels, max_batch=p.max_batch,
                     autocast_dtype=p.eps_autocast, generator=torch.Generator().manual_seed(0))

    for p in (base, *ssnis.values()):  # warm-up (one reverse step; the whole EPS pass)
        run(p.with_steps(1))
    wall, cpu = interleaved({"DiffPure": lambda: run(base), **{v: (lambda p=p: run(p)) for v, p in ssnis.items()}},
                            repeats)
    # components, in shorter units: a block of steps/5 reverse steps and each variant's EPS pass
    block = base.with_steps(max(1, steps // 5))
    scale = steps / block.n_steps
    c_wall, c_cpu = interleaved({"block": lambda: run(block),
                                 **{v: (lambda p=p: eps_pass(p)) for v, p in ssnis.items()}}, component_repeats)
    rows = []
    for v, p in ssnis.items():
        rel = (s[v] - s0).abs() / s0
        rows.append({"net": name, "batch": x.shape[0], "steps": steps, "variant": v, "diffpure_s": wall["DiffPure"],
                     "ssni_s": wall[v], "ratio": wall[v] / wall["DiffPure"], "diffpure_cpu_s": cpu["DiffPure"],
                     "ssni_cpu_s": cpu[v], "cpu_ratio": cpu[v] / cpu["DiffPure"],
                     "component_ratio_wall": 1 + c_wall[v] / (scale * c_wall["block"]),
                     "component_ratio_cpu": 1 + c_cpu[v] / (scale * c_cpu["block"]), "nfe_ratio": p.nfe / base.nfe,
                     "rel_eps_mean": float(rel.mean()), "rel_eps_max": float(rel.max()),
                     "max_dt": float((p.noise_levels(s[v]) - t0).abs().max()), **seed})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--component-repeats", type=int, default=5)
    ap.add_argument("--variants", default="1280,64,64:bf16",
                    help="comma-separated SSNI EPS-pass settings MAXBATCH[:bf16]; the first is the accuracy baseline")
    ap.add_argument("--data-dir", default=str(DEFAULT_CIFAR), help="CIFAR-10 data (default: %(default)s)")
    ap.add_argument("--skip-cifar", action="store_true")
    ap.add_argument("--skip-digits", action="store_true")
    a = ap.parse_args()
    variants = a.variants.split(",")
    for v in variants:
        parse_variant(v)
    rows = []
    if not a.skip_digits:
        x, _ = load_dataset("digits", "test").subset(a.batch, 0).tensors()
        rows += measure("digits-ddpm", x, variants=variants, steps=a.steps, repeats=a.repeats,
                        component_repeats=a.component_repeats)
    if not a.skip_cifar:
        if not Path(a.data_dir).exists():
            print(f"CIFAR-10 case skipped: no CIFAR-10 data at {a.data_dir} (pass --data-dir PATH)")
        else:
            x, _ = load_dataset("cifar10", "test", data_dir=a.data_dir).subset(a.batch, 0).tensors()
            rows += measure("cifar10-ddpm-tiny-t0.2", x, variants=variants, steps=a.steps, repeats=a.repeats,
                            component_repeats=a.component_repeats)
    print(f"threads {torch.get_num_threads()}, repeats {a.repeats} (minimum kept), DiffPure t*=0.1, SSNI-N; "
          f"accuracy vs the {variants[0]} variant with the same noise")
    for net in dict.fromkeys(r["net"] for r in rows):
        r = next(r for r in rows if r["net"] == net)
        print(f"{net}: with another noise draw, ||EPS|| differs by {r['rel_eps_other_noise_mean']:.1e} (mean relative), "
              f"t by up to {r['max_dt_other_noise']:.1e}")
    print("| network | batch | DiffPure steps | EPS pass (max_batch[:autocast]) | DiffPure s (CPU s) | "
          "SSNI-N s (CPU s) | wall-time ratio | CPU-time ratio | ratio from components, wall / CPU | NFE ratio | "
          "rel. diff. of ||EPS|| mean / max | max abs delta t |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['net']} | {r['batch']} | {r['steps']} | {r['variant']} | {r['diffpure_s']:.2f} "
              f"({r['diffpure_cpu_s']:.2f}) | {r['ssni_s']:.2f} ({r['ssni_cpu_s']:.2f}) | {r['ratio']:.3f} | "
              f"{r['cpu_ratio']:.3f} | {r['component_ratio_wall']:.3f} / {r['component_ratio_cpu']:.3f} | "
              f"{r['nfe_ratio']:.2f} | "
              f"{r['rel_eps_mean']:.1e} / {r['rel_eps_max']:.1e} | {r['max_dt']:.1e} |")


if __name__ == "__main__":
    main()
