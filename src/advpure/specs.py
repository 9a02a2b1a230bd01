"""Spec strings for the command line, and the registries that turn them into objects.

A spec is ``name`` or ``name:key=value,key=value``; values are parsed as int, float, bool
(``true``/``false``), ``none``, or kept as strings; ``a|b|c`` is a list. Examples::

    --attack pgd:norm=linf,eps=8/255,steps=200,eot=20
    --defense diffpure:t=0.1,model=zoo/digits-ddpm

``eps=8/255`` style fractions are accepted for any float. Each module registers its factories with
:func:`register` under a kind ("attack", "defense", "detector"); a factory takes the parsed
parameters as keyword arguments plus a :class:`SpecContext`.

:func:`options` lists what a registered spec accepts (name, type, default, one-line help), read from the factory's
signature; a factory that passes ``**params`` on (``PGD(**p)``) is followed into the callable it calls. :func:`build`
checks a spec against it before calling the factory: an unknown option, a missing required one or a value of the wrong
type is a ``ValueError`` naming the spec and the option, with the valid options (``advpure list defenses``).

:func:`record_init_args` makes a class's constructor record the arguments it was given, so that attacks and purifiers
rebuild themselves with some of them changed (``replace``).
"""

from __future__ import annotations

import ast
import difflib
import functools
import inspect
import re
import sys
import textwrap
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
        from .contracts import parse_fraction

        try:
            return parse_fraction(s)
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


def record_init_args(cls: type) -> inspect.Signature | None:
    """Wrap the ``__init__`` that ``cls`` itself defines (call it from ``__init_subclass__``) so that the outermost
    constructor of an instance records the arguments it was given, before running: ``self.__dict__["_init_args"]``,
    name -> value, with ``**kwargs`` entries flattened in (a ``super().__init__`` records nothing); once it has
    returned, ``self.__dict__["_init_done"]`` is true. Returns the constructor's signature without ``self``, or None
    when ``cls`` defines no ``__init__`` (it keeps its parent's)."""
    init = cls.__dict__.get("__init__")
    if init is None:
        return None
    sig = inspect.signature(init)

    @functools.wraps(init)
    def recording_init(self: Any, *args: Any, **kw: Any) -> None:
        outer = "_init_args" not in self.__dict__
        if outer:
            rec: dict[str, Any] = {}
            for name, value in list(sig.bind(self, *args, **kw).arguments.items())[1:]:
                if sig.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
                    rec.update(value)
                else:
                    rec[name] = value
            self.__dict__["_init_args"] = rec
        init(self, *args, **kw)
        if outer:
            self.__dict__["_init_done"] = True

    cls.__init__ = recording_init  # type: ignore[misc]
    return sig.replace(parameters=list(sig.parameters.values())[1:])


def names(kind: str) -> list[str]:
    """The registered spec names of ``kind`` ("defense", "attack", "detector", ...), sorted."""
    _import_plugins()
    return sorted(_REGISTRY.get(kind, {}))


def build(kind: str, spec: str, ctx: SpecContext | None = None) -> Any:
    """Parse ``spec``, check it (:func:`check_spec`) and call the registered factory."""
    name, params = check_spec(kind, spec)
    table = _REGISTRY.get(kind, {})
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


def _plural(kind: str) -> str:
    return kind + ("es" if kind.endswith("s") else "s")


def _did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_spec(kind: str, spec: str) -> tuple[str, dict[str, Any]]:
    """Parse ``spec`` and check it against the registered factory without building anything: the name must be
    registered, every option known, every required option given, and each value of the option's type. Returns
    ``(name, params)``; raises a one-line ``ValueError`` naming the spec name and the option otherwise."""
    _import_plugins()
    name, params = parse_spec(spec)
    table = _REGISTRY.get(kind, {})
    if name not in table:
        raise ValueError(f"unknown {kind} {name!r}{_did_you_mean(name, sorted(table))}; expected one of "
                         f"{', '.join(sorted(table)) or '(none registered)'} (advpure list {_plural(kind)})")
    opts = _options_of(table[name])
    if opts is None:  # a factory whose options cannot be read: the factory checks them itself
        return name, params
    by_name = {o.name: o for o in opts}
    listing = f"(advpure list {_plural(kind)})"
    for key, value in params.items():
        if key not in by_name:
            valid = ", ".join(by_name) or "none"
            raise ValueError(f"{name}: unknown option {key!r}{_did_you_mean(key, list(by_name))}; valid options: "
                             f"{valid} {listing}")
        problem = _type_problem(by_name[key], value)
        if problem:
            raise ValueError(f"{name}: option {key}={_show(value)}: expected {problem} {listing}")
    missing = [o.name for o in opts if o.required and o.name not in params]
    if missing:
        raise ValueError(f"{name}: missing option{'s' if len(missing) > 1 else ''} "
                         f"{', '.join(repr(m) for m in missing)} (required; e.g. {name}:"
                         f"{','.join(m + '=...' for m in missing)}) {listing}")
    return name, params


