"""Where advpure looks for data, checkpoints and its cache. Paths only, never URLs.

Environment variables (each can be overridden by the matching command-line option):

- ``ADVPURE_CACHE``   cache directory (decoded datasets, demo models); default ``~/.cache/advpure``
- ``ADVPURE_DATA``    a directory searched for datasets (e.g. holding ``cifar-10-batches-py/``)
- ``ADVPURE_CIFAR10`` the CIFAR-10 source itself: ``cifar-10-batches-py/``, ``cifar-10-python.tar.gz``,
  an image-folder tree or a ``.tar.gz`` of one
- ``ADVPURE_SHARED``  the project's ``shared/`` folder (third-party weights, CIFAR-10 JPEG), used by the
  tests and benchmarks; default ``../shared`` beside the repository
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    p = Path(os.environ.get("ADVPURE_CACHE", Path.home() / ".cache" / "advpure")).expanduser()
    p.mkdir(parents=True, exist_ok=True)
    return p


def data_dir() -> Path | None:
    v = os.environ.get("ADVPURE_DATA")
    return Path(v).expanduser() if v else None


def repo_dir() -> Path:
    """The repository this package runs from (``src/advpure`` lies two folders below it)."""
    return Path(__file__).resolve().parents[2]


def zoo_dir() -> Path:
    """The repository's ``zoo/`` folder of small trained weights with their JSON sidecars (independent of the
    working directory)."""
    return repo_dir() / "zoo"


def shared_dir() -> Path | None:
    """The project's shared/ folder, or None when it is not there."""
    v = os.environ.get("ADVPURE_SHARED")
    if v:
        p = Path(v).expanduser()
        return p if p.is_dir() else None
    repo = repo_dir()
    for cand in (repo.parent / "shared", repo / "shared"):
        if cand.is_dir():
            return cand
    return None


class OutputPathError(ValueError):
    """An output path that cannot be written (raised before any work starts)."""


def _nearest_existing(p: Path) -> Path:
    for a in (p, *p.parents):
        if os.path.lexists(a):
            return a
    return Path(".")


def _probe_dir(d: Path) -> str | None:
    """None when a file can be created in the existing folder ``d``, else why not (nothing is left behind)."""
    import tempfile

    if not os.access(d, os.W_OK | os.X_OK):
        return f"{d} is not writable"
    try:
        fd, name = tempfile.mkstemp(prefix=".advpure-write-check-", dir=d)
    except OSError as e:
        return f"cannot write in {d} ({e.strerror or e})"
    os.close(fd)
    os.unlink(name)
    return None


def check_writable(path: str | os.PathLike, option: str = "--out", kind: str = "file", *,
                   suffix: str | None = None) -> Path:
    """Fail before compute: check that ``path`` can be written as a file (``kind="file"``) or as a folder to write
    files into (``kind="dir"``), creating nothing. Missing parent folders are fine when the nearest existing one is a
    writable folder (they are created when the output is written). Raises :class:`OutputPathError` (a
    ``ValueError``) naming ``option`` and the path: a read-only folder, a directory where a file is expected (or a
    file where a folder is), a parent that is a file, a file name without the required ``suffix``. Returns the
    path."""
    if kind not in ("file", "dir"):
        raise ValueError(f"check_writable: kind must be 'file' or 'dir', got {kind!r}")
    if path is None or str(path) == "":
        raise OutputPathError(f"{option}: empty path")
    p = Path(path).expanduser()

    def fail(why: str) -> OutputPathError:
        return OutputPathError(f"{option} {path}: {why}")

    if suffix is not None and kind == "file" and p.suffix != suffix:
        raise fail(f"expected a {suffix} file name")

    if p.exists():
        if kind == "file":
            if p.is_dir():
                raise fail("is a directory; expected a file path")
            if not os.access(p, os.W_OK):
                raise fail("the file exists and is not writable")
            why = _probe_dir(p.resolve().parent)
        else:
            if not p.is_dir():
                raise fail("exists and is not a directory; expected an output folder")
            why = _probe_dir(p)
    else:
        anc = _nearest_existing(p.parent if kind == "file" else p)
        if not anc.is_dir():
            raise fail(f"cannot create it: {anc} is not a directory")
        why = _probe_dir(anc)
    if why:
        raise fail(why)
    return p


def given_data_path(dataset: str, data_dir: "str | os.PathLike | None", env_var: str) -> "Path | None":
    """The data location a user gave for ``dataset``: ``data_dir`` (an option), else the environment variable
    ``env_var``; None when neither is set. A given path that does not exist is an error naming where it came from."""
    if data_dir is not None:
        p = Path(data_dir).expanduser()
        if not p.exists():
            raise FileNotFoundError(f"{dataset}: data path {p} does not exist")
        return p
    env = os.environ.get(env_var)
    if env:
        p = Path(env).expanduser()
        if not p.exists():
            raise FileNotFoundError(f"{dataset}: {env_var}={env} does not exist")
        return p
    return None
