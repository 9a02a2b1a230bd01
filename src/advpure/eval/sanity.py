"""Checks against gradient masking (Athalye, Carlini & Wagner 2018, sec. 3.1; Carlini et al. 2019,
"On evaluating adversarial robustness", sec. 5; Croce et al. 2022 for stochastic defenses).

Each check returns a row ``{"check", "status" ("PASS" | "WARNING" | "SKIPPED"), "detail"}``; a WARNING
means the robustness number of the run should not be trusted before it is understood.

1. ``randomness``: two passes on the same input differ -> the model is random; the gradient attack must
   use EOT (eot > 1), and the model must declare ``stochastic = True`` (else EOT is silently off).
2. ``gradients``: the gradient the attack uses is neither NaN nor zero for most samples.
3. ``large_eps``: at a very large epsilon the attack must reach ~0 robust accuracy (unbounded attacks win).
   **Blocking** (with ``gradients``): a run whose check warns is marked not publishable (the table says so).
4. ``more_iterations``: twice the steps (and twice the EOT for a random model) must not change robust accuracy
   beyond the 95% interval of the paired difference: a significant drop means the attack had not converged, a
   significant rise that something is off (e.g. gradient masking).
5. ``black_box``: a gradient-free attack (Square, linf) must not beat the white-box attack beyond the 95%
   interval of the paired difference.

Comparisons are paired per image (the same images under both attacks; per image the share of draws classifying
it correctly), so that a difference counts when the images that changed outnumber chance (for a deterministic
model this is McNemar's test), instead of a fixed tolerance. The default subset is 32 images
(:func:`advpure.eval.runner.run_eval`'s ``sanity_n``); a smaller subset is refused below 8 images.
:func:`convergence_curve` doubles steps x EOT until robust accuracy is flat within its 95% interval.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..attacks.base import Attack, is_stochastic
from ..attacks.square import Square
from .metrics import paired_difference
from .protocol import correct_draws

PASS, WARN, SKIP = "PASS", "WARNING", "SKIPPED"
#: checks whose warning blocks publication of the row
BLOCKING = ("large_eps", "gradients")
MIN_SANITY_N = 8


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
                      reseed: Callable[[int], None] | None = None,
                      base_scores: Sequence[float] | None = None) -> list[dict]:
    """Run the five checks on (x, y); ``reseed(i)`` is called before each attack run for reproducibility.

    ``base_scores``: per image, the share of draws classifying the attack's output correctly, when the caller has
    already attacked these images (the runner passes its own results), so the base attack is not run twice."""
    n = x.shape[0]
    if n < MIN_SANITY_N:
        raise ValueError(f"sanity checks: need at least {MIN_SANITY_N} images to be able to fail, got {n} "
                         "(raise --sanity-n, or --no-sanity)")
    rs = reseed or (lambda i: None)
    rows = [check_randomness(model, attack, x), check_gradients(model, attack, x, y)]

    def scores(att: Attack, i: int) -> list[float]:
        rs(i)
        xa = att(model, x, y)
        return correct_draws(model, xa, y, draws).float().mean(0).tolist()

    if base_scores is not None:
        if len(base_scores) != n:
            raise ValueError(f"base_scores: expected {n} values, got {len(base_scores)}")
        base_s = [float(v) for v in base_scores]
    else:
        base_s = scores(attack, 1)
    base = sum(base_s) / n
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
        if hasattr(inner, "step_size") and hasattr(inner, "steps") or hasattr(attack, "attacks"):
            changes["step_size"] = 2.5 * big / max(1, getattr(inner, "steps", 1))
        try:
            acc_s = scores(attack.replace(**changes), 2)
            acc = sum(acc_s) / n
            status = PASS if acc <= large_eps_max_acc else WARN
            rows.append(_row("large_eps", status, f"robust accuracy {acc:.1%} at {attack.norm} eps={big:.3g} "
                             f"(expected <= {large_eps_max_acc:.0%}; blocks publication when above)",
                             eps=big, robust_acc=acc))
        except ValueError as e:
            rows.append(_row("large_eps", SKIP, str(e)))
    # 4. more iterations / EOT
    if hasattr(attack, "steps"):
        ch: dict = {"steps": 2 * attack.steps}
        if is_stochastic(model) and attack.gradient_based:
            ch["eot"] = 2 * attack.eot
        more_s = scores(attack.replace(**ch), 1)  # same random start as the base run
        more = sum(more_s) / n
        pd = paired_difference(base_s, more_s)
        if pd["significant"] and pd["diff"] < 0:
            status, what = WARN, "not converged: more iterations lower robust accuracy beyond the 95% interval"
        elif pd["significant"]:
            status, what = WARN, "more iterations raise robust accuracy beyond the 95% interval"
        else:
            status, what = PASS, "within the 95% interval"
        rows.append(_row("more_iterations", status, f"robust accuracy {base:.1%} -> {more:.1%} with "
                         + ", ".join(f"{k}x2" for k in ch) + f" ({what}, +-{pd['half_width']:.1%})",
                         base=base, more=more, half_width=pd["half_width"]))
    else:
        rows.append(_row("more_iterations", SKIP, f"{attack.name} has no steps option"))
    # 5. black box
    if attack.name == "square":
        rows.append(_row("black_box", SKIP, "the attack is the black-box attack"))
    elif attack.norm != "linf" or attack.eps == float("inf"):
        rows.append(_row("black_box", SKIP, "Square is implemented for linf only"))
    else:
        sq = Square(eps=attack.eps, n_queries=square_queries, seed=0)
        sq_s = scores(sq, 4)
        acc = sum(sq_s) / n
        pd = paired_difference(base_s, sq_s)
        status = WARN if pd["significant"] and pd["diff"] < 0 else PASS
        rows.append(_row("black_box", status, f"Square ({square_queries} queries) {acc:.1%} vs white-box {base:.1%} "
                         f"(+-{pd['half_width']:.1%})", square=acc, white_box=base, half_width=pd["half_width"]))
    return rows


def convergence_curve(model: nn.Module, attack: Attack, x: torch.Tensor, y: torch.Tensor, *, draws: int = 1,
                      max_factor: int = 8, reseed: Callable[[int], None] | None = None,
                      base_scores: Sequence[float] | None = None, progress: bool = False) -> dict:
    """Robust accuracy on (x, y) with the attack's steps (and EOT, for a stochastic model) multiplied by 1, 2, 4, ...
    until one doubling changes it by less than the 95% interval of the paired per-image difference (converged) or
    the factor would exceed ``max_factor`` (not converged). ``base_scores``: the factor-1 per-image scores when
    the caller already has them. Returns ``{"curve": [{"factor", "steps", "eot", "robust"}], "converged",
    "last_change", "half_width", "n"}``."""
    if not hasattr(attack, "steps"):
        raise ValueError(f"convergence: attack {attack.name} has no steps option")
    if max_factor < 2:
        raise ValueError(f"convergence: max_factor must be >= 2, got {max_factor}")
    rs = reseed or (lambda i: None)

    def run(f: int, i: int) -> list[float]:
        ch: dict = {"steps": attack.steps * f}
        if is_stochastic(model) and attack.gradient_based:
            ch["eot"] = attack.eot * f
        att = attack.replace(**ch) if f != 1 else attack
        rs(i)
        out = correct_draws(model, att(model, x, y), y, draws).float().mean(0).tolist()
        curve.append({"factor": f, "steps": ch["steps"], "eot": ch.get("eot", attack.eot), "robust": sum(out) / len(out)})
        if progress:
            print(f"convergence: steps x{f}: robust {curve[-1]['robust']:.1%}", flush=True)
        return out

    curve: list[dict] = []
    prev = [float(v) for v in base_scores] if base_scores is not None else None
    if prev is not None:
        curve.append({"factor": 1, "steps": attack.steps, "eot": attack.eot, "robust": sum(prev) / len(prev)})
    else:
        prev = run(1, 0)
    f, i = 2, 1
    pd = {"diff": 0.0, "half_width": 0.0, "significant": True}
    while f <= max_factor:
        cur = run(f, i)
        pd = paired_difference(prev, cur)
        prev = cur
        if not pd["significant"]:
            break
        f, i = 2 * f, i + 1
    return {"curve": curve, "converged": not pd["significant"], "last_change": pd["diff"],
            "half_width": pd["half_width"], "n": len(prev)}


def any_warning(rows: list[dict]) -> bool:
    return any(r["status"] == WARN for r in rows)
