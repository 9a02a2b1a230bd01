"""One prepared accelerator run: three CIFAR-10 models under a wall-clock budget, saved in advpure's formats.

Phases (each stops on time, between steps, and saves what it has):

1. ``<tag>-t0.2``: a purification eps-model trained on VP noise levels t <= 0.2 only (the conventions of
   ``advpure train diffusion --t-max 0.2``: continuous t ~ U(1e-3, 0.2), ``x_t = alpha x0 + std eps``, MSE on eps,
   UNet timestep ``1000 t - 1``), EMA of the weights (0.999) saved;
2. the same architecture on the full range t_max = 1 (the distillation teacher);
3. a consistency model distilled from (2) (``advpure train consistency --mode cd``: Heun step of the teacher's PF
   ODE between adjacent Karras levels, N = 18, target EMA mu = 0.95, squared l2, saved EMA 0.999).

Default network (``--arch gpu``): diffusers UNet2DModel, channels (64, 96, 96), 2 res blocks per level, attention
at 16x16, 4.06M parameters = 15.5 MiB in fp32 safetensors (advpure's ``cifar10-small`` preset is 16.9 MiB, over the
16 MiB a device run can return; ``--arch`` also takes advpure's preset names). bf16 autocast and channels_last on
CUDA, ``torch.compile`` (``--compile auto``: on CUDA; a compile error falls back to eager with a printed note),
batch 256, random horizontal flips, Adam with linear warm-up and gradient clipping at 1.

Outputs in ``--out`` (at most 8 files, each under 16 MiB): three ``.safetensors`` + JSON sidecars that
``advpure.diffusion.models.load_denoiser`` (eps-models) and ``advpure.diffusion.consistency.load_consistency_model``
(the CM, as CMAP loads it) read; ``summary.json``; ``samples.png`` (CM one-step samples, teacher DDPM samples,
test images diffused to t = 0.1 and purified by model 1). Each sidecar records the command, steps, seconds, device,
final loss and the loss curve; the eps-models' sidecars hold the eps-prediction MSE at t = 0.02/0.05/0.1/0.2 on 1,000
test images (4 noise draws, as ``reports/scripts/cifar10_cm_checks.py``; the CPU model
``zoo/cifar10-ddpm-tiny-t0.2`` measured 0.207/0.134/0.084/0.046 on 256 of them) next to the zoo CPU model's error
on the same images and draws.

The accelerator machine has no ``diffusers`` and ``../shared`` does not travel. Prepare once, here, in the
repository root (``.whl/`` and ``runs/`` are ignored by .gitignore)::

    .venv/bin/python benchmarks/device_prepare.py

(it copies the data to ``runs/device/``, writes the diffusers 0.42.1 wheel without its pipelines to ``.whl/`` -- the
full wheel took the tree over the 64 MiB that travels -- checks that ``UNet2DModel`` imports from it, and prints the
size that will travel)

then run, with ``carry: [".whl", "runs/device/cifar10-jpeg.tar.gz"]`` and ``timeout_s: 570`` (the script stops
itself at ``--max-wall-s`` = 515 s after it starts; about 480 s with the default budgets)::

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      .whl/*.whl && export PYTHONPATH=/tmp/site || exit; nvidia-smi -L; PYTHONUNBUFFERED=1 python3 \
      benchmarks/device_train.py --data-dir runs/device/cifar10-jpeg.tar.gz --out $OUT

Compilation time shows as ``first_step_seconds`` in each sidecar's ``run``. Phase 2 reuses phase 1's compiled
graph; phase 3 compiles once more, for the no-grad teacher/target calls (both seen with the aot_eager backend on
CPU). ``--compile off`` trades speed for predictability. On CPU, where the attacks run later, one forward pass of the
4.06M network took 3.0x as long as the zoo's 1.1M ``cifar10-tiny`` (0.37 s vs 0.12 s, batch 16, one thread).

What it did on an H200 (2026-11-30, ``--budgets 255,90,110``, 474 s of wall time, 513 s of device time with the
start; outputs in ``reports/cifar10/device/``, the three weight files kept out of git -- 15.5 MiB each, none beat
the zoo's CPU models where it matters, see docs/RESULTS.md): compilation took 76 s of phase 1 and 40 s of phase 3;
about 20 training steps/s at batch 256 in phases 1-2 (3,360 and 1,600 steps), 14 in phase 3 (770 steps).

CPU check (< 60 s on one thread; the test runs it): ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/device_train.py
--smoke --synthetic --out /tmp/dt-smoke`` (tiny preset, 4 steps a phase, batch 8, 64 images, fp32).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Callable

T_START = time.perf_counter()
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
os.environ.setdefault("ADVPURE_CACHE", "/tmp/advpure-cache")

import torch  # noqa: E402

from advpure.checkpoint import save_weights  # noqa: E402
from advpure.diffusion.consistency import (  # noqa: E402
    SIGMA_DATA,
    SIGMA_MAX,
    SIGMA_MIN,
    ConsistencyModel,
    cd_loss,
    karras_sigmas,
    load_consistency_model,
    vp_denoiser,
)
from advpure.diffusion.models import DiscreteTimeAdapter, build_unet, load_denoiser, unet_config  # noqa: E402
from advpure.diffusion.schedule import VPSchedule  # noqa: E402
from advpure.train.consistency import CD_MU, CD_N, confidence_summary  # noqa: E402
from advpure.train.diffusion import TIME_CONVENTION, denoising_error, save_grid  # noqa: E402

#: 4.06M parameters, 15.5 MiB in fp32: the largest of the measured variants that fits a 16 MiB returned file
GPU_UNET: dict[str, Any] = dict(sample_size=32, in_channels=3, out_channels=3, block_out_channels=[64, 96, 96],
                                down_block_types=["DownBlock2D", "AttnDownBlock2D", "DownBlock2D"],
                                up_block_types=["UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
                                layers_per_block=2, norm_num_groups=16)
EVAL_T = (0.02, 0.05, 0.1, 0.2)
CPU_REFERENCE = {"model": "zoo/cifar10-ddpm-tiny-t0.2", "n": 256, "repeats": 4,
                 "eps_mse": {"0.02": 0.207, "0.05": 0.134, "0.1": 0.084, "0.2": 0.046},
                 "source": "docs/RESULTS.md (reports/scripts/cifar10_cm_checks.py)"}
ZOO = REPO / "zoo"


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T_START:7.1f}s] {msg}", flush=True)


# ------------------------------------------------------------------------------------------------ set-up
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder ($OUT on the device machine)")
    p.add_argument("--data-dir", default=None,
                   help="CIFAR-10 source (default ../shared/data/cifar10-jpeg.tar.gz, or $ADVPURE_SHARED/data/...)")
    p.add_argument("--synthetic", action="store_true", help="random smooth images instead of CIFAR-10 (tests)")
    p.add_argument("--smoke", action="store_true",
                   help="CPU check: tiny preset, 4 steps a phase, batch 8, 64 images, fp32, no compile")
    p.add_argument("--phases", default="1,2,3", help="which phases to run (default 1,2,3; 3 alone needs --teacher)")
    p.add_argument("--teacher", default=None, help="phase 3's teacher when phase 2 is not run")
    p.add_argument("--budgets", default="225,110,110",
                   help="seconds for phases 1,2,3, each including its start-up, evaluation and saving "
                        "(default 225,110,110)")
    p.add_argument("--max-wall-s", type=float, default=515.0,
                   help="the whole script's limit from its start: phase budgets shrink in proportion when start-up "
                        "took longer (default 515)")
    p.add_argument("--final-reserve-s", type=float, default=None,
                   help="kept for the sample grid and summary after phase 3 (default 25, smoke 5)")
    p.add_argument("--phase-reserve-s", type=float, default=None,
                   help="kept in each phase for evaluation and saving (default 12, smoke 1)")
    p.add_argument("--max-steps", type=int, default=None, help="cap on steps per phase (default none; smoke 4)")
    p.add_argument("--arch", default=None, help="gpu (default; 4.06M) or an advpure preset (cifar10-tiny, ...)")
    p.add_argument("--batch-size", type=int, default=None, help="default 256 (smoke 8)")
    p.add_argument("--lr", type=float, default=5e-4, help="Adam learning rate, phases 1-2 (default 5e-4)")
    p.add_argument("--cm-lr", type=float, default=4e-4, help="Adam learning rate, phase 3 (default 4e-4, CM paper)")
    p.add_argument("--warmup", type=int, default=None, help="linear lr warm-up steps (default 200; smoke 0)")
    p.add_argument("--grad-clip", type=float, default=1.0, help="gradient-norm clip (0: off; default 1)")
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--t-max", type=float, default=0.2, help="phase 1's noise range (default 0.2)")
    p.add_argument("--subset", type=int, default=None, help="train on the first N of a seeded subset (smoke 64)")
    p.add_argument("--eval-n", type=int, default=None, help="test images for the eps-MSE (default 1000; smoke 16)")
    p.add_argument("--eval-repeats", type=int, default=None, help="noise draws per image (default 4; smoke 1)")
    p.add_argument("--compile", choices=("auto", "on", "off"), default="auto", help="torch.compile (auto: on CUDA)")
    p.add_argument("--compile-backend", default="inductor",
                   help="torch.compile backend (default inductor; 'eager' checks the compiled path cheaply; "
                        "'fail-for-test' raises at the first call, to test the fallback to eager)")
    p.add_argument("--bf16", choices=("auto", "on", "off"), default="auto", help="bf16 autocast (auto: on CUDA)")
    p.add_argument("--compare", choices=("auto", "on", "off"), default="auto",
                   help="also measure the zoo CPU models on the same images (auto: unless --smoke/--synthetic)")
    p.add_argument("--classifier", default=None,
                   help="classifier spec for CM sample recognisability (default zoo/cifar10-resnet8.safetensors "
                        "when present, off in smoke mode; 'none' to skip)")
    p.add_argument("--recog-n", type=int, default=None, help="one-step CM samples classified (default 1000; smoke 64)")
    p.add_argument("--grid", choices=("on", "off"), default="on", help="write samples.png")
    p.add_argument("--tag", default=None, help="file-name tag (default gpu; smoke: smoke)")
    p.add_argument("--device", default=None, help="cuda or cpu (default cuda when available)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every-s", type=float, default=None, help="progress line interval (default 10; smoke 0)")
    p.add_argument("--max-file-mib", type=float, default=16.0,
                   help="refuse (before training) a network whose fp32 file would exceed this (0: no check)")
    a = p.parse_args(argv)
    sm = a.smoke
    dflt = {"max_steps": 4 if sm else 0, "arch": "cifar10-tiny" if sm else "gpu", "batch_size": 8 if sm else 256,
            "warmup": 0 if sm else 200, "subset": 64 if sm else 0, "eval_n": 16 if sm else 1000,
            "eval_repeats": 1 if sm else 4, "recog_n": 64 if sm else 1000, "tag": "smoke" if sm else "gpu",
            "log_every_s": 0.0 if sm else 10.0,
            "final_reserve_s": 5.0 if sm else 25.0, "phase_reserve_s": 1.0 if sm else 12.0}
    for k, v in dflt.items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    try:
        a.phases = sorted({int(s) for s in a.phases.split(",") if s.strip()})
        budgets = [float(s) for s in a.budgets.split(",")]
    except ValueError:
        p.error(f"--phases/--budgets: expected comma-separated numbers, got {a.phases!r} / {a.budgets!r}")
    if not a.phases or not set(a.phases) <= {1, 2, 3}:
        p.error("--phases: a subset of 1,2,3")
    if len(budgets) != 3 or min(budgets) <= 0:
        p.error("--budgets: three positive numbers of seconds (phases 1,2,3)")
    if 3 in a.phases and 2 not in a.phases and not a.teacher:
        p.error("--phases without 2 but with 3 needs --teacher PATH (a full-range eps-model)")
    if not (0 < a.t_max < 1):
        p.error("--t-max: phase 1 is the t <= t_max model, 0 < t_max < 1")
    a.budgets = dict(zip((1, 2, 3), budgets))
    return a


def resolve_data(a: argparse.Namespace) -> str:
    if a.data_dir:
        return a.data_dir
    shared = Path(os.environ.get("ADVPURE_SHARED", REPO.parent / "shared"))
    return str(shared / "data" / "cifar10-jpeg.tar.gz")


def load_images(a: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(train, test) float [0, 1] NCHW on the CPU, and a description of the source."""
    if a.synthetic:
        g = torch.Generator().manual_seed(a.seed)
        n_tr = a.subset or 512
        n_te = max(a.eval_n, 16)
        low = torch.rand(n_tr + n_te, 3, 4, 4, generator=g)  # smooth colour fields: learnable, cheap
        x = torch.nn.functional.interpolate(low, size=32, mode="bilinear", align_corners=False)
        return x[:n_tr].contiguous(), x[n_tr:].contiguous(), "synthetic (bilinear 4x4 -> 32x32 noise)"
    from advpure.data import load_dataset

    src = resolve_data(a)
    train = load_dataset("cifar10", "train", data_dir=src)
    if a.subset:
        train = train.subset(a.subset, a.seed)
    test = load_dataset("cifar10", "test", data_dir=src).subset(a.eval_n, 0)
    return train.tensors()[0], test.tensors()[0], f"cifar10 from {src}"


