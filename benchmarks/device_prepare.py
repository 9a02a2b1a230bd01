"""Prepare, here, what ``benchmarks/device_train.py`` needs on the accelerator machine, within its 64 MiB limit.

The device machine has no ``diffusers`` and ``../shared`` does not travel, so the data and a wheel are carried:
``runs/device/cifar10-jpeg.tar.gz`` (19.6 MB) and ``.whl/diffusers-*.whl``. The full diffusers 0.42.1 wheel is 6.4 MB;
with the 41 MB of tracked files that was 67.3 MB, over the 67.1 MB (64 MiB) that travels (measured 2026-11-30). The
pipelines (``diffusers/pipelines/*/``, ``diffusers/modular_pipelines/*/``: 4.1 MB of the 6.4 compressed) are never
imported by ``UNet2DModel`` -- diffusers loads its submodules lazily -- so this script writes the wheel without them
(2.2 MB; the packages' own ``__init__.py`` kept, RECORD rewritten to match), installs it into a scratch folder and
imports ``UNet2DModel`` from there as a check, then prints the size that will travel against the limit.

    .venv/bin/python benchmarks/device_prepare.py          # then run device_train.py as its docstring says
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LIMIT = 64 * 2**20
PRUNED = ("diffusers/pipelines/", "diffusers/modular_pipelines/")


def keep(name: str) -> bool:
    """False for files in subfolders of the pruned packages (their top-level files are kept)."""
    for pre in PRUNED:
        if name.startswith(pre):
            return "/" not in name[len(pre):]
    return True


def prune_wheel(src: Path, dst: Path) -> tuple[int, int]:
    """Copy wheel ``src`` to ``dst`` without the pruned files; RECORD lists only what is kept. Returns the number of
    files kept and dropped."""
    kept = dropped = 0
    tmp = dst.with_suffix(".tmp")
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zout:
        for info in zin.infolist():
            if not keep(info.filename):
                dropped += 1
                continue
            data = zin.read(info.filename)
            if info.filename.endswith(".dist-info/RECORD"):
                lines = [ln for ln in data.decode().splitlines() if ln and keep(ln.split(",")[0])]
                data = ("\n".join(lines) + "\n").encode()
            zout.writestr(info, data)
            kept += 1
    tmp.replace(dst)
    return kept, dropped


def travel_bytes() -> int:
    """Bytes of tracked and untracked-not-ignored files (what the device tool sends besides ``carry``)."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                         capture_output=True, check=True).stdout.decode()
    return sum((REPO / f).stat().st_size for f in out.split("\0") if f and (REPO / f).is_file())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"))
    ap.add_argument("--diffusers", default="0.42.1")
    a = ap.parse_args(argv)
    runs, whl = REPO / "runs" / "device", REPO / ".whl"
    runs.mkdir(parents=True, exist_ok=True)
    whl.mkdir(exist_ok=True)
    data = runs / "cifar10-jpeg.tar.gz"
    if not Path(a.data).is_file():
        raise SystemExit(f"device_prepare: CIFAR-10 archive {a.data} not found")
    shutil.copyfile(a.data, data)
    with tempfile.TemporaryDirectory() as d:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d", d,
                        f"diffusers=={a.diffusers}"], check=True)
        src = next(Path(d).glob("diffusers-*.whl"))
        for old in whl.glob("diffusers-*.whl"):
            old.unlink()
        dst = whl / src.name
        kept, dropped = prune_wheel(src, dst)
        site = Path(d) / "site"
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                        "--target", str(site), str(dst)], check=True)
        subprocess.run([sys.executable, "-c", "import diffusers, sys; from diffusers import UNet2DModel; "
                        f"assert diffusers.__file__.startswith({str(site)!r}), diffusers.__file__"],
                       env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}, check=True)
        print(f"{dst.relative_to(REPO)}: {src.stat().st_size / 1e6:.1f} MB -> {dst.stat().st_size / 1e6:.1f} MB "
              f"({kept} files kept, {dropped} pipeline files dropped); UNet2DModel imports from it")
    carried = sum(p.stat().st_size for p in (data, *whl.glob("*.whl")))
    total = travel_bytes() + carried
    print(f"travels: {total / 2**20:.1f} MiB of {LIMIT / 2**20:.0f} MiB (tree {(total - carried) / 2**20:.1f}, "
          f"carried {carried / 2**20:.1f})")
    if total > LIMIT:
        raise SystemExit("device_prepare: over the device tool's 64 MiB: carry less or untrack large files")


if __name__ == "__main__":
    main()
