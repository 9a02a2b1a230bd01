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
            params[k.strip().replace("-", "_")] = _parse_value(v)
    return name.strip(), params


_REGISTRY: dict[str, dict[str, Callable[..., Any]]] = {}


def register(kind: str, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register ``factory(ctx, **params)`` as ``name`` of ``kind``."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        _REGISTRY.setdefault(kind, {})[name] = fn
        return fn

    return deco


def names(kind: str) -> list[str]:
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
    if hasattr(obj, "__dict__"):
        try:
            obj.spec = {"name": name, "params": params}
        except AttributeError:
            pass
    return obj


_PLUGINS = ("advpure.attacks", "advpure.defenses", "advpure.detect")


def _import_plugins() -> None:
    import importlib

    for mod in _PLUGINS:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:  # a package not written yet
            if e.name != mod:
                raise