def arch_config(a: argparse.Namespace) -> dict[str, Any]:
    return copy.deepcopy(GPU_UNET) if a.arch == "gpu" else unet_config(a.arch)


class Budget:
    """The global wall-clock: each phase gets its budget, shrunk in proportion when earlier work ran over."""

    def __init__(self, a: argparse.Namespace) -> None:
        self.a = a
        self.todo = list(a.phases)

    def allot(self, phase: int) -> float:
        left = self.a.max_wall_s - (time.perf_counter() - T_START) - self.a.final_reserve_s
        want = [self.a.budgets[p] for p in self.todo]
        share = left * self.a.budgets[phase] / sum(want)
        self.todo.remove(phase)
        return max(0.0, min(self.a.budgets[phase], share))


# ------------------------------------------------------------------------------------------------ training
class Runner:
    """A time-bounded optimisation loop: ``step_fn()`` returns the loss tensor (not synchronised); the loop
    synchronises every ``check_every`` steps, measures the step time, and stops when the next window would pass
    the deadline. ``compiled`` steps that raise fall back once to ``on_fallback()`` (eager)."""

    def __init__(self, name: str, dev: torch.device, *, deadline: float, max_steps: int, log_every_s: float) -> None:
        self.name, self.dev, self.deadline = name, dev, deadline
        self.max_steps, self.log_every_s = max_steps, log_every_s
        self.check_every = 10 if dev.type == "cuda" else 1
        self.losses: list[torch.Tensor] = []
        self.curve: list[list[float]] = []
        self.first_step_s: float | None = None
        self.stopped_by = "time"
        self.nonfinite = False
        self.notes: list[str] = []

    def _sync(self) -> None:
        if self.dev.type == "cuda":
            torch.cuda.synchronize(self.dev)

    def run(self, step_fn: Callable[[int], torch.Tensor], *, compiled: bool,
            on_fallback: Callable[[], None] | None = None) -> tuple[int, float]:
        t0 = time.perf_counter()
        step, win_t, win_s, per_step, last_log = 0, t0, 0, None, t0
        while True:
            if self.max_steps and step >= self.max_steps:
                self.stopped_by = "max_steps"
                break
            now = time.perf_counter()
            if step > 0 and (step == 1 or step % self.check_every == 0):
                self._sync()
                now = time.perf_counter()
                if step == 1:
                    self.first_step_s = now - t0
                    per_step = self.first_step_s  # includes compilation: a conservative first estimate
                elif step > win_s:
                    per_step = (now - win_t) / (step - win_s)
                win_t, win_s = now, step
                recent = torch.stack(self.losses[-self.check_every:]).float().mean().item()
                if not math.isfinite(recent):
                    self.nonfinite, self.stopped_by = True, "nonfinite_loss"
                    log(f"{self.name}: non-finite loss at step {step}; stopping this phase")
                    break
                if step == 1 or step % 100 == 0 or step < 100:
                    self.curve.append([step, round(now - t0, 2), recent])
                if self.log_every_s and now - last_log >= self.log_every_s:
                    last_log = now
                    log(f"{self.name}: step {step} loss {recent:.4f} ({1 / per_step:.1f} steps/s, "
                        f"{self.deadline - now:.0f} s left)")
                n_next = 1 if step == 1 else self.check_every
                if now + n_next * per_step > self.deadline:
                    break
            elif step == 0 and now >= self.deadline:
                break
            try:
                loss = step_fn(step)
            except Exception as e:  # noqa: BLE001 - torch.compile raises many kinds
                if not compiled or on_fallback is None:
                    raise
                lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
                why = " / ".join(dict.fromkeys([lines[0], lines[-1]]))[:300] if lines else ""
                msg = f"torch.compile failed ({type(e).__name__}: {why}); falling back to eager (later phases too)"
                log(f"{self.name}: NOTE {msg}")
                self.notes.append(msg)
                on_fallback()
                compiled = False
                continue
            self.losses.append(loss.detach())
            step += 1
        self._sync()
        seconds = time.perf_counter() - t0
        if step and (not self.curve or self.curve[-1][0] != step):
            self.curve.append([step, round(seconds, 2), torch.stack(self.losses[-self.check_every:]).float().mean().item()])
        log(f"{self.name}: stopped by {self.stopped_by} after {step} steps, {seconds:.1f} s")
        return step, seconds

    def final_loss(self) -> float | None:
        return torch.stack(self.losses[-100:]).float().mean().item() if self.losses else None


