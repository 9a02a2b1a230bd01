"""The attack contract, checked on every registered attack (``advpure.specs`` kind ``"attack"``), foolbox style.

Every spec name registered with ``@register("attack", NAME)`` must have an entry in :data:`CASES`, else
:func:`test_every_registered_attack_has_a_case` fails and names it. An entry maps the *targets* the attack applies
to (:data:`TARGETS`: the plain digits classifier, a stochastic DiffPure-defended classifier, deterministic and
stochastic DAD-defended classifiers, a CMAP-defended classifier, a two-stage GNSP) to a small spec string, built through the registry
with the context the evaluation runner gives (classifier, dataset, image shape, ``extra["defense"]``,
``extra["surrogate_model"]``, ``extra["surrogate_classifier"]``). Each attack needs at least one deterministic
target unless it is listed in :data:`STOCHASTIC_ONLY` (attacks on a defense that is random by construction).

To pass, ``attack(model, x, y)`` must:

- return a tensor of the input's shape and dtype, detached, inside [0, 1] and inside the threat model
  (``||x_adv - x||_p <= eps`` for the attack's ``norm``/``eps``, tolerance 1e-6);
- leave ``x`` and ``y`` unmodified, and the model's train/eval modes and ``grad_checkpoint`` flags as they were,
  with no gradient left on the model's weights;
- record its cost in ``last_stats``: forward passes per image (> 1: the target, or the parts of it the attack
  runs, was queried beyond the validation pass; an attack whose gradients come from a surrogate process may count
  those passes in ``surrogate_forwards_per_image`` instead; attacks in :data:`NO_TARGET_QUERIES` are exempt),
  iterations >= 1, and the EOT it used (the attack's ``eot`` for a stochastic model, 1 for a deterministic one);
- against a deterministic model, not raise its accuracy above the clean accuracy (the batch mixes correctly and
  wrongly classified images). Attacks run as the evaluation runner runs them: ``early_stop=True`` unless the spec
  says otherwise (it must then be ignored for stochastic models).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from advpure.defenses import DefendedClassifier
from advpure.specs import SpecContext, build, names

ZOO = Path(__file__).resolve().parents[2] / "zoo"
_DAD = (f"kernel={ZOO / 'digits-dad-kernel.safetensors'},denoiser={ZOO / 'digits-dad-denoiser.safetensors'},"
        "reference=50")

#: target name -> defense spec of the defended classifier (None: the plain classifier)
TARGETS: dict[str, str | None] = {
    "classifier": None,                                                  # deterministic
    "diffpure": "diffpure:t=0.05,steps=2",                               # stochastic
    "dad-det": f"dad:{_DAD},mode=sample,calib=50,fpr=0.5,noise_std=0",  # deterministic gate
    "dad": f"dad:{_DAD},noise_std=0.25",                                 # stochastic (permutation test, noise)
    "cmap": "cmap:k=2,iterations=2",                                     # stochastic
    "gnsp": "gnsp:stages=30|60,steps=2",                                 # stochastic (two stages)
}
#: the eps the cases use, per norm (digits are 8x8: larger budgets than CIFAR-10's so that attacks bite)
EPS_LINF, EPS_L2 = 0.2, 1.5
_PGD = f"eps={EPS_LINF},steps=3,step_size=0.1,seed=0"

#: registry name -> {target: spec}
CASES: dict[str, dict[str, str]] = {
    "pgd": {"classifier": f"pgd:{_PGD}", "diffpure": f"pgd:{_PGD},eot=2"},
    "apgd": {"classifier": f"apgd:eps={EPS_LINF},steps=4,seed=0",
             "diffpure": f"apgd:norm=l2,eps={EPS_L2},steps=3,eot=2,seed=0"},
    "apgd-ce": {"classifier": f"apgd-ce:norm=l2,eps={EPS_L2},steps=4,seed=0"},
    "apgd-dlr": {"classifier": f"apgd-dlr:eps={EPS_LINF},steps=4,seed=0",
                 "diffpure": f"apgd-dlr:eps={EPS_LINF},steps=3,eot=2,seed=0"},
    "apgd-t": {"classifier": f"apgd-t:eps={EPS_LINF},steps=3,n_target_classes=2,seed=0",
               "diffpure": f"apgd-t:eps={EPS_LINF},steps=2,n_target_classes=2,eot=2,seed=0"},
    "bpda": {"dad-det": f"bpda:{_PGD}", "diffpure": f"bpda:{_PGD},eot=2"},
    "surrogate": {"classifier": f"surrogate:{_PGD}", "diffpure": f"surrogate:{_PGD},eot=2"},
    "transfer": {"classifier": f"transfer:{_PGD}", "diffpure": f"transfer:{_PGD}"},
    "square": {"classifier": f"square:eps={EPS_LINF},n_queries=20", "diffpure": f"square:eps={EPS_LINF},n_queries=5"},
    "cw": {"classifier": f"cw:eps={EPS_L2},steps=5,binary_steps=2,lr=0.05",
           "diffpure": f"cw:eps={EPS_L2},steps=2,binary_steps=1,lr=0.05"},
    "standard": {"classifier": f"standard:eps={EPS_LINF},steps=2,eot=1,full_steps=2",
                 "diffpure": f"standard:eps={EPS_LINF},steps=1,eot=2,full_steps=1,select_draws=2"},
    "lite": {"classifier": f"lite:eps={EPS_LINF},steps=2,eot=1,full_steps=2",
             "diffpure": f"lite:eps={EPS_LINF},steps=2,eot=2,select_draws=2"},
    "dad-adaptive": {"dad-det": f"dad-adaptive:eps={EPS_LINF},steps=2,eot=1,seed=0",
                     "dad": f"dad-adaptive:eps={EPS_LINF},steps=2,eot=2,seed=0"},
    "dad-denoiser": {"dad-det": f"dad-denoiser:norm=l2,eps={EPS_L2},steps=2,eot=1,seed=0",
                     "dad": f"dad-denoiser:eps={EPS_LINF},steps=2,eot=2,seed=0"},
    "detector-aware": {"dad-det": f"detector-aware:eps={EPS_LINF},steps=3,seed=0",
                       "dad": f"detector-aware:eps={EPS_LINF},steps=2,seed=0"},
    "cmap-disruption": {"cmap": f"cmap-disruption:eps={EPS_LINF},steps=2,seed=0"},
    "diffattack": {"gnsp": f"diffattack:eps={EPS_LINF},steps=2,eot=2,seed=0"},
}
#: attacks designed against a defense that is stochastic by construction (no deterministic target exists)
STOCHASTIC_ONLY = {"cmap-disruption", "diffattack"}
#: attacks that by design never query the attacked model beyond validating the call
NO_TARGET_QUERIES = {"transfer"}
#: attacks that only apply when an optional package is installed: name -> package (importorskip'd per case)
OPTIONAL: dict[str, str] = {}

DETERMINISTIC_TARGETS = {"classifier", "dad-det"}
VARIANTS = [(name, target) for name in sorted(CASES) for target in sorted(CASES[name])]


def test_every_registered_attack_has_a_case():
    reg, have = set(names("attack")), set(CASES)
    assert have == reg, (f"registered attacks without a contract case: {sorted(reg - have)} (add them to CASES in "
                         f"{__file__}); cases for names no longer registered: {sorted(have - reg)}")


def test_every_case_is_well_formed():
    for name, targets in CASES.items():
        assert targets and set(targets) <= set(TARGETS), (name, targets)
        if name not in STOCHASTIC_ONLY:
            assert set(targets) & DETERMINISTIC_TARGETS, f"{name}: no deterministic target (or list in STOCHASTIC_ONLY)"
        for spec in targets.values():
            assert spec.split(":")[0] == name, (name, spec)


# --------------------------------------------------------------------------- shared fixtures
@pytest.fixture(scope="module")
def env():
    from advpure.data import load_dataset
    from advpure.models import load_classifier

    clf = load_classifier(ZOO / "digits-small-cnn.safetensors")
    test = load_dataset("digits", "test")
    xs, ys = test.tensors()
    with torch.no_grad():
        right = clf(xs).argmax(1) == ys
    # six correctly classified images and two misclassified ones: "accuracy does not rise" can then fail
    idx = torch.cat([right.nonzero().flatten()[:6], (~right).nonzero().flatten()[:2]])
    assert idx.numel() == 8
    x, y = xs[idx].contiguous(), ys[idx].contiguous()
    ctx = SpecContext(classifier=clf, dataset="digits", image_shape=tuple(x.shape[1:]))
    return {"clf": clf, "x": x, "y": y, "ctx": ctx, "targets": {}}


def _target(env, name: str):
    """(model, runner-style SpecContext for attack specs) of a target, built once."""
    if name in env["targets"]:
        return env["targets"][name]
    from advpure.models import load_classifier

    clf, base = env["clf"], env["ctx"]
    spec = TARGETS[name]
    defense = None if spec is None else build("defense", spec, base)
    model = clf if defense is None else DefendedClassifier(clf, defense, seed=0)
    model.eval()
    # a cheaper surrogate process of the defense (Lee & Kim 2023), as --surrogate-defense would give
    if getattr(defense, "steps_arg", None) is not None:
        surrogate = DefendedClassifier(clf, defense.with_steps(1), seed=1).eval()
    elif defense is not None:
        surrogate = DefendedClassifier(clf, build("defense", "none", base)).eval()
    else:
        surrogate = clf
    extra = {"defense": defense, "model": model, "surrogate_model": surrogate,
             "surrogate_classifier": load_classifier(ZOO / "digits-small-cnn.safetensors").eval()}
    ctx = SpecContext(classifier=clf, dataset=base.dataset, image_shape=base.image_shape, extra=extra)
    env["targets"][name] = (model, ctx)
    return model, ctx


def _state(model: torch.nn.Module) -> list:
    return [(m.training, getattr(m, "grad_checkpoint", None)) for m in model.modules()]


# --------------------------------------------------------------------------- the contract
@pytest.mark.parametrize("name, target", VARIANTS, ids=[f"{n}@{t}" for n, t in VARIANTS])
def test_attack_contract(env, name, target):
    if name in OPTIONAL:
        pytest.importorskip(OPTIONAL[name])
    model, ctx = _target(env, target)
    x, y = env["x"], env["y"]
    spec = CASES[name][target]
    attack = build("attack", spec, ctx)
    if "early_stop" not in attack.spec["params"] and hasattr(attack, "early_stop"):
        attack = attack.replace(early_stop=True)  # the runner's default protocol (advpure.eval.protocol)
    stochastic = bool(getattr(model, "stochastic", False))
    assert stochastic == (target not in DETERMINISTIC_TARGETS), (target, stochastic)

    x0, y0, state0 = x.clone(), y.clone(), _state(model)
    for p in model.parameters():
        p.grad = None
    x_adv = attack(model, x, y)

    # inputs and model untouched
    assert torch.equal(x, x0) and torch.equal(y, y0), f"{spec}: the attack modified its inputs"
    assert _state(model) == state0, f"{spec}: the attack left the model's modes / grad_checkpoint changed"
    got = [n for n, p in model.named_parameters() if p.grad is not None]
    assert not got, f"{spec}: the attack left gradients on the model's weights: {got[:4]}"

    # shape, dtype, range, threat model
    assert isinstance(x_adv, torch.Tensor) and x_adv.shape == x.shape and x_adv.dtype == x.dtype, spec
    assert not x_adv.requires_grad, f"{spec}: returned a tensor attached to a graph"
    assert bool(torch.isfinite(x_adv).all())
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0, f"{spec}: x_adv leaves [0, 1]"
    d = (x_adv - x).flatten(1)
    norm, eps = attack.norm, attack.eps
    assert norm in ("linf", "l2") and math.isfinite(eps), (spec, norm, eps)
    size = d.abs().max(1).values if norm == "linf" else d.norm(dim=1)
    assert float(size.max()) <= eps + 1e-6, f"{spec}: perturbation {float(size.max()):.6g} > {norm} eps {eps:g}"

    # cost recorded
    st = attack.last_stats
    fpi = float(st.forwards_per_image)
    assert math.isfinite(fpi) and fpi >= 1, f"{spec}: forwards_per_image = {fpi}"
    if name not in NO_TARGET_QUERIES:
        # gradients from another model (a surrogate process) are counted apart from the attacked model's forwards
        other = float(getattr(attack, "surrogate_forwards_per_image", 0.0))
        assert fpi > 1 or other > 0, f"{spec}: records no queries of the model beyond validation ({fpi})"
    assert int(st.iterations) >= 1, f"{spec}: records no iterations"
    assert int(st.eot) == (attack.eot if stochastic else 1), f"{spec}: eot recorded {st.eot}, attack eot {attack.eot}"

    # a deterministic model's accuracy cannot rise under attack
    if not stochastic:
        with torch.no_grad():
            clean = (model(x).argmax(1) == y).float().mean()
            adv = (model(x_adv).argmax(1) == y).float().mean()
        assert float(adv) <= float(clean), f"{spec}: accuracy rose from {float(clean):.3f} to {float(adv):.3f}"
