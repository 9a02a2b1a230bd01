"""The defense contract, checked on every registered defense (``advpure.specs`` kind ``"defense"``).

One parametrised suite in the spirit of diffusers' ``SchedulerCommonTest``: every spec name registered with
``@register("defense", NAME)`` must have an entry in :data:`CASES` (a list of small-but-real spec strings, built
through the registry on the committed digits zoo models), else :func:`test_every_registered_defense_has_a_case`
fails and names it. To pass, a new defense (the object its factory returns) must:

- be a :class:`advpure.defenses.Purifier` mapping float [0, 1] NCHW images to finite images of the same shape,
  dtype and range, without modifying its input;
- draw its randomness only from the ``generator`` it is given: the same seed gives the same output, torch's
  global RNG is left untouched, and another seed gives another output exactly when ``stochastic`` is true;
- be differentiable: a finite, non-zero input gradient; the output with gradients recorded equals the one
  under ``torch.no_grad`` (same seed); no gradient lands on the defense's own (frozen) weights;
- give the same input gradient with ``grad_checkpoint=True`` on every submodule that has the attribute;
- report its cost, ``nfe`` > 0 network evaluations per image (0 only for ``none``), and ``describe()`` a
  JSON-serialisable dict;
- compose: ``DefendedClassifier(classifier, defense)(x)`` is finite (N, classes) logits, reproducible per seed;
- when it is a detect-then-purify gate (has ``detect``): ``detect`` returns (N,) booleans and inputs it does not
  flag come back unchanged.
- support ``replace(**changes)`` (:meth:`advpure.defenses.Purifier.replace`): with no change, a new object with an
  equal ``describe()``, the same output for the same generator and the same networks (shared, not copied); a
  changed constructor argument shows in the copy's ``describe()`` and leaves the original as it was; an unknown
  name is a ValueError that lists the valid ones. Every registered defense needs an entry in :data:`REPLACE_CASES`;
  a defense that names ``steps_arg`` gets ``with_steps`` as ``replace`` on it.

Detectors registered as their own kind (``"detector"``) must have an entry in :data:`DETECTOR_CASES`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from advpure.defenses import DefendedClassifier, Purifier
from advpure.specs import SpecContext, build, names

ZOO = Path(__file__).resolve().parents[2] / "zoo"
_DAD = (f"kernel={ZOO / 'digits-dad-kernel.safetensors'},denoiser={ZOO / 'digits-dad-denoiser.safetensors'},"
        "reference=50")

#: registry name -> small spec strings built on the digits zoo models (default model= for dataset "digits")
CASES: dict[str, list[str]] = {
    "none": ["none"],
    "diffpure": ["diffpure:t=0.05,steps=3"],
    "gdmp": ["gdmp:t=0.01,steps=2,iterations=2,guide=ssim", "gdmp:t=0.01,steps=2,iterations=2,guide=mse"],
    "gnsp": ["gnsp:stages=10|20,steps=2", "gnsp:stages=10|20,steps=2,sampler=sde"],
    "ssni": ["ssni:t=0.05,steps=2", "ssni:mode=L,t=0.05,steps=2,differentiable=true"],
    "cmap": ["cmap:k=2,iterations=3"],
    "diffpure+cmap": ["diffpure+cmap:t=0.05,steps=2,k=2,iterations=2"],
    "distribution-transfer": ["distribution-transfer:t=0.01,steps=2"],
    # per-sample gate (threshold at the clean median: some inputs flagged, some not) and the paper's batch test
    "dad": [f"dad:{_DAD},mode=sample,calib=50,fpr=0.5", f"dad:{_DAD}"],
}
#: specs tested on a batch of off-manifold (inverted) digits only: DAD's batch test keeps a mixed batch of six
#: (too little power), and a gate is random only on the inputs it purifies
OFF_MANIFOLD_INPUT = {f"dad:{_DAD}"}
#: registry name -> [(changes for replace(), or a function of the defense giving them; a check on the copy's
#: describe() that the change shows)]; an empty list for a defense without constructor arguments
REPLACE_CASES: dict[str, list] = {
    "none": [],
    "diffpure": [({"n_steps": 2}, lambda d: d["n_steps"] == 2 and d["nfe"] == 2),
                 ({"sampler": "ddim"}, lambda d: d["solver"].startswith("deterministic DDIM"))],
    "gdmp": [({"iterations": 1}, lambda d: d["iterations"] == 1), ({"scale": 7.0}, lambda d: d["scale"] == 7.0)],
    "gnsp": [({"steps": 1}, lambda d: [n for _, n in d["stages"]] == [1, 1]),
             ({"steps": [1, 3]}, lambda d: [n for _, n in d["stages"]] == [1, 3])],
    # SSNI's own argument, and one it passes on to the purifier it wraps
    "ssni": [({"tau": 0.5}, lambda d: d["tau"] == 0.5), ({"n_steps": 1}, lambda d: d["base"]["n_steps"] == 1)],
    "cmap": [({"iterations": 1}, lambda d: d["iterations"] == 1 and d["nfe"] == 4)],
    "diffpure+cmap": [(lambda c: {"purifiers": tuple(c.stages)[:1]}, lambda d: len(d["stages"]) == 1)],
    "distribution-transfer": [({"phi": 0.5}, lambda d: d["phi"] == 0.5)],
    "dad": [({"noise_std": 0.1}, lambda d: d["noise_std"] == 0.1)],
}
#: registry name -> spec strings for the "detector" kind (none registered yet)
DETECTOR_CASES: dict[str, list[str]] = {}
#: defenses that legitimately cost nothing
FREE = {"none"}
#: detect-then-purify gates (a ``detect`` method); checked by test_gate_passes_unflagged_inputs_unchanged
GATES = {"dad"}

VARIANTS = [(name, spec) for name in sorted(CASES) for spec in CASES[name]]
IDS = [f"{name}-{i}" for name in sorted(CASES) for i in range(len(CASES[name]))]


def _missing(cases: dict, kind: str) -> str:
    reg, have = set(names(kind)), set(cases)
    return (f"registered {kind}s without a contract case: {sorted(reg - have)} (add them to CASES in {__file__}); "
            f"cases for names no longer registered: {sorted(have - reg)}")


def test_every_registered_defense_has_a_case():
    assert set(CASES) == set(names("defense")), _missing(CASES, "defense")


def test_every_registered_defense_has_a_replace_case():
    assert set(REPLACE_CASES) == set(names("defense")), _missing(REPLACE_CASES, "defense")


def test_every_registered_detector_has_a_case():
    assert set(DETECTOR_CASES) == set(names("detector")), _missing(DETECTOR_CASES, "detector")


# --------------------------------------------------------------------------- shared fixtures
@pytest.fixture(scope="module")
def env():
    from advpure.data import load_dataset
    from advpure.models import load_classifier

    clf = load_classifier(ZOO / "digits-small-cnn.safetensors")
    test = load_dataset("digits", "test")
    x, _ = test.batch(torch.arange(6))
    # three digits and three inverted digits (off the data manifold, so gates flag some inputs)
    mixed = torch.cat([x[:3], 1.0 - x[3:]]).contiguous()
    ctx = SpecContext(classifier=clf, dataset="digits", image_shape=tuple(x.shape[1:]))
    return {"clf": clf, "mixed": mixed, "off": (1.0 - x).contiguous(), "ctx": ctx, "built": {}}


def _setup(env, spec):
    """(defense, input batch) of a case."""
    if spec not in env["built"]:
        env["built"][spec] = build("defense", spec, env["ctx"])
    return env["built"][spec], env["off" if spec in OFF_MANIFOLD_INPUT else "mixed"]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _set_checkpoint(d: torch.nn.Module, on: bool) -> list:
    saved = [(m, m.grad_checkpoint) for m in d.modules() if hasattr(m, "grad_checkpoint")]
    for m, _ in saved:
        m.grad_checkpoint = on
    return saved


# --------------------------------------------------------------------------- the contract
@pytest.mark.parametrize("name, spec", VARIANTS, ids=IDS)
def test_maps_images_to_images(env, name, spec):
    d, x = _setup(env, spec)
    assert isinstance(d, Purifier), f"{spec}: expected a Purifier, got {type(d).__name__}"
    x0 = x.clone()
    with torch.no_grad():
        y = d(x, generator=_gen(1))
    assert torch.equal(x, x0), f"{spec}: the defense modified its input"
    assert isinstance(y, torch.Tensor) and y.shape == x.shape and y.dtype == x.dtype, (spec, y.shape, y.dtype)
    assert bool(torch.isfinite(y).all()), f"{spec}: non-finite output"
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0, f"{spec}: output in [{float(y.min())}, {float(y.max())}]"


@pytest.mark.parametrize("name, spec", VARIANTS, ids=IDS)
def test_randomness_only_through_the_generator(env, name, spec):
    d, x = _setup(env, spec)
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    with torch.no_grad():
        a = d(x, generator=_gen(1))
        b = d(x, generator=_gen(1))
        c = d(x, generator=_gen(2))
    assert torch.equal(torch.get_rng_state(), before), f"{spec}: drew from torch's global RNG despite a generator"
    assert torch.equal(a, b), f"{spec}: same generator seed, different outputs"
    stochastic = bool(d.stochastic)
    if stochastic:
        assert not torch.equal(a, c), f"{spec}: declares stochastic=True but two seeds give the same output"
    else:
        assert torch.equal(a, c), f"{spec}: declares stochastic=False but two seeds give different outputs"


@pytest.mark.parametrize("name, spec", VARIANTS, ids=IDS)
def test_differentiable(env, name, spec):
    d, x = _setup(env, spec)
    xg = x.clone().requires_grad_(True)
    y = d(xg, generator=_gen(3))
    w = torch.linspace(-1, 1, x[0].numel()).view(1, *x.shape[1:])
    (y * w).sum().backward()
    g = xg.grad
    assert g is not None and bool(torch.isfinite(g).all()), f"{spec}: non-finite input gradient"
    assert float(g.abs().sum()) > 0, f"{spec}: zero input gradient"
    with torch.no_grad():
        y_ng = d(x, generator=_gen(3))
    assert torch.allclose(y.detach(), y_ng, atol=1e-5), \
        f"{spec}: output with gradients differs from the no-grad output by {float((y.detach() - y_ng).abs().max()):.3g}"
    got = [n for n, p in d.named_parameters() if p.grad is not None]
    assert not got, f"{spec}: backward left gradients on the defense's own weights: {got[:5]}"


@pytest.mark.parametrize("name, spec", VARIANTS, ids=IDS)
def test_grad_checkpoint_gives_the_same_gradient(env, name, spec):
    d, x = _setup(env, spec)
    if not any(hasattr(m, "grad_checkpoint") for m in d.modules()):
        pytest.skip(f"{spec}: no grad_checkpoint attribute (nothing to checkpoint)")
    grads = []
    saved = _set_checkpoint(d, False)
    try:
        for on in (False, True):
            _set_checkpoint(d, on)
            xg = x.clone().requires_grad_(True)
            d(xg, generator=_gen(4)).pow(2).sum().backward()
            grads.append(xg.grad)
    finally:
        for m, v in saved:
            m.grad_checkpoint = v
    scale = float(grads[0].abs().max())
    assert torch.allclose(grads[0], grads[1], atol=1e-5 * max(1.0, scale), rtol=1e-4), \
        f"{spec}: checkpointed gradient differs by {float((grads[0] - grads[1]).abs().max()):.3g}"


@pytest.mark.parametrize("name, spec", VARIANTS, ids=IDS)
def test_reports_cost_and_description(env, name, spec):
    d, _ = _setup(env, spec)
    nfe = float(d.nfe)
    assert math.isfinite(nfe) and nfe >= 0, f"{spec}: nfe = {nfe}"
    if name not in FREE:
        assert nfe > 0, f"{spec}: reports no network evaluations (nfe = {nfe})"
    desc = d.describe()
    assert isinstance(desc, dict) and desc, f"{spec}: describe() returned {desc!r}"
    json.dumps(desc)  # raises TypeError when not serialisable
    assert isinstance(d.stochastic, bool) or d.stochastic in (0, 1)


@pytest.mark.parametrize("name, spec", VARIANTS, ids=IDS)
def test_defended_classifier_gives_logits(env, name, spec):
    (d, x), clf = _setup(env, spec), env["clf"]
    with torch.no_grad():
        n_classes = clf(x).shape[1]
        a = DefendedClassifier(clf, d, seed=5)(x)
        b = DefendedClassifier(clf, d, seed=5)(x)
    assert a.shape == (x.shape[0], n_classes) and bool(torch.isfinite(a).all()), (spec, a.shape)
    assert torch.equal(a, b), f"{spec}: DefendedClassifier with the same seed gives different logits"


@pytest.mark.parametrize("name, spec", [v for v in VARIANTS if v[0] in GATES],
                         ids=[i for i, v in zip(IDS, VARIANTS) if v[0] in GATES])
def test_gate_passes_unflagged_inputs_unchanged(env, name, spec):
    d, x = _setup(env, spec)
    assert hasattr(d, "detect")
    flags = d.detect(x, generator=_gen(6))
    assert flags.dtype == torch.bool and flags.shape == (x.shape[0],), (flags.dtype, flags.shape)
    with torch.no_grad():
        y = d(x, generator=_gen(6))
    assert torch.equal(d.last_flags, flags), "purify's decision differs from detect's with the same generator"
    assert torch.equal(y[~flags], x[~flags]), f"{spec}: an unflagged input was changed"
    assert not torch.equal(y[flags], x[flags]) or not bool(flags.any()), f"{spec}: flagged inputs were not purified"
    if "mode=sample" in spec:
        scores = d.sample_scores(x)
        assert scores.shape == (x.shape[0],) and bool(torch.isfinite(scores).all())
        assert torch.equal(flags, scores > d.sample_threshold)
        assert bool(flags.any()) and not bool(flags.all()), "test input should exercise both branches of the gate"
    else:
        assert bool(flags.all()) or not bool(flags.any()), "batch mode decides for the whole batch"


def test_every_gate_defense_is_checked_as_a_gate(env):
    """A registered defense with a ``detect`` method must be listed in GATES (so the gate test runs on it)."""
    gates = {name for name, spec in VARIANTS if hasattr(_setup(env, spec)[0], "detect")}
    assert gates == GATES, f"defenses with detect(): {sorted(gates)}; GATES lists {sorted(GATES)}"


def _networks(d: torch.nn.Module) -> set[int]:
    """Identities of the defense's parameters and of modules it holds outside its module tree (a classifier)."""
    return {id(p) for p in d.parameters()} | {id(v) for v in vars(d).values() if isinstance(v, torch.nn.Module)}


