"""Device check: the one prepared command for a session that is lent an accelerator (H100/H200, ~15 min).

Accelerator session (one command, ends in under 8 minutes; the JSON is rewritten after every section):

    PYTHONUNBUFFERED=1 python3 benchmarks/device_check.py --device cuda --budget-s 420 --out $OUT/device_check.json

(run(command=..., timeout_s=480); ``python3`` is the interpreter that holds CUDA PyTorch on the device machine.
No ``pip install`` is needed: the script puts ``<repo>/src`` on ``sys.path`` and imports only torch, numpy and
the standard library. ``../shared`` does not travel to the device machine; without the manifests the networks
are built from ``RELEASED_CONFIG`` of :mod:`advpure.diffusion.score_sde` / :mod:`advpure.diffusion.adm`, which the
CPU test checks equal to the manifests' configs.)

torchsde is not installed on the device machine; without it the official path is the same Euler–Maruyama loop
written out (same steps, same network calls). To time it through torchsde itself, prepare here once (``.whl/`` is
git-ignored; both wheels are pure Python, ~66 KB; torchsde's other needs, scipy/numpy/torch, are there)::

    python3 -m pip download --no-deps --only-binary=:all: -d .whl torchsde==0.2.6 trampoline==0.1.2

and run, with ``carry=[".whl"]``::

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site; PYTHONUNBUFFERED=1 python3 benchmarks/device_check.py --device cuda --budget-s 420 --out $OUT/device_check.json

CPU smoke run (well under a minute on one thread; tests/test_device_check.py runs it):

    OMP_NUM_THREADS=1 python benchmarks/device_check.py --reduced --device cpu --out /tmp/device_check.json

Sections (each in try/except, each checked against ``--budget-s`` before it starts; a skipped or failed
section is recorded with a note and the others still run):

1. ``nfe``: network evaluations/s of the published score networks with random weights -- NCSN++
   (score_sde ``cifar10_ddpmpp_deep_continuous``, 106.6M parameters, 32x32, batch 64) and the ADM UNet
   (guided-diffusion ``256x256_diffusion_uncond``, 552.8M, 256x256, batch 8) -- built from the configs in
   ``<shared>/interop/*_manifest.json`` (names and shapes checked against the manifest on the meta device,
   section ``manifests``); fp32 (PyTorch's default TF32 flags), fp32 with TF32 off, bf16 autocast, and
   channels_last; warm-up and CUDA synchronisation; TFLOP/s from a FLOP count on the meta device.
2. ``diffpure``: images/s of :class:`advpure.defenses.diffpure.DiffPure` at t* = 0.1 (dt = 1e-3: 100
   reverse-SDE steps) on NCSN++ next to the official implementation's structure (DiffPure's ``RevVPSDE``,
   ``torchsde.sdeint(method="euler", dt=1e-3)`` on the flattened state in reversed time, ``t`` from
   ``1 - t*`` to ``1 - 1e-5``; a plain Euler–Maruyama loop with the same steps when torchsde does not import),
   same network and batch; the time ratio official / advpure.
3. ``memory``: peak GPU memory (``torch.cuda.max_memory_allocated``) of one full-gradient PGD step
   (:class:`advpure.attacks.PGD`, 1 step, EOT 1) through DiffPure at 100 steps, with and without gradient
   checkpointing. Without checkpointing the graph of 100 NCSN++ steps at batch 8 is estimated (from the
   tensors autograd saves, on the meta device) at a few hundred GiB, more than an H200 holds, so it is measured
   at a few steps, extrapolated linearly in the step count, and run at 100 steps only at the largest batch
   (8, 4, 2, 1) predicted to fit in 80% of the GPU. The same for ADM at batch 2 (one forward and backward pass
   of the 256x256 network saves several GiB per image, so 100 steps without checkpointing never fit).
4. ``compile``: ``torch.compile`` of NCSN++ (fp32, bf16), then ADM (bf16) if time is left, in a child
   process killed when the budget (at most ``--compile-max-s``, default 200 s) runs out (compilation cannot be
   interrupted in-process).

A watchdog thread writes the JSON and exits (code 3) 30 s after the budget if one uninterruptible call overran it.

``--reduced`` (CPU): the small configs of ``<shared>/interop/*_small_io.pt`` (or shrunken released configs
when those are absent), batch 2, 2 reverse steps, short timing windows, no compile.
"""

from __future__ import annotations

import time

_T_START = time.perf_counter()  # the budget counts from here, before torch is imported

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import resource
import signal
import subprocess
import sys
import threading
import traceback
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

from advpure.diffusion.adm import RELEASED_CONFIG as ADM_RELEASED  # noqa: E402
from advpure.diffusion.adm import ADMEpsModel, ADMUNet, build_adm  # noqa: E402
from advpure.diffusion.score_sde import RELEASED_CONFIG as SDE_RELEASED  # noqa: E402
from advpure.diffusion.score_sde import NCSNpp, ScoreSDEEpsModel, build_score_sde  # noqa: E402

SHARED = Path(os.environ.get("ADVPURE_SHARED", REPO.parent / "shared"))
INTEROP = SHARED / "interop"
MANIFESTS = {"ncsnpp": "score_sde_cifar10_manifest.json", "adm": "guided_diffusion_imagenet256_manifest.json"}
SMALL_IO = {"ncsnpp": "score_sde_small_io.pt", "adm": "guided_diffusion_small_io.pt"}
# used in --reduced mode when the small interop files are absent
TINY = {"ncsnpp": {"nf": 32, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [16]},
        "adm": {"image_size": 64, "num_channels": 32, "num_res_blocks": 1, "num_head_channels": 32,
                "attention_resolutions": "16", "channel_mult": "1,2,2"}}
SECTIONS = ("env", "manifests", "nfe", "diffpure", "memory", "compile")
MIB = 2.0 ** 20


