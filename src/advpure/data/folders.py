"""CIFAR-10 in its common on-disk formats, and generic image-folder datasets.

Formats read (``source`` is a path, never a URL):

- the standard python batches: a ``cifar-10-batches-py/`` directory or ``cifar-10-python.tar.gz``
  (the format torchvision downloads). They are pickles; they are read with a restricted unpickler
  that only admits numpy arrays, lists, dicts, strings and numbers;
- an image-folder tree ``<root>/{train,test}/<class>/*.{png,jpg,...}`` (one wrapping directory is
  allowed, e.g. ``cifar10-jpeg/train/...``);
- a ``.tar.gz``/``.tgz``/``.tar`` of such a tree (e.g. ``shared/data/cifar10-jpeg.tar.gz``).

Images are decoded to 8-bit with their mode checked: grayscale (8- or 16-bit, bilevel) stays one channel, RGB
(8- or 16-bit) three; palette images and images with an alpha channel are accepted when fully opaque (a transparent
pixel has no colour without a background, so such files are refused by name); CMYK is converted to RGB (through its
ICC profile when it has one). A folder mixing grayscale and RGB images gets RGB throughout (gray replicated). Other
modes (float, 32-bit integer, LAB, ...) are refused by name, as are truncated or corrupt files and archives.

The first load decodes everything into ``<cache>/data/*.npz`` (uint8); later loads read that file. The cache is keyed
on the files that are read (names, sizes and modification times), so an added, removed or overwritten image is
decoded again.
"""

from __future__ import annotations

import hashlib
import io
import lzma
import os
import pickle
import tarfile
import tempfile
import zlib
from pathlib import Path
from typing import Callable, Iterator

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


def _safe_unpickle(data: bytes, what: str = "CIFAR-10 batch") -> dict:
    try:
        obj = _RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except pickle.UnpicklingError as e:
        if str(e).startswith("refusing"):
            raise pickle.UnpicklingError(f"{what}: {e}") from None
        raise ValueError(f"{what}: not a readable CIFAR-10 python batch (truncated or corrupt: {e})") from None
    except (EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError, MemoryError) as e:
        raise ValueError(f"{what}: not a readable CIFAR-10 python batch (truncated or corrupt: "
                         f"{type(e).__name__}: {e})") from None
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
        x, y = _batch_arrays(_safe_unpickle(f.read_bytes(), str(f)), str(f))
        xs.append(x)
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


