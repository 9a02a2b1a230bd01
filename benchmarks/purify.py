"""Throughput of DiffPure purification vs a bare loop of the same denoiser at the same batch size.

For each network (the zoo digits DDPM, 1x8x8; the cifar10-small UNet preset with random weights,
3x32x32), batch size (1, 16, 64) and memory format (contiguous / channels_last) it reports
images/s of DiffPure (forward only, no grad), network evaluations/s inside the purifier
(nfe * batch / time), the same for a bare loop calling the network ``nfe`` times on a batch of the
same size, and their ratio (goal >= 0.95: sampler overhead under 5%).

    OMP_NUM_THREADS=1 python benchmarks/purify.py [--threads 1] [--repeats 3] [--quick]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from advpure.defenses.diffpure import DiffPure
from advpure.diffusion import DiscreteTimeAdapter, build_unet, load_denoiser

ZOO = Path(__file__).resolve().parents[1] / "zoo" / "digits-ddpm.safetensors"


def _best_pair(fa, fb, repeats: int) -> tuple[float, float]:
    """Interleave the two measurements (a, b, a, b, ...) so load changes on a shared machine hit both."""
    fa(), fb()
    ta, tb = [], []
    for _ in range(repeats):
        for f, acc in ((fa, ta), (fb, tb)):
            t0 = time.perf_counter()
            f()
            acc.append(time.perf_counter() - t0)
    return min(ta), min(tb)


def bench(name: str, eps_model: DiscreteTimeAdapter, shape, batch: int, steps: int, channels_last: bool,
          repeats: int) -> dict:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    eps_model.net.to(memory_format=fmt)
    pur = DiffPure(eps_model, t=0.1, n_steps=steps)
    x = torch.rand(batch, *shape).contiguous(memory_format=fmt)
    g = torch.Generator().manual_seed(0)
    t = torch.full((batch,), 0.05)
    xm = (2 * x - 1).contiguous(memory_format=fmt)

    def run_pur():
        with torch.no_grad():
            pur(x, generator=g)

    def run_bare():
        with torch.no_grad():
            for _ in range(steps):
                eps_model.net(xm, t * 1000 - 1)

    tp, tb = _best_pair(run_pur, run_bare, repeats)
    ev_p, ev_b = steps * batch / tp, steps * batch / tb
    return {"net": name, "batch": batch, "channels_last": channels_last, "steps": steps,
            "img_s": batch / tp, "evals_s_purifier": ev_p, "evals_s_bare": ev_b, "ratio": ev_p / ev_b}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="batch 1 and 16 only, fewer steps")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    nets = []
    if ZOO.is_file():
        m, _ = load_denoiser(ZOO)
        nets.append(("digits-ddpm (zoo)", m, (1, 8, 8), 20))
    else:
        torch.manual_seed(0)
        nets.append(("digits (random)", DiscreteTimeAdapter(build_unet("digits").eval()), (1, 8, 8), 20))
    torch.manual_seed(0)
    nets.append(("cifar10-small (random)", DiscreteTimeAdapter(build_unet("cifar10-small").eval()), (3, 32, 32), 3))
    batches = (1, 16) if args.quick else (1, 16, 64)
    print(f"torch {torch.__version__}, {args.threads} thread(s), best of {args.repeats} interleaved runs after a warm-up")
    print(f"{'network':24s} {'batch':>5s} {'ch_last':>7s} {'steps':>5s} {'img/s':>9s} {'evals/s pur':>12s} "
          f"{'evals/s bare':>12s} {'ratio':>6s}")
    rows = []
    for name, m, shape, steps in nets:
        m.requires_grad_(False)
        for b in batches:
            for cl in (False, True):
                r = bench(name, m, shape, b, steps if not args.quick else max(2, steps // 2), cl, args.repeats)
                rows.append(r)
                print(f"{r['net']:24s} {b:5d} {str(cl):>7s} {r['steps']:5d} {r['img_s']:9.1f} "
                      f"{r['evals_s_purifier']:12.1f} {r['evals_s_bare']:12.1f} {r['ratio']:6.3f}", flush=True)
    worst = min(r["ratio"] for r in rows)
    print(f"min ratio purifier/bare network evals/s: {worst:.3f} (goal >= 0.95)")


if __name__ == "__main__":
    main()
