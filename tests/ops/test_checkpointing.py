"""advpure.ops.checkpointing: the checkpointed loop against the plain loop (the independent reference), float64
finite differences, the real purifiers with grad_checkpoint on and off, and memory that does not grow with the
steps' activations."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from advpure.defenses.diffpure import DiffPure
from advpure.defenses.ssni import SSNI
from advpure.detect.eps import EPSReference, eps_norm
from advpure.diffusion import DiscreteTimeAdapter, GaussianScoreModel, VPSchedule, build_unet
from advpure.diffusion.samplers import reverse_sde
from advpure.ops.checkpointing import checkpointed_loop


def _conv_step(gen, conv):
    def step(z, i):
        return z + 0.1 * torch.tanh(conv(z)) + 0.01 * torch.randn(z.shape, generator=gen)
    return step


def test_reexported_from_attacks():
    from advpure.attacks import checkpointed_loop as from_attacks

    assert from_attacks is checkpointed_loop


def test_exact_gradient_and_rng():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 3, 3, padding=1)
    x = torch.rand(2, 3, 8, 8)
    outs, grads, states = [], [], []
    for enabled in (False, True):
        gen = torch.Generator().manual_seed(3)
        xr = x.clone().requires_grad_(True)
        out = checkpointed_loop(_conv_step(gen, conv), xr, 6, enabled=enabled, generator=gen)
        out.square().sum().backward()
        outs.append(out.detach())
        grads.append(xr.grad.clone())
        states.append(gen.get_state())
    assert torch.equal(outs[0], outs[1])
    assert torch.equal(grads[0], grads[1])
    assert torch.equal(states[0], states[1])  # the generator ends where the plain forward left it


def test_global_rng_is_rewound_and_restored():
    """Noise from torch's global RNG (generator=None): same gradient, and the global RNG ends where the plain
    loop leaves it (the backward's recomputation does not consume it)."""

    def step(z, i):
        return z * torch.tanh(z + torch.randn(z.shape))

    x = torch.rand(3, 5, dtype=torch.float64)
    res = []
    for enabled in (False, True):
        torch.manual_seed(7)
        xr = x.clone().requires_grad_(True)
        out = checkpointed_loop(step, xr, 5, enabled=enabled)
        out.sum().backward()
        res.append((out.detach(), xr.grad, torch.rand(4)))  # the next global draw after the backward
    for a, b in zip(*res):
        assert torch.equal(a, b)


def _extras_problem(x: torch.Tensor, checkpoint: bool, every: int = 1, seed: int = 0) -> torch.Tensor:
    """A loop shaped like SSNI over the reverse SDE: a per-sample time t(x) that depends differentiably on the
    input (through a norm, as SSNI's t on ||EPS||), a per-step coefficient table built from it, and noise drawn
    inside the step from an explicit generator."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.linspace(-1, 1, x[0].numel(), dtype=x.dtype).view(x[0].shape)
    t = torch.sigmoid(x.flatten(1).norm(dim=1) - 1.0)  # (N,)
    n = 7
    coef = (1.0 - torch.arange(n, dtype=x.dtype) / n)[:, None] * t[None, :]  # (n, N), like reverse_sde's grid

    def step(z, i, coef, t):
        c = coef[i].view(-1, *([1] * (z.dim() - 1)))
        noise = torch.randn(z.shape, generator=gen, dtype=z.dtype)
        return z - c * torch.tanh(w * z + t.view_as(c)) + 0.05 * c.sqrt() * noise

    out = checkpointed_loop(step, x, n, extras=(coef, t), enabled=checkpoint, every=every, generator=gen)
    return (out * out.flip(-1)).sum()


def test_gradient_through_extra_per_sample_tensor_matches_plain_loop_and_finite_differences():
    x = torch.rand(3, 2, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 2
    grads = []
    for ck in (False, True):
        xr = x.clone().requires_grad_(True)
        grads.append(torch.autograd.grad(_extras_problem(xr, ck), xr)[0])
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-12, atol=1e-14)
    # an independent check: central differences in float64 along a few coordinates and one random direction
    e = 1e-6
    d = torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    dirs = [d / d.norm()]
    for idx in [(0, 0, 0), (1, 1, 3), (2, 0, 2)]:
        u = torch.zeros_like(x)
        u[idx] = 1.0
        dirs.append(u)
    with torch.no_grad():
        for u in dirs:
            fd = (_extras_problem(x + e * u, False) - _extras_problem(x - e * u, False)) / (2 * e)
            assert float(fd) == pytest.approx(float((grads[1] * u).sum()), rel=1e-6, abs=1e-9)


def test_gradient_only_through_extras():
    """x needs no gradient, an extra does: the cotangent still runs through every step."""
    t = torch.tensor([0.3, 0.7], dtype=torch.float64, requires_grad=True)
    x = torch.rand(2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def step(z, i, t):
        return torch.sin(z * t[:, None] + i)

    g = [torch.autograd.grad(checkpointed_loop(step, x, 4, extras=(t,), enabled=ck).sum(), t)[0] for ck in (0, 1)]
    assert torch.equal(g[0], g[1])


@pytest.mark.parametrize("every", [2, 3, 7, 10])
def test_every_k_grouping(every):
    x = torch.rand(3, 2, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 2
    grads = []
    for ck in (False, True):
        xr = x.clone().requires_grad_(True)
        grads.append(torch.autograd.grad(_extras_problem(xr, ck, every=every), xr)[0])
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-12, atol=1e-14)
    # only the segment starts are kept: ceil(7 / every) inputs plus the two extras
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.shape) or t, lambda t: t):
        gen = torch.Generator()
        checkpointed_loop(lambda z, i: z + torch.randn(z.shape, generator=gen), x.clone().requires_grad_(True), 7,
                          every=every, generator=gen)
    assert len(saved) == math.ceil(7 / every)


@pytest.mark.parametrize("kind", ["shrinking", "non-contiguous"])
def test_states_that_change_shape_or_are_not_contiguous(kind):
    """Saved inputs normally go into one preallocated buffer; other states are kept as they are."""
    x = torch.rand(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    if kind == "shrinking":
        def step(z, i):
            return torch.tanh(2 * z[:, 1:] + z[:, :-1])
    else:
        x = x.t()

        def step(z, i):
            return torch.sin(z * 1.5).t().contiguous().t()
    g = []
    for ck in (False, True):
        xr = x.clone().requires_grad_(True)
        g.append(torch.autograd.grad(checkpointed_loop(step, xr, 4, enabled=ck).square().sum(), xr)[0])
    assert torch.equal(g[0], g[1])


def test_plain_loop_without_grad_or_disabled():
    calls = []

    def step(z, i):
        calls.append(torch.is_grad_enabled())
        return z * 2

    x = torch.ones(2, requires_grad=True)
    with torch.no_grad():
        assert torch.equal(checkpointed_loop(step, x, 3), torch.full((2,), 8.0))
    y = checkpointed_loop(step, x, 3, enabled=False)
    assert y.grad_fn is not None and calls == [False] * 3 + [True] * 3
    assert torch.equal(checkpointed_loop(step, x, 0), x)


def test_closure_over_a_tensor_that_requires_grad_raises():
    y = torch.rand(2, 3, requires_grad=True)
    x = torch.rand(2, 3, requires_grad=True)
    out = checkpointed_loop(lambda z, i: z * (2 * y).sin(), x, 3)
    with pytest.raises(RuntimeError, match="extras"):
        out.sum().backward()
    # the same dependency passed as an extra gets its gradient, equal to the plain loop's
    g = [torch.autograd.grad(checkpointed_loop(lambda z, i, yy: z * (2 * yy).sin(), x, 3, extras=(y,),
                                               enabled=ck).sum(), (x, y)) for ck in (False, True)]
    assert all(torch.equal(a, b) for a, b in zip(*g))


def test_parameters_get_no_gradient_through_the_checkpointed_loop():
    """Documented: the checkpointed loop differentiates with respect to its inputs only."""
    lin = nn.Linear(3, 3)
    x = torch.rand(2, 3, requires_grad=True)
    checkpointed_loop(lambda z, i: torch.tanh(lin(z)), x, 3).sum().backward()
    assert x.grad is not None and lin.weight.grad is None


def test_training_code_never_uses_the_checkpointed_path():
    src = Path(__file__).resolve().parents[2] / "src" / "advpure" / "train"
    for p in src.rglob("*.py"):
        text = p.read_text()
        assert "checkpointed_loop" not in text and "checkpoint=True" not in text and "grad_checkpoint" not in text, p


# --------------------------------------------------------------------------- the real purifiers


@pytest.fixture(scope="module")
def eps_model():
    torch.manual_seed(0)
    return DiscreteTimeAdapter(build_unet("digits"), image_shape=(1, 8, 8))


def _input_grad(p, x, seed=1):
    xr = x.clone().requires_grad_(True)
    out = p(xr, generator=torch.Generator().manual_seed(seed))
    return torch.autograd.grad((out * torch.linspace(-1, 1, out[0].numel()).view(out[0].shape)).sum(), xr)[0]


def test_diffpure_gradient_equal_with_and_without_checkpointing(eps_model):
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    g = []
    for ck in (False, True):
        g.append(_input_grad(DiffPure(eps_model, t=0.05, n_steps=6, grad_checkpoint=ck), x))
    assert float(g[0].abs().sum()) > 0
    assert torch.equal(g[0], g[1])


@pytest.mark.parametrize("mode", ["N", "L"])
def test_ssni_differentiable_t_gradient_equal_with_and_without_checkpointing(eps_model, mode):
    clean = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        norms = eps_norm(eps_model, clean, schedule=DiffPure(eps_model).schedule, t_levels=[0.01, 0.02, 0.05],
                         generator=torch.Generator().manual_seed(4))
    ref = EPSReference.from_norms(norms, t_levels=[0.01, 0.02, 0.05], checkpoint_sha256=None)
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    g = []
    for ck in (False, True):
        base = DiffPure(eps_model, t=0.05, n_steps=5, grad_checkpoint=ck)
        ssni = SSNI(base, reference=ref, mode=mode, differentiable=True, t_ceil=0.5)
        g.append(_input_grad(ssni, x))
        assert ssni.grad_checkpoint == ck
    # with checkpointing the gradient of the sampler reaches t through the extras (not a closure)
    torch.testing.assert_close(g[1], g[0], rtol=1e-6, atol=1e-9)


def test_reverse_sde_per_sample_t_float64_finite_differences():
    """The sampler's own per-sample time path (SSNI's t enters reverse_sde's coefficient tables, passed as extras)
    in float64: checkpointed gradient vs the plain loop and vs central differences. The eps-model is the exact
    Gaussian one (smooth in x and t in float64; the diffusers UNet casts its time embedding to float32)."""
    sched = VPSchedule()
    gen = torch.Generator().manual_seed(0)
    net = GaussianScoreModel(torch.rand(1, 4, 4, generator=gen) - 0.5, 0.05 + 0.1 * torch.rand(1, 4, 4, generator=gen),
                             sched).double()

    def f(x, ck):
        t = 0.05 + 0.3 * torch.sigmoid(x.flatten(1).norm(dim=1) - 2.0)  # differentiable per-sample time
        y = reverse_sde(net, 2 * x - 1, schedule=sched, t_start=t, n_steps=6, checkpoint=ck,
                        generator=torch.Generator().manual_seed(5))
        return (torch.tanh(y) * y.flip(-1)).sum()

    x = torch.rand(3, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    g = []
    for ck in (False, True):
        xr = x.clone().requires_grad_(True)
        g.append(torch.autograd.grad(f(xr, ck), xr)[0])
    torch.testing.assert_close(g[1], g[0], rtol=1e-12, atol=1e-14)
    e = 1e-6
    for seed in (9, 10):
        d = torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            fd = (f(x + e * d, False) - f(x - e * d, False)) / (2 * e)
        assert float(fd) == pytest.approx(float((g[1] * d).sum()), rel=1e-6)


# --------------------------------------------------------------------------- memory


class _HeldBytes:
    """Bytes of the tensors autograd holds for a backward pass, live and peak, over a forward *and* its backward.

    Every tensor saved for backward (by any op, by the checkpointed loop's forward, and by the recomputation
    inside its backward: saved-tensor hooks are active there too) is wrapped in an object that adds its size on
    creation and subtracts it when autograd drops it. This counts what the autograd graph keeps alive (the
    quantity that grows with K without checkpointing), deterministically, which RSS on a shared machine is not;
    ``tracemalloc`` does not see torch's allocations."""

    def __init__(self) -> None:
        self.live = self.peak = 0

    def __enter__(self) -> "_HeldBytes":
        meter = self

        class Held:
            def __init__(self, t: torch.Tensor) -> None:
                self.t, self.n = t, t.numel() * t.element_size()
                meter.live += self.n
                meter.peak = max(meter.peak, meter.live)

            def __del__(self) -> None:
                meter.live -= self.n

        self._hooks = torch.autograd.graph.saved_tensors_hooks(Held, lambda h: h.t)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)


