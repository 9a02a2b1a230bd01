"""The house on floors (issue 16): every internal import points to a lower floor, no package cycle, and every
module imports alone in a fresh interpreter.

Floors, lowest first (a module imports only from floors below its own, or from its own package):

0. the package root ``advpure``: ``contracts``, ``specs``, ``checkpoint``, ``paths``, ``threads``, ``info``
   (and ``__version__`` of ``advpure/__init__.py``);
1. ``ops``: differentiable building blocks;
2. ``data`` < ``models`` < ``diffusion`` < ``detect`` (each may import those before it);
3. ``defenses``;
4. ``attacks``;
5. ``eval`` and ``train`` (siblings: neither imports the other);
6. ``experiments``: study drivers (logic, no argparse);
7. ``cli``: the command line (argparse only).

Every import counts: module level, inside functions, under ``TYPE_CHECKING``, and module names given to
``importlib.import_module`` as string constants. A lazy import inside a function is fine only if it points down.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

#: floor -> the units on it; a unit is a sub-package of ``advpure``, or "" for the package root and its modules
FLOORS: tuple[tuple[str, ...], ...] = (
    ("",),
    ("ops",),
    ("data", "models", "diffusion", "detect"),
    ("defenses",),
    ("attacks",),
    ("eval", "train"),
    ("experiments",),
    ("cli",),
)
#: floors whose units are ordered (each may import the ones listed before it); on other floors units are siblings
ORDERED_FLOORS = {2}
#: the top-level modules of the package root (floor 0); any other top-level module is an error
ROOT_MODULES = ("advpure", "advpure.contracts", "advpure.specs", "advpure.checkpoint", "advpure.paths",
                "advpure.threads", "advpure.info")
#: (importing module, imported unit) pairs allowed against the floor order. One exception: the spec registry
#: (floor 0) loads the packages that fill it, by name, on its first lookup (``advpure.specs._import_plugins``), so
#: that ``advpure.specs.build("defense", "diffpure:...")`` and ``names(kind)`` know every method without their
#: packages imported first. No module imports through it (``specs`` holds no reference to their contents), and
#: removing it would change what a fresh ``build``/``names`` call sees.
#: the package facade: ``advpure/__init__.py`` names the public entry points of every floor (``advpure.EXPORTS``)
#: and loads each on first use only (PEP 562 ``__getattr__``), so it stands above the floors without pulling
#: anything in: ``tests/test_public_api.py`` checks that ``import advpure`` imports no sub-module.
FACADE = "advpure"
ALLOWED: frozenset[tuple[str, str]] = frozenset({
    ("advpure.specs", "attacks"), ("advpure.specs", "defenses"), ("advpure.specs", "detect"),
})


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # the imported module (or package)
    path: Path
    line: int


def _packages(src: Path, top: str = "advpure") -> set[str]:
    return {m for m, p in _modules(src, top).items() if p.name == "__init__.py"}


def _modules(src: Path, top: str = "advpure") -> dict[str, Path]:
    """Module name -> file, for every ``.py`` under ``src/top`` (packages by their ``__init__``)."""
    out = {}
    for p in sorted((src / top).rglob("*.py")):
        parts = list(p.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _imports(src: Path, top: str = "advpure") -> list[Import]:
    """Every import of a module of ``top`` by a module of ``top``, wherever it is in the source."""
    mods = _modules(src, top)
    found = []
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[:len(base) - (node.level - 1)]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                # ``from pkg import sub`` imports the submodule ``pkg.sub`` when there is one, else names of pkg
                targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in mods else mod for a in node.names]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in mods:
                targets = [node.value]  # a module named for importlib.import_module
            for t in targets:
                if t == top or t.startswith(top + "."):
                    found.append(Import(name, t, path, node.lineno))
    return found


def _unit(module: str, packages: set[str]) -> str:
    """The sub-package of ``advpure`` a module belongs to; "" for the package root and its top-level modules."""
    parts = module.split(".")
    if len(parts) == 1 or (len(parts) == 2 and module not in packages):
        return ""
    return parts[1]


def _floor(unit: str) -> int:
    for i, units in enumerate(FLOORS):
        if unit in units:
            return i
    raise KeyError(unit)


def _allowed(a: str, b: str) -> bool:
    """May unit ``a`` import unit ``b``?"""
    if a == b:
        return True
    fa, fb = _floor(a), _floor(b)
    if fa != fb:
        return fb < fa
    return fa in ORDERED_FLOORS and FLOORS[fa].index(b) < FLOORS[fa].index(a)


def violations(src: Path = SRC, top: str = "advpure") -> list[str]:
    """One line per import against the floors: ``module -> imported (floor a -> floor b)``."""
    out = []
    packages = _packages(src, top)
    known = {u for floor in FLOORS for u in floor}
    for m in _modules(src, top):
        u = _unit(m, packages)
        if m == f"{top}.{u}" and u not in known:
            out.append(f"{m}: a package on no floor (add it to FLOORS)")
        elif u == "" and m not in ROOT_MODULES:
            out.append(f"{m}: a top-level module on no floor (move it into a floor's package)")
    seen = set()
    for imp in _imports(src, top):
        a, b = _unit(imp.module, packages), _unit(imp.target, packages)
        if a not in known or b not in known or _allowed(a, b) or (imp.module, b) in ALLOWED or imp.module == FACADE:
            continue
        if (imp.module, imp.target, imp.line) in seen:
            continue
        seen.add((imp.module, imp.target, imp.line))
        fa, fb = _floor(a), _floor(b)
        why = "" if fa != fb else (f": {' < '.join(FLOORS[fa])}" if fa in ORDERED_FLOORS else ": sibling packages")
        where = imp.path.relative_to(src.parent)
        out.append(f"{imp.module} -> {imp.target} (floor {fa} -> floor {fb}{why}) [{where}:{imp.line}]")
    return out


def package_cycles(src: Path = SRC, top: str = "advpure") -> list[list[str]]:
    """Groups of units that import each other, directly or through others (the strongly connected components of
    more than one unit in the graph of imports between units; the ALLOWED lookups by name are not edges)."""
    graph: dict[str, set[str]] = {}
    packages = _packages(src, top)
    for imp in _imports(src, top):
        a, b = _unit(imp.module, packages), _unit(imp.target, packages)
        if a != b and (imp.module, b) not in ALLOWED and imp.module != FACADE:
            graph.setdefault(a, set()).add(b)

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    reachable = {u: reach(u) for u in graph}
    groups = {frozenset({u} | {v for v in reachable[u] if u in reachable.get(v, ())}) for u in graph}
    return sorted(sorted(g) for g in groups if len(g) > 1)


def test_imports_point_down():
    bad = violations()
    assert not bad, "imports against the floors (see this module's docstring):\n" + "\n".join(bad)


def test_no_cycle_between_packages():
    cycles = package_cycles()
    groups = "; ".join(", ".join(u or "advpure" for u in c) for c in cycles)
    assert not cycles, f"packages importing each other: {groups}"


def test_the_floor_check_can_fail(tmp_path):
    """A low package importing a high one (inside a function), sibling packages importing each other, a module
    named to importlib, and an unknown top-level module are all reported (so the tests above are not vacuous)."""
    pkg = tmp_path / "advpure"
    for sub in ("ops", "detect", "attacks", "eval", "train"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("__version__ = '0'\n")
    (pkg / "contracts.py").write_text("from . import __version__\n")
    (pkg / "ops" / "a.py").write_text("from ..contracts import __version__\n")  # fine: down
    (pkg / "detect" / "m.py").write_text("def f():\n    from ..attacks import x\n")
    (pkg / "eval" / "e.py").write_text("from ..train import t\n")
    (pkg / "train" / "t.py").write_text("import importlib\nimportlib.import_module('advpure.eval.e')\n")
    (pkg / "stray.py").write_text("")
    bad = violations(tmp_path)
    assert any(b.startswith("advpure.detect.m -> advpure.attacks (floor 2 -> floor 4)") for b in bad), bad
    assert any(b.startswith("advpure.eval.e -> advpure.train.t (floor 5 -> floor 5: sibling") for b in bad), bad
    assert any(b.startswith("advpure.train.t -> advpure.eval.e (floor 5 -> floor 5") for b in bad), bad
    assert any(b.startswith("advpure.stray: a top-level module on no floor") for b in bad), bad
    assert len(bad) == 4, bad
    assert package_cycles(tmp_path) == [["eval", "train"]]


# --------------------------------------------------------------------------- every module imports alone
# A driver that imports the heavy third-party packages once, then forks one child per module: each child starts with
# no advpure module loaded and imports only its own module (the same isolation as a fresh interpreter, without
# paying torch's import per module). ``import advpure.diffusion.purifier`` once failed this way.
DRIVER = r"""
import importlib, os, sys, traceback
import numpy, torch  # noqa: F401  (shared by every child)
failed = []
for m in sys.argv[1:]:
    pid = os.fork()
    if pid == 0:
        try:
            importlib.import_module(m)
        except BaseException as e:
            print(f"{m}: {type(e).__name__}: {e}", flush=True)
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    if status:
        failed.append(m)
sys.exit(1 if failed else 0)
"""


def test_every_module_imports_alone():
    mods = list(_modules(SRC))
    assert len(mods) > 50
    proc = subprocess.run([sys.executable, "-c", DRIVER, *mods], capture_output=True, text=True, timeout=600,
                          env={"PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", "PATH": ""})
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]


def test_the_import_check_can_fail(tmp_path):
    """A package with a two-module cycle fails the driver (so the test above is not vacuous)."""
    pkg = tmp_path / "cyc"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from . import a\n")
    (pkg / "a.py").write_text("from .b import B\nA = 1\n")
    (pkg / "b.py").write_text("from .a import A\nB = 2\n")
    proc = subprocess.run([sys.executable, "-c", DRIVER, "cyc.b"], capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(tmp_path), "OMP_NUM_THREADS": "1", "PATH": ""})
    assert proc.returncode == 1 and "ImportError" in proc.stdout