def _read_python_batches_tar(path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    wanted = _BATCH_FILES[split]
    found: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for m, data in _tar_members(path, lambda m: os.path.basename(m.name) in wanted):
        if data is not None:
            what = f"{path}:{m.name}"
            found[os.path.basename(m.name)] = _batch_arrays(_safe_unpickle(data, what), what)
    missing = [w for w in wanted if w not in found]
    if missing:
        raise FileNotFoundError(f"{path}: missing CIFAR-10 batch file(s) {missing}")
    return np.concatenate([found[w][0] for w in wanted]), np.concatenate([found[w][1] for w in wanted])


# --------------------------------------------------------------------------- archives
_ARCHIVE_ERRORS = (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError)


def _tar_members(path: Path, want: Callable[[tarfile.TarInfo], bool]) -> Iterator[tuple[tarfile.TarInfo, bytes | None]]:
    """Every member of the archive with its bytes when it is a file ``want`` accepts (else None). A file that is
    not a tar archive, or a truncated or corrupt one, is a ValueError naming the archive."""
    try:
        with tarfile.open(path, "r:*") as tf:
            for m in tf:
                data = tf.extractfile(m).read() if m.isfile() and want(m) else None  # type: ignore[union-attr]
                yield m, data
    except _ARCHIVE_ERRORS as e:
        first = (str(e).splitlines() or [""])[0]
        raise ValueError(f"{path}: not a readable tar archive (truncated, corrupt or not a tar file: "
                         f"{type(e).__name__}{': ' + first if first else ''})") from None


# --------------------------------------------------------------------------- image folders
_OPAQUE = 255
_MODES_16 = ("I;16", "I;16L", "I;16B", "I;16N")


def _from_16bit(a: np.ndarray) -> np.ndarray:
    return ((a.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def _to_uint8(im, what: str) -> np.ndarray:
    """An opened PIL image as (H, W, 1) or (H, W, 3) uint8; modes that cannot be converted without guessing raise."""
    mode = im.mode
    if mode in ("1", "L"):
        a = np.asarray(im.convert("L"), dtype=np.uint8)
    elif mode in _MODES_16 or (mode == "I" and im.format == "PNG"):  # 16-bit grayscale (PNG)
        a16 = np.asarray(im).astype(np.int64)
        if a16.size and (a16.min() < 0 or a16.max() > 65535):
            raise ValueError(f"{what}: image mode {mode} with values outside 0..65535; expected 8- or 16-bit pixels")
        a = _from_16bit(a16)
    elif mode == "RGB":  # 8-bit, or 16-bit PNG (Pillow keeps the high byte)
        a = np.asarray(im, dtype=np.uint8)
    elif mode in ("RGBA", "RGBa", "LA", "La", "PA", "P"):
        has_alpha = mode != "P" or "transparency" in im.info
        rgba = im.convert("RGBA" if mode in ("RGBA", "RGBa", "P", "PA") else "LA")
        if has_alpha:
            alpha = np.asarray(rgba.getchannel("A"))
            if (alpha < _OPAQUE).any():
                raise ValueError(f"{what}: image has transparent pixels (mode {mode}); their colour depends on a "
                                 "background advpure does not guess: flatten the image onto one first")
        a = np.asarray(rgba.convert("RGB" if rgba.mode == "RGBA" else "L"), dtype=np.uint8)
    elif mode == "CMYK":
        icc = im.info.get("icc_profile")
        if icc:
            from PIL import ImageCms

            rgb = ImageCms.profileToProfile(im, ImageCms.ImageCmsProfile(io.BytesIO(icc)),
                                            ImageCms.createProfile("sRGB"), outputMode="RGB")
            a = np.asarray(rgb, dtype=np.uint8)
        else:  # no profile: the standard naive conversion R = (1 - C)(1 - K), ...
            c = np.asarray(im).astype(np.float64) / 255.0
            a = np.round(255.0 * (1 - c[..., :3]) * (1 - c[..., 3:4])).astype(np.uint8)
    elif mode == "YCbCr":
        a = np.asarray(im.convert("RGB"), dtype=np.uint8)
    else:
        raise ValueError(f"{what}: image mode {mode!r} is not supported (expected 8/16-bit grayscale or RGB, palette, "
                         "opaque alpha or CMYK); convert the file to 8-bit RGB or grayscale")
    return a[:, :, None] if a.ndim == 2 else a


def _decode(data: bytes, what: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        im = Image.open(io.BytesIO(data))
        im.load()  # decode now: a truncated or corrupt file fails here, by name
    except UnidentifiedImageError:
        raise ValueError(f"{what}: cannot decode the image (corrupt, truncated, or not an image format Pillow "
                         "reads)") from None
    except (OSError, SyntaxError, EOFError, ValueError, Image.DecompressionBombError, zlib.error) as e:
        first = (str(e).splitlines() or [""])[0]
        raise ValueError(f"{what}: cannot decode the image (truncated or corrupt: "
                         f"{type(e).__name__}{': ' + first if first else ''})") from None
    with im:
        try:
            return _to_uint8(im, what)
        except (OSError, zlib.error) as e:  # a conversion Pillow cannot do (e.g. a broken ICC profile)
            raise ValueError(f"{what}: cannot convert image mode {im.mode} to RGB ({e})") from None


def _stack(images: list[np.ndarray], labels: list[int], what: str) -> tuple[np.ndarray, np.ndarray]:
    if not images:
        raise FileNotFoundError(f"{what}: no images found (expected <split>/<class>/*.png|jpg)")
    if {a.shape[2] for a in images} == {1, 3}:  # grayscale among RGB images: replicate the gray channel
        images = [np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a for a in images]
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


def _class_files(sroot: Path, c: str) -> list[Path]:
    """The image files of one class folder, in the order they are read."""
    return [f for f in sorted((sroot / c).iterdir()) if f.suffix.lower() in IMAGE_EXTENSIONS]


def _read_folder(root: Path, split: str, classes: list[str] | None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    sroot = _split_root(root, split)
    found = sorted(p.name for p in sroot.iterdir() if p.is_dir())
    classes = _check_classes(found, classes, str(sroot))
    from tqdm import tqdm

    images, labels = [], []
    files = [(ci, f) for ci, c in enumerate(classes) for f in _class_files(sroot, c)]
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

    def wanted(m: tarfile.TarInfo) -> bool:
        parts = Path(m.name).parts
        return m.name.lower().endswith(IMAGE_EXTENSIONS) and len(parts) >= 3 and parts[-3] == split

    entries: dict[str, list[tuple[str, bytes]]] = {}
    for m, data in tqdm(_tar_members(path, wanted), desc=f"reading {path.name} ({split})", leave=False,
                        mininterval=2):
        parts = Path(m.name).parts
        if m.isdir() and len(parts) >= 2 and parts[-2] == split:
            entries.setdefault(parts[-1], [])  # a class folder, possibly empty
        elif data is not None:
            entries.setdefault(parts[-2], []).append((parts[-1], data))
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
        for m, _ in _tar_members(source, lambda m: False):
            base = os.path.basename(m.name)
            if base in ("data_batch_1", "test_batch", "batches.meta"):
                return "python-batches-tar"
            if m.isfile() and m.name.lower().endswith(IMAGE_EXTENSIONS):
                return "folder-tar"
        raise ValueError(f"{source}: archive holds neither CIFAR-10 python batches nor an image-folder tree")
    raise FileNotFoundError(f"data path {source} does not exist")


def _source_files(source: Path, split: str, fmt: str) -> list[Path]:
    """The files a load of ``split`` reads: the archive, the batch files, or every image of every class folder."""
    if source.is_file():
        return [source]
    if fmt == "python-batches-dir":
        root = source / "cifar-10-batches-py" if (source / "cifar-10-batches-py").is_dir() else source
        return [root / f for f in _BATCH_FILES[split] if (root / f).is_file()]
    sroot = _split_root(source, split)
    return [f for c in sorted(p.name for p in sroot.iterdir() if p.is_dir()) for f in _class_files(sroot, c)]


def _cache_key(source: Path, split: str, fmt: str) -> str:
    """A digest of the sorted list of files read, with their sizes and modification times (ns)."""
    h = hashlib.sha256(f"{source.resolve()}|{split}|{fmt}|v2".encode())
    for f in sorted(_source_files(source, split, fmt)):
        st = f.stat()
        h.update(f"{f.relative_to(source) if f != source else f.name}|{st.st_size}|{st.st_mtime_ns}\n".encode())
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