def make_opt(params: list[torch.nn.Parameter], lr: float) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=lr)  # foreach on CUDA (fused left out: channels_last parameters)


def opt_step(opt: torch.optim.Optimizer, params: list[torch.nn.Parameter], loss: torch.Tensor, step: int,
             a: argparse.Namespace, lr: float) -> None:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if a.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(params, a.grad_clip)
    if a.warmup:
        for gr in opt.param_groups:
            gr["lr"] = lr * min(1.0, (step + 1) / a.warmup)
    opt.step()


def ema_update(ema_params: list[torch.Tensor], params: list[torch.Tensor], decay: float, step: int) -> None:
    """advpure's EMA: decay min(decay, (1 + k) / (10 + k)) after step k."""
    d = min(decay, (1 + step) / (10 + step))
    with torch.no_grad():
        torch._foreach_lerp_(ema_params, [p.detach() for p in params], 1 - d)


def _failing_backend(gm: Any, example_inputs: Any) -> Any:
    raise RuntimeError("compile failure simulated (--compile-backend fail-for-test)")


COMPILE_BACKEND = {"name": "inductor"}


def maybe_compile(net: torch.nn.Module, on: bool) -> torch.nn.Module:
    """``torch.compile(net)`` (parameters shared with ``net``, whose state_dict keys stay as they are)."""
    if not on:
        return net
    name = COMPILE_BACKEND["name"]
    try:
        return torch.compile(net, backend=_failing_backend if name == "fail-for-test" else name)
    except Exception as e:  # noqa: BLE001
        log(f"NOTE torch.compile unavailable ({type(e).__name__}: {e}); eager")
        return net


