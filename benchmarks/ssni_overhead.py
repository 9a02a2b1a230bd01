"""EPS overhead of SSNI: time of SSNI-N purification / time of plain DiffPure, same network, same run.

SSNI adds one EPS evaluation (20 noise levels, all in one batched network call of 20*N images) to
DiffPure's 100 reverse steps. The paper reports a ratio of about 1.14 for DiffPure on GPU; the goal here
is <= 1.15 on CPU at batch 64. Networks: the zoo digits DDPM (1x8x8) and the cifar10-small UNet preset
with random weights (3x32x32; speed does not depend on the weights). Measurements are interleaved
(a, b, a, b, ...) and the minimum of ``--repeats`` is kept, so load changes on a shared machine hit both.

    python benchmarks/ssni_overhead.py [--batch 64] [--steps 100] [--repeats 3] [--skip-cifar]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from advpure.defenses.diffpure import DiffPure
from advpure.defenses.ssni import SSNI
from advpure.detect.eps import EPSReference
from advpure.diffusion import DiscreteTimeAdapter, build_unet, load_denoiser

ZOO = Path(__file__).resolve().parents[1] / "zoo" / "digits-ddpm.safetensors"


def measure(name: str, net, shape, *, batch: int, steps: int, repeats: int) -> dict:
    base = DiffPure(net, t=0.1, n_steps=steps)
    ref = EPSReference.from_norms(torch.tensor([50.0, 60.0, 70.0]), t_levels=[k / 1000 for k in range(1, 21)],
                                  checkpoint_sha256=None)
    ssni = SSNI(base, reference=ref, mode="N")
    x = torch.rand(batch, *shape)

    def run(p):
        with torch.no_grad():
            p(x, generator=torch.Generator().manual_seed(0))

    run(base), run(ssni)
    tb, ts = [], []
    for _ in range(repeats):
        for p, acc in ((base, tb), (ssni, ts)):
            t0 = time.perf_counter()
            run(p)
            acc.append(time.perf_counter() - t0)
    return {"net": name, "batch": batch, "steps": steps, "diffpure_s": min(tb), "ssni_s": min(ts),
            "ratio": min(ts) / min(tb), "nfe_ratio": ssni.nfe / base.nfe}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-cifar", action="store_true")
    a = ap.parse_args()
    rows = []
    net, _ = load_denoiser(ZOO)
    rows.append(measure("digits-ddpm", net, (1, 8, 8), batch=a.batch, steps=a.steps, repeats=a.repeats))
    if not a.skip_cifar:
        torch.manual_seed(0)
        cnet = DiscreteTimeAdapter(build_unet("cifar10-small"), image_shape=(3, 32, 32)).eval()
        rows.append(measure("cifar10-small (random weights)", cnet, (3, 32, 32), batch=a.batch, steps=a.steps,
                            repeats=a.repeats))
    print(f"threads {torch.get_num_threads()}")
    print("| network | batch | DiffPure steps | DiffPure s | SSNI-N s | time ratio | NFE ratio |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['net']} | {r['batch']} | {r['steps']} | {r['diffpure_s']:.2f} | {r['ssni_s']:.2f} | "
              f"{r['ratio']:.3f} | {r['nfe_ratio']:.2f} |")


if __name__ == "__main__":
    main()