# ----------------------------------------------------------------------------------------------- plumbing
class Run:
    """Arguments, clock, device, the results dict and its JSON file."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.t0 = _T_START
        self.budget = float(args.budget_s)
        self.device = torch.device(args.device)
        self.cuda = self.device.type == "cuda"
        self.reduced = bool(args.reduced)
        self.results: dict[str, Any] = {"meta": {"argv": list(args.argv), "reduced": self.reduced,
                                                 "device": str(self.device), "budget_s": self.budget}}
        self.out = Path(args.out)
        self.models: dict[str, nn.Module] = {}
        self.lock = threading.Lock()
        self.child: subprocess.Popen | None = None

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def left(self) -> float:
        return self.budget - self.elapsed()

    def log(self, msg: str) -> None:
        print(f"[{self.elapsed():6.1f}s] {msg}", flush=True)

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def write(self) -> None:
        with self.lock:
            self.results["meta"]["elapsed_s"] = round(self.elapsed(), 2)
            text = json.dumps(_clean(self.results), indent=1, default=str)
            self.out.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.out.with_name(self.out.name + ".tmp")
            tmp.write_text(text)
            os.replace(tmp, self.out)

    def skip_note(self, need: float) -> str | None:
        left = self.left()
        if left < need:
            return f"time budget ({left:.0f} s left of {self.budget:.0f} s, needs ~{need:.0f} s)"
        return None

    def autocast(self, bf16: bool):
        if not bf16:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def free(self) -> None:
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()


def _clean(v: Any) -> Any:
    """JSON-safe: non-finite floats become strings, tuples lists."""
    if isinstance(v, float):
        return v if math.isfinite(v) else str(v)
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


def _err(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"[:2000]


def section(run: Run, name: str, need: float, fn: Callable[[Run, dict], None]) -> None:
    """Run one section into ``run.results[name]`` (partial results survive an exception)."""
    out: dict[str, Any] = {}
    run.results[name] = out
    note = run.skip_note(need) if need > 0 else None
    if note:
        out["skipped"] = note
        run.log(f"{name}: skipped, {note}")
        run.write()
        return
    run.log(f"== {name}")
    try:
        fn(run, out)
    except Exception as e:  # a failure in one section must not lose the others
        out["error"] = _err(e)
        out["traceback"] = traceback.format_exc()[-3000:]
        run.log(f"{name}: ERROR {_err(e)}")
        traceback.print_exc()
    finally:
        run.free()
        run.write()


# ----------------------------------------------------------------------------------------------- configs
def _shape(key: str, cfg: dict) -> tuple[int, int, int]:
    if key == "ncsnpp":
        return int(cfg.get("num_channels", 3)), int(cfg.get("image_size", 32)), int(cfg.get("image_size", 32))
    return int(cfg.get("in_channels", 3)), int(cfg["image_size"]), int(cfg["image_size"])


def network_config(key: str, reduced: bool) -> tuple[dict, str]:
    """The config to build (and where it came from)."""
    if reduced:
        p = INTEROP / SMALL_IO[key]
        if p.is_file():
            blob = torch.load(p, map_location="cpu", weights_only=True)
            cfg = dict(blob["config"])
            if key == "ncsnpp" and "image_size" not in cfg and "image_size" in blob:
                cfg["image_size"] = int(blob["image_size"])  # score_sde_small_io.pt keeps it beside the config
            return cfg, str(p)
        base = dict(SDE_RELEASED if key == "ncsnpp" else ADM_RELEASED)
        return {**base, **TINY[key]}, "released config shrunk (small interop file absent)"
    p = INTEROP / MANIFESTS[key]
    if p.is_file():
        return dict(json.loads(p.read_text())["config"]), str(p)
    base = SDE_RELEASED if key == "ncsnpp" else ADM_RELEASED
    return dict(base), f"RELEASED_CONFIG ({p} absent; equal to the manifest's config, checked by the CPU test)"


def build_eps(key: str, cfg: dict, device: str | torch.device) -> nn.Module:
    torch.manual_seed(0)
    if key == "ncsnpp":
        net = build_score_sde(cfg, device=device)
        assert isinstance(net, NCSNpp)
        return ScoreSDEEpsModel(net).eval().requires_grad_(False)
    net = build_adm(cfg, device=device)
    assert isinstance(net, ADMUNet)
    return ADMEpsModel(net).eval().requires_grad_(False)


def get_model(run: Run, key: str) -> nn.Module:
    if key not in run.models:
        cfg, src = network_config(key, run.reduced)
        t0 = time.perf_counter()
        run.models[key] = build_eps(key, cfg, run.device)
        run.sync()
        n = sum(p.numel() for p in run.models[key].parameters())
        run.results.setdefault("models", {})[key] = {"config_source": src, "parameters": n,
                                                     "image_shape": list(_shape(key, cfg)),
                                                     "build_s": round(time.perf_counter() - t0, 2)}
        run.log(f"built {key}: {n:,} parameters on {run.device} ({src})")
    return run.models[key]


def flops_per_image(model: nn.Module, shape: tuple[int, int, int]) -> float | None:
    """FLOPs of one evaluation on one image (torch's FlopCounterMode on a meta-device copy: no compute)."""
    try:
        from torch.utils.flop_counter import FlopCounterMode

        key = "ncsnpp" if isinstance(model, ScoreSDEEpsModel) else "adm"
        meta = build_eps(key, dict(model.net.config) if key == "ncsnpp" else
                         {k: v for k, v in model.net.config.items() if not k.startswith("_")}, "meta")
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            meta(torch.zeros((1, *shape), device="meta"), torch.full((1,), 0.05, device="meta"))
        return float(fc.get_total_flops())
    except Exception:
        return None


# ----------------------------------------------------------------------------------------------- sections
def sec_env(run: Run, out: dict) -> None:
    out.update({"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
                "cpu_threads": torch.get_num_threads(), "shared_interop": str(INTEROP),
                "shared_interop_present": INTEROP.is_dir()})
    try:
        import numpy
        out["numpy"] = numpy.__version__
    except Exception as e:
        out["numpy"] = _err(e)
    try:
        import torchsde
        out["torchsde"] = getattr(torchsde, "__version__", "present")
    except Exception as e:
        out["torchsde"] = f"not importable ({type(e).__name__}); official path = plain Euler-Maruyama loop"
    if run.cuda:
        p = torch.cuda.get_device_properties(run.device)
        out.update({"cuda": torch.version.cuda, "gpu": p.name, "capability": f"{p.major}.{p.minor}",
                    "gpu_memory_gib": round(p.total_memory / 2 ** 30, 1), "sm_count": p.multi_processor_count,
                    "cudnn": torch.backends.cudnn.version(),
                    "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "tf32_cudnn": torch.backends.cudnn.allow_tf32,
                    "cudnn_benchmark": torch.backends.cudnn.benchmark,
                    "bf16_supported": torch.cuda.is_bf16_supported()})
        try:
            import triton
            out["triton"] = triton.__version__
        except Exception as e:
            out["triton"] = f"not importable ({type(e).__name__})"
    run.log("env: " + ", ".join(f"{k}={v}" for k, v in out.items() if k in ("torch", "cuda", "gpu", "gpu_memory_gib",
                                                                           "torchsde", "cpu_threads")))


def sec_manifests(run: Run, out: dict) -> None:
    """Build the full-size networks on the meta device and check names/shapes against the manifests."""
    for key, fname in MANIFESTS.items():
        p = INTEROP / fname
        entry: dict[str, Any] = {"manifest": str(p)}
        out[key] = entry
        try:
            released = SDE_RELEASED if key == "ncsnpp" else ADM_RELEASED
            if p.is_file():
                man = json.loads(p.read_text())
                cfg = dict(man["config"])
                entry["config_equals_released"] = all(released.get(k) == v for k, v in cfg.items())
                meta = build_eps(key, cfg, "meta")
                own = [(n, list(q.shape)) for n, q in meta.net.named_parameters()]
                ref = [(d["name"], list(d["shape"])) for d in man["parameters"]]
                entry["manifest_parameters"] = len(ref)
                entry["names_shapes_match"] = own == ref
                if own != ref:
                    diff = [f"{a} vs {b}" for a, b in zip(own, ref) if a != b][:5]
                    entry["first_differences"] = diff
            else:
                entry["note"] = "manifest absent: the full networks are built from RELEASED_CONFIG"
                meta = build_eps(key, dict(released), "meta")
            entry["parameters"] = sum(q.numel() for q in meta.parameters())
            run.log(f"manifest {key}: {entry.get('parameters'):,} parameters, names/shapes match: "
                    f"{entry.get('names_shapes_match', 'n/a')}, config == RELEASED_CONFIG: "
                    f"{entry.get('config_equals_released', 'n/a')}")
        except Exception as e:
            entry["error"] = _err(e)
            run.log(f"manifest {key}: ERROR {_err(e)}")


def throughput(run: Run, fn: Callable[[], Any], *, min_time: float, warmup: int, max_iters: int = 500) -> dict:
    """Calls/s of ``fn``: warm-up, one synchronised calibration call, then n calls between two syncs."""
    for _ in range(warmup):
        fn()
    run.sync()
    t0 = time.perf_counter()
    fn()
    run.sync()
    t1 = max(time.perf_counter() - t0, 1e-6)
    n = int(min(max_iters, max(2, min_time / t1)))
    n = max(1, min(n, int(max(run.left() - 20.0, 0.0) / t1)))  # never run into the budget
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    run.sync()
    dt = time.perf_counter() - t0
    return {"calls_per_s": n / dt, "iters": n, "seconds": dt, "first_call_s": t1}


def _variants(run: Run) -> list[tuple[str, bool, bool, bool]]:
    """(name, bf16, channels_last, tf32_off)."""
    if not run.cuda:
        return [("fp32", False, False, False), ("bf16", True, False, False)]
    return [("fp32", False, False, False), ("fp32_no_tf32", False, False, True), ("bf16", True, False, False),
            ("fp32_channels_last", False, True, False), ("bf16_channels_last", True, True, False)]


def bench_network(run: Run, key: str, out: dict) -> None:
    batch = run.args.batch_ncsnpp if key == "ncsnpp" else run.args.batch_adm
    model = get_model(run, key)
    shape = model.image_shape
    out.update({"batch": batch, "image_shape": list(shape), "parameters": sum(p.numel() for p in model.parameters())})
    flops = flops_per_image(model, shape)
    out["gflop_per_image"] = None if flops is None else flops / 1e9
    g = torch.Generator(device=run.device).manual_seed(0)
    x = torch.randn((batch, *shape), device=run.device, generator=g)
    t = torch.full((batch,), 0.05, device=run.device)
    min_time = 0.15 if run.reduced else run.args.min_time
    for name, bf16, cl, no_tf32 in _variants(run):
        need = 3.0 if run.reduced else (25.0 if key == "adm" else 12.0)
        note = run.skip_note(need)
        if note:
            out[name] = {"skipped": note}
            continue
        xin = x.contiguous(memory_format=torch.channels_last) if cl else x
        old_tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
        try:
            if cl:
                model.to(memory_format=torch.channels_last)
            if no_tf32:
                torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False

            def call() -> None:
                with torch.no_grad(), run.autocast(bf16):
                    model(xin, t)

            r = throughput(run, call, min_time=min_time, warmup=1 if run.reduced else 3)
            ev = r["calls_per_s"]
            res = {"evals_per_s": ev, "images_per_s": ev * batch, "ms_per_eval": 1e3 / ev, "iters": r["iters"],
                   "first_call_ms": 1e3 * r["first_call_s"]}
            if flops:
                res["tflop_per_s"] = ev * batch * flops / 1e12
            out[name] = res
            run.log(f"nfe {key} {name} b{batch}: {ev:.2f} evals/s ({ev * batch:.1f} img-evals/s, "
                    f"{1e3 / ev:.1f} ms/eval" + (f", {res['tflop_per_s']:.3g} TFLOP/s)" if flops else ")"))
        except Exception as e:
            out[name] = {"error": _err(e)}
            run.log(f"nfe {key} {name}: ERROR {_err(e)}")
        finally:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old_tf32
            if cl:
                model.to(memory_format=torch.contiguous_format)
        run.write()


def sec_nfe(run: Run, out: dict) -> None:
    for key in ("ncsnpp", "adm"):
        out[key] = sub = {}
        note = run.skip_note(4.0 if run.reduced else (40.0 if key == "adm" else 20.0))
        if note:
            sub["skipped"] = note
            continue
        try:
            bench_network(run, key, sub)
        except Exception as e:
            sub["error"] = _err(e)
            run.log(f"nfe {key}: ERROR {_err(e)}")
        run.free()
        run.write()


# --------------------------------------------------------------------------- official DiffPure structure
class RevVPSDE(nn.Module):
    """DiffPure's ``RevVPSDE`` (runners/diffpure_sde.py, ``score_type="score_sde"``), written from the paper/code.

    State: the flattened image (batch, C*H*W), as torchsde requires. In reversed time s = 1 - t:
    ``f(s, x) = -drift(1 - s, x)`` with the reverse VP drift ``drift = -1/2 beta(t) x - beta(t) score(x, t)``,
    ``g(s, x) = sqrt(beta(t))`` (diagonal noise, Ito). ``score = -eps(x, t) / std(t)`` with std the VP marginal
    std (score_sde's ``get_score_fn(VPSDE, continuous=True)``, which calls the network at ``999 t``: the
    eps-model wrappers do exactly that). As in DiffPure, a new VPSDE object (its discrete schedule tensors)
    is made on every drift call.
    """

    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, eps_model: nn.Module, img_shape: tuple[int, int, int], beta_min: float = 0.1,
                 beta_max: float = 20.0, N: int = 1000) -> None:
        super().__init__()
        self.model = eps_model
        self.img_shape = tuple(img_shape)
        self.beta_0, self.beta_1, self.N = beta_min, beta_max, N

    def _vpsde_schedule(self) -> None:
        # score_sde's sde_lib.VPSDE.__init__ (called per drift evaluation in DiffPure's score_sde branch)
        betas = torch.linspace(self.beta_0 / self.N, self.beta_1 / self.N, self.N)
        alphas = 1.0 - betas
        ac = torch.cumprod(alphas, dim=0)
        torch.sqrt(ac), torch.sqrt(1.0 - ac)

    def vpsde_fn(self, t: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        beta_t = self.beta_0 + t * (self.beta_1 - self.beta_0)
        return -0.5 * beta_t[:, None] * x, torch.sqrt(beta_t)

    def rvpsde_fn(self, t: torch.Tensor, x: torch.Tensor, return_type: str = "drift") -> torch.Tensor:
        drift, diffusion = self.vpsde_fn(t, x)
        if return_type != "drift":
            return diffusion
        x_img = x.view(-1, *self.img_shape)
        self._vpsde_schedule()
        log_mean = -0.25 * t ** 2 * (self.beta_1 - self.beta_0) - 0.5 * t * self.beta_0
        std = torch.sqrt(1.0 - torch.exp(2.0 * log_mean))
        score = -self.model(x_img, t) / std[:, None, None, None]
        return drift - diffusion[:, None] ** 2 * score.reshape(x.shape[0], -1)

    def f(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        t = t.expand(x.shape[0])
        return -self.rvpsde_fn(1 - t, x, "drift")

    def g(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        t = t.expand(x.shape[0])
        return self.rvpsde_fn(1 - t, x, "diffusion")[:, None].expand(x.shape)


def official_diffpure_purify(eps_model: nn.Module, x01: torch.Tensor, *, t_star: float = 0.1, dt: float = 1e-3,
                             use_torchsde: bool | None = None) -> tuple[torch.Tensor, str]:
    """DiffPure's ``RevGuidedDiffusion.image_editing_sample`` on images in [0, 1]; returns (images, solver).

    Forward diffusion with the discrete DDPM schedule (betas linspace(1e-4, 0.02, 1000), ``a[t*N - 1]``), then
    ``torchsde.sdeint(rev_vpsde, x.view(B, -1), ts=[1 - t*, 1 - 1e-5], method="euler", dt=dt)`` (DiffPure calls
    ``sdeint_adjoint``, whose forward pass is this one), else the identical Euler–Maruyama loop: torchsde's
    ``while t < t1: t' = min(t + dt, t1); y += f(t, y) (t' - t) + g(t, y) dW``, dW ~ N(0, t' - t), with the time
    kept as a device tensor as in DiffPure (``ts`` on the GPU), after torchsde's shape check (one f and one g
    call at ``ts[0]``). Network calls: n_steps + 1 (the check) -- 101 at t* = 0.1, dt = 1e-3.
    """
    dev = x01.device
    x0 = (x01 - 0.5) * 2
    n_noise = int(round(t_star * 1000))
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64).float()
    a = (1 - betas).cumprod(dim=0).to(dev)
    e = torch.randn_like(x0)
    x = x0 * a[n_noise - 1].sqrt() + e * (1.0 - a[n_noise - 1]).sqrt()
    t0, t1 = 1 - n_noise * 1.0 / 1000, 1 - 1e-5
    ts = torch.linspace(t0, t1, 2).to(dev)
    sde = RevVPSDE(eps_model, tuple(x.shape[1:]))
    x_ = x.view(x.shape[0], -1)
    if use_torchsde is None:
        try:
            import torchsde  # noqa: F401
            use_torchsde = True
        except Exception:
            use_torchsde = False
    if use_torchsde:
        import torchsde

        xs_ = torchsde.sdeint(sde, x_, ts, method="euler", dt=dt)
        solver = f"torchsde {getattr(torchsde, '__version__', '')} sdeint(method='euler', dt={dt:g})"
        y = xs_[-1]
    else:
        # torchsde's check_contract evaluates f and g once at ts[0] to check shapes before integrating:
        # one extra network call (101 NFE for 100 steps), kept so both official paths do the same work
        sde.f(ts[0], x_), sde.g(ts[0], x_)
        y, cur = x_, ts[0]
        while cur < ts[-1]:
            nxt = torch.minimum(cur + dt, ts[-1])
            h = nxt - cur
            dw = torch.randn_like(y) * torch.sqrt(h)
            y = y + sde.f(cur, y) * h + sde.g(cur, y) * dw
            cur = nxt
        solver = f"plain Euler-Maruyama loop (torchsde's euler steps, dt={dt:g})"
    return (y.view(x.shape) + 1) * 0.5, solver


def sec_diffpure(run: Run, out: dict) -> None:
    from advpure.defenses.diffpure import DiffPure

    model = get_model(run, "ncsnpp")
    batch = run.args.batch_ncsnpp
    steps = run.args.steps
    dt = 0.1 / steps
    dp = DiffPure(model, t=0.1) if steps == 100 else DiffPure(model, t=0.1, n_steps=steps)
    g = torch.Generator(device=run.device).manual_seed(0)
    x = torch.rand((batch, *model.image_shape), device=run.device, generator=g)
    out.update({"network": "ncsnpp", "batch": batch, "t_star": 0.1, "n_steps": dp.n_steps, "dt": dt})
    reps = 1 if run.reduced else 2

    def timed(fn: Callable[[], Any], bf16: bool = False) -> tuple[float, int, Any]:
        c0 = model.calls
        run.sync()
        t0 = time.perf_counter()
        with torch.no_grad(), run.autocast(bf16):
            r = fn()
        run.sync()
        return time.perf_counter() - t0, model.calls - c0, r

    ours, official, solver = [], [], ""
    nfe_ours = nfe_off = 0
    per_run = None
    ev = run.results.get("nfe", {}).get("ncsnpp", {}).get("fp32", {}).get("evals_per_s")
    if ev and run.results["nfe"]["ncsnpp"].get("batch") == batch:
        per_run = (dp.n_steps + 1) / ev  # predicted from the nfe section until measured
    for i in range(reps):
        need = 5.0 if run.reduced or per_run is None else 2.5 * per_run + 10
        if run.skip_note(need):
            out["note"] = f"stopped after {i} repetition(s): time budget"
            break
        s, nfe_ours, _ = timed(lambda: dp(x, generator=g))
        ours.append(s)
        s2, nfe_off, (_, solver) = timed(lambda: official_diffpure_purify(model, x, t_star=0.1, dt=dt))
        official.append(s2)
        per_run = max(s, s2)
        run.log(f"diffpure rep {i}: advpure {s:.3f} s ({nfe_ours} NFE), official structure {s2:.3f} s "
                f"({nfe_off} NFE)")
    if ours:
        to, tf = min(ours), min(official)
        out["advpure"] = {"seconds": to, "images_per_s": batch / to, "nfe": nfe_ours, "all_s": ours}
        out["official"] = {"seconds": tf, "images_per_s": batch / tf, "nfe": nfe_off, "solver": solver,
                           "all_s": official}
        out["time_ratio_official_over_advpure"] = tf / to
        out["time_ratio_per_nfe"] = (tf / max(nfe_off, 1)) / (to / max(nfe_ours, 1))
        run.log(f"diffpure b{batch} {dp.n_steps} steps: advpure {batch / to:.2f} img/s, official ({solver}) "
                f"{batch / tf:.2f} img/s, time ratio official/advpure {tf / to:.3f}")
        run.write()
    bf16_ok = run.cuda or run.args.cpu_bf16
    note = run.skip_note(5.0 if run.reduced or per_run is None else 1.5 * per_run + 10)
    if not bf16_ok:
        out["advpure_bf16"] = {"skipped": "cpu"}
    elif note:
        out["advpure_bf16"] = {"skipped": note}
    else:
        s, n, _ = timed(lambda: dp(x, generator=g), bf16=True)
        out["advpure_bf16"] = {"seconds": s, "images_per_s": batch / s, "nfe": n}
        run.log(f"diffpure bf16 autocast: {batch / s:.2f} img/s")


def pgd_peak(run: Run, model: nn.Module, batch: int, n_steps: int, ckpt: bool) -> dict:
    """Peak memory and time of one full-gradient PGD step (EOT 1) through DiffPure with ``n_steps`` steps."""
    from advpure.attacks import PGD
    from advpure.defenses import DefendedClassifier
    from advpure.defenses.diffpure import DiffPure

    clf = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(model.image_shape[0] * 16, 10)).to(run.device)
    dp = DiffPure(model, t=0.1, n_steps=n_steps, grad_checkpoint=ckpt)
    defended = DefendedClassifier(clf, dp, seed=0).to(run.device)
    g = torch.Generator(device=run.device).manual_seed(1)
    x = torch.rand((batch, *model.image_shape), device=run.device, generator=g)
    y = torch.randint(0, 10, (batch,), device=run.device, generator=g)
    attack = PGD(eps=8 / 255, steps=1, eot=1, grad_checkpoint=ckpt, seed=0)
    res: dict[str, Any] = {"batch": batch, "n_steps": n_steps, "checkpoint": ckpt}
    run.free()
    if run.cuda:
        run.sync()
        base = torch.cuda.memory_allocated(run.device)
        torch.cuda.reset_peak_memory_stats(run.device)
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.perf_counter()
    try:
        x_adv = attack(defended, x, y)
        run.sync()
        res["seconds"] = time.perf_counter() - t0
        res["finite"] = bool(torch.isfinite(x_adv).all())
    except torch.cuda.OutOfMemoryError as e:
        res["oom"] = _err(e)[:300]
        res["seconds"] = time.perf_counter() - t0
    if run.cuda:
        peak = torch.cuda.max_memory_allocated(run.device)
        res["peak_mib"] = peak / MIB
        res["above_start_mib"] = (peak - base) / MIB
    else:
        res["cpu_maxrss_growth_mib"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base) / MIB
    del defended, dp, clf
    run.free()
    return res


def _fmt_mem(r: dict) -> str:
    if "oom" in r:
        return "OOM"
    if "peak_mib" in r:
        return f"peak {r['peak_mib']:.0f} MiB ({r['above_start_mib']:.0f} above start), {r['seconds']:.2f} s"
    return f"cpu maxrss growth {r.get('cpu_maxrss_growth_mib', 0):.0f} MiB, {r['seconds']:.2f} s"


def bench_memory(run: Run, key: str, out: dict) -> None:
    model = get_model(run, key)
    steps = run.args.steps
    batch = run.args.mem_batch_ncsnpp if key == "ncsnpp" else run.args.mem_batch_adm
    ks = (1, 2) if run.reduced else ((5, 10) if key == "ncsnpp" else (1, 2))
    # time per image-evaluation from the nfe section (fp32), for the skip decisions
    nfe = run.results.get("nfe", {}).get(key, {}).get("fp32", {})
    spi = 1.0 / nfe["images_per_s"] if "images_per_s" in nfe else None
    floor = 0.01 if key == "ncsnpp" else 0.03  # small batches are launch-bound on a GPU

    def predict(b: int, k: int, ckpt: bool) -> float:
        per_eval = max(b * spi, floor) if spi else (0.5 if run.cuda else 1.0)
        return 2.0 * k * (5 if ckpt else 4) * per_eval + 3.0  # validate + forward + backward (+ recompute)

    def measure(name: str, b: int, k: int, ckpt: bool) -> dict | None:
        note = run.skip_note(predict(b, k, ckpt) + 10.0)
        if note:
            out[name] = {"skipped": note}
            run.log(f"memory {key} {name}: skipped, {note}")
            return None
        try:
            r = pgd_peak(run, model, b, k, ckpt)
        except Exception as e:
            r = {"error": _err(e)}
        out[name] = r
        run.log(f"memory {key} {name} (batch {b}, {k} steps, checkpoint={ckpt}): "
                + (r["error"] if "error" in r else _fmt_mem(r)))
        run.write()
        return r

    out.update({"batch": batch, "n_steps": steps})
    measure("checkpoint", batch, steps, True)
    small = [measure(f"no_checkpoint_{k}_steps", batch, k, False) for k in ks]
    if not run.cuda:
        return
    ok = [r for r in small if r and "peak_mib" in r and "oom" not in r]
    if len(ok) == 2:
        (k1, r1), (k2, r2) = (ks[0], ok[0]), (ks[1], ok[1])
        slope = (r2["peak_mib"] - r1["peak_mib"]) / (k2 - k1)
        intercept = r1["peak_mib"] - slope * k1
        pred = intercept + slope * steps
        out["no_checkpoint_extrapolated"] = {"batch": batch, "n_steps": steps, "peak_mib": pred,
                                             "mib_per_step": slope, "mib_per_step_per_image": slope / batch,
                                             "from_steps": list(ks)}
        run.log(f"memory {key}: no checkpoint, batch {batch}, {steps} steps extrapolated: {pred / 1024:.1f} GiB "
                f"({slope:.0f} MiB/step)")
        total = torch.cuda.get_device_properties(run.device).total_memory / MIB
        b = batch
        while b >= 1:
            if intercept + slope / batch * b * steps < 0.8 * total:
                break
            b //= 2
        if b >= 1:
            measure(f"no_checkpoint_{steps}_steps", b, steps, False)
        else:
            out[f"no_checkpoint_{steps}_steps"] = {"skipped": f"predicted not to fit at batch 1 ({total:.0f} MiB)"}


def sec_memory(run: Run, out: dict) -> None:
    for key in ("ncsnpp", "adm"):
        out[key] = sub = {}
        note = run.skip_note(5.0 if run.reduced else (60.0 if key == "adm" else 30.0))
        if note:
            sub["skipped"] = note
            run.log(f"memory {key}: skipped, {note}")
            continue
        try:
            bench_memory(run, key, sub)
        except Exception as e:
            sub["error"] = _err(e)
            run.log(f"memory {key}: ERROR {_err(e)}")
        run.free()
        run.write()


# ----------------------------------------------------------------------------------------------- compile
def child_compile(args: argparse.Namespace) -> None:
    """In a child process: torch.compile NCSN++ (fp32, bf16), then ADM (bf16); one RESULT line per measurement."""
    t_start = time.perf_counter()
    dev = torch.device(args.device)

    def left() -> float:
        return args.budget_s - (time.perf_counter() - t_start)

    def emit(key: str, value: Any) -> None:
        print("RESULT " + json.dumps({"key": key, "value": _clean(value)}), flush=True)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    plan = [("ncsnpp", False), ("ncsnpp", True), ("adm", True)]
    models: dict[str, tuple[nn.Module, Callable]] = {}
    for key, bf16 in plan:
        name = f"{key}_{'bf16' if bf16 else 'fp32'}"
        if left() < (5 if args.reduced else (150 if key == "adm" else 60)):
            emit(name, {"skipped": f"time budget ({left():.0f} s left)"})
            continue
        try:
            if key not in models:
                cfg, _ = network_config(key, args.reduced)
                eps = build_eps(key, cfg, dev)
                models[key] = (eps, torch.compile(eps.net, backend=args.compile_backend))
            eps, cnet = models[key]
            batch = args.batch_ncsnpp if key == "ncsnpp" else args.batch_adm
            x = torch.randn((batch, *eps.image_shape), device=dev)
            tt = torch.full((batch,), 0.05, device=dev)
            lab = eps.labels(tt) if key == "ncsnpp" else eps.timestep(tt)
            ac = torch.autocast(dev.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

            def call() -> None:
                with torch.no_grad(), ac:
                    cnet(x, lab)

            t0 = time.perf_counter()
            call()
            sync()
            compile_s = time.perf_counter() - t0
            for _ in range(2):
                call()
            sync()
            t0 = time.perf_counter()
            call()
            sync()
            t1 = max(time.perf_counter() - t0, 1e-6)
            n = int(min(500, max(2, (0.15 if args.reduced else args.min_time) / t1)))
            t0 = time.perf_counter()
            for _ in range(n):
                call()
            sync()
            ev = n / (time.perf_counter() - t0)
            emit(name, {"compile_s": compile_s, "evals_per_s": ev, "images_per_s": ev * batch, "batch": batch,
                        "ms_per_eval": 1e3 / ev})
        except Exception as e:
            emit(name, {"error": _err(e), "traceback": traceback.format_exc()[-1500:]})


def sec_compile(run: Run, out: dict) -> None:
    if not run.cuda and not run.args.compile_cpu:
        out["skipped"] = "cpu: torch.compile only timed on cuda (pass --compile-cpu to try)"
        run.log(f"compile: {out['skipped']}")
        return
    if run.args.no_compile:
        out["skipped"] = "--no-compile"
        return
    timeout = min(run.left() - 15.0, run.args.compile_max_s)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child-compile", "--device", str(run.device),
           "--budget-s", f"{timeout - 5:.0f}", "--batch-ncsnpp", str(run.args.batch_ncsnpp),
           "--batch-adm", str(run.args.batch_adm), "--min-time", str(run.args.min_time),
           "--compile-backend", run.args.compile_backend]
    if run.reduced:
        cmd.append("--reduced")
    out["timeout_s"] = round(timeout, 1)
    run.free()
    run.log(f"compile: child process, timeout {timeout:.0f} s")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    run.child = proc
    tail: list[str] = []

    def reader() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("RESULT "):
                try:
                    d = json.loads(line[7:])
                    out[d["key"]] = d["value"]
                    v = d["value"]
                    msg = (f"{v['evals_per_s']:.2f} evals/s (compile {v['compile_s']:.0f} s)" if "evals_per_s" in v
                           else v.get("error") or v.get("skipped"))
                    run.log(f"compile {d['key']}: {msg}")
                    run.write()
                except Exception:
                    tail.append(line)
            else:
                tail.append(line)
                del tail[:-40]

    th = threading.Thread(target=reader, daemon=True)
    th.start()
    try:
        proc.wait(timeout=max(timeout, 1.0))
    except subprocess.TimeoutExpired:
        out["timed_out"] = f"killed after {timeout:.0f} s (time budget)"
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    th.join(timeout=5)
    run.child = None
    out["returncode"] = proc.returncode
    if proc.returncode != 0 or not any(k.endswith(("fp32", "bf16")) for k in out):
        out["child_output_tail"] = "".join(tail)[-3000:]


# ----------------------------------------------------------------------------------------------- summary
def _note(v: Any) -> str:
    if isinstance(v, dict):
        if "skipped" in v:
            return "skipped: " + str(v["skipped"])
        if "error" in v:
            return "ERROR " + str(v["error"])
        if "oom" in v:
            return "OOM"
    return str(v)


def summary(run: Run) -> str:
    """The results as a Markdown table (never raises: a malformed entry is printed raw)."""
    r = run.results
    rows = ["| measurement | value |", "|---|---|"]

    def add(name: str, val: Any) -> None:
        rows.append(f"| {name} | {val} |")

    def nfe_rows(key: str, sub: dict) -> None:
        for name, v in sub.items():
            if not isinstance(v, dict):
                continue
            if "evals_per_s" in v:
                tf = f", {v['tflop_per_s']:.3g} TFLOP/s" if "tflop_per_s" in v else ""
                add(f"nfe {key} {name} (batch {sub.get('batch')})",
                    f"{v['evals_per_s']:.2f} evals/s = {v['images_per_s']:.1f} img-evals/s, "
                    f"{v['ms_per_eval']:.1f} ms/eval{tf}")
            else:
                add(f"nfe {key} {name}", _note(v))

    def diffpure_rows(d: dict) -> None:
        if "advpure" in d:
            a, o = d["advpure"], d["official"]
            add(f"DiffPure advpure (batch {d['batch']}, {d['n_steps']} steps, fp32)",
                f"{a['images_per_s']:.2f} img/s ({a['seconds']:.3f} s, {a['nfe']} NFE)")
            add("DiffPure official structure", f"{o['images_per_s']:.2f} img/s ({o['seconds']:.3f} s, {o['nfe']} NFE; "
                f"{o['solver']})")
            add("time ratio official / advpure", f"{d['time_ratio_official_over_advpure']:.3f} "
                f"(per network call: {d['time_ratio_per_nfe']:.3f})")
        b = d.get("advpure_bf16")
        if isinstance(b, dict):
            add("DiffPure advpure bf16 autocast", f"{b['images_per_s']:.2f} img/s" if "images_per_s" in b else _note(b))
        for k in ("note", "error"):
            if k in d:
                add(f"DiffPure {k}", d[k])

    def memory_rows(key: str, sub: dict) -> None:
        for name, v in sub.items():
            if not isinstance(v, dict):
                continue
            if name == "no_checkpoint_extrapolated":
                add(f"PGD memory {key} no checkpoint, extrapolated (batch {v['batch']}, {v['n_steps']} steps)",
                    f"{v['peak_mib']:.0f} MiB ({v['mib_per_step_per_image']:.0f} MiB/step/image)")
            elif "seconds" in v:
                add(f"PGD memory {key} {name} (batch {v['batch']}, {v['n_steps']} steps)", _fmt_mem(v))
            else:
                add(f"PGD memory {key} {name}", _note(v))

    def compile_rows(c: dict) -> None:
        for name, v in c.items():
            if isinstance(v, dict):
                add(f"torch.compile {name}", f"{v['evals_per_s']:.2f} evals/s (batch {v['batch']}), compile "
                    f"{v['compile_s']:.0f} s" if "evals_per_s" in v else _note(v))
        if "timed_out" in c:
            add("torch.compile", c["timed_out"])

    env = r.get("env", {})
    add("device", f"{env.get('gpu', 'cpu')} (torch {env.get('torch')}, cuda {env.get('cuda', '-')}, "
        f"torchsde {env.get('torchsde', '?')})")
    for name in SECTIONS[1:]:
        sec = r.get(name)
        if not isinstance(sec, dict):
            continue
        if "skipped" in sec or ("error" in sec and name != "diffpure"):
            add(f"{name}", _note(sec))
            if name != "nfe" and name != "memory":
                continue
        try:
            if name == "manifests":
                for key, m in sec.items():
                    if isinstance(m, dict) and isinstance(m.get("parameters"), int):
                        add(f"manifest {key}", f"{m['parameters']:,} params; names/shapes == manifest: "
                            f"{m.get('names_shapes_match', m.get('note'))}; config == RELEASED_CONFIG: "
                            f"{m.get('config_equals_released', '-')}")
                    elif isinstance(m, dict):
                        add(f"manifest {key}", _note(m))
            elif name in ("nfe", "memory"):
                for key in ("ncsnpp", "adm"):
                    sub = sec.get(key)
                    if not isinstance(sub, dict):
                        continue
                    if "skipped" in sub or "error" in sub:
                        add(f"{name} {key}", _note(sub))
                    (nfe_rows if name == "nfe" else memory_rows)(key, sub)
            elif name == "diffpure":
                diffpure_rows(sec)
            elif name == "compile":
                compile_rows(sec)
        except Exception as e:  # the table must not lose the run
            add(f"{name} (raw)", f"{json.dumps(_clean(sec), default=str)[:500]} [{_err(e)}]")
    add("elapsed", f"{run.elapsed():.1f} s of {run.budget:.0f} s budget")
    return "\n".join(rows)


# ----------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--budget-s", type=float, default=420.0, help="wall-clock budget; sections that do not fit are skipped")
    ap.add_argument("--out", default=None, help="JSON path (default $OUT/device_check.json, else device_check.json)")
    ap.add_argument("--reduced", action="store_true", help="tiny configs, batch 2, 2 steps (CPU smoke run)")
    ap.add_argument("--full", action="store_true", help="full-size networks even on CPU (slow)")
    ap.add_argument("--batch-ncsnpp", type=int, default=None)
    ap.add_argument("--batch-adm", type=int, default=None)
    ap.add_argument("--mem-batch-ncsnpp", type=int, default=None)
    ap.add_argument("--mem-batch-adm", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None, help="reverse steps (default 100; 2 with --reduced)")
    ap.add_argument("--min-time", type=float, default=2.0, help="seconds per throughput window")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--compile-max-s", type=float, default=200.0, help="cap on the compile child's wall time")
    ap.add_argument("--compile-cpu", action="store_true", help="run the compile section on cpu too")
    ap.add_argument("--compile-backend", default="inductor", help="torch.compile backend (eager: plumbing test)")
    ap.add_argument("--cpu-bf16", action="store_true", help="also time DiffPure under bf16 autocast on CPU")
    ap.add_argument("--child-compile", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cpu" and not args.reduced and not args.full and not args.child_compile:
        print("device_check: cpu without --full: running --reduced", flush=True)
        args.reduced = True
    small = args.reduced
    args.batch_ncsnpp = args.batch_ncsnpp or (2 if small else 64)
    args.batch_adm = args.batch_adm or (2 if small else 8)
    args.mem_batch_ncsnpp = args.mem_batch_ncsnpp or (2 if small else 8)
    args.mem_batch_adm = args.mem_batch_adm or (2 if small else 2)
    args.steps = args.steps or (2 if small else 100)
    if args.out is None:
        args.out = str(Path(os.environ["OUT"]) / "device_check.json") if os.environ.get("OUT") else "device_check.json"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child_compile:
        child_compile(args)
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        print("device_check: --device cuda but torch.cuda.is_available() is False", flush=True)
    run = Run(args)

    def watchdog() -> None:  # last resort: a single call overran the budget; keep what was measured
        run.results["meta"]["watchdog"] = f"hard stop at {run.elapsed():.0f} s (budget {run.budget:.0f} s + 30 s)"
        if run.child is not None:
            with contextlib.suppress(Exception):
                os.killpg(run.child.pid, signal.SIGKILL)
        for name in SECTIONS:
            run.results.setdefault(name, {"skipped": "watchdog hard stop before this section"})
        with contextlib.suppress(Exception):
            run.write()
        with contextlib.suppress(Exception):
            print("\n" + summary(run), flush=True)
        print("device_check: watchdog hard stop; JSON written to", run.out, flush=True)
        os._exit(3)

    timer = threading.Timer(max(run.left() + 30.0, 1.0), watchdog)
    timer.daemon = True
    timer.start()
    run.log(f"device_check: device={run.device} reduced={run.reduced} budget={run.budget:.0f}s out={run.out}")
    run.write()
    if run.reduced:
        needs = {"env": 0, "manifests": 2, "nfe": 3, "diffpure": 3, "memory": 3, "compile": 1}
    else:
        needs = {"env": 0, "manifests": 10, "nfe": 20, "diffpure": 30, "memory": 30, "compile": 90}
    fns = {"env": sec_env, "manifests": sec_manifests, "nfe": sec_nfe, "diffpure": sec_diffpure,
           "memory": sec_memory, "compile": sec_compile}
    for name in SECTIONS:
        section(run, name, needs[name], fns[name])
    timer.cancel()
    run.results["meta"]["done"] = True
    run.write()
    print("\n" + summary(run), flush=True)
    print(f"\nJSON: {run.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