def eps_mse(eps_model: Any, x0: torch.Tensor, ts: tuple[float, ...], seed: int, repeats: int) -> dict[str, float]:
    """advpure's ``denoising_error`` per t, a fresh generator per t (as reports/scripts/cifar10_cm_checks.py)."""
    return {str(t): denoising_error(eps_model, x0, t, repeats=repeats,
                                    generator=torch.Generator(device=x0.device).manual_seed(seed)) for t in ts}


def train_eps_phase(phase: int, t_max: float, a: argparse.Namespace, ctx: dict[str, Any], allot: float
                    ) -> dict[str, Any]:
    dev, cfg = ctx["dev"], ctx["cfg"]
    t_phase = time.perf_counter()
    name = f"cifar10-ddpm-{a.tag}" + (f"-t{t_max:g}" if t_max < 1 else "")
    log(f"phase {phase}: {name} (t <= {t_max:g}), {allot:.0f} s")
    torch.manual_seed(a.seed + phase)
    net = build_unet(cfg).to(dev).to(memory_format=torch.channels_last).train()
    ema = copy.deepcopy(net).requires_grad_(False).eval()
    params, ema_params = list(net.parameters()), list(ema.parameters())
    opt = make_opt(params, a.lr)
    fwd = {"m": DiscreteTimeAdapter(maybe_compile(net, ctx["compile"]))}
    gen = torch.Generator(device=dev).manual_seed(a.seed * 1000 + phase)
    sched, data, t_min = VPSchedule(), ctx["train"], 1e-3
    bs = a.batch_size

    def step_fn(step: int) -> torch.Tensor:
        x0 = data[torch.randint(0, data.shape[0], (bs,), generator=gen, device=dev)]
        m = torch.rand(bs, generator=gen, device=dev) < 0.5
        x0 = torch.where(m[:, None, None, None], x0.flip(-1), x0)  # random horizontal flip
        t = t_min + (t_max - t_min) * torch.rand(bs, generator=gen, device=dev)
        eps = torch.randn(x0.shape, generator=gen, device=dev)
        xt = (sched.alpha(t).view(-1, 1, 1, 1) * x0 + sched.std(t).view(-1, 1, 1, 1) * eps)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=ctx["bf16"]):
            pred = fwd["m"](xt.contiguous(memory_format=torch.channels_last), t)
        loss = (pred.float() - eps).pow(2).mean()
        opt_step(opt, params, loss, step, a, a.lr)
        ema_update(ema_params, params, a.ema_decay, step + 1)
        return loss

    def fallback() -> None:
        opt.zero_grad(set_to_none=True)
        fwd["m"] = DiscreteTimeAdapter(net)

    deadline = t_phase + allot - a.phase_reserve_s
    r = Runner(f"phase {phase}", dev, deadline=deadline, max_steps=a.max_steps, log_every_s=a.log_every_s)
    steps, seconds = r.run(step_fn, compiled=ctx["compile"], on_fallback=fallback)
    ctx["compile"] = ctx["compile"] and not r.notes  # a failed compile is not retried in later phases
    del fwd, opt
    # evaluation: eps-prediction MSE of the EMA weights (fp32) on the test images, and the zoo CPU model alike
    ev = {"n": int(ctx["test"].shape[0]), "repeats": a.eval_repeats, "seed": 0,
          "protocol": "advpure.train.diffusion.denoising_error per t, fresh generator per t, EMA weights, fp32"}
    ts = tuple(t for t in EVAL_T if t <= t_max) + ((0.5,) if t_max >= 1 else ())
    x0_test = ctx["test"]
    ev["eps_mse"] = eps_mse(DiscreteTimeAdapter(ema, t_max=t_max), x0_test, ts, 0, a.eval_repeats)
    log(f"phase {phase}: eps-MSE {json.dumps({k: round(v, 4) for k, v in ev['eps_mse'].items()})}")
    zoo_name = "cifar10-ddpm-tiny-t0.2" if t_max < 1 else "cifar10-ddpm-tiny"
    if ctx["compare"] and (ZOO / f"{zoo_name}.safetensors").is_file() and (t_max >= 1 or t_max == 0.2):
        try:
            zm, _ = load_denoiser(ZOO / f"{zoo_name}.safetensors", image_shape=(3, 32, 32))
            ev["zoo_cpu_model"] = {"model": f"zoo/{zoo_name}",
                                   "eps_mse": eps_mse(zm.to(dev), x0_test, ts, 0, a.eval_repeats)}
            log(f"phase {phase}: zoo/{zoo_name} on the same draws "
                f"{json.dumps({k: round(v, 4) for k, v in ev['zoo_cpu_model']['eps_mse'].items()})}")
        except Exception as e:  # noqa: BLE001 - a comparison must not cost the run
            ev["zoo_cpu_model"] = {"error": f"{type(e).__name__}: {e}"}
    if t_max < 1:
        ev["cpu_reference"] = CPU_REFERENCE
    path = Path(a.out) / f"{name}.safetensors"
    meta = save_weights(ema.state_dict(), path, {
        "kind": "diffusion", "format": "diffusers UNet2DModel, eps prediction", "preset": ctx["arch_name"],
        "unet_config": cfg, "dataset": "cifar10" if not a.synthetic else "synthetic", "image_shape": [3, 32, 32],
        "t_max": t_max, "t_min": t_min, "time_sampling": "continuous", "schedule": sched.describe(),
        "time_convention": TIME_CONVENTION, "n_steps": 1000, "training_steps": steps, "batch_size": bs,
        "world_size": 1, "lr": a.lr, "ema_decay": a.ema_decay, "seed": a.seed, "final_loss": r.final_loss(),
        "train_seconds_this_run": round(seconds, 1), "torch_threads": torch.get_num_threads(), "device": ctx["device_desc"],
        "command": ctx["command"], "eval": ev, "run": run_record(r, steps, seconds, allot, ctx, a),
    })
    log(f"phase {phase}: saved {path.name} ({path.stat().st_size / 2**20:.2f} MiB), phase {time.perf_counter() - t_phase:.1f} s")
    return {"name": name, "path": str(path), "steps": steps, "seconds": round(seconds, 1),
            "final_loss": meta["final_loss"], "eval": ev, "run": meta["run"], "ema": ema}


