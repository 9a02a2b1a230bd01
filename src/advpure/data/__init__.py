"""Datasets as in-memory float [0, 1] NCHW images with int64 labels.

``load_dataset(name, split, data_dir=None)`` is the one entry point:

- ``digits``: scikit-learn's bundled digits (no download, the embedded default);
- ``cifar10``: from ``data_dir``, else ``$ADVPURE_CIFAR10``, else ``$ADVPURE_DATA/{cifar-10-batches-py,
  cifar-10-python.tar.gz,cifar10,cifar10-jpeg.tar.gz}``; any format of :mod:`advpure.data.folders`;
- ``folder``: a user's own image-folder tree or archive at ``data_dir`` (``train/<class>/*``, ``test/<class>/*``);
- ``imagenet`` (224x224), ``imagenet256``, ``imagenet64``: an ImageNet-style folder ``val/<wnid>/*.JPEG`` (and
  ``train/``) at ``data_dir``, else ``$ADVPURE_IMAGENET``, else ``$ADVPURE_DATA/imagenet``, decoded lazily
  (:mod:`advpure.data.imagenet`; split ``test`` reads ``val/``).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..paths import data_dir as _env_data_dir
from ..paths import given_data_path
from .base import ImageSet, subset_indices
from .digits import load_digits
from .folders import CIFAR10_CLASSES, load_folder_dataset
from .imagenet import IMAGENET_VARIANTS, LazyImageSet, load_imagenet

DATASETS = ("digits", "cifar10", "folder", *IMAGENET_VARIANTS)
#: the l_inf budget each dataset is attacked at unless told otherwise (digits: as ``advpure demo``)
DEFAULT_LINF_EPS = {"digits": 0.2, "cifar10": 8 / 255, **{name: 4 / 255 for name in IMAGENET_VARIANTS}}
_CIFAR_CANDIDATES = ("cifar-10-batches-py", "cifar-10-python.tar.gz", "cifar10", "cifar10-jpeg", "cifar10-jpeg.tar.gz")


def resolve_cifar10(data_dir: str | os.PathLike | None = None) -> Path:
    """Where CIFAR-10 is read from; a clear error listing what was tried when nowhere."""
    tried = []
    p = given_data_path("cifar10", data_dir, "ADVPURE_CIFAR10")
    if p is not None:
        if data_dir is not None and p.is_dir():
            for c in _CIFAR_CANDIDATES:
                if (p / c).exists():
                    return p / c
        return p
    tried.append("ADVPURE_CIFAR10 (unset)")
    root = _env_data_dir()
    if root is not None:
        for c in _CIFAR_CANDIDATES:
            if (root / c).exists():
                return root / c
        tried.append(f"ADVPURE_DATA={root} (no {', '.join(_CIFAR_CANDIDATES)})")
    else:
        tried.append("ADVPURE_DATA (unset)")
    raise FileNotFoundError(
        "cifar10: no data path given. Pass --data-dir PATH (a cifar-10-batches-py folder, "
        "cifar-10-python.tar.gz, an image-folder tree or a .tar.gz of one) or set ADVPURE_CIFAR10. Tried: "
        + "; ".join(tried)
    )


def load_dataset(name: str, split: str = "test", *, data_dir: str | os.PathLike | None = None
                 ) -> ImageSet | LazyImageSet:
    """Load a dataset by name (see the module docstring)."""
    if name == "digits":
        return load_digits(split)
    if name == "cifar10":
        src = resolve_cifar10(data_dir)
        return load_folder_dataset(src, split, name="cifar10", classes=list(CIFAR10_CLASSES))
    if name == "folder":
        if data_dir is None:
            raise FileNotFoundError("folder: pass --data-dir pointing at a tree with train/<class>/* and test/<class>/*")
        return load_folder_dataset(data_dir, split)
    if name in IMAGENET_VARIANTS:
        return load_imagenet(data_dir, split, name=name)
    raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")


__all__ = ["DEFAULT_LINF_EPS", "IMAGENET_VARIANTS", "ImageSet", "LazyImageSet", "load_dataset", "load_imagenet",
           "load_digits", "load_folder_dataset", "subset_indices", "resolve_cifar10", "CIFAR10_CLASSES", "DATASETS"]
