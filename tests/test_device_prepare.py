"""benchmarks/device_prepare.py: the diffusers wheel without its pipelines (what the device run carries)."""

from __future__ import annotations

import importlib.util
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("device_prepare", REPO / "benchmarks" / "device_prepare.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_prune_wheel_drops_pipeline_subpackages_and_their_record_lines(tmp_path):
    names = ["diffusers/__init__.py", "diffusers/models/unets/unet_2d.py", "diffusers/pipelines/__init__.py",
             "diffusers/pipelines/ddpm/pipeline_ddpm.py", "diffusers/modular_pipelines/__init__.py",
             "diffusers/modular_pipelines/flux/x.py", "diffusers-0.42.1.dist-info/METADATA"]
    src, dst = tmp_path / "in.whl", tmp_path / "out.whl"
    with zipfile.ZipFile(src, "w") as z:
        for n in names:
            z.writestr(n, f"# {n}\n")
        z.writestr("diffusers-0.42.1.dist-info/RECORD",
                   "".join(f"{n},sha256=x,1\n" for n in names) + "diffusers-0.42.1.dist-info/RECORD,,\n")
    kept, dropped = _module().prune_wheel(src, dst)
    with zipfile.ZipFile(dst) as z:
        files = set(z.namelist())
        record = z.read("diffusers-0.42.1.dist-info/RECORD").decode().splitlines()
    gone = {"diffusers/pipelines/ddpm/pipeline_ddpm.py", "diffusers/modular_pipelines/flux/x.py"}
    assert (kept, dropped) == (len(names) + 1 - 2, 2)
    assert files == (set(names) - gone) | {"diffusers-0.42.1.dist-info/RECORD"}
    assert {ln.split(",")[0] for ln in record} == files
