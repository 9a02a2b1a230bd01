"""ImageNet-style folders (``val/<wnid>/*.JPEG``, optionally ``train/<wnid>/*``), decoded lazily with PIL + numpy.

``load_dataset("imagenet", "val", data_dir=ROOT)`` (or ``load_imagenet(ROOT, "val")``) returns a
:class:`LazyImageSet`: the file list and labels in memory, pixels decoded only for the images asked for
(``batch(idx)``, or ``subset(n, seed)``, which returns an in-memory :class:`~advpure.data.base.ImageSet` of those n
images). ``split="test"`` reads ``test/`` when it exists, else ``val/`` (ImageNet's test labels are not public; the
papers evaluate on the validation set).

Preprocessing (torchvision's ``Resize`` + ``CenterCrop`` on PIL images): convert to RGB (grayscale and CMYK JPEGs,
as torchvision's loader does), resize the shorter side to ``resize`` with PIL's bilinear filter (antialiased when
downsampling; the longer side ``int(resize * long / short)``), center crop ``size`` x ``size`` (offsets
``round((H - size) / 2)``). The dataset names fix the sizes:

=============== ====== ====== =================================================================================
name            resize crop   for
=============== ====== ====== =================================================================================
``imagenet``    256    224    classifiers (the standard evaluation transform)
``imagenet256`` 256    256    the 256x256 ADM (guided-diffusion) DiffPure purifies with; a classifier built with
                              ``image_size=256, resize_to=224`` takes these images
``imagenet64``  64     64     64x64 diffusion models (e.g. the small ADM of the interop tests)
=============== ====== ====== =================================================================================

Class indices. With all 1000 class folders present, the index is the position of the folder name in sorted order
(torchvision's ``ImageFolder`` order, which is the ImageNet-1k index order of the wnids). With fewer folders,
sorted order would not be the 1000-class index a pretrained classifier outputs, so a class list is required and
otherwise the load is refused: ``classes=`` (a list of names or a file), or ``$ADVPURE_IMAGENET_CLASSES`` (a file),
or a file in the data folder: ``classes.txt`` / ``wnids.txt`` / ``LOC_synset_mapping.txt`` / ``synset_words.txt``
(one class per line in index order, the first word of each line is the folder name) or ``imagenet_class_index.json``
(``{"0": ["n01440764", "tench"], ...}``, or a JSON list). The list fixes ``num_classes`` and the indices; every class
folder must be in it. For a classifier trained on just the folders present, list exactly those.

A file PIL cannot decode (truncated or corrupt) raises a ValueError naming it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..paths import data_dir as _env_data_dir
from ..paths import given_data_path
from .base import ImageSet, subset_indices

#: dataset name -> (shorter side after resizing, center-crop size)
IMAGENET_VARIANTS: dict[str, tuple[int, int]] = {"imagenet": (256, 224), "imagenet256": (256, 256),
                                                 "imagenet64": (64, 64)}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
CLASS_FILES = ("classes.txt", "wnids.txt", "LOC_synset_mapping.txt", "synset_words.txt", "imagenet_class_index.json")
NUM_IMAGENET_CLASSES = 1000


# --------------------------------------------------------------------------- decoding
def _resized_size(w: int, h: int, resize: int) -> tuple[int, int]:
    """torchvision's ``Resize(int)``: the shorter side becomes ``resize``, the longer ``int(resize * long / short)``."""
    if w <= h:
        return resize, int(resize * h / w)
    return int(resize * w / h), resize


def decode_image(path: str | os.PathLike, size: int = 224, resize: int = 256) -> np.ndarray:
    """One image as uint8 (3, size, size): RGB, shorter side resized to ``resize`` (bilinear), center crop."""
    from PIL import Image

    if resize < size:
        raise ValueError(f"resize ({resize}) must be at least the crop size ({size})")
    try:
        with Image.open(path) as im:
            im.load()
            rgb = im.convert("RGB")
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
        raise ValueError(f"{path}: not a readable image (truncated or corrupt: {e})") from None
    w, h = rgb.size
    if min(w, h) < 1:
        raise ValueError(f"{path}: empty image ({w}x{h})")
    nw, nh = _resized_size(w, h, resize)
    if (nw, nh) != (w, h):
        rgb = rgb.resize((nw, nh), Image.BILINEAR)
    top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
    arr = np.asarray(rgb.crop((left, top, left + size, top + size)), dtype=np.uint8)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


