"""Every module of the package imports alone in a fresh interpreter state: no import cycle hides behind import order
(``import advpure.diffusion.purifier`` used to fail this way)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# A driver that imports the heavy third-party packages once, then forks one child per module: each child starts with
# no advpure module loaded and imports only its own module (the same isolation as a fresh interpreter, without
# paying torch's import per module).
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


def _modules() -> list[str]:
    out = []
    for p in sorted((SRC / "advpure").rglob("*.py")):
        parts = list(p.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out.append(".".join(parts))
    return out


def test_every_module_imports_alone():
    mods = _modules()
    assert len(mods) > 50
    proc = subprocess.run([sys.executable, "-c", DRIVER, *mods], capture_output=True, text=True, timeout=600,
                          env={"PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", "PATH": ""})
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]


def test_the_check_can_fail(tmp_path):
    """A package with a two-module cycle fails the driver (so the test above is not vacuous)."""
    pkg = tmp_path / "cyc"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from . import a\n")
    (pkg / "a.py").write_text("from .b import B\nA = 1\n")
    (pkg / "b.py").write_text("from .a import A\nB = 2\n")
    proc = subprocess.run([sys.executable, "-c", DRIVER, "cyc.b"], capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(tmp_path), "OMP_NUM_THREADS": "1", "PATH": ""})
    assert proc.returncode == 1 and "ImportError" in proc.stdout
