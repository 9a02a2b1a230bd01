"""The README's Python example runs as written (from the repository root, where its zoo/ paths point)."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_python_example_runs():
    text = (ROOT / "README.md").read_text()
    section = text.split("## In Python", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len(code.strip().splitlines()) <= 15, "the README promises an example of at most 15 lines"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=900,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert "defended, clean:" in out.stdout
    m = re.search(r"robust accuracy \(mean over draws\) \| ([0-9.]+)%", out.stdout)
    assert m is not None, out.stdout[-2000:]
    assert 0.0 <= float(m.group(1)) <= 100.0
