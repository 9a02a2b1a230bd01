"""Checks against gradient masking (Athalye, Carlini & Wagner 2018, sec. 3.1; Carlini et al. 2019,
"On evaluating adversarial robustness", sec. 5; Croce et al. 2022 for stochastic defenses).

Each check returns a row ``{"check", "status" ("PASS" | "WARNING" | "SKIPPED"), "detail"}``; a WARNING
means the robustness number of the run should not be trusted before it is understood.

1. ``randomness``: two passes on the same input differ -> the model is random; the gradient attack must
   use EOT (eot > 1), and the model must declare ``stochastic = True`` (else EOT is silently off).
2. ``gradients``: the gradient the attack uses is neither NaN nor zero for most samples.
3. ``large_eps``: at a very large epsilon the attack must reach ~0 robust accuracy (unbounded attacks win).
4. ``more_iterations``: twice the steps (and twice the EOT for a random model) must not *raise* robust accuracy.
5. ``black_box``: a gradient-free attack (Square, linf) must not beat the white-box attack.

All run on a small subset (``n`` samples) so they are cheap; sizes are options of :func:`run_sanity_checks`.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..attacks.base import Attack, is_stochastic
from ..attacks.square import Square
from .protocol import correct_draws

PASS, WARN, SKIP = "PASS", "WARNING", "SKIPPED"


def _row(check: str, status: str, detail: str, **values) -> dict:
    return {"check": check, "status": status, "detail": detail, **values}


def check_randomness(model: nn.Module, attack: Attack, x: torch.Tensor) -> dict:
    with torch.no_grad():
        a, b = model(x), model(x)
    random = not torch.allclose(a, b, rtol=0, atol=1e-6)
    declared = is_stochastic(model)
    eot = attack.effective_eot(model) if attack.gradient_based else None
    vals = {"random": random, "declared_stochastic": declared, "eot": eot}
    if random and not declared:
        return _row("randomness", WARN, "outputs differ between passes but the model does not declare "
                    "stochastic=True, so no EOT is applied", **vals)
    if random and attack.gradient_based and (eot or 1) <= 1:
        return _row("randomness", WARN, "randomness detected but the gradient attack uses EOT=1 "
                    "(set eot=20 or more)", **vals)
    if random:
        return _row("randomness", PASS, f"randomness detected; EOT={eot}" if eot else "randomness detected; "
                    "attack is gradient-free", **vals)
    return _row("randomness", PASS, "deterministic model (EOT not needed)", **vals)


def check_gradients(model: nn.Module, attack: Attack, x: torch.Tensor, y: torch.Tensor,
                    max_zero_fraction: float = 0.5) -> dict:
    if not attack.gradient_based:
        return _row("gradients", SKIP, f"{attack.name} does not use gradients")
    gm_fn = getattr(attack, "gradient_model", None)
    gm = gm_fn(model) if callable(gm_fn) else model
    xr = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(gm(xr), y, reduction="sum")
        g, = torch.autograd.grad(loss, xr)
    flat = g.flatten(1)
    nan = int((~torch.isfinite(flat)).any(1).sum())
    zero = float((torch.nan_to_num(flat).abs().amax(1) == 0).float().mean())
    vals = {"nan_samples": nan, "zero_fraction": zero}
    if nan:
        return _row("gradients", WARN, f"{nan} sample(s) with NaN/Inf gradients", **vals)
    if zero > max_zero_fraction:
        return _row("gradients", WARN, f"{zero:.0%} of samples have an exactly zero gradient "
                    "(shattered/vanishing gradients: try BPDA or a margin loss)", **vals)
    return _row("gradients", PASS, f"finite, zero for {zero:.0%} of samples", **vals)


def run_sanity_checks(model: nn.Module, attack: Attack, x: torch.Tensor, y: torch.Tensor, *, draws: int = 1,
                      large_eps: float | None = None, large_eps_max_acc: float = 0.1, square_queries: int = 200,
                      tolerance: float | None = None,
                      reseed: Callable[[int], None] | None = None) -> list[dict]:
    """Run the five checks on (x, y); ``reseed(i)`` is called before each attack run for reproducibility."""
    n = x.shape[0]
    tol = tolerance if tolerance is not None else max(2.0 / n, 0.05)
    rs = reseed or (lambda i: None)
    rows = [check_randomness(model, attack, x), check_gradients(model, attack, x, y)]

    def robust_acc(att: Attack, i: int) -> float:
        rs(i)
        xa = att(model, x, y)
        return float(correct_draws(model, xa, y, draws).float().mean())

    base = robust_acc(attack, 1)
    # 3. large epsilon
    if attack.eps == float("inf"):
        rows.append(_row("large_eps", SKIP, f"{attack.name} is unbounded"))
    else:
        d = x[0].numel()
        big = large_eps if large_eps is not None else (0.5 if attack.norm == "linf" else 0.25 * d ** 0.5)
        changes: dict = {"eps": big}
        inner = attack
        for attr in ("base", "pgd"):
            inner = getattr(inner, attr, inner)
        if hasattr(inner, "step_size") and hasattr(inner, "steps"):
            changes["step_size"] = 2.5 * big / inner.steps
        try:
            acc = robust_acc(attack.replace(**changes), 2)
            status = PASS if acc <= large_eps_max_acc else WARN
            rows.append(_row("large_eps", status, f"robust accuracy {acc:.1%} at {attack.norm} eps={big:.3g} "
                             f"(expected <= {large_eps_max_acc:.0%})", eps=big, robust_acc=acc))
        except ValueError as e:
            rows.append(_row("large_eps", SKIP, str(e)))
    # 4. more iterations / EOT
    if hasattr(attack, "steps"):
        ch: dict = {"steps": 2 * attack.steps}
        if is_stochastic(model) and attack.gradient_based:
            ch["eot"] = 2 * attack.eot
        more = robust_acc(attack.replace(**ch), 1)  # same random start as the base run
        status = WARN if more > base + tol else PASS
        rows.append(_row("more_iterations", status, f"robust accuracy {base:.1%} -> {more:.1%} with "
                         + ", ".join(f"{k}x2" for k in ch), base=base, more=more))
    else:
        rows.append(_row("more_iterations", SKIP, f"{attack.name} has no steps option"))
    # 5. black box
    if attack.name == "square":
        rows.append(_row("black_box", SKIP, "the attack is the black-box attack"))
    elif attack.norm != "linf" or attack.eps == float("inf"):
        rows.append(_row("black_box", SKIP, "Square is implemented for linf only"))
    else:
        sq = Square(eps=attack.eps, n_queries=square_queries, seed=0)
        acc = robust_acc(sq, 4)
        status = WARN if acc < base - tol else PASS
        rows.append(_row("black_box", status, f"Square ({square_queries} queries) {acc:.1%} vs white-box {base:.1%}",
                         square=acc, white_box=base))
    return rows


def any_warning(rows: list[dict]) -> bool:
    return any(r["status"] == WARN for r in rows)
