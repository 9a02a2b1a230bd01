"""Peak memory and time of one full-gradient PGD step (forward + backward, EOT 1) through the real diffusion
purifiers, with and without gradient checkpointing (:func:`advpure.ops.checkpointing.checkpointed_loop`).

Configurations (``--quick``, for the test: checkpointed only, DiffPure on digits at batch 4 and K = 5, 20, and the
ADM 256x256 case at K = 2, 4; four children):

- DiffPure (t* = 0.1, K reverse-SDE steps) on the digits zoo DDPM (``zoo/digits-ddpm.safetensors``), batch 16,
  classifier ``zoo/digits-small-cnn``;
- DiffPure on the CIFAR-10 zoo DDPM (``zoo/cifar10-ddpm-tiny-t0.2.safetensors``), batch 8, ``zoo/cifar10-resnet8``;
- SSNI-N (differentiable t, the full adaptive gradient through ||EPS|| and the sampler) over DiffPure on digits,
  batch 16, with the model's EPS reference statistics;

each at K = 10, 25, 50, 100; and

- ``diffpure-adm256``: DiffPure (t* = 0.15, the ImageNet setting) on a guided-diffusion ADM UNet at 256x256
  (:mod:`advpure.diffusion.adm`, the released network's structure: channel_mult 1,1,2,2,4,4, attention at 32, 16
  and 8, learned sigma, scale-shift norm, resblock up/down; made small: 32 base channels, no extra res-blocks per
  level; random weights, seed 0), batch 1, in front of a torchvision-layout ResNet (basic blocks, one per stage,
  random weights) that resizes to 224 inside, at K = 10 and 50; without checkpointing at K = 10 only (each step's
  graph holds about 0.25 GB at this size, so a plain K = 50 step would need about 12 GB: ``--plain-ks`` sets it).
  At batch 1 the warm-up reaches the step's own peak, so its memory measure is the peak RSS during the step above
  the RSS just before it (Linux), not the growth of the process's peak.

Every measurement runs in a fresh subprocess (so runs do not share a heap): the child
loads everything and warms up on one image with a 2-step copy of the purifier (lazy imports, allocator), then
reports the growth of peak resident memory (``ru_maxrss``) during one PGD step at the full batch, and its seconds.
With checkpointing the growth should be flat in K (goal: K=max / K=10 <= 1.2); without it, it grows with K.

    OMP_NUM_THREADS=1 python benchmarks/attack_memory.py [--quick] [--setups a,b] [--ks 10,50] [--plain-ks 10]
        [--threads 1] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ZOO = REPO / "zoo"
KS = (10, 25, 50, 100)
#: the memory measures a child reports (MiB): the growth of the process's peak RSS (``ru_maxrss``) during the PGD step,
#: and (Linux) the peak RSS during the step above the RSS just before it (``VmHWM`` reset through
#: ``/proc/self/clear_refs``, after ``malloc_trim``)
MEASURES = {"peak_growth_mib": "peak RSS growth", "step_peak_mib": "step peak over RSS before"}
#: a small guided-diffusion ADM at 256x256: the released 256x256 model's structure (RELEASED_CONFIG of
#: advpure.diffusion.adm: 256 channels, 2 res-blocks, 64-channel heads) at 32 channels, 0 extra res-blocks, 32-channel
#: heads: 2.2 M parameters, 14 GFLOP per call at batch 1 (torch.utils.flop_counter; the released network: 2,240),
#: 0.4-0.5 s on one thread of a loaded 2-core machine
ADM256_SMALL = {"image_size": 256, "num_channels": 32, "num_res_blocks": 0, "num_head_channels": 32,
                "attention_resolutions": "32,16,8", "channel_mult": "1,1,2,2,4,4", "learn_sigma": True,
                "use_scale_shift_norm": True, "resblock_updown": True}
#: a torchvision-layout ResNet (advpure.models.imagenet.ImageNetResNet) with one basic block per stage, for 256x256
#: inputs resized to 224 inside the model (as the README's ImageNet command)
RESNET_SMALL_256 = {"layers": [1, 1, 1, 1], "block": "basic", "image_size": 256, "resize_to": 224}
#: name: defense, diffusion model (a zoo file, or "adm" with an ADM config: random weights), classifier (a zoo file,
#: or "imagenet-resnet" with its arguments: random weights), batch, t*, Ks, Ks also measured without checkpointing
#: (None: all), the --quick reduction (batch, Ks; checkpointed only), and the memory measure its table and ratios use
#: (a key of MEASURES; default peak_growth_mib)
SETUPS = {
    "diffpure-digits": {"defense": "diffpure", "model": "digits-ddpm.safetensors",
                        "classifier": "digits-small-cnn.safetensors", "batch": 16, "quick": (4, (5, 20))},
    "diffpure-cifar10": {"defense": "diffpure", "model": "cifar10-ddpm-tiny-t0.2.safetensors",
                         "classifier": "cifar10-resnet8.safetensors", "batch": 8},
    "ssni-digits": {"defense": "ssni", "model": "digits-ddpm.safetensors", "classifier": "digits-small-cnn.safetensors",
                    "batch": 16},
    "diffpure-adm256": {"defense": "diffpure", "model": "adm", "adm": ADM256_SMALL, "classifier": "imagenet-resnet",
                        "classifier_kwargs": RESNET_SMALL_256, "batch": 1, "t": 0.15, "ks": (10, 50),
                        "plain_ks": (10,), "quick": (1, (2, 4)), "metric": "step_peak_mib"},
}

CHILD = r"""
import ctypes, gc, json, resource, sys, time
import torch
cfg = json.loads(sys.argv[1])
torch.set_num_threads(cfg["threads"])
from advpure.attacks import PGD
from advpure.defenses import DefendedClassifier
from advpure.defenses.diffpure import DiffPure
from advpure.diffusion import load_denoiser
from advpure.models import load_classifier

