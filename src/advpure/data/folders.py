"""CIFAR-10 in its common on-disk formats, and generic image-folder datasets.

Formats read (``source`` is a path, never a URL):

- the standard python batches: a ``cifar-10-batches-py/`` directory or ``cifar-10-python.tar.gz``
  (the format torchvision downloads). They are pickles; they are read with a restricted unpickler
  that only admits numpy arrays, lists, dicts, strings and numbers;
- an image-folder tree ``<root>/{train,test}/<class>/*.{png,jpg,...}`` (one wrapping directory is
  allowed, e.g. ``cifar10-jpeg/train/...``);
- a ``.tar.gz``/``.tgz``/``.tar`` of such a tree (e.g. ``shared/data/cifar10-jpeg.tar.gz``).

The first load decodes everything into ``<cache>/data/*.npz`` (uint8); later loads read that file.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import pickle
import tarfile
from pathlib import Path

import numpy as np
import torch

from ..paths import cache_dir
from .base import ImageSet

CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
SPLITS = ("train", "test")


# --------------------------------------------------------------------------- safe unpickling
class _RestrictedUnpickler(pickle.Unpickler):
    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):  # noqa: D401
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name} from a CIFAR-10 batch file: only numpy arrays and "
            "plain containers are expected in that format"
        )


def _safe_unpickle(data: bytes) -> dict:
    obj = _RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    if not isinstance(obj, dict):
        raise ValueError(f"CIFAR-10 batch: expected a dict, got {type(obj).__name__}")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _batch_arrays(d: dict, what: str) -> tuple[np.ndarray, np.ndarray]:
    if "data" not in d or "labels" not in d:
        raise ValueError(f"{what}: not a CIFAR-10 python batch (keys {sorted(d)}; expected 'data' and 'labels')")
    x = np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    y = np.asarray(d["labels"], dtype=np.int64)
    return x, y


_BATCH_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}


def _read_python_batches_dir(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for fname in _BATCH_FILES[split]:
        f = root / fname
        if not f.is_file():
            raise FileNotFoundError(f"CIFAR-10 python batches: missing {f}")
        x, y = _batch_arrays(_safe_unpickle(f.read_bytes()), str(f))
        xs.append(x)
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


def _read_python_batches_tar(path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    wanted = _BATCH_FILES[split]
    found: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    with tarfile.open(path, "r:*") as tf:
        for m in tf:
            base = os.path.basename(m.name)
            if m.isfile() and base in wanted:
                data = tf.extractfile(m).read()  # type: ignore[union-attr]
                found[base] = _batch_arrays(_safe_unpickle(data), f"{path}:{m.name}")
    missing = [w for w in wanted if w not in found]
    if missing:
        raise FileNotFoundError(f"{path}: missing CIFAR-10 batch file(s) {missing}")
    return np.concatenate([found[w][0] for w in wanted]), np.concatenate([found[w][1] for w in wanted])


# --------------------------------------------------------------------------- image folders
def _decode(data: bytes, what: str) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im = im.convert("RGB") if im.mode not in ("L", "RGB") else im
        a = np.asarray(im, dtype=np.uint8)
    return a[:, :, None] if a.ndim == 2 else a


def _stack(images: list[np.ndarray], labels: list[int], what: str) -> tuple[np.ndarray, np.ndarray]:
    if not images:
        raise FileNotFoundError(f"{what}: no images found (expected <split>/<class>/*.png|jpg)")
    shapes = {a.shape for a in images}
    if len(shapes) != 1:
        raise ValueError(f"{what}: images have different shapes {sorted(shapes)[:4]}; expected one size")
    x = np.stack(images).transpose(0, 3, 1, 2).copy()
    return x, np.asarray(labels, dtype=np.int64)


def _split_root(root: Path, split: str) -> Path:
    if (root / split).is_dir():
        return root / split
    subs = [p for p in root.iterdir() if p.is_dir()] if root.is_dir() else []
    if len(subs) == 1 and (subs[0] / split).is_dir():
        return subs[0] / split
    raise FileNotFoundError(f"{root}: no '{split}/' folder (expected {root}/{split}/<class>/*)")


def _read_folder(root: Path, split: str, classes: list[str] | None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    sroot = _split_root(root, split)
    found = sorted(p.name for p in sroot.iterdir() if p.is_dir())
    classes = _check_classes(found, classes, str(sroot))
    from tqdm import tqdm

    images, labels = [], []
    files = [(ci, f) for ci, c in enumerate(classes) for f in sorted((sroot / c).iterdir())
             if f.suffix.lower() in IMAGE_EXTENSIONS]
    for ci, f in tqdm(files, desc=f"decoding {sroot}", leave=False, mininterval=2):
        images.append(_decode(f.read_bytes(), str(f)))
        labels.append(ci)
    x, y = _stack(images, labels, str(sroot))
    return x, y, classes


def _check_classes(found: list[str], classes: list[str] | None, what: str) -> list[str]:
    if classes is None:
        return found
    if sorted(found) != sorted(classes):
        raise ValueError(f"{what}: class folders {found}, expected {classes}")
    return classes


def _read_folder_tar(path: Path, split: str, classes: list[str] | None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    from tqdm import tqdm

    entries: dict[str, list[tuple[str, bytes]]] = {}
    with tarfile.open(path, "r:*") as tf:
        for m in tqdm(tf, desc=f"reading {path.name} ({split})", leave=False, mininterval=2):
            parts = Path(m.name).parts
            if m.isdir() and len(parts) >= 2 and parts[-2] == split:
                entries.setdefault(parts[-1], [])  # a class folder, possibly empty
                continue
            if not m.isfile() or not m.name.lower().endswith(IMAGE_EXTENSIONS):
                continue
            if len(parts) < 3 or parts[-3] != split:
                continue
            entries.setdefault(parts[-2], []).append((parts[-1], tf.extractfile(m).read()))  # type: ignore[union-attr]
    if not entries:
        raise FileNotFoundError(f"{path}: no images under a '{split}/<class>/' folder inside the archive")
    classes = _check_classes(sorted(entries), classes, f"{path}:{split}")
    images, labels = [], []
    for ci, c in enumerate(classes):
        for name, data in sorted(entries[c]):
            images.append(_decode(data, f"{path}:{c}/{name}"))
            labels.append(ci)
    x, y = _stack(images, labels, f"{path}:{split}")
    return x, y, classes


# --------------------------------------------------------------------------- format detection + cache
def _detect_format(source: Path) -> str:
    if source.is_dir():
        if (source / "data_batch_1").is_file() or (source / "test_batch").is_file():
            return "python-batches-dir"
        if (source / "cifar-10-batches-py").is_dir():
            return "python-batches-dir"
        return "folder"
    if source.is_file():
        name = source.name.lower()
        if not name.endswith((".tar.gz", ".tgz", ".tar")):
            raise ValueError(f"{source}: expected a directory, a .tar.gz/.tgz/.tar archive, got a file of another type")
        with tarfile.open(source, "r:*") as tf:
            for m in tf:
                base = os.path.basename(m.name)
                if base in ("data_batch_1", "test_batch", "batches.meta"):
                    return "python-batches-tar"
                if m.isfile() and m.name.lower().endswith(IMAGE_EXTENSIONS):
                    return "folder-tar"
        raise ValueError(f"{source}: archive holds neither CIFAR-10 python batches nor an image-folder tree")
    raise FileNotFoundError(f"data path {source} does not exist")


def _cache_key(source: Path, split: str, fmt: str) -> str:
    st = source.stat()
    h = hashlib.sha256(f"{source.resolve()}|{st.st_size}|{int(st.st_mtime)}|{split}|{fmt}|v1".encode())
    return h.hexdigest()[:16]


def load_folder_dataset(
    source: str | os.PathLike,
    split: str,
    *,
    name: str | None = None,
    classes: list[str] | None = None,
    use_cache: bool = True,
) -> ImageSet:
    """Load any of the supported on-disk formats (see the module docstring) as an :class:`ImageSet`.

    ``classes`` fixes the label order (and checks the class folders); default: sorted folder names.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}, expected one of {SPLITS}")
    source = Path(source).expanduser()
    if not source.exists():
        raise FileNotFoundError(f"data path {source} does not exist (pass --data-dir or set the environment variable)")
    fmt = _detect_format(source)
    name = name or source.name.split(".")[0]
    cache_file = cache_dir() / "data" / f"{name}-{split}-{_cache_key(source, split, fmt)}.npz"
    if use_cache and cache_file.is_file():
        with np.load(cache_file, allow_pickle=False) as z:
            x, y, cls = z["x"], z["y"], [str(c) for c in z["classes"]]
    else:
        if fmt == "python-batches-dir":
            root = source / "cifar-10-batches-py" if (source / "cifar-10-batches-py").is_dir() else source
            x, y = _read_python_batches_dir(root, split)
            cls = classes or list(CIFAR10_CLASSES)
        elif fmt == "python-batches-tar":
            x, y = _read_python_batches_tar(source, split)
            cls = classes or list(CIFAR10_CLASSES)
        elif fmt == "folder":
            x, y, cls = _read_folder(source, split, classes)
        else:
            x, y, cls = _read_folder_tar(source, split, classes)
        if use_cache:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            # a unique temporary name per writer: concurrent processes (torchrun ranks, parallel jobs) never
            # share one, and the rename is atomic, so a reader sees either no file or a whole one
            fd, tmp_name = tempfile.mkstemp(prefix=cache_file.stem + ".", suffix=".tmp.npz", dir=cache_file.parent)
            try:
                with os.fdopen(fd, "wb") as fh:
                    np.savez(fh, x=x, y=y, classes=np.asarray(cls))
                os.replace(tmp_name, cache_file)
            except BaseException:
                Path(tmp_name).unlink(missing_ok=True)
                raise
    return ImageSet(
        torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y), list(cls), name, split,
        {"source": str(source), "format": fmt},
    )