# --------------------------------------------------------------------------- what a spec accepts
#: spec values are parsed into these types (see :func:`_parse_value`); other annotations (a module, a callable)
#: mark parameters a spec cannot set
_SPEC_TYPES = ("int", "float", "bool", "str", "path", "list", "any")
_TYPE_WORDS = {"int": "an integer", "float": "a number", "bool": "true or false"}


@dataclass(frozen=True)
class Option:
    """One option of a registered spec: ``name``, ``type`` (``int``, ``float|none``, ``path``, ...), ``default``
    (None when ``required``) and one line of ``help`` (empty when the source documents none)."""

    name: str
    type: str
    default: Any = None
    required: bool = False
    help: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "default": self.default, "required": self.required,
                "help": self.help}


def describe(kind: str, name: str) -> str:
    """The first line of the documentation of the registered spec ``name`` of ``kind`` (its factory's docstring,
    else the class it builds)."""
    _import_plugins()
    fn = _REGISTRY[kind][name]
    leaves = _chain(fn, bases=False)
    mods = [sys.modules.get(c.__module__) for c in leaves]
    lines = [_first_sentence(_doc(obj)) for obj in (fn, *leaves, *(m for m in mods if m is not None))]
    # a factory docstring that only shows the spec syntax (``name:key=...``) describes less than its class's
    line = next((x for x in lines if x and not _SYNTAX_LINE.match(x)), next((x for x in lines if x), ""))
    return _plain(line)


def options(kind: str, name: str) -> list[Option] | None:
    """The options of the registered spec ``name`` of ``kind``, in signature order; None when the factory takes
    ``**params`` it does not pass on to a callable that can be read."""
    _import_plugins()
    table = _REGISTRY.get(kind, {})
    if name not in table:
        raise ValueError(f"unknown {kind} {name!r}; expected one of {', '.join(sorted(table))}")
    opts = _options_of(table[name])
    return None if opts is None else list(opts)


_SYNTAX_LINE = re.compile(r"^``[\w+-]+:")


def _doc(obj: Any) -> str:
    """``obj``'s own docstring, cleaned (not one inherited from a base class, unlike :func:`inspect.getdoc`)."""
    doc = getattr(obj, "__doc__", None)
    return inspect.cleandoc(doc) if isinstance(doc, str) else ""


def _first_sentence(doc: str) -> str:
    para = " ".join(doc.strip().split("\n\n")[0].split())
    if not para:
        return ""
    first = re.split(r"(?<!e\.g)(?<!i\.e)(?<!cf)(?<! [A-Z])\.\s+(?=[A-Z`(])", para, maxsplit=1)[0]
    return first.rstrip(".") + "."


def _show(value: Any) -> str:
    if isinstance(value, list):
        return "|".join(map(_show, value))
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.6g}"
    return "none" if value is None else str(value)


def _type_of(annotation: Any, default: Any) -> tuple[str, bool]:
    """``("int|none", spec_settable)`` from an annotation (a string under postponed evaluation) or the default."""
    if annotation is inspect.Parameter.empty:
        if default is inspect.Parameter.empty or default is None:
            return "any", True
        t = {bool: "bool", int: "int", float: "float", str: "str", list: "list", tuple: "list"}.get(type(default))
        return (t or type(default).__name__), t is not None
    text = annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)
    parts, depth, cur = [], 0, ""
    for ch in text:  # split on top-level |
        depth += 1 if ch in "[(" else -1 if ch in "])" else 0
        if ch == "|" and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    out: list[str] = []
    for part in (p.strip() for p in parts):
        head = part.split("[", 1)[0].rsplit(".", 1)[-1]
        if head in ("Optional",):
            inner, settable = _type_of(part[part.index("[") + 1:-1], default)
            out += [t for t in inner.split("|") if t not in out]
            out.append("none")
            continue
        word = {"int": "int", "float": "float", "bool": "bool", "str": "str", "None": "none", "PathLike": "path",
                "Path": "path", "Sequence": "list", "list": "list", "tuple": "list", "Any": "any"}.get(head, part)
        if word not in out:
            out.append(word)
    if "path" in out and "str" in out:
        out.remove("str")
    settable = all(t in _SPEC_TYPES or t == "none" for t in out)
    return "|".join(out), settable


