"""Gradient checkpointing of an iterative loop, so a full-gradient (adaptive) attack through a K-step purifier
(a diffusion sampler, an unrolled optimiser) needs memory that does not grow with the activations of K steps.

:func:`checkpointed_loop` computes ``for i in range(n_steps): x = step_fn(x, i, *extras)``. When gradients are
recorded it runs as one :class:`torch.autograd.Function` over the whole loop (Chen et al. 2016, "Training deep
nets with sublinear memory cost"; used for exact-gradient attacks on DiffPure by Lee & Kim, ICCV 2023):

- forward: the steps run under ``torch.no_grad()``; only the input of every ``every``-th step (the start of each
  segment) and the random-number state there are kept, in buffers allocated before the loop. No autograd graph
  is built (``torch.utils.checkpoint(use_reentrant=False)`` around every step, the earlier implementation, builds
  the graph during the forward, and K small long-lived tensors between the steps' transient activations
  fragment the heap: its peak memory grew with K, issue 15).
- backward: the segments are visited in reverse; each is recomputed under ``torch.enable_grad()`` from its saved
  input with the random state rewound, and ``torch.autograd.grad`` pushes the cotangent through it to the
  segment's input and to the ``extras`` (their gradients are summed over the steps). One segment's graph is
  alive at a time.

Randomness is exact: torch's global RNG (and, for a CUDA ``x``, the RNG of its device) and an explicit
``generator`` are set back to their state at the start of the segment for the recomputation and restored
afterwards, so the recomputed steps draw the same noise and the generators end where the forward left them.
Tensors drawn outside the loop and passed in ``extras`` are simply saved.

Contract of ``step_fn``:

- every tensor that requires grad and that ``step_fn`` uses must arrive as ``x`` or in ``extras`` (e.g. SSNI's
  per-sample times, a guidance target derived from the attacked image). A tensor reached only through a
  closure would get no gradient; the backward pass detects that and raises.
- ``nn.Parameter`` objects receive **no** gradient through the checkpointed loop (it exists for input gradients
  of attacks; a frozen network is the normal case). Training code must not enable it.
- the result is differentiable once (no double backward through the checkpointed loop).

Gradients equal the plain loop's: the recomputation runs the same kernels on the same values, and the extras'
per-step contributions are summed last step first, as autograd sums them. Measured: bit-identical for
DiffPure, SSNI with a differentiable t and DDIM on CPU; float rounding (1e-7 relative) where a step branches on grad
mode (GDMP's guidance takes its inner gradient with ``create_graph`` only when the outer graph is recorded); float64
finite differences agree to 1e-6. Distribution-transfer guidance (digits, t* = 0.05, 5 steps, scale 100) is the
exception that proves the rule: its input gradient changes by 1.2% (relative norm) with checkpointing, because the
forward without grad mode differs from the recorded one in the last bits and this defense's gradient is not smooth
at that scale (the guidance differentiates a ReLU classifier; moving the input by 1e-7 relative moves the *plain*
gradient by 1.5%). In the digits demo this changed one of 240 evaluation draws (10.4% -> 10.8%).

Purifiers opt in with a ``grad_checkpoint`` attribute (False by default) and::

    x = checkpointed_loop(self._step, x, self.n_steps, enabled=self.grad_checkpoint, generator=generator)

Attacks switch the attribute on with ``grad_checkpoint=True`` (:func:`advpure.attacks.base.grad_checkpointing`).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn as nn
from torch.autograd.function import once_differentiable

from ..contracts import check_int

Step = Callable[..., torch.Tensor]  # step_fn(x, i, *extras) -> next x


def checkpointed_loop(step_fn: Step, x: torch.Tensor, n_steps: int, *, extras: Sequence[torch.Tensor] = (),
                      enabled: bool = True, generator: torch.Generator | None = None, every: int = 1
                      ) -> torch.Tensor:
    """``for i in range(n_steps): x = step_fn(x, i, *extras)``, checkpointed every ``every`` steps when enabled.

    ``extras``: tensors every step may use (per-step coefficients indexed by ``i``, per-sample times, a guidance
    target); those that require grad get their gradient, summed over the steps. ``every`` > 1 saves one input per
    ``every`` steps and recomputes that many steps at once in the backward pass (fewer saved inputs, a larger
    graph per recomputation). Without grad mode, with ``enabled=False``, or when neither ``x`` nor an extra
    requires grad, this is the plain loop.
    """
    n_steps = check_int(n_steps, "n_steps", minimum=0)
    every = check_int(every, "every", minimum=1)
    extras = tuple(extras)
    if not all(isinstance(e, torch.Tensor) for e in extras):
        raise TypeError("checkpointed_loop: extras must be tensors")
    if not (enabled and torch.is_grad_enabled() and n_steps > 0
            and any(t.requires_grad for t in (x, *extras))):
        for i in range(n_steps):
            x = step_fn(x, i, *extras)
        return x
    return _CheckpointedLoop.apply(_Loop(step_fn, n_steps, every, generator), x, *extras)


class _Loop:
    """What the autograd function needs besides tensors (``Function.apply`` takes these as one argument)."""

    def __init__(self, step_fn: Step, n_steps: int, every: int, generator: torch.Generator | None) -> None:
        self.step_fn, self.n_steps, self.every, self.generator = step_fn, n_steps, every, generator

    def run(self, z: torch.Tensor, segment: int, extras: Sequence[torch.Tensor]) -> torch.Tensor:
        for i in range(segment * self.every, min((segment + 1) * self.every, self.n_steps)):
            z = self.step_fn(z, i, *extras)
        return z

    def rng_state(self, device: torch.device) -> tuple:
        return (torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                self.generator.get_state() if self.generator is not None else None)

    def set_rng_state(self, state: tuple, device: torch.device) -> None:
        cpu, dev, gen = state
        torch.set_rng_state(cpu)
        if dev is not None:
            torch.cuda.set_rng_state(dev, device)
        if gen is not None:
            self.generator.set_state(gen)


class _CheckpointedLoop(torch.autograd.Function):
    @staticmethod
    def forward(ctx, loop: _Loop, x: torch.Tensor, *extras: torch.Tensor) -> torch.Tensor:  # runs under no_grad
        n_seg = -(-loop.n_steps // loop.every)
        # the saved inputs and RNG states go into buffers allocated before the loop: K small long-lived tensors
        # allocated between the steps' transient activations fragment the heap, and the RSS then grows with K
        buf = x.new_empty((n_seg - 1, *x.shape)) if x.is_contiguous() else None
        rng = [None if s is None else s.new_empty((n_seg, *s.shape)) for s in loop.rng_state(x.device)]
        inputs, z = [], x
        for seg in range(n_seg):
            same = buf is not None and z.is_contiguous() and z.shape == x.shape and z.dtype == x.dtype
            inputs.append(buf[seg - 1].copy_(z) if seg > 0 and same else z)
            for r, s in zip(rng, loop.rng_state(x.device)):
                if r is not None:
                    r[seg].copy_(s)
            z = loop.run(z, seg, extras)
        ctx.loop, ctx.rng, ctx.n_extras = loop, rng, len(extras)
        ctx.save_for_backward(*inputs, *extras)
        return z

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        loop, saved = ctx.loop, ctx.saved_tensors
        n_seg = len(saved) - ctx.n_extras
        inputs, need = saved[:n_seg], ctx.needs_input_grad[2:]
        extras = [e.detach().requires_grad_(True) if n else e for e, n in zip(saved[n_seg:], need)]
        wanted = [e for e, n in zip(extras, need) if n]
        grads: list[torch.Tensor | None] = [None] * len(wanted)
        device = inputs[0].device
        now = loop.rng_state(device)
        try:
            for seg in reversed(range(n_seg)):
                loop.set_rng_state(tuple(None if r is None else r[seg].clone() for r in ctx.rng), device)
                z0 = inputs[seg].detach().requires_grad_(True)
                with torch.enable_grad():
                    z = loop.run(z0, seg, extras)
                if not z.requires_grad:  # the segment's output depends on nothing differentiable
                    grad = torch.zeros_like(z0)
                    continue
                _check_closure(z, [z0, *wanted])
                out = torch.autograd.grad(z, [z0, *wanted], grad, allow_unused=True)
                grad = out[0] if out[0] is not None else torch.zeros_like(z0)
                for j, g in enumerate(out[1:]):
                    if g is not None:
                        grads[j] = g if grads[j] is None else grads[j] + g
        finally:
            loop.set_rng_state(now, device)
        it = iter(grads)
        return (None, grad, *(next(it) if n else None for n in need))


def _check_closure(out: torch.Tensor, own: list[torch.Tensor]) -> None:
    """Raise if ``out``'s graph reaches a leaf that requires grad and is neither one of ``own`` (the inputs the
    recomputation differentiates against) nor an ``nn.Parameter``: ``step_fn`` then used such a tensor through a
    closure, and its gradient (or that of whatever it was computed from) would be silently dropped."""
    own_ids = {id(t) for t in own}
    seen, stack = set(), [out.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        leaf = getattr(fn, "variable", None)  # AccumulateGrad nodes hold their leaf
        if leaf is not None:
            if id(leaf) not in own_ids and not isinstance(leaf, nn.Parameter):
                raise RuntimeError(
                    "checkpointed_loop: step_fn uses a tensor that requires grad (shape "
                    f"{tuple(leaf.shape)}, or one computed from it) without receiving it as an argument; pass it "
                    "in extras=(...) so that it gets its gradient")
            continue
        stack.extend(f for f, _ in fn.next_functions)