def run_record(r: Runner, steps: int, seconds: float, allot: float, ctx: dict[str, Any], a: argparse.Namespace
               ) -> dict[str, Any]:
    return {"steps": steps, "seconds": round(seconds, 2), "budget_s": round(allot, 1), "stopped_by": r.stopped_by,
            "first_step_seconds": None if r.first_step_s is None else round(r.first_step_s, 2),
            "steps_per_s": round(steps / seconds, 2) if seconds > 0 and steps else None,
            "steps_per_s_after_first": (round((steps - 1) / (seconds - r.first_step_s), 2)
                                        if steps > 1 and r.first_step_s is not None and seconds > r.first_step_s
                                        else None),
            "compile": ctx["compile"], "bf16_autocast": ctx["bf16"], "channels_last": True,
            "hflip": True, "warmup_steps": a.warmup, "grad_clip": a.grad_clip, "nonfinite_loss": r.nonfinite,
            "notes": r.notes, "loss_curve": r.curve, "data": ctx["data_desc"], "train_images": int(ctx["train"].shape[0]),
            "script": "benchmarks/device_train.py"}


def train_cm_phase(teacher_path: str, a: argparse.Namespace, ctx: dict[str, Any], allot: float) -> dict[str, Any]:
    dev, cfg = ctx["dev"], ctx["cfg"]
    t_phase = time.perf_counter()
    name = f"cifar10-cm-cd-{a.tag}"
    log(f"phase 3: {name} distilled from {Path(teacher_path).name}, {allot:.0f} s")
    shape = (3, 32, 32)
    teacher, tmeta = load_denoiser(teacher_path, image_shape=shape)
    if float(tmeta.get("t_max", 1.0)) < 1.0:
        raise ValueError(f"{teacher_path}: the teacher must be a full-range model (t_max = 1)")
    teacher = teacher.to(dev).eval().requires_grad_(False)
    teacher.net.to(memory_format=torch.channels_last)
    t_fwd = {"m": DiscreteTimeAdapter(maybe_compile(teacher.net, ctx["compile"]))}

    def den(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return vp_denoiser(t_fwd["m"], x, s)

    torch.manual_seed(a.seed + 3)
    model = ConsistencyModel(build_unet(cfg), image_shape=shape).to(dev).train()
    model.net.to(memory_format=torch.channels_last)
    target = copy.deepcopy(model).requires_grad_(False)
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    params, tgt_params, ema_params = list(model.parameters()), list(target.parameters()), list(ema.parameters())
    opt = make_opt(params, a.cm_lr)

    def wrappers(comp: bool) -> dict[str, ConsistencyModel]:
        return {"online": ConsistencyModel(maybe_compile(model.net, comp), image_shape=shape),
                "target": ConsistencyModel(maybe_compile(target.net, comp), image_shape=shape)}

    fw = wrappers(ctx["compile"])
    sig = karras_sigmas(CD_N).to(dev)
    gen = torch.Generator(device=dev).manual_seed(a.seed * 1000 + 3)
    data, bs = ctx["train"], a.batch_size

    def step_fn(step: int) -> torch.Tensor:
        x0 = data[torch.randint(0, data.shape[0], (bs,), generator=gen, device=dev)]
        m = torch.rand(bs, generator=gen, device=dev) < 0.5
        x0 = torch.where(m[:, None, None, None], x0.flip(-1), x0).contiguous(memory_format=torch.channels_last)
        idx = torch.randint(0, CD_N - 1, (bs,), generator=gen, device=dev)
        z = torch.randn(x0.shape, generator=gen, device=dev).contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=ctx["bf16"]):
            loss = cd_loss(fw["online"], fw["target"], den, x0, idx, sig, z, solver="heun", metric="l2").float().mean()
        opt_step(opt, params, loss, step, a, a.cm_lr)
        with torch.no_grad():  # advpure.train.consistency: target EMA mu = 0.95, saved EMA 0.999 with warm-up
            torch._foreach_lerp_(tgt_params, [p.detach() for p in params], 1 - CD_MU)
        ema_update(ema_params, params, a.ema_decay, step + 1)
        return loss

    def fallback() -> None:
        opt.zero_grad(set_to_none=True)
        fw.update(wrappers(False))
        t_fwd["m"] = DiscreteTimeAdapter(teacher.net)

    deadline = t_phase + allot - a.phase_reserve_s
    r = Runner("phase 3", dev, deadline=deadline, max_steps=a.max_steps, log_every_s=a.log_every_s)
    steps, seconds = r.run(step_fn, compiled=ctx["compile"], on_fallback=fallback)
    ctx["compile"] = ctx["compile"] and not r.notes
    del fw, t_fwd, opt
    path = Path(a.out) / f"{name}.safetensors"
    meta = save_weights(ema.net.state_dict(), path, {
        "kind": "consistency", "format": "diffusers UNet2DModel as F in f = c_skip x + c_out F(c_in x, 250 ln sigma)",
        "preset": ctx["arch_name"], "unet_config": cfg, "dataset": "cifar10" if not a.synthetic else "synthetic",
        "image_shape": list(shape), "mode": "cd", "data_scale": "[-1, 1] (2 x - 1)", "sigma_min": SIGMA_MIN,
        "sigma_max": SIGMA_MAX, "sigma_data": SIGMA_DATA, "rho": 7.0,
        "noise_conditioning": "timestep = 1000 * 0.25 * ln(sigma)", "metric": "l2", "n_cd": CD_N, "mu_cd": CD_MU,
        "ct_schedule": None, "solver": "heun", "teacher": Path(teacher_path).name,
        "teacher_sha256": tmeta.get("sha256"), "training_steps": steps, "batch_size": bs, "lr": a.cm_lr,
        "ema_decay": a.ema_decay, "seed": a.seed, "final_loss": r.final_loss(),
        "train_seconds_this_run": round(seconds, 1), "torch_threads": torch.get_num_threads(),
        "device": ctx["device_desc"], "recognisability": None, "command": ctx["command"],
        "run": run_record(r, steps, seconds, allot, ctx, a),
    })
    log(f"phase 3: saved {path.name} ({path.stat().st_size / 2**20:.2f} MiB), phase {time.perf_counter() - t_phase:.1f} s")
    return {"name": name, "path": str(path), "steps": steps, "seconds": round(seconds, 1),
            "final_loss": meta["final_loss"], "run": meta["run"], "teacher": teacher}