@pytest.mark.parametrize("name, spec", VARIANTS, ids=IDS)
def test_replace_without_changes_is_the_same_defense(env, name, spec):
    d, x = _setup(env, spec)
    before = json.dumps(d.describe(), sort_keys=True)
    r = d.replace()
    assert r is not d and type(r) is type(d), f"{spec}: replace() returned {type(r).__name__}"
    assert json.dumps(r.describe(), sort_keys=True) == before, f"{spec}: replace() changed describe()"
    assert _networks(r) == _networks(d), f"{spec}: replace() copied networks instead of sharing them"
    assert bool(r.stochastic) == bool(d.stochastic) and float(r.nfe) == float(d.nfe)
    with torch.no_grad():
        assert torch.equal(r(x, generator=_gen(7)), d(x, generator=_gen(7))), f"{spec}: replace() changed the output"
    if d.steps_arg is not None:  # with_steps is replace on the steps argument
        steps = 1 if name != "gnsp" else [1, 1]
        assert d.with_steps(1).describe() == d.replace(**{d.steps_arg: steps}).describe()
        assert float(d.with_steps(1).nfe) <= float(d.nfe)


@pytest.mark.parametrize("name, spec", VARIANTS, ids=IDS)
def test_replace_changes_show_in_describe(env, name, spec):
    d, _ = _setup(env, spec)
    before = d.describe()
    for changes, shows in REPLACE_CASES[name]:
        ch = changes(d) if callable(changes) else changes
        r = d.replace(**ch)
        desc = r.describe()
        assert shows(desc), f"{spec}: replace({ch}) does not show in describe(): {desc}"
        assert desc != before, f"{spec}: replace({ch}) left describe() unchanged"
        assert d.describe() == before, f"{spec}: replace({ch}) changed the original"
        assert _networks(r) <= _networks(d), f"{spec}: replace({ch}) copied networks instead of sharing them"


@pytest.mark.parametrize("name, spec", VARIANTS, ids=IDS)
def test_replace_rejects_unknown_arguments(env, name, spec):
    d, _ = _setup(env, spec)
    with pytest.raises(ValueError, match="no argument 'no_such_argument'") as e:
        d.replace(no_such_argument=1)
    for key in d.replace_keys():
        assert key in str(e.value), f"{spec}: the error does not name the valid argument {key!r}: {e.value}"
