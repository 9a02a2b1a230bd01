"""DiffPure with the score network under ``torch.autocast(bfloat16)`` (``diffpure:autocast=bf16``) against float32:
speed, and whether it changes what the defense outputs and what the classifier then says.

For each seed, float32 and bf16 DiffPure (t* = 0.1, ``--steps`` reverse-SDE steps) purify the same images with the
same generator, interleaved (fp32, bf16, fp32, bf16, ...). Speed ratio min(fp32 s) / min(bf16 s), in wall seconds
and in the process's CPU seconds, from ``--speed-repeats`` interleaved blocks of steps/10 reverse steps (short units,
so a change of load on a shared machine hits both) and from the whole runs. Agreement:
the mean (and max) absolute pixel difference of the two outputs, next to the difference float32 DiffPure itself
shows between two seeds; the classifier's accuracy on both outputs per seed, and the images whose predicted
class differs between fp32 and bf16 with the same noise (against the flips between two float32 seeds).

Default: the zoo CIFAR-10 DDPM ``cifar10-ddpm-tiny-t0.2`` and classifier ``cifar10-fastnet`` on 64 CIFAR-10 test
images (skipped, with a message, when the data file is absent); ``--dataset digits`` uses the zoo digits models.

    OMP_NUM_THREADS=1 python benchmarks/bf16_purify.py [--dataset cifar10] [--n 64] [--steps 100] [--seeds 3]
        [--speed-repeats 6] [--data-dir ../shared/data/cifar10-jpeg.tar.gz]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from advpure.data import load_dataset
from advpure.defenses.diffpure import DiffPure
from advpure.diffusion import load_denoiser
from advpure.models import load_classifier

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "zoo"
MODELS = {  # dataset: (diffusion model, classifier)
    "cifar10": (ZOO / "cifar10-ddpm-tiny-t0.2.safetensors", ZOO / "cifar10-fastnet.safetensors"),
    "digits": (ZOO / "digits-ddpm.safetensors", ZOO / "digits-small-cnn.safetensors"),
}
DEFAULT_CIFAR = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="cifar10", choices=sorted(MODELS))
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--speed-repeats", type=int, default=6)
    ap.add_argument("--data-dir", default=str(DEFAULT_CIFAR), help="CIFAR-10 data (default: %(default)s)")
    a = ap.parse_args()
    if a.dataset == "cifar10" and not Path(a.data_dir).exists():
        print(f"skipped: no CIFAR-10 data at {a.data_dir} (pass --data-dir PATH, or --dataset digits)")
        return
    x, y = load_dataset(a.dataset, "test", data_dir=a.data_dir if a.dataset == "cifar10" else None
                        ).subset(a.n, 0).tensors()
    ddpm, clf_path = MODELS[a.dataset]
    net, _ = load_denoiser(ddpm)
    clf = load_classifier(clf_path)
    pur = {"fp32": DiffPure(net, t=0.1, n_steps=a.steps), "bf16": DiffPure(net, t=0.1, n_steps=a.steps, autocast="bf16")}

    def run(name: str, seed: int) -> tuple[torch.Tensor, float, float]:
        start, start_cpu = time.perf_counter(), time.process_time()
        with torch.no_grad():
            out = pur[name](x, generator=torch.Generator().manual_seed(seed))
        return out, time.perf_counter() - start, time.process_time() - start_cpu

    for p in pur.values():  # warm-up
        with torch.no_grad():
            p.with_steps(1)(x, generator=torch.Generator().manual_seed(0))
    # speed in short units: blocks of steps/10 reverse steps, fp32 and bf16 alternately, order reversed every round
    blocks = {k: p.with_steps(max(1, a.steps // 10)) for k, p in pur.items()}
    b_wall: dict[str, list[float]] = {"fp32": [], "bf16": []}
    b_cpu: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for i in range(a.speed_repeats):
        for name in (("fp32", "bf16") if i % 2 == 0 else ("bf16", "fp32")):
            start, start_cpu = time.perf_counter(), time.process_time()
            with torch.no_grad():
                blocks[name](x, generator=torch.Generator().manual_seed(i))
            b_wall[name].append(time.perf_counter() - start)
            b_cpu[name].append(time.process_time() - start_cpu)
    secs: dict[str, list[float]] = {"fp32": [], "bf16": []}
    cpu: dict[str, list[float]] = {"fp32": [], "bf16": []}
    outs: dict[str, list[torch.Tensor]] = {"fp32": [], "bf16": []}
    for seed in range(a.seeds):
        for name in ("fp32", "bf16"):
            out, s, c = run(name, seed)
            outs[name].append(out)
            secs[name].append(s)
            cpu[name].append(c)
    with torch.no_grad():
        clean_acc = float((clf(x).argmax(1) == y).float().mean())
        pred = {k: [clf(o).argmax(1) for o in v] for k, v in outs.items()}
    print(f"{a.dataset}: {a.n} test images, DiffPure t*=0.1, {a.steps} steps, {a.seeds} seeds, "
          f"torch threads {torch.get_num_threads()}; classifier {clf_path.name} (clean accuracy {clean_acc:.3f})")
    print(f"speed ratio fp32/bf16 from {a.speed_repeats} interleaved blocks of {blocks['fp32'].n_steps} steps: "
          f"{min(b_wall['fp32']) / min(b_wall['bf16']):.2f} (wall), {min(b_cpu['fp32']) / min(b_cpu['bf16']):.2f} (CPU); "
          f"whole {a.steps}-step runs (min over seeds): fp32 {min(secs['fp32']):.2f} s, bf16 {min(secs['bf16']):.2f} s "
          f"(ratio {min(secs['fp32']) / min(secs['bf16']):.2f}), CPU {min(cpu['fp32']):.2f} s, {min(cpu['bf16']):.2f} s "
          f"(ratio {min(cpu['fp32']) / min(cpu['bf16']):.2f})")
    print("| seed | mean / max abs(x_fp32 - x_bf16) | accuracy fp32 | accuracy bf16 | predictions differing fp32 vs bf16 |")
    print("|---|---|---|---|---|")
    for i in range(a.seeds):
        d = (outs["fp32"][i] - outs["bf16"][i]).abs()
        acc = {k: float((pred[k][i] == y).float().mean()) for k in pred}
        flips = int((pred["fp32"][i] != pred["bf16"][i]).sum())
        print(f"| {i} | {float(d.mean()):.1e} / {float(d.max()):.1e} | {acc['fp32']:.3f} | {acc['bf16']:.3f} | "
              f"{flips} of {a.n} |")
    mean = {k: sum(float((p == y).float().mean()) for p in v) / a.seeds for k, v in pred.items()}
    print(f"mean accuracy over seeds: fp32 {mean['fp32']:.3f}, bf16 {mean['bf16']:.3f}")
    if a.seeds > 1:
        d = (outs["fp32"][0] - outs["fp32"][1]).abs()
        flips = int((pred["fp32"][0] != pred["fp32"][1]).sum())
        print(f"for scale, fp32 seed 0 vs seed 1: mean / max abs difference {float(d.mean()):.1e} / "
              f"{float(d.max()):.1e}, predictions differing {flips} of {a.n}")


if __name__ == "__main__":
    main()