# ------------------------------------------------------------------------------------------------ after training
def finish(a: argparse.Namespace, ctx: dict[str, Any], res: dict[int, dict[str, Any]], summary: dict[str, Any]) -> None:
    """Recognisability of the CM's one-step samples and the sample grid (each guarded: files already saved)."""
    dev = ctx["dev"]
    cm = None
    if 3 in res:
        cm, _ = load_consistency_model(res[3]["path"], image_shape=(3, 32, 32))
        cm = cm.to(dev)
    clf_spec, clf_name = a.classifier, a.classifier
    if clf_spec is None and not a.smoke and (ZOO / "cifar10-resnet8.safetensors").is_file():
        clf_spec, clf_name = str(ZOO / "cifar10-resnet8.safetensors"), "zoo/cifar10-resnet8.safetensors"

    def time_left() -> float:
        return a.max_wall_s - (time.perf_counter() - T_START)

    if cm is not None and clf_spec and clf_spec != "none" and (a.classifier or not a.synthetic) and time_left() > 10:
        try:
            from advpure.models import load_classifier
            from advpure.train.consistency import recognisability

            clf = load_classifier(clf_spec).to(dev).eval()
            rec = {"classifier": clf_name, "this_cm": recognisability(cm, clf, n=a.recog_n, seed=a.seed),
                   "real_test_images": confidence_summary(clf, (ctx["test"] + 1) / 2)}
            zoo_cm = ZOO / "cifar10-cm-cd-tiny.safetensors"
            if ctx["compare"] and zoo_cm.is_file():
                zcm, _ = load_consistency_model(zoo_cm, image_shape=(3, 32, 32))
                rec["zoo_cifar10_cm_cd_tiny"] = recognisability(zcm.to(dev), clf, n=a.recog_n, seed=a.seed)
            summary["cm_recognisability"] = rec
            side = Path(res[3]["path"]).with_suffix(".json")  # as advpure train consistency --classifier records it
            meta = json.loads(side.read_text())
            meta["recognisability"] = {**rec["this_cm"], "classifier": clf_name}
            side.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
            log("CM one-step samples classified with confidence > 0.9: "
                + ", ".join(f"{k} {v['confident_fraction']:.3f}" for k, v in rec.items() if isinstance(v, dict)))
        except Exception as e:  # noqa: BLE001
            summary["cm_recognisability"] = {"error": f"{type(e).__name__}: {e}"}
            log(f"NOTE recognisability skipped: {type(e).__name__}: {e}")
    if a.grid == "off" or time_left() < 8:
        if a.grid == "on":
            log(f"NOTE samples.png skipped: {time_left():.0f} s left of --max-wall-s")
        return
    try:
        from advpure.diffusion.samplers import diffuse, reverse_sde, sample

        rows, labels, sched = [], [], VPSchedule()
        n_sde = 3 if a.smoke else 100
        with torch.no_grad():
            if cm is not None:
                rows.append(((cm.sample(16, generator=torch.Generator(device=dev).manual_seed(0), device=dev) + 1) / 2))
                labels.append("CM one-step")
            if 2 in res:
                full = DiscreteTimeAdapter(res[2]["ema"])
                xs = sample(full, (16, 3, 32, 32), schedule=sched, n_steps=n_sde, method="ddpm",
                            generator=torch.Generator(device=dev).manual_seed(0), device=dev)
                rows.append((xs + 1) / 2)
                labels.append(f"teacher DDPM-{n_sde}")
            if 1 in res:
                short = DiscreteTimeAdapter(res[1]["ema"], t_max=a.t_max)
                x0 = ctx["test"][:16]
                g = torch.Generator(device=dev).manual_seed(0)
                ts = min(0.1, a.t_max)
                xt = diffuse(x0, ts, sched, generator=g)
                xp = reverse_sde(short, xt, schedule=sched, t_start=ts, n_steps=n_sde, generator=g)
                rows += [(x0 + 1) / 2, (xt.clamp(-1, 1) + 1) / 2, (xp + 1) / 2]
                labels.append(f"test / diffused t={ts:g} / purified (SDE-{n_sde}, model 1)")
        if rows:
            png = Path(a.out) / "samples.png"
            save_grid(torch.cat(rows).clamp(0, 1).cpu(), png, nrow=16, title="rows: " + "; ".join(labels))
            summary["samples_png"] = png.name
    except Exception as e:  # noqa: BLE001
        summary["samples_png_error"] = f"{type(e).__name__}: {e}"
        log(f"NOTE samples.png skipped: {type(e).__name__}: {e}")


