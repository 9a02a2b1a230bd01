"""Spec strings for the command line, and the registries that turn them into objects.

A spec is ``name`` or ``name:key=value,key=value``; values are parsed as int, float, bool
(``true``/``false``), ``none``, or kept as strings; ``a|b|c`` is a list. Examples::

    --attack pgd:norm=linf,eps=8/255,steps=200,eot=20
    --defense diffpure:t=0.1,model=zoo/digits-ddpm

``eps=8/255`` style fractions are accepted for any float. Each module registers its factories with
:func:`register` under a kind ("attack", "defense", "detector"); a factory takes the parsed
parameters as keyword arguments plus a :class:`SpecContext`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch


@dataclass
class SpecContext:
    """What a factory may need besides its own parameters."""

    classifier: torch.nn.Module | None = None
    dataset: str | None = None
    image_shape: tuple[int, int, int] | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    extra: dict[str, Any] = field(default_factory=dict)


def _parse_value(v: str) -> Any:
    s = v.strip()
    low = s.lower()
    if low in ("true", "yes"):
        return True
    if low in ("false", "no"):
        return False
    if low in ("none", "null"):
        return None
    if "|" in s:
        return [_parse_value(p) for p in s.split("|")]
    try:
        return int(s)
    except ValueError:
        pass
    try:
        return float(s)
    except ValueError:
        pass
    if "/" in s:
        a, _, b = s.partition("/")
        try:
            return float(a) / float(b)
        except (ValueError, ZeroDivisionError):
            pass
    return s


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"pgd:eps=8/255,steps=10"`` -> ``("pgd", {"eps": 0.0313..., "steps": 10})``."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"empty spec {spec!r}; expected 'name' or 'name:key=value,...'")
    name, _, rest = spec.strip().partition(":")
    params: dict[str, Any] = {}
    if rest:
        for item in rest.split(","):
            if not item:
                continue
            if "=" not in item:
                raise ValueError(f"spec {spec!r}: parameter {item!r} is not key=value")
            k, _, v = item.partition("=")
            key = k.strip().replace("-", "_")
            if not key:
                raise ValueError(f"spec {spec!r}: parameter {item!r} has no name (expected key=value)")
            if key in params:
                raise ValueError(f"spec {spec!r}: parameter {key!r} is given twice")
            params[key] = _parse_value(v)
    return name.strip(), params


_REGISTRY: dict[str, dict[str, Callable[..., Any]]] = {}


def register(kind: str, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register ``factory(ctx, **params)`` as ``name`` of ``kind``."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        _REGISTRY.setdefault(kind, {})[name] = fn
        return fn

    return deco


def names(kind: str) -> list[str]:
    """The registered spec names of ``kind`` ("defense", "attack", "detector", ...), sorted."""
    _import_plugins()
    return sorted(_REGISTRY.get(kind, {}))


def build(kind: str, spec: str, ctx: SpecContext | None = None) -> Any:
    """Parse ``spec`` and call the registered factory; unknown names list the known ones."""
    _import_plugins()
    name, params = parse_spec(spec)
    table = _REGISTRY.get(kind, {})
    if name not in table:
        raise ValueError(f"unknown {kind} {name!r}; expected one of {', '.join(sorted(table)) or '(none registered)'}")
    try:
        obj = table[name](ctx or SpecContext(), **params)
    except TypeError as e:
        raise ValueError(f"{kind} spec {spec!r}: {e}") from None
    if kind == "attack":
        check_budget(obj, spec, ctx)
    if hasattr(obj, "__dict__"):
        try:
            obj.spec = {"name": name, "params": params}
        except AttributeError:
            pass
    return obj


def check_budget(attack: Any, spec: str, ctx: SpecContext | None = None) -> None:
    """An attack's budget must fit images in [0, 1]: l_inf eps <= 1, l_2 eps <= sqrt(C*H*W) (the diameter of the
    pixel cube; checked when the image shape is known). A larger one is a typo (``eps=8`` for ``8/255``) that would
    report a meaningless robust accuracy."""
    import math

    eps, norm = getattr(attack, "eps", None), getattr(attack, "norm", None)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps):
        return
    if norm == "linf" and eps > 1:
        raise ValueError(f"attack spec {spec!r}: eps={eps:g} exceeds the l_inf budget images in [0, 1] allow "
                         f"(at most 1; did you mean eps={eps:g}/255?)")
    shape = ctx.image_shape if ctx is not None else None
    if norm == "l2" and shape:
        diameter = math.sqrt(math.prod(shape))
        if eps > diameter:
            raise ValueError(f"attack spec {spec!r}: eps={eps:g} exceeds the l_2 diameter of [0, 1] images of shape "
                             f"{tuple(shape)} ({diameter:.4g})")


_PLUGINS = ("advpure.attacks", "advpure.defenses", "advpure.detect")


def _import_plugins() -> None:
    import importlib

    for mod in _PLUGINS:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:  # a package not written yet
            if e.name != mod:
                raise
