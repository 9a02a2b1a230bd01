"""The protocol for stochastic defenses gives upper bounds (issue: numbers that are upper bounds).

A toy stochastic defense whose behaviour is known in closed form: the classifier says class 1 when the mean
pixel of ``x + noise`` exceeds 0.5 (noise N(0, 0.4^2) per pixel, so the mean's noise has std 0.1). Clean
images have mean 0.55: a fresh pass classifies them correctly with probability Phi(0.5) = 0.69. An l_inf attack
with eps 0.2 can move the mean to 0.35, where a fresh pass is correct with probability Phi(-1.5) = 0.07.

The old protocol (early stop on the attack's own 2 noisy draws; images misclassified on one clean pass left
unattacked) is emulated by hiding the randomness from the attack (``stochastic = False`` on a wrapper), which is
exactly what made the attacks use those shortcuts.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from advpure.attacks import PGD, Ensemble
from advpure.defenses import Purifier
from advpure.eval.metrics import interval95, paired_difference
from advpure.eval.protocol import correct_draws


class NoisyMeanModel(nn.Module):
    """logits (N, 2) = [0, 40 (mean(x + noise) - 0.5)]; stochastic through its own generator."""

    stochastic = True

    def __init__(self, sigma: float = 0.4, seed: int = 0) -> None:
        super().__init__()
        self.sigma = sigma
        self.g = torch.Generator().manual_seed(seed)

    def forward(self, x):
        noise = self.sigma * torch.randn(x.shape, generator=self.g)
        m = (x + noise).flatten(1).mean(1)
        z = 40.0 * (m - 0.5)
        return torch.stack([torch.zeros_like(z), z], 1)


class HideRandomness(nn.Module):
    """The same model, declared deterministic: the attack then stops early and skips (the old protocol)."""

    stochastic = False

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)


def _data(n=64):
    x = torch.full((n, 1, 4, 4), 0.55)
    y = torch.ones(n, dtype=torch.long)
    return x, y


def _phi(z):
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


def test_old_protocol_overstates_and_new_one_does_not():
    torch.manual_seed(0)
    model = NoisyMeanModel()
    x, y = _data()
    pgd = dict(eps=0.2, steps=20, step_size=0.02, eot=2, early_stop=True, seed=0)
    x_old = PGD(**pgd)(HideRandomness(model), x, y)
    x_new = PGD(**pgd)(model, x, y)
    fresh = 200
    acc_old = float(correct_draws(model, x_old, y, fresh).float().mean())
    acc_new = float(correct_draws(model, x_new, y, fresh).float().mean())
    # new protocol: every image attacked to the last iterate, mean 0.35, so Phi(-1.5) = 0.067 on fresh draws
    assert abs(acc_new - _phi(-1.5)) < 0.03, acc_new
    # old protocol: images frozen near the boundary or never attacked; far above the truth
    assert acc_old > acc_new + 0.2, (acc_old, acc_new)
    # every returned image was attacked (moved to the edge of the ball), including the ones a clean pass missed
    assert torch.allclose((x_new - x).flatten(1).amin(1), torch.full((64,), -0.2), atol=1e-6)
    # and stays inside the threat model
    assert float((x_new - x).abs().max()) <= 0.2 + 1e-6 and float(x_new.min()) >= 0


def test_deterministic_models_keep_early_stop():
    class Det(nn.Module):
        def forward(self, x):
            z = 40.0 * (x.flatten(1).mean(1) - 0.5)
            return torch.stack([torch.zeros_like(z), z], 1)

    x, y = _data(8)
    x[:2] = 0.45  # misclassified when clean: left unchanged for a deterministic model
    out = PGD(eps=0.2, steps=20, step_size=0.02, early_stop=True, seed=0)(Det(), x, y)
    assert torch.equal(out[:2], x[:2])
    # early stop: the first iterate below 0.5 is kept, not the last one (0.35)
    assert float(out[2:].flatten(1).mean(1).min()) > 0.45


def test_ensemble_selects_on_separate_draws_and_names_the_breaking_attack():
    torch.manual_seed(0)
    model = NoisyMeanModel(seed=1)
    x, y = _data(32)
    weak = PGD(eps=0.2, steps=1, step_size=0.01, eot=1, seed=0)  # moves the mean to 0.54 only
    strong = PGD(eps=0.2, steps=20, step_size=0.02, eot=2, seed=0)
    ens = Ensemble([("weak", weak), ("strong", strong)], select_draws=16)
    out = ens(model, x, y)
    assert len(ens.last_broken_by) == 32
    assert ens.last_broken_by.count("strong") >= 25, ens.last_broken_by
    assert [r["attack"] for r in ens.last_rows] == ["clean", "weak", "strong"]
    acc = float(correct_draws(model, out, y, 200).float().mean())
    assert acc < 0.15, acc
    assert float((out - x).abs().max()) <= 0.2 + 1e-6


def test_ensemble_refuses_mixed_threat_models():
    with pytest.raises(ValueError, match="same threat model"):
        Ensemble([("a", PGD(eps=0.1)), ("b", PGD(eps=0.2))])
    with pytest.raises(ValueError, match="unique"):
        Ensemble([("a", PGD(eps=0.1)), ("a", PGD(eps=0.1))])


def test_intervals_against_hand_values():
    # Wilson interval for 8 of 10 (Wilson 1927; textbook value 0.490-0.943)
    ci = interval95([1.0] * 8 + [0.0] * 2)
    assert ci["low"] == pytest.approx(0.4902, abs=1e-3) and ci["high"] == pytest.approx(0.9433, abs=1e-3)
    # paired difference: 10 images that all went from correct to wrong is significant (McNemar b=10, c=0) ...
    assert paired_difference([1.0] * 10 + [0.0] * 30, [0.0] * 40)["significant"]
    # ... one image of 40 is not
    assert not paired_difference([1.0] + [0.0] * 39, [0.0] * 40)["significant"]


class Quantize(Purifier):
    """Gradient masking by quantisation (Buckman et al. 2018 style): zero gradient almost everywhere."""

    stochastic = False

    def purify(self, x, *, generator=None):
        return torch.round(x * 4) / 4


def test_sanity_checks_fail_on_gradient_masking_at_default_sizes(digits_classifier):
    from advpure.eval.runner import format_markdown, run_eval

    res = run_eval(dataset="digits", classifier=digits_classifier, defense=Quantize(), attack="pgd:eps=0.2,steps=10",
                   n=32, progress=False)  # sanity_n defaults to 32
    rows = {r["check"]: r for r in res["sanity_checks"]}
    assert rows["gradients"]["status"] == "WARNING", rows["gradients"]
    assert rows["black_box"]["status"] == "WARNING", rows["black_box"]
    assert res["publishable"] is False and "gradients" in res["not_publishable_because"]
    assert "NOT PUBLISHABLE" in format_markdown(res)


def test_sanity_refuses_subsets_too_small_to_fail(digits_classifier):
    from advpure.eval.runner import run_eval

    with pytest.raises(ValueError, match="at least 8"):
        run_eval(dataset="digits", classifier=digits_classifier, attack="pgd:eps=0.2,steps=2", n=4, sanity_n=4,
                 progress=False)


def test_convergence_curve_doubles_until_flat():
    from advpure.eval.sanity import convergence_curve

    torch.manual_seed(0)
    model = NoisyMeanModel(seed=2)
    x, y = _data(32)
    # 1 step of 0.02 moves the mean to 0.53 only; doubling keeps lowering accuracy until the ball's edge (0.35)
    att = PGD(eps=0.2, steps=1, step_size=0.05, eot=1, seed=0)
    res = convergence_curve(model, att, x, y, draws=50, max_factor=16)
    acc = [p["robust"] for p in res["curve"]]
    assert acc[0] > acc[-1] + 0.3 and res["converged"], res
    assert [p["factor"] for p in res["curve"]][:3] == [1, 2, 4]
    # a budget that stops before the plateau is reported as not converged
    short = convergence_curve(model, PGD(eps=0.2, steps=1, step_size=0.01, eot=1, seed=0), x, y, draws=50, max_factor=2)
    assert not short["converged"] and len(short["curve"]) == 2


def test_run_eval_reports_convergence(digits_classifier):
    from advpure.eval.runner import format_markdown, run_eval

    res = run_eval(dataset="digits", classifier=digits_classifier, attack="pgd:eps=0.2,steps=1,step_size=0.02",
                   n=8, sanity=False, sanity_n=8, convergence=True, convergence_max_factor=8, progress=False)
    conv = res["convergence"]
    assert conv["curve"][0]["factor"] == 1 and conv["curve"][0]["robust"] == res["robust_accuracy"]["mean"]
    assert len(conv["curve"]) >= 2 and "convergence" in format_markdown(res)


def test_attack_object_protocol_is_reported_as_run(digits_classifier):
    """An attack object passed to run_eval is described with its own early_stop setting (it used to be reported as
    early-stopping when it ran without)."""
    from advpure.eval.runner import run_eval

    res = run_eval(dataset="digits", classifier=digits_classifier, attack=PGD(eps=0.2, steps=2, early_stop=False),
                   n=8, sanity=False, progress=False)
    assert res["protocol"]["early_stop"] is False and res["protocol"]["early_stop_applied"] is False
    assert "last iterate" in res["protocol"]["statement"]
