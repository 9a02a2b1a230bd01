"""advpure's DiffPure against the official algorithm as DiffPure ships it: speed, peak memory, equivalence.

Official (Nie et al., ICML 2022, ``runners/diffpure_sde.py`` of NVlabs/DiffPure): the image is diffused to t* with
the discrete DDPM alphas, then the reverse VP SDE is integrated in the reversed time ``s = 1 - t`` with
``torchsde.sdeint_adjoint(rev_vpsde, x.flatten(1), ts=[1 - t*, 1 - 1e-5], method="euler")`` (torchsde's default
``dt = 1e-3``: 100 steps from t* = 0.1), and attacks differentiate through it with the stochastic adjoint (Li et al.
2020). :class:`RevVPSDE` is written from torchsde's documentation (an ``nn.Module`` with ``noise_type =
"diagonal"``, ``sde_type = "ito"``, ``f(s, y)`` and ``g(s, y)`` on (batch, C*H*W) states) with DiffPure's drift
and diffusion: ``f(s, x) = -[-1/2 beta(t) x - beta(t) score(x, t)]``, ``g(s, x) = sqrt(beta(t))``, ``t = 1 - s``,
``score = -eps(x, t) / sqrt(1 - alpha_bar(t))`` (the ``score_sde`` branch of DiffPure; the network is called with
the continuous t exactly as advpure calls it, and is frozen in both, so no parameter adjoint is computed).

Per network (digits zoo DDPM, CIFAR-10 zoo DDPM), batch 8, t* = 0.1:

- forward: images/s of purification without gradient;
- gradient: seconds of one full-gradient PGD step (cross-entropy of the zoo classifier on the purified batch,
  gradient w.r.t. the input; advpure with ``grad_checkpoint=True``, the attack configuration);
- times: all implementations in one fresh process, interleaved (a, b, c, a, b, c, ...), best of ``--repeats``
  (load changes on a shared machine then hit all alike; each is warmed up first with a 2-step run at the batch);
- memory: peak resident memory (``ru_maxrss``) of one gradient step, each implementation in its own fresh process
  (warm-up: 2 steps on one image), and its growth during the step;
- variants of advpure: ``torch.compile`` of the UNet (inductor, compiled during the warm-up) and channels_last
  weights and inputs.

Equivalence (``--check``, in this process):

1. same Brownian path: the official solver on advpure's time grid (``ts = [0.9, 1.0]`` in float64, so both take
   100 steps of 1e-3 at the same times) with a Brownian motion whose increments are advpure's generator draws
   (:class:`GridBrownian`), from the same x_t: the outputs agree to float rounding; the gradients of advpure
   (exact gradient of the discrete forward) are compared with torchsde's plain backprop (the same discrete
   gradient) and with its adjoint (an approximation: the adjoint SDE integrated backwards with Euler; it evaluates
   the drift at the right end of each step, so at t = 0 where the score is singular: for this check t is floored
   at 1e-5 inside the SDE, which the forward never reaches, the role DiffPure's ``1 - 1e-5`` end time plays).
2. distribution under the official settings (``ts = [0.9, 1 - 1e-5]``, torchsde's own BrownianInterval, DiffPure's
   discrete-alpha diffusion): per-pixel mean and standard deviation of the outputs over ``--draws`` draws of the
   same images, advpure vs official (differences in units of their standard error).

    OMP_NUM_THREADS=1 python benchmarks/official_diffpure.py [--nets digits,cifar10] [--batch 8] [--repeats 2]
        [--variants compile,channels_last] [--check] [--check-batch 4] [--draws 16] [--out results.json]

Needs ``torchsde`` (``pip install advpure[bench]``); without it the benchmark prints a message and exits 0.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn as nn

REPO = Path(__file__).resolve().parents[1]
ZOO = REPO / "zoo"
NETS = {"digits": ("digits-ddpm.safetensors", "digits-small-cnn.safetensors"),
        "cifar10": ("cifar10-ddpm-tiny-t0.2.safetensors", "cifar10-resnet8.safetensors")}
IMPLS = ("advpure", "official")
VARIANTS = ("compile", "channels_last")
BETA_MIN, BETA_MAX = 0.1, 20.0


def have_torchsde() -> bool:
    try:
        import torchsde  # noqa: F401
    except ImportError:
        return False
    return True


class RevVPSDE(nn.Module):
    """DiffPure's reverse VP SDE in the time ``s = 1 - t`` for torchsde (Ito, diagonal noise)."""

    noise_type, sde_type = "diagonal", "ito"

    def __init__(self, eps_model: nn.Module, image_shape: tuple[int, int, int], t_min: float = 0.0) -> None:
        super().__init__()
        self.eps_model, self.image_shape, self.t_min = eps_model, tuple(image_shape), t_min

    def _t(self, s: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return (1.0 - s).to(x.dtype).clamp_min(self.t_min).expand(x.shape[0])

    @staticmethod
    def beta(t: torch.Tensor) -> torch.Tensor:
        return BETA_MIN + t * (BETA_MAX - BETA_MIN)

    def f(self, s: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        t = self._t(s, x)
        alpha_bar = torch.exp(-0.5 * (BETA_MAX - BETA_MIN) * t * t - BETA_MIN * t)
        eps = self.eps_model(x.view(-1, *self.image_shape), t).reshape(x.shape[0], -1)
        score = -eps / torch.sqrt(1.0 - alpha_bar)[:, None]
        beta = self.beta(t)[:, None]
        return -(-0.5 * beta * x - beta * score)

    def g(self, s: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        t = self._t(s, x)
        return torch.sqrt(self.beta(t))[:, None].expand(x.shape)


def official_diffuse(x01: torch.Tensor, t_star: float, generator: torch.Generator | None) -> torch.Tensor:
    """DiffPure's x(t*) with the discrete alphas: ``a = cumprod(1 - linspace(beta_min, beta_max, 1000) / 1000)``."""
    betas = torch.linspace(BETA_MIN / 1000, BETA_MAX / 1000, 1000, dtype=torch.float64)
    a = float(torch.cumprod(1 - betas, 0)[round(t_star * 1000) - 1])
    x = 2 * x01 - 1
    e = torch.randn(x.shape, generator=generator, dtype=x.dtype)
    return x * math.sqrt(a) + e * math.sqrt(1 - a)


def official_reverse(sde: RevVPSDE, xt: torch.Tensor, t_star: float, *, t_end: float = 1 - 1e-5, bm=None,
                     adjoint: bool = True, ts_dtype=None) -> torch.Tensor:
    import torchsde

    ts = torch.tensor([1.0 - t_star, t_end], dtype=ts_dtype or xt.dtype)
    solve = torchsde.sdeint_adjoint if adjoint else torchsde.sdeint
    return solve(sde, xt.flatten(1), ts, method="euler", dt=1e-3, bm=bm)[-1].view(xt.shape)


def official_purify(sde: RevVPSDE, x01: torch.Tensor, t_star: float = 0.1,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    return ((official_reverse(sde, official_diffuse(x01, t_star, generator), t_star) + 1) * 0.5).clamp(0, 1)


def grid_brownian(t0: float, dt: float, increments: torch.Tensor):
    """A torchsde Brownian motion on the grid ``t0 + k dt`` whose k-th increment is ``sqrt(dt) * increments[k]``
    (queried only on grid intervals, as Euler forward and its adjoint with ``ts`` a multiple of ``dt`` do)."""
    import torchsde

    class GridBrownian(torchsde.BaseBrownian):
        def __call__(self, ta, tb=None, return_U=False, return_A=False):
            ta, tb = float(ta), float(tb)
            k = round((ta - t0) / dt)
            if abs(ta - (t0 + k * dt)) > 1e-9 or abs(tb - ta - dt) > 1e-9:
                raise ValueError(f"GridBrownian: interval [{ta}, {tb}] is not a grid step")
            return increments[k] * math.sqrt(tb - ta)

        def __repr__(self):
            return "GridBrownian()"

        dtype = property(lambda self: increments.dtype)
        device = property(lambda self: increments.device)
        shape = property(lambda self: tuple(increments.shape[1:]))
        levy_area_approximation = property(lambda self: "none")

    return GridBrownian()


# --------------------------------------------------------------------------- timing and memory children
def _setup(net_name: str, batch: int, shape: tuple[int, int, int]):
    from advpure.models import load_classifier

    clf = load_classifier(ZOO / NETS[net_name][1]).requires_grad_(False)
    g = torch.Generator().manual_seed(0)
    return clf, torch.rand(batch, *shape, generator=g), torch.randint(0, 10, (batch,), generator=g)


def _load(net_name: str) -> nn.Module:
    from advpure.diffusion import load_denoiser

    return load_denoiser(ZOO / NETS[net_name][0])[0].requires_grad_(False)


def _purifier(impl: str, net_name: str):
    """``(make, image shape)``, ``make(t) -> purify(x, generator)``, for one implementation, on its own copy of the
    network."""
    from advpure.defenses.diffpure import DiffPure

    net = _load(net_name)
    shape = tuple(net.image_shape)
    if impl == "advpure-channels_last":
        net = net.to(memory_format=torch.channels_last)
    if impl == "advpure-compile":  # the UNet inside the adapter (the adapter's call counter would force recompiles)
        net.net = torch.compile(net.net)

    def make(t: float):
        if impl == "official":
            sde = RevVPSDE(net, shape)
            return lambda x, g: official_purify(sde, x, t, g)
        dp = DiffPure(net, t=t, grad_checkpoint=True, image_shape=shape, freeze=False)
        if impl == "advpure-channels_last":
            return lambda x, g: dp(x.contiguous(memory_format=torch.channels_last), generator=g)
        return lambda x, g: dp(x, generator=g)

    return make, shape


def _forward(p, x):
    with torch.no_grad():
        return p(x, torch.Generator().manual_seed(1))


def _gradient(p, clf, x, y):
    """One full-gradient PGD step: cross-entropy of the classifier on the purified batch, gradient w.r.t. x."""
    xr = x.clone().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(clf(p(xr, torch.Generator().manual_seed(1))), y)
    return torch.autograd.grad(loss, xr)[0]


def _speed_child(cfg: dict) -> dict:
    """All implementations in one process, timed interleaved (a, b, c, a, b, c, ...), best of ``repeats`` each,
    so that load changes on a shared machine hit all of them alike."""
    import time

    built = {impl: _purifier(impl, cfg["net"]) for impl in cfg["impls"]}
    makers = {impl: make for impl, (make, _) in built.items()}
    clf, x, y = _setup(cfg["net"], cfg["batch"], next(iter(built.values()))[1])
    for make in makers.values():  # 2 steps at the full batch: lazy imports, allocator, torch.compile's graphs
        warm = make(0.002)
        _forward(warm, x), _gradient(warm, clf, x, y)
    ps = {impl: make(cfg["t"]) for impl, make in makers.items()}
    res = {impl: {"forward_s": math.inf, "gradient_s": math.inf} for impl in ps}
    for _ in range(cfg["repeats"]):
        for what, fn in (("forward_s", lambda p: _forward(p, x)), ("gradient_s", lambda p: _gradient(p, clf, x, y))):
            for impl, p in ps.items():
                t0 = time.perf_counter()
                fn(p)
                res[impl][what] = min(res[impl][what], time.perf_counter() - t0)
    for r in res.values():
        r["images_per_s"] = cfg["batch"] / r["forward_s"]
    return res


def _memory_child(cfg: dict) -> dict:
    """Peak resident memory of one gradient step in a fresh process (warm-up: 2 steps on one image)."""
    import resource

    make, shape = _purifier(cfg["impl"], cfg["net"])
    clf, x, y = _setup(cfg["net"], cfg["batch"], shape)
    _gradient(make(0.002), clf, x[:1], y[:1])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    grad = _gradient(make(cfg["t"]), clf, x, y)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"peak_rss_mib": after / 1024, "grad_rss_growth_mib": (after - before) / 1024,
            "grad_finite": bool(torch.isfinite(grad).all())}


def _run_child(cfg: dict) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(cfg)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"child {cfg} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- equivalence
def check(net_name: str, *, batch: int, draws: int) -> dict:
    from advpure.diffusion import load_denoiser
    from advpure.diffusion.samplers import diffuse, reverse_sde
    from advpure.diffusion.schedule import VPSchedule

    net, _ = load_denoiser(ZOO / NETS[net_name][0])
    net.requires_grad_(False)
    shape = tuple(net.image_shape)
    sched, sde, t_star, k = VPSchedule(), RevVPSDE(net, shape, t_min=1e-5), 0.1, 100
    x = torch.rand(batch, *shape, generator=torch.Generator().manual_seed(0))
    w = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(2))
    out: dict = {"net": net_name}

    # 1. same Brownian path on the same grid, from the same x_t
    xt = diffuse(2 * x - 1, t_star, sched, torch.Generator().manual_seed(3))
    gen = torch.Generator().manual_seed(4)
    z = torch.stack([torch.randn(xt.shape, generator=gen) for _ in range(k)]).flatten(2)  # advpure's draws, in order
    bm = grid_brownian(1 - t_star, t_star / k, z)

    def ours(v, ck=True):
        return reverse_sde(net, v, schedule=sched, t_start=t_star, n_steps=k, checkpoint=ck,
                           generator=torch.Generator().manual_seed(4))

    def theirs(v, adjoint):
        return official_reverse(sde, v, t_star, t_end=1.0, bm=bm, adjoint=adjoint, ts_dtype=torch.float64)

    with torch.no_grad():
        a, b = ours(xt), theirs(xt, True)
    out["same_path_max_abs_diff"] = float((a - b).abs().max())
    out["same_path_output_range"] = float(a.abs().max())
    grads = {}
    for name, fn in [("advpure", ours), ("advpure_plain", lambda v: ours(v, False)),
                     ("torchsde_backprop", lambda v: theirs(v, False)), ("torchsde_adjoint", lambda v: theirs(v, True))]:
        v = xt.clone().requires_grad_(True)
        grads[name] = torch.autograd.grad((fn(v) * w).sum(), v)[0]
    ref = grads["advpure"]
    for name, gr in grads.items():
        if name != "advpure":
            out[f"grad_rel_err_{name}"] = float((gr - ref).norm() / ref.norm())
            out[f"grad_cos_{name}"] = float(torch.nn.functional.cosine_similarity(gr.flatten(), ref.flatten(), dim=0))

    # 2. distributions under each implementation's own settings: per-pixel mean/std over draws of the same images
    from advpure.defenses.diffpure import DiffPure

    dp = DiffPure(net, t=t_star, image_shape=shape, freeze=False)
    xs = x.repeat(draws, 1, 1, 1)
    with torch.no_grad():
        ya = dp(xs, generator=torch.Generator().manual_seed(5)).view(draws, *x.shape)
        yb = official_purify(sde, xs, t_star, torch.Generator().manual_seed(6)).view(draws, *x.shape)
    se = torch.sqrt((ya.var(0) + yb.var(0)) / draws).clamp_min(1e-6)
    zmean = (ya.mean(0) - yb.mean(0)) / se
    out.update(draws=draws, mean_abs_diff=float((ya.mean(0) - yb.mean(0)).abs().mean()),
               mean_standard_error=float(se.mean()),
               mean_diff_z_rms=float(zmean.pow(2).mean().sqrt()),
               frac_abs_z_above_3=float((zmean.abs() > 3).float().mean()),
               std_ratio=float(ya.std(0).mean() / yb.std(0).mean()))
    return out


def main(argv: list[str] | None = None) -> dict | None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nets", default="digits,cifar10")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--t", type=float, default=0.1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--variants", default=",".join(VARIANTS), help="advpure variants to time too ('' for none)")
    ap.add_argument("--check", action="store_true", help="also run the equivalence checks")
    ap.add_argument("--check-batch", type=int, default=4, help="images in the equivalence checks")
    ap.add_argument("--draws", type=int, default=16, help="draws per image for the distribution check")
    ap.add_argument("--out", default=None)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if not have_torchsde():
        print("official_diffpure: torchsde is not installed (pip install 'advpure[bench]' or pip install torchsde); "
              "skipping")
        return None
    torch.set_num_threads(args.threads)
    if args.child:
        cfg = json.loads(args.child)
        torch.set_num_threads(cfg["threads"])
        print(json.dumps(_speed_child(cfg) if cfg["kind"] == "speed" else _memory_child(cfg)))
        return None
    impls = list(IMPLS) + [f"advpure-{v}" for v in args.variants.split(",") if v]
    common = {"batch": args.batch, "t": args.t, "threads": args.threads}
    rows, checks = [], []
    print(f"batch {args.batch}, t* = {args.t} ({round(args.t / 1e-3)} steps), {args.threads} thread(s); times: best of "
          f"{args.repeats}, implementations interleaved in one process; memory: one fresh process per implementation")
    print("| net | implementation | forward img/s | gradient s (one PGD step) | forward speed-up vs official | "
          "gradient speed-up vs official | peak RSS MiB | RSS growth in the gradient step MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for net in args.nets.split(","):
        speed = _run_child({"kind": "speed", "net": net, "impls": impls, "repeats": args.repeats, **common})
        off = speed["official"]
        for impl in impls:
            r = {"net": net, "impl": impl, **speed[impl]}
            if impl in IMPLS:
                r.update(_run_child({"kind": "memory", "net": net, "impl": impl, **common}))
            r["forward_speedup"] = r["images_per_s"] / off["images_per_s"]
            r["gradient_speedup"] = off["gradient_s"] / r["gradient_s"]
            rows.append(r)
            mem = (f"{r['peak_rss_mib']:.0f} | {r['grad_rss_growth_mib']:.0f}" if "peak_rss_mib" in r else "- | -")
            print(f"| {net} | {impl} | {r['images_per_s']:.2f} | {r['gradient_s']:.2f} | {r['forward_speedup']:.2f}x | "
                  f"{r['gradient_speedup']:.2f}x | {mem} |", flush=True)
    if args.check:
        print()
        for net in args.nets.split(","):
            c = check(net, batch=args.check_batch, draws=args.draws)
            checks.append(c)
            print(json.dumps(c), flush=True)
    result = {"command": "python benchmarks/official_diffpure.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "timings": rows, "checks": checks}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