def _type_problem(opt: Option, value: Any) -> str | None:
    """What ``value`` should have been for ``opt`` (e.g. "an integer"), or None when it fits or cannot be told."""
    types = set(opt.type.split("|")) - {"none"}
    if value is None or not types or not types <= {"int", "float", "bool"}:
        return None
    want = " or ".join(_TYPE_WORDS[t] for t in opt.type.split("|") if t in _TYPE_WORDS)
    if isinstance(value, (str, list)):
        return want
    if types == {"int"} and isinstance(value, float) and not value.is_integer():
        return want
    return None


@functools.lru_cache(maxsize=None)
def _options_of(fn: Callable[..., Any]) -> tuple[Option, ...] | None:
    params = _params(fn, skip=1)
    if params is None:
        return None
    helps = _helps(fn)
    out = []
    for p in params.values():
        type_, settable = _type_of(p.annotation, p.default)
        if not settable:
            continue
        required = p.default is inspect.Parameter.empty
        out.append(Option(p.name, type_, None if required else p.default, required, helps.get(p.name, "")))
    return tuple(out)


def _params(fn: Callable[..., Any], skip: int, owner: type | None = None, depth: int = 0
            ) -> dict[str, inspect.Parameter] | None:
    """Keyword parameters ``fn`` accepts (the first ``skip`` dropped: ``ctx``, ``self``), following ``**kwargs`` into
    the callable they are passed on to (with the defaults ``kwargs.setdefault`` gives and without the keywords the
    call sets itself); None when that callable cannot be read."""
    fn = inspect.unwrap(fn)  # a decorated function (functools.wraps): read the original
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    own: dict[str, inspect.Parameter] = {}
    var_kw = None
    for p in list(sig.parameters.values())[skip:]:
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            own[p.name] = p
        elif p.kind is p.VAR_KEYWORD:
            var_kw = p.name
    if var_kw is None:
        return own
    fwd = _forward(fn, var_kw, owner) if depth < 5 else None
    if fwd is None:
        return None
    target, target_owner, explicit, defaults = fwd
    inner = _params(target, 1 if target_owner is not None else 0, target_owner, depth + 1)
    if inner is None:
        return None
    for k in explicit:
        inner.pop(k, None)
    for k, v in defaults.items():
        if k in inner:
            inner[k] = inner[k].replace(default=v)
    return {**own, **{k: v for k, v in inner.items() if k not in own}}


def _function_node(fn: Callable[..., Any]) -> ast.FunctionDef | None:
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    except (OSError, TypeError, SyntaxError):
        return None
    return next((n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))), None)


def _forward(fn: Callable[..., Any], var_kw: str, owner: type | None):
    """``(callable, its class or None, keywords the call sets, setdefault defaults)`` of the call in ``fn`` that passes
    ``**var_kw`` on; None when there is no such call or its callee cannot be resolved."""
    fn = inspect.unwrap(fn)  # names in its body resolve in the module that defines it, not a decorator's
    node = _function_node(fn)
    if node is None:
        return None
    defaults: dict[str, Any] = {}
    call = None
    for n in ast.walk(node):
        if not isinstance(n, ast.Call):
            continue
        f = n.func
        if isinstance(f, ast.Attribute) and f.attr == "setdefault" and isinstance(f.value, ast.Name) \
                and f.value.id == var_kw and len(n.args) == 2 and isinstance(n.args[0], ast.Constant):
            try:
                defaults[n.args[0].value] = ast.literal_eval(n.args[1])
            except ValueError:
                pass
        elif call is None and any(k.arg is None and isinstance(k.value, ast.Name) and k.value.id == var_kw
                                  for k in n.keywords):
            call = n
    if call is None:
        return None
    f = call.func
    explicit = {k.arg for k in call.keywords if k.arg is not None}
    if isinstance(f, ast.Attribute) and f.attr == "__init__" and isinstance(f.value, ast.Call) \
            and isinstance(f.value.func, ast.Name) and f.value.func.id == "super" and owner is not None:
        base = next((c for c in owner.__mro__[1:] if "__init__" in vars(c)), None)
        return None if base is None or base is object else (base.__init__, base, explicit, defaults)
    if isinstance(f, ast.Name):
        target = getattr(fn, "__globals__", {}).get(f.id)
        if isinstance(target, type):
            cls = next((c for c in target.__mro__ if "__init__" in vars(c)), None)
            return None if cls is None or cls is object else (cls.__init__, target, explicit, defaults)
        if callable(target):
            return target, None, explicit, defaults
    return None