# --------------------------------------------------------------------------- class lists and folders
def read_class_list(path: str | os.PathLike) -> list[str]:
    """Class names in index order from a text file (first word per line; blank and ``#`` lines skipped) or
    ``imagenet_class_index.json`` (``{"0": ["n01440764", "tench"], ...}``) or a JSON list of names."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"class list {p} does not exist")
    if p.suffix == ".json":
        try:
            obj = json.loads(p.read_text())
        except (ValueError, UnicodeDecodeError) as e:
            raise ValueError(f"{p}: not valid JSON ({e})") from None
        if isinstance(obj, dict):
            try:
                items = sorted(((int(k), v) for k, v in obj.items()), key=lambda kv: kv[0])
            except (TypeError, ValueError):
                raise ValueError(f"{p}: expected {{\"0\": [\"n01440764\", \"tench\"], ...}} with integer "
                                 "keys") from None
            if [k for k, _ in items] != list(range(len(items))):
                raise ValueError(f"{p}: class indices must be 0..{len(items) - 1} without gaps")
            names = [v[0] if isinstance(v, (list, tuple)) and v else v for _, v in items]
        elif isinstance(obj, list):
            names = obj
        else:
            raise ValueError(f"{p}: expected a JSON object or list of class names")
        if not all(isinstance(n, str) and n for n in names):
            raise ValueError(f"{p}: every class must be a non-empty string")
    else:
        names = [ln.split()[0] for ln in p.read_text().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not names:
        raise ValueError(f"{p}: the class list is empty")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"{p}: classes listed twice: {', '.join(dup[:5])}")
    return list(names)


def resolve_imagenet(data_dir: str | os.PathLike | None = None) -> Path:
    """The ImageNet root (holding ``val/`` and/or ``train/``): ``data_dir``, else ``$ADVPURE_IMAGENET``, else
    ``$ADVPURE_DATA/imagenet``."""
    p = given_data_path("imagenet", data_dir, "ADVPURE_IMAGENET")
    if p is not None:
        return p
    root = _env_data_dir()
    if root is not None and (root / "imagenet").is_dir():
        return root / "imagenet"
    raise FileNotFoundError("imagenet: no data path given. Pass --data-dir PATH (a folder holding val/<wnid>/*.JPEG) "
                            "or set ADVPURE_IMAGENET (tried ADVPURE_IMAGENET and ADVPURE_DATA/imagenet)")


def _split_dir(root: Path, split: str) -> Path:
    if split not in ("train", "val", "test"):
        raise ValueError(f"imagenet: split must be train, val or test, got {split!r}")
    cands = [split] + (["val"] if split == "test" else [])
    for c in cands:
        if (root / c).is_dir():
            return root / c
    if root.name in cands and root.is_dir():
        return root
    raise FileNotFoundError(f"imagenet: no {' or '.join(c + '/' for c in cands)} folder in {root} (expected "
                            f"{root}/{cands[-1]}/<wnid>/*.JPEG)")


def _is_image(p: Path) -> bool:
    return p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS


def _class_list(root: Path, folders: list[str], classes: Sequence[str] | str | os.PathLike | None,
                where: Path) -> tuple[list[str], str]:
    """(class names in index order, where they came from)."""
    if classes is not None:
        if isinstance(classes, (str, os.PathLike)):
            return read_class_list(classes), str(classes)
        names = [str(c) for c in classes]
        if len(set(names)) != len(names):
            raise ValueError("imagenet: classes= lists a class twice")
        return names, "classes="
    env = os.environ.get("ADVPURE_IMAGENET_CLASSES")
    if env:
        return read_class_list(env), f"ADVPURE_IMAGENET_CLASSES={env}"
    for name in CLASS_FILES:
        for d in dict.fromkeys((root, where.parent, where)):
            if (d / name).is_file():
                return read_class_list(d / name), str(d / name)
    if len(folders) == NUM_IMAGENET_CLASSES:
        return sorted(folders), "sorted folders (ImageFolder order)"
    shown = ", ".join(folders[:5]) + (", ..." if len(folders) > 5 else "")
    raise ValueError(
        f"imagenet: {where} has {len(folders)} class folder(s) ({shown}), not the {NUM_IMAGENET_CLASSES} of "
        "ImageNet-1k, "
        "so their sorted order is not the class index a 1000-class classifier outputs. Give the class list in index "
        f"order: a file {root}/classes.txt (one wnid per line; {', '.join(CLASS_FILES[1:])} are read too), "
        "ADVPURE_IMAGENET_CLASSES=FILE, or classes=[...] in Python. To number just these folders, list exactly them")


class LazyImageSet:
    """An image-folder dataset decoded on demand, with the interface of :class:`~advpure.data.base.ImageSet`:
    ``len()``, ``shape``, ``num_classes``, ``classes``, ``labels``, ``batch(idx)`` (float [0, 1], int64 labels),
    ``tensors()`` (everything: decodes every file), ``subset(n, seed)`` (an in-memory ImageSet of n decoded images,
    the same indices :func:`subset_indices` gives an ImageSet), ``name``, ``split``, ``meta``."""

    def __init__(self, files: Sequence[Path], labels: torch.Tensor, classes: list[str], name: str, split: str,
                 size: int, resize: int, meta: dict | None = None) -> None:
        if len(files) != labels.shape[0]:
            raise ValueError(f"{name}: {len(files)} files but {labels.shape[0]} labels")
        self.files = list(files)
        self.labels = labels.long()
        self.classes = list(classes)
        self.name, self.split = name, split
        self.size, self.resize = int(size), int(resize)
        self.meta = dict(meta or {})

    def __len__(self) -> int:
        return len(self.files)

    def __repr__(self) -> str:
        return (f"LazyImageSet({self.name!r}, split={self.split!r}, {len(self)} images, {self.num_classes} classes, "
                f"{self.size}x{self.size})")

    @property
    def shape(self) -> tuple[int, int, int]:
        return (3, self.size, self.size)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def _indices(self, idx: torch.Tensor | slice | list[int] | int) -> list[int]:
        if isinstance(idx, int):
            idx = [idx]
        return torch.arange(len(self))[idx].reshape(-1).tolist()

    def decode(self, idx: torch.Tensor | slice | list[int]) -> torch.Tensor:
        """uint8 images (N, 3, size, size) of the given indices."""
        ii = self._indices(idx)
        out = np.empty((len(ii), 3, self.size, self.size), dtype=np.uint8)
        for j, i in enumerate(ii):
            out[j] = decode_image(self.files[i], self.size, self.resize)
        return torch.from_numpy(out)

    @property
    def images(self) -> torch.Tensor:
        """Every image, decoded (uint8): for small folders only (ImageNet val at 224 is 7.5 GB)."""
        return self.decode(slice(None))

    def batch(self, idx: torch.Tensor | slice | list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        ii = self._indices(idx)
        return self.decode(ii).float().div_(255.0), self.labels[ii]

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.batch(slice(None))

    def subset(self, n: int, seed: int) -> ImageSet:
        idx = subset_indices(len(self), n, seed)
        ii = idx.tolist()
        return ImageSet(self.decode(ii), self.labels[idx], list(self.classes), self.name, self.split,
                        {**self.meta, "subset": {"n": n, "seed": seed}, "indices": ii,
                         "files": [str(self.files[i]) for i in ii]})


def load_imagenet(data_dir: str | os.PathLike | None = None, split: str = "val", *, name: str = "imagenet",
                  size: int | None = None, resize: int | None = None,
                  classes: Sequence[str] | str | os.PathLike | None = None) -> LazyImageSet:
    """An ImageNet-style split as a :class:`LazyImageSet` (see the module docstring). ``size``/``resize`` default
    to the variant ``name``'s (``imagenet``: 224/256); ``classes``: the class list (names or a file)."""
    if name not in IMAGENET_VARIANTS:
        raise ValueError(f"unknown ImageNet variant {name!r}; expected one of {', '.join(IMAGENET_VARIANTS)}")
    d_resize, d_size = IMAGENET_VARIANTS[name]
    size = int(size) if size is not None else d_size
    resize = int(resize) if resize is not None else (d_resize if size == d_size else size)
    if size < 1 or resize < size:
        raise ValueError(f"imagenet: need 1 <= size <= resize, got size={size}, resize={resize}")
    root = resolve_imagenet(data_dir)
    where = _split_dir(root, split)
    with os.scandir(where) as it:
        entries = sorted(it, key=lambda e: e.name)
    folders = [e.name for e in entries if e.is_dir() and not e.name.startswith(".")]
    loose = [e.name for e in entries if _is_image(Path(e.path))]
    if loose:
        raise ValueError(f"imagenet: {where} holds images directly ({', '.join(loose[:3])}"
                         f"{', ...' if len(loose) > 3 else ''}); expected one folder per class, {where}/<wnid>/*.JPEG "
                         "(sort the validation images into wnid folders with their ground-truth labels first)")
    if not folders:
        raise ValueError(f"imagenet: {where} has no class folders (expected {where}/<wnid>/*.JPEG)")
    names, source = _class_list(root, folders, classes, where)
    index = {c: i for i, c in enumerate(names)}
    unknown = [f for f in folders if f not in index]
    if unknown:
        raise ValueError(f"imagenet: class folder(s) {', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''} in "
                         f"{where} are not in the class list ({source}, {len(names)} classes)")
    files: list[Path] = []
    labels: list[int] = []
    empty = []
    for f in sorted(folders, key=lambda c: index[c]):
        with os.scandir(where / f) as it:  # scandir: no stat per file on the 1.28M-image train split
            imgs = [Path(e.path) for e in sorted(it, key=lambda e: e.name)
                    if not e.name.startswith(".") and e.name.lower().endswith(IMAGE_EXTENSIONS) and e.is_file()]
        if not imgs:
            empty.append(f)
        files += imgs
        labels += [index[f]] * len(imgs)
    if empty:
        raise ValueError(f"imagenet: class folder(s) without images in {where}: {', '.join(empty[:5])}"
                         f"{' ...' if len(empty) > 5 else ''} (extensions read: {', '.join(IMAGE_EXTENSIONS)})")
    meta = {"source": str(where), "size": size, "resize": resize, "class_list": source,
            "folders": len(folders), "transform": f"RGB, resize shorter side {resize} (bilinear), center crop {size}"}
    return LazyImageSet(files, torch.tensor(labels, dtype=torch.long), names, name,
                        "val" if where.name == "val" and split == "test" else split, size, resize, meta)


__all__ = ["IMAGENET_VARIANTS", "LazyImageSet", "decode_image", "load_imagenet", "read_class_list",
           "resolve_imagenet"]
