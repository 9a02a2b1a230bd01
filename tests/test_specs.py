"""Spec strings checked against what their factory accepts (``advpure.specs.check_spec``/``build``), and the option
listing read from the factories (``advpure.specs.options``, ``advpure list``)."""

from __future__ import annotations

import pytest

from advpure.specs import build, check_spec, describe, names, options


@pytest.mark.parametrize("kind,spec,expected", [
    # an unknown key names the valid ones and where to list them
    ("defense", "diffpure:foo=1", "diffpure: unknown option 'foo'; valid options: model, t, norm, dt, steps"),
    ("defense", "diffpure:foo=1", "(advpure list defenses)"),
    # ... with a close match when there is one
    ("defense", "diffpure:stpes=20", "unknown option 'stpes' (did you mean 'steps'?)"),
    ("attack", "pgd:epss=0.1", "(did you mean 'eps'?)"),
    # a factory that passes **params on to its class is checked against the class
    ("attack", "square:bogus=1", "square: unknown option 'bogus'; valid options: eps, n_queries"),
    ("attack", "pgd:bogus=1", "(advpure list attacks)"),
    # an unknown name lists the names (and suggests one)
    ("defense", "difpure:t=0.1", "unknown defense 'difpure' (did you mean 'diffpure'?); expected one of"),
    ("attack", "nope", "unknown attack 'nope'; expected one of apgd"),
    # a value of the wrong type names the option
    ("attack", "pgd:steps=abc", "pgd: option steps=abc: expected an integer"),
    ("attack", "pgd:steps=2.5", "option steps=2.5: expected an integer"),
    ("defense", "diffpure:t=high", "diffpure: option t=high: expected a number"),
    ("defense", "cmap:checkpoint=maybe", "cmap: option checkpoint=maybe: expected true or false"),
    # a required option that is missing
    ("defense", "dad", "dad: missing options 'kernel', 'denoiser'"),
    # options the factory sets itself are not spec options
    ("attack", "surrogate:surrogate=x", "surrogate: unknown option 'surrogate'"),
])
def test_bad_spec_is_one_line_naming_the_option(kind, spec, expected):
    with pytest.raises(ValueError) as e:
        build(kind, spec)
    assert expected in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ValueError):
        check_spec(kind, spec)


@pytest.mark.parametrize("kind,spec", [
    ("attack", "pgd:eps=8/255,steps=3,norm=linf"), ("attack", "apgd-dlr:eps=0.1,steps=2"),
    ("attack", "square:eps=0.1,n_queries=10"), ("attack", "cw:steps=2,binary_steps=1"),
    ("attack", "pgd:seed=none"),
])
def test_good_specs_build(kind, spec):
    obj = build(kind, spec)
    assert obj.spec["name"] == spec.partition(":")[0]


def test_options_follow_the_factory_into_the_class():
    pgd = {o.name: o for o in options("attack", "pgd")}
    assert {"eps", "norm", "steps", "eot", "step_size", "seed"} <= set(pgd)
    assert pgd["steps"].type == "int" and pgd["eps"].type == "float|none" and pgd["norm"].default == "linf"
    assert pgd["eot"].help  # from the Attack docstring
    # a default the factory sets (p.setdefault("loss", "dlr")) is the one listed
    assert {o.name: o.default for o in options("attack", "apgd-dlr")}["loss"] == "dlr"
    # keywords the factory passes itself (surrogate=...) and non-spec types (modules, callables) are not options
    assert "surrogate" not in {o.name for o in options("attack", "surrogate")}
    assert not {"base", "approx"} & {o.name for o in options("attack", "bpda")}
    dad = {o.name: o for o in options("defense", "dad")}
    assert dad["kernel"].required and not dad["mode"].required


@pytest.mark.parametrize("kind", ["defense", "attack"])
def test_every_registered_spec_is_listed_with_options_and_a_description(kind):
    for name in names(kind):
        opts = options(kind, name)
        assert opts is not None, f"{kind} {name}: options cannot be read from its factory"
        assert describe(kind, name), f"{kind} {name}: no description"
        for o in opts:
            assert o.type and o.name.isidentifier()
