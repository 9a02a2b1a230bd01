"""Gradient checkpointing for iterative defenses, so a full-gradient (adaptive) attack through a
K-step purifier (a diffusion sampler, an iterative denoiser) needs memory independent of K.

:func:`checkpointed_loop` runs ``x <- step_fn(x, i)`` for ``i in range(n_steps)``; when gradients are
being recorded, each step is wrapped in :func:`torch.utils.checkpoint.checkpoint`, so only the K
step inputs are kept and each step's activations are recomputed during the backward pass (Chen et al.
2016, "Training deep nets with sublinear memory cost"; used for exact-gradient attacks on DiffPure by
Lee & Kim, ICCV 2023). Randomness stays exact: torch's global RNG is restored by ``checkpoint``
(``preserve_rng_state``), and an explicit ``generator`` is rewound to its state at the start of the
step before the recomputation and put back afterwards, so the recomputed step draws the same noise
and the generator ends where the plain forward left it.

A purifier opts in with a ``grad_checkpoint`` attribute (False by default) and::

    x = checkpointed_loop(self._step, x, self.n_steps, enabled=self.grad_checkpoint, generator=generator)

Attacks switch the attribute on with ``grad_checkpoint=True`` (:func:`advpure.attacks.base.grad_checkpointing`).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch.utils.checkpoint import checkpoint

from ..contracts import check_int


def checkpointed_loop(step_fn: Callable[[torch.Tensor, int], torch.Tensor], x: torch.Tensor, n_steps: int, *,
                      enabled: bool = True, generator: torch.Generator | None = None,
                      every: int = 1) -> torch.Tensor:
    """``for i in range(n_steps): x = step_fn(x, i)``, checkpointed every ``every`` steps when enabled.

    ``every`` > 1 groups several steps per checkpoint segment (fewer saved inputs, more recompute memory
    per segment). Without grad mode (or ``enabled=False``) this is the plain loop.
    """
    n_steps = check_int(n_steps, "n_steps", minimum=0)
    every = check_int(every, "every", minimum=1)
    if not (enabled and torch.is_grad_enabled()):
        for i in range(n_steps):
            x = step_fn(x, i)
        return x
    for start in range(0, n_steps, every):
        stop = min(start + every, n_steps)
        state = generator.get_state() if generator is not None else None
        first_call = [True]

        def segment(z: torch.Tensor, _start: int = start, _stop: int = stop, _state=state, _first=first_call) -> torch.Tensor:
            if _first[0] or generator is None:
                _first[0] = False
                for i in range(_start, _stop):
                    z = step_fn(z, i)
                return z
            saved = generator.get_state()
            generator.set_state(_state)
            try:
                for i in range(_start, _stop):
                    z = step_fn(z, i)
            finally:
                generator.set_state(saved)
            return z

        x = checkpoint(segment, x, use_reentrant=False, preserve_rng_state=True)
    return x
