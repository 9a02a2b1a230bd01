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


def shared_dir() -> Path | None:
    """The project's shared/ folder, or None when it is not there."""
    v = os.environ.get("ADVPURE_SHARED")
    if v:
        p = Path(v).expanduser()
        return p if p.is_dir() else None
    repo = Path(__file__).resolve().parents[2]
    for cand in (repo.parent / "shared", repo / "shared"):
        if cand.is_dir():
            return cand
    return None