if cfg["model"] == "adm":  # a guided-diffusion UNet with random weights
    from advpure.diffusion.adm import ADMEpsModel, build_adm
    torch.manual_seed(0)
    net, meta = ADMEpsModel(build_adm(cfg["adm"])).eval(), {}
else:
    net, meta = load_denoiser(cfg["model"])
if cfg["classifier"] == "imagenet-resnet":
    from advpure.models.imagenet import ImageNetResNet
    torch.manual_seed(0)
    clf = ImageNetResNet(**cfg["classifier_kwargs"]).eval()
else:
    clf = load_classifier(cfg["classifier"])
purifier = DiffPure(net, t=cfg["t"], n_steps=cfg["k"])
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


def status_kib(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))


gc.collect()
try:  # hand the warm-up's freed heap back, so the RSS before the step is what is alive
    ctypes.CDLL("libc.so.6").malloc_trim(0)
except (OSError, AttributeError):
    pass
try:  # Linux: reset the high-water mark (VmHWM) to the current RSS
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    rss0 = status_kib("VmRSS")
except OSError:
    rss0 = None
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
x_adv = attack(model, x, y)
seconds = time.perf_counter() - t0
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
step_peak = (status_kib("VmHWM") - rss0) / 1024 if rss0 is not None else None
print(json.dumps({"peak_growth_mib": (after - before) / 1024, "step_peak_mib": step_peak, "peak_mib": after / 1024,
                  "seconds": seconds, "finite": bool(torch.isfinite(x_adv).all()),
                  "moved": float((x_adv - x).abs().max())}))
