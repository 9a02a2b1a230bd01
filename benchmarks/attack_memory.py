"""Peak memory of one full-gradient attack step through a K-step iterative defense, with and without
gradient checkpointing (advpure.attacks.checkpointing.checkpointed_loop).

Toy defense: K residual conv steps x <- x + 0.1 * conv2(tanh(conv1(x))) + small Gaussian noise (drawn from an
explicit generator, as a diffusion sampler would), then a small classifier. Each measurement runs in a fresh
subprocess (after a 1-image warm-up that loads lazily imported code) and reports the growth of peak resident memory (ru_maxrss) during one EOT-free PGD gradient, so
the torch import and the model do not count. Without checkpointing the memory grows linearly with K; with it,
only the K step inputs are kept.

    OMP_NUM_THREADS=1 python benchmarks/attack_memory.py [--ks 10,25,50,100] [--batch 16]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, torch, torch.nn as nn
from advpure.attacks import PGD, checkpointed_loop
from advpure.defenses import DefendedClassifier, Purifier
K, ckpt, batch = int(sys.argv[1]), sys.argv[2] == "1", int(sys.argv[3])
torch.manual_seed(0)

class ToyIterative(Purifier):
    stochastic = True
    def __init__(self, k):
        super().__init__()
        self.k, self.grad_checkpoint = k, False
        self.c1, self.c2 = nn.Conv2d(3, 32, 3, padding=1), nn.Conv2d(32, 3, 3, padding=1)
    @property
    def nfe(self):
        return float(self.k)
    def purify(self, x, *, generator=None):
        def step(z, i):
            noise = 0.01 * torch.randn(z.shape, generator=generator, device=z.device)
            return z + 0.1 * self.c2(torch.tanh(self.c1(z))) + noise
        return checkpointed_loop(step, x, self.k, enabled=self.grad_checkpoint, generator=generator).clamp(0, 1)

clf = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
model = DefendedClassifier(clf, ToyIterative(K))
x, y = torch.rand(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
attack = PGD(eps=8 / 255, steps=1, grad_checkpoint=ckpt, eot=1)
attack(model, x[:1], y[:1])  # warm-up: lazy imports (torch.utils.checkpoint, autograd) and allocator, on 1 image
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
attack(model, x, y)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"k": K, "checkpoint": ckpt, "peak_growth_mib": (after - before) / 1024}))
"""


def measure(k: int, ckpt: bool, batch: int) -> float:
    out = subprocess.run([sys.executable, "-c", CHILD, str(k), "1" if ckpt else "0", str(batch)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_growth_mib"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ks", default="10,25,50,100")
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args()
    print("| K steps | peak growth, plain (MiB) | with checkpointing (MiB) | ratio plain/checkpointed |")
    print("|---|---|---|---|")
    for k in (int(v) for v in args.ks.split(",")):
        plain, ck = measure(k, False, args.batch), measure(k, True, args.batch)
        print(f"| {k} | {plain:.1f} | {ck:.1f} | {plain / max(ck, 1e-3):.1f}x |", flush=True)


if __name__ == "__main__":
    main()
