"""``advpure list defenses|attacks|models|datasets``: what a spec can name, with each option's type, default and
help, read from the registries (:func:`advpure.specs.options`), :data:`advpure.models.ARCHS` and
:data:`advpure.data.DATASETS`; ``--json`` for scripts."""

from __future__ import annotations

import argparse
import json
import re
import shutil
from typing import Any

KINDS = {"defenses": "defense", "attacks": "attack", "models": None, "datasets": None}

#: the forms a classifier spec (``--classifier``, ``--surrogate-classifier``) takes
#: (:func:`advpure.models.load_classifier`)
MODEL_FORMS = (
    ("PATH.safetensors", "advpure weights with their JSON sidecar (architecture, arguments, sha256)"),
    ("ARCH:PATH", "an architecture below and its weights (.safetensors, .pt, .pth, .th), e.g. "
                  "resnet56:../shared/models/resnet56-4bfd9763.th; known files are checked against their sha256"),
    ("ARCH", "a bare architecture: random weights, only with --allow-random-weights"),
    ("module:package.module:callable", "your own model: the callable is called with no arguments "
                                       "(also module:/path/to/file.py:callable)"),
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="what --defense, --attack, --classifier and --dataset can name, with options",
                       description="Each registered spec name with its options (name, type, default, help), read "
                                   "from the registries. A spec is NAME or NAME:key=value,key=value; 8/255 style "
                                   "fractions, true/false, none and a|b|c lists are accepted.")
    p.add_argument("what", nargs="?", choices=tuple(KINDS), default=None,
                   help="which list (default: all four)")
    p.add_argument("--json", action="store_true", help="print JSON: {KIND: [{name, description, options}, ...]}")
    p.set_defaults(func=_main)


def catalogue(what: str) -> list[dict[str, Any]]:
    """The entries of one list: ``{"name", "description", "options": [Option.as_dict()...]}`` (models: also
    ``"form": true`` for the spec forms; datasets: ``"default_linf_eps"``)."""
    from ..specs import _first_sentence, _plain, describe, names, options

    kind = KINDS[what]
    if kind is not None:
        out = []
        for name in names(kind):
            opts = options(kind, name)
            out.append({"name": name, "description": describe(kind, name),
                        "options": None if opts is None else [o.as_dict() for o in opts]})
        return out
    if what == "models":
        from ..models import ARCHS

        rows: list[dict[str, Any]] = [{"name": form, "description": text, "form": True, "options": []}
                                      for form, text in MODEL_FORMS]
        for name, (cls, kwargs) in ARCHS.items():
            args = ", ".join(f"{k}={v}" for k, v in kwargs.items() if not isinstance(v, (list, tuple)))
            doc = _plain(_first_sentence(cls.__doc__ or ""))
            rows.append({"name": name, "description": f"{cls.__name__}({args})" + (f": {doc}" if doc else ""),
                         "form": False, "options": []})
        return rows
    from .. import data

    docs = _bullets(data.__doc__ or "")
    return [{"name": name, "description": docs.get(name, ""), "default_linf_eps": data.DEFAULT_LINF_EPS.get(name),
             "options": []} for name in data.DATASETS]


def _bullets(doc: str) -> dict[str, str]:
    """``- ``name``...: text`` items of a module docstring: name -> text (one line, markup removed)."""
    out: dict[str, str] = {}
    for item in re.split(r"\n- ", "\n" + doc)[1:]:
        head, _, text = " ".join(item.split()).partition(": ")
        text = re.split(r";\s|\.\s", text, maxsplit=1)[0].replace("``", "").rstrip(";.")
        for name in re.findall(r"``([\w-]+)``", head):
            out.setdefault(name, text)
    return out


def _fmt_default(o: dict[str, Any]) -> str:
    from ..specs import _show

    return "(required)" if o["required"] else _show(o["default"])


def _text(what: str, rows: list[dict[str, Any]]) -> str:
    width = shutil.get_terminal_size((120, 24)).columns
    lines = []
    if what == "models":
        lines.append("classifier specs (--classifier, --surrogate-classifier):")
        for r in (r for r in rows if r["form"]):
            lines.append(f"  {r['name']:<32} {r['description']}")
        lines.append("\narchitectures (ARCH):")
        for r in (r for r in rows if not r["form"]):
            lines.append(f"  {r['name']:<16} {r['description']}"[:width])
        return "\n".join(lines)
    if what == "datasets":
        lines.append("datasets (--dataset; images float in [0, 1]; default l_inf budget where one is set):")
        for r in rows:
            eps = r["default_linf_eps"]
            budget = "" if eps is None else f"eps {round(eps * 255)}/255" if abs(eps * 255 - round(eps * 255)) < 1e-9 \
                and eps < 0.1 else f"eps {eps:g}"
            lines.append(f"  {r['name']:<12} {budget:<11} {r['description']}"[:width])
        return "\n".join(lines)
    flag = "--defense" if what == "defenses" else "--attack"
    lines.append(f"{what} ({flag} NAME:key=value,...):")
    for r in rows:
        lines.append(f"\n{r['name']}: {r['description']}")
        opts = r["options"]
        if opts is None:
            lines.append("    (options not listed: see its documentation)")
            continue
        if not opts:
            lines.append("    (no options)")
        w = max([len(o["name"]) for o in opts] + [4])
        tw = max([len(o["type"]) for o in opts] + [4])
        dw = min(max([len(_fmt_default(o)) for o in opts] + [4]), 12)
        for o in opts:
            line = f"    {o['name']:<{w}}  {o['type']:<{tw}}  {_fmt_default(o):<{dw}}  {o['help']}"
            lines.append(line if len(line) <= width else line[:width - 3] + "...")
    return "\n".join(lines)


def _main(args: argparse.Namespace) -> int:
    whats = [args.what] if args.what else list(KINDS)
    data = {w: catalogue(w) for w in whats}
    if args.json:
        print(json.dumps(data, indent=2, default=str))
    else:
        print("\n\n".join(_text(w, data[w]) for w in whats))
    return 0