def _graph_nodes(out: torch.Tensor) -> int:
    seen, stack = set(), [out.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is not None and fn not in seen:
            seen.add(fn)
            stack.extend(f for f, _ in fn.next_functions)
    return len(seen)


def _diffpure_memory(eps_model, k: int, ck: bool) -> tuple[int, int, int]:
    p = DiffPure(eps_model, t=0.1, n_steps=k, grad_checkpoint=ck)
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    with _HeldBytes() as m:
        out = p(x, generator=torch.Generator().manual_seed(1))
        nodes = _graph_nodes(out)
        out.sum().backward()
    assert m.live == 0
    return m.peak, nodes, x.numel() * x.element_size()


def test_memory_of_checkpointed_backward_does_not_grow_with_the_steps_activations(eps_model):
    """DiffPure, K = 10 vs 100 steps. Checkpointed: the graph has the same nodes for any K (one node for the whole
    loop; non-reentrant torch.utils.checkpoint per step, the old implementation, builds K steps' nodes during the
    forward) and the peak of held bytes grows by at most the 90 extra saved step inputs (one image batch each)
    and the (K, N) coefficient tables. The plain loop, run as a check that this test can fail, grows by the
    activations of 90 UNet evaluations."""
    peak10, nodes10, x_bytes = _diffpure_memory(eps_model, 10, True)
    peak100, nodes100, _ = _diffpure_memory(eps_model, 100, True)
    assert nodes100 == nodes10
    bound = 90 * (x_bytes + 4 * 2 * 4 + 64)  # inputs + four float32 (K, N=2) tables; 64 bytes per step of slack
    assert peak100 - peak10 <= bound, (peak10, peak100, bound)
    plain10, pnodes10, _ = _diffpure_memory(eps_model, 10, False)
    plain100, pnodes100, _ = _diffpure_memory(eps_model, 100, False)
    assert pnodes100 > 5 * pnodes10 and plain100 - plain10 > 20 * bound


# --------------------------------------------------------------------------- the benchmarks' quick modes

REPO = Path(__file__).resolve().parents[2]


def test_attack_memory_benchmark_quick(tmp_path):
    """benchmarks/attack_memory.py --quick: four fresh children, checkpointed (DiffPure on the digits zoo model, K = 5
    and 20; DiffPure on a small random-weight guided-diffusion ADM at 256x256, batch 1, K = 2 and 4); the memory of a
    PGD step stays flat in K."""
    out = tmp_path / "attack_memory.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "attack_memory.py"), "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    assert [(m["setup"], m["k"], m["checkpoint"], m["batch"]) for m in res["measurements"]] == [
        ("diffpure-digits", 5, True, 4), ("diffpure-digits", 20, True, 4),
        ("diffpure-adm256", 2, True, 1), ("diffpure-adm256", 4, True, 1)]
    assert all(m["finite"] and m["moved"] > 0 for m in res["measurements"])
    assert res["summary"]["diffpure-digits"]["checkpointed_growth_ratio"] < 1.5
    adm = res["summary"]["diffpure-adm256"]
    if adm["metric"] == "step_peak_mib":  # Linux: the step's own peak (batch 1: the warm-up reaches the same peak)
        assert min(m["step_peak_mib"] for m in res["measurements"][2:]) > 100  # one step's graph at 256x256
    assert adm["checkpointed_growth_ratio"] < 1.5


def test_official_diffpure_benchmark_skips_without_torchsde():
    code = ("import runpy, sys; sys.modules['torchsde'] = None; sys.argv = ['official_diffpure.py']; "
            f"runpy.run_path({str(REPO / 'benchmarks' / 'official_diffpure.py')!r}, run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "torchsde is not installed" in proc.stdout, proc.stderr[-2000:]


def test_official_reverse_sde_equals_advpure_on_the_same_brownian_path():
    """The benchmark's DiffPure SDE for torchsde (written from torchsde's documentation) against advpure's
    reverse_sde: same grid, Brownian increments = advpure's generator draws, exact Gaussian eps-model."""
    pytest.importorskip("torchsde")
    import importlib.util

    spec = importlib.util.spec_from_file_location("official_diffpure", REPO / "benchmarks" / "official_diffpure.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    sched = VPSchedule()
    net = GaussianScoreModel(torch.full((1, 4, 4), 0.2), torch.full((1, 4, 4), 0.05), sched)
    xt = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(1)
    z = torch.stack([torch.randn(xt.shape, generator=gen) for _ in range(100)]).flatten(2)
    ours = reverse_sde(net, xt, schedule=sched, t_start=0.1, n_steps=100, generator=torch.Generator().manual_seed(1))
    theirs = bench.official_reverse(bench.RevVPSDE(net, (1, 4, 4)), xt, 0.1, t_end=1.0, adjoint=False,
                                    bm=bench.grid_brownian(0.9, 1e-3, z), ts_dtype=torch.float64)
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-5)