def _chain(fn: Callable[..., Any], bases: bool = True) -> list[Any]:
    """The classes (and their bases, unless not ``bases``) a factory's ``**params`` reach, or else the class its
    return annotation names: where its documentation is."""
    out: list[Any] = []
    owner = None
    for _ in range(5):
        sig_kw = [p.name for p in inspect.signature(fn).parameters.values() if p.kind is p.VAR_KEYWORD] \
            if callable(fn) else []
        if not sig_kw:
            break
        fwd = _forward(fn, sig_kw[0], owner)
        if fwd is None:
            break
        fn, owner = fwd[0], fwd[1]
        if owner is not None:
            out += [c for c in (owner.__mro__ if bases else (owner,)) if c is not object and c not in out]
    if not out:  # an explicit factory: the class named by its return annotation
        ret = inspect.signature(fn).return_annotation if callable(fn) else None
        cls = getattr(fn, "__globals__", {}).get(ret) if isinstance(ret, str) else ret
        if isinstance(cls, type):
            out += [c for c in (cls.__mro__ if bases else (cls,)) if c is not object]
    return out


_HELP_ITEM = re.compile(r"((?:``[A-Za-z_]\w*``(?:\s*(?:,|and|/)\s*)?)+):\s+")
_ARGS_ITEM = re.compile(r"^\s+([A-Za-z_]\w*)(?:\s*\([^)]*\))?:\s+(.+)$")


def _helps(fn: Callable[..., Any]) -> dict[str, str]:
    """Option -> one line of help from the docstrings along the factory's chain (the first found wins): a
    ````name````: text item about that option alone, or a Google-style ``Args:`` entry; then :data:`COMMON_HELP`; then
    an item about several options at once (````eps````, ````norm````: the threat model)."""
    own: dict[str, str] = {}
    shared: dict[str, str] = {}
    for obj in (fn, *_chain(fn)):
        for o in (obj, vars(obj).get("__init__")) if isinstance(obj, type) else (obj,):
            raw = _doc(o) if o is not None else ""
            in_args = False
            for line in raw.splitlines():  # Google style: Args: / name: text
                if line.strip() in ("Args:", "Arguments:", "Parameters:"):
                    in_args = True
                    continue
                m = _ARGS_ITEM.match(line) if in_args else None
                if m:
                    own.setdefault(m.group(1), _clip(m.group(2)))
                elif in_args and line and not line.startswith(" "):
                    in_args = False
            doc = " ".join(raw.split())
            matches = list(_HELP_ITEM.finditer(doc))
            for i, m in enumerate(matches):
                end = matches[i + 1].start() if i + 1 < len(matches) else len(doc)
                text = _clip(doc[m.end():end])
                keys = re.findall(r"``(\w+)``", m.group(1))
                for key in keys:
                    if text:
                        (own if len(keys) == 1 else shared).setdefault(key, text)
    return {**shared, **COMMON_HELP, **own}


def _clip(text: str) -> str:
    """The first clause of a help text, without reST markup and without "(default ...)" (listed beside it)."""
    while "(default" in text:  # drop a balanced "(default ...)" group
        i = j = text.index("(default")
        depth = 0
        while j < len(text):
            depth += {"(": 1, ")": -1}.get(text[j], 0)
            j += 1
            if depth == 0:
                break
        text = text[:i].rstrip() + text[j:]
    depth = 0
    for i, ch in enumerate(text):  # cut at the first top-level ";" or sentence end
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth == 0 and (ch == ";" or (ch == "." and text[i + 1:i + 2] in (" ", "")
                                         and not text[:i].endswith(("e.g", "i.e", "cf")))):
            text = text[:i]
            break
    return _plain(text.strip(" -,"))


def _plain(text: str) -> str:
    """reST markup removed: ``:class:`~a.B``` -> ``B``, double backquotes dropped."""
    text = re.sub(r":\w+:`~?([^`]+)`", lambda m: m.group(1).rsplit(".", 1)[-1], text)
    return text.replace("``", "")


#: help of options that many factories share, where their docstrings say nothing
COMMON_HELP: dict[str, str] = {
    "model": "the diffusion/consistency model: an advpure .safetensors, a diffusers folder, score_sde:PATH or "
             "guided_diffusion:PATH",
    "t": "diffusion time t* the input is noised to, in (0, 1]",
    "steps": "number of steps (attacks: iterations; purifiers: reverse-process steps)",
    "checkpoint": "gradient checkpointing through the purifier (memory flat in the number of steps)",
    "autocast": "run the network under torch.autocast: none, bf16 or fp16",
    "eps": "the perturbation budget (8/255 style fractions accepted)",
    "norm": "the threat model: linf or l2",
    "step_size": "step size per iteration (default: from eps and steps)",
    "random_start": "start from a random point in the eps-ball",
    "loss": "the loss maximised (ce, dlr, ...)",
    "seed": "seed of the method's own randomness (none: torch's global RNG)",
    "k": "number of samples / purifications",
    "iterations": "optimisation iterations",
    "lr": "learning rate",
    "mode": "variant of the method",
    "ref": "EPS reference statistics (.eps-ref.json; default: beside the model)",
    "eot": "stochastic passes averaged per gradient (EOT)",
    "n_queries": "query budget",
}
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