def write_summary(a: argparse.Namespace, summary: dict[str, Any]) -> None:
    summary["wall_s"] = round(time.perf_counter() - T_START, 1)
    path = Path(a.out) / "summary.json"
    tmp = path.with_name("summary.json.tmp")
    tmp.write_text(json.dumps(summary, indent=1, default=str) + "\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device(a.device) if a.device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cuda = dev.type == "cuda"
    if cuda and a.smoke:
        log("NOTE --smoke on CUDA: fp32, no compile")
    use_compile = (a.compile == "on") or (a.compile == "auto" and cuda and not a.smoke)
    use_bf16 = cuda and ((a.bf16 == "on") or (a.bf16 == "auto" and not a.smoke))
    if a.bf16 == "on" and not cuda:
        log("NOTE --bf16 on needs CUDA here; fp32")
    compare = a.compare == "on" or (a.compare == "auto" and not a.smoke and not a.synthetic)
    COMPILE_BACKEND["name"] = a.compile_backend
    cfg = arch_config(a)
    n_par = sum(p.numel() for p in build_unet(cfg).parameters())
    mib = n_par * 4 / 2**20
    if a.max_file_mib and mib > a.max_file_mib - 0.1:
        print(f"error: --arch {a.arch}: {n_par / 1e6:.2f}M parameters = {mib:.2f} MiB in fp32, over --max-file-mib "
              f"{a.max_file_mib:g} (a device run returns files of at most 16 MiB)", file=sys.stderr)
        return 2
    dev_desc = str(dev) + (f" ({torch.cuda.get_device_name(dev)})" if cuda else f" ({platform.processor() or 'cpu'})")
    cmd = "python benchmarks/device_train.py " + " ".join(shlex.quote(s) for s in (argv if argv is not None else sys.argv[1:]))
    log(f"device {dev_desc}, torch {torch.__version__}, arch {a.arch} ({n_par / 1e6:.2f}M parameters, "
        f"{mib:.2f} MiB), batch {a.batch_size}, compile {use_compile}, bf16 {use_bf16}, phases {a.phases}, "
        f"budgets {a.budgets} s, max wall {a.max_wall_s:g} s")
    if cuda:
        torch.backends.cudnn.benchmark = True
    x_tr, x_te, data_desc = load_images(a)
    log(f"data: {data_desc}: {len(x_tr)} train, {len(x_te)} test images")
    ctx = {"dev": dev, "cfg": cfg, "arch_name": a.arch if a.arch != "gpu" else "device_train.py GPU_UNET",
           "compile": use_compile, "bf16": use_bf16, "compare": compare, "command": cmd, "device_desc": dev_desc,
           "data_desc": data_desc, "train": (x_tr * 2 - 1).to(dev), "test": (x_te * 2 - 1).to(dev)}
    summary: dict[str, Any] = {"command": cmd, "device": dev_desc, "torch": torch.__version__,
                               "python": platform.python_version(), "arch": a.arch, "parameters": n_par,
                               "fp32_mib": round(mib, 2), "batch_size": a.batch_size, "compile": use_compile,
                               "compile_backend": a.compile_backend if use_compile else None,
                               "bf16": use_bf16, "data": data_desc, "budgets": a.budgets, "max_wall_s": a.max_wall_s,
                               "startup_s": round(time.perf_counter() - T_START, 1), "phases": {}}
    budget = Budget(a)
    res: dict[int, dict[str, Any]] = {}
    for phase in a.phases:
        allot = budget.allot(phase)
        if phase == 3:
            teacher = res[2]["path"] if 2 in res else a.teacher
            res[3] = train_cm_phase(teacher, a, ctx, allot)
        else:
            res[phase] = train_eps_phase(phase, a.t_max if phase == 1 else 1.0, a, ctx, allot)
        summary["phases"][str(phase)] = {k: v for k, v in res[phase].items() if k not in ("ema", "teacher")}
        summary["phases"][str(phase)]["path"] = Path(res[phase]["path"]).name
        write_summary(a, summary)
        if cuda:
            torch.cuda.empty_cache()
    finish(a, ctx, res, summary)
    if cuda:
        summary["max_memory_allocated_gib"] = round(torch.cuda.max_memory_allocated(dev) / 2**30, 2)
    write_summary(a, summary)
    files = sorted(p for p in out.iterdir() if p.is_file())
    log("files: " + ", ".join(f"{p.name} ({p.stat().st_size / 2**20:.2f} MiB)" for p in files))
    log(f"done in {time.perf_counter() - T_START:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