"""


def measure(setup: str, k: int, checkpoint: bool, *, batch: int | None = None, threads: int = 1) -> dict:
    s = SETUPS[setup]
    built = {"adm": "adm", "imagenet-resnet": "imagenet-resnet"}
    cfg = {"setup": setup, "defense": s["defense"], "model": built.get(s["model"]) or str(ZOO / s["model"]),
           "classifier": built.get(s["classifier"]) or str(ZOO / s["classifier"]), "k": k, "t": s.get("t", 0.1),
           "checkpoint": checkpoint, "batch": batch or s["batch"], "threads": threads,
           **{key: s[key] for key in ("adm", "classifier_kwargs") if key in s}}
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cfg)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{setup} K={k} checkpoint={checkpoint} failed:\n{proc.stderr[-3000:]}")
    return {**cfg, **json.loads(proc.stdout.strip().splitlines()[-1])}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="checkpointed only: DiffPure on digits at batch 4, K = 5 and 20, and the ADM 256x256 case at "
                         "K = 2 and 4 (for the test)")
    ap.add_argument("--setups", default=",".join(SETUPS), help=f"comma-separated, from {', '.join(SETUPS)}")
    ap.add_argument("--ks", default=None, help=f"comma-separated K for every setup (default: {','.join(map(str, KS))}; "
                                               "10,50 for diffpure-adm256)")
    ap.add_argument("--plain-ks", default=None, help="the K also measured without checkpointing (default: all; 10 for "
                                                     "diffpure-adm256)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads in each child (default 1)")
    ap.add_argument("--out", default=None, help="write all measurements as JSON here")
    args = ap.parse_args(argv)
    ints = lambda v: [int(a) for a in v.split(",")]  # noqa: E731
    setups = [n for n in SETUPS if "quick" in SETUPS[n]] if args.quick else args.setups.split(",")
    unknown = [n for n in setups if n not in SETUPS]
    if unknown:
        ap.error(f"unknown setup(s) {', '.join(unknown)}; expected some of {', '.join(SETUPS)}")
    rows, summary = [], {}
    print("| setup | batch | K | memory measure | plain: MiB | plain: s | checkpointed: MiB | checkpointed: s |")
    print("|---|---|---|---|---|---|---|---|")
    for setup in setups:
        s = SETUPS[setup]
        batch, ks = s["quick"] if args.quick else (None, ints(args.ks) if args.ks else s.get("ks", KS))
        plain = () if args.quick else ints(args.plain_ks) if args.plain_ks else s.get("plain_ks") or ks
        by = {}
        for k in ks:
            by[k] = {c: measure(setup, k, c, batch=batch, threads=args.threads)
                     for c in ((False, True) if k in plain else (True,))}
            rows += list(by[k].values())
        # the memory measure: the growth of the process's peak RSS during the step (ru_maxrss), or, for batch-1
        # setups, whose warm-up reaches the step's own peak, the step's peak RSS above the RSS before it
        metric = s.get("metric", "peak_growth_mib")
        if any(m.get(metric) is None for b in by.values() for m in b.values()):
            metric = "peak_growth_mib"  # no /proc/self/clear_refs (not Linux)
        for k in ks:
            cells = [f"{by[k][c][metric]:.1f} | {by[k][c]['seconds']:.2f}" if c in by[k] else "- | -"
                     for c in (False, True)]
            print(f"| {setup} | {by[k][True]['batch']} | {k} | {MEASURES[metric]} | {cells[0]} | {cells[1]} |",
                  flush=True)
        lo, hi = min(ks), max(ks)
        both = [k for k in ks if False in by[k]]  # measured with and without checkpointing
        summary[setup] = {
            "metric": metric,
            "checkpointed_growth_ratio": by[hi][True][metric] / by[lo][True][metric],
            "plain_growth_ratio": by[hi][False][metric] / by[lo][False][metric]
            if False in by[hi] and False in by[lo] else None,
            "time_checkpointed_over_plain": by[max(both)][True]["seconds"] / by[max(both)][False]["seconds"]
            if both else None,
            "time_ratio_k": max(both) if both else None,
            "k_min": lo, "k_max": hi}
    print()
    print("| setup | checkpointed growth K=max/K=min (goal <= 1.2) | plain growth K=max/K=min | "
          "time checkpointed/plain |")
    print("|---|---|---|---|")
    fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    for setup, s in summary.items():
        at = f" (K={s['time_ratio_k']})" if s["time_ratio_k"] is not None else ""
        print(f"| {setup} (K {s['k_max']}/{s['k_min']}) | {fmt(s['checkpointed_growth_ratio'])} | "
              f"{fmt(s['plain_growth_ratio'])} | {fmt(s['time_checkpointed_over_plain'])}{at} |")
    result = {"command": "python benchmarks/attack_memory.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "measurements": rows, "summary": summary}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
