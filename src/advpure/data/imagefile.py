"""A set of images saved as one safetensors file, e.g. a purified copy of a training set.

Layout: ``images`` uint8 NCHW (0..255), ``labels`` int64, ``indices`` int64 (each image's index in the set it was
made from), and a JSON sidecar (``kind: "image-set"``) that records what made the images (the purifier spec,
seeds, the source set) and the file's sha256, which :func:`load_image_file` verifies.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..checkpoint import load_safetensors, read_sidecar, save_weights, verify_sha256
from .base import ImageSet


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 1] to uint8 (rounded to the nearest of 256 levels); values outside are an error."""
    if x.dtype == torch.uint8:
        return x
    if not torch.isfinite(x).all() or float(x.min()) < 0.0 or float(x.max()) > 1.0:
        raise ValueError(f"images must be finite and in [0, 1] to be stored as uint8 (min {float(x.min()):.4g}, "
                         f"max {float(x.max()):.4g})")
    return (x.detach().float() * 255.0).round_().to(torch.uint8)


def save_image_file(path: str | os.PathLike, images: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor,
                    sidecar: dict) -> dict:
    """Write images (float in [0, 1] or uint8), labels and source indices, with a sidecar (``kind: image-set``)."""
    n = images.shape[0]
    if images.dim() != 4 or labels.shape != (n,) or indices.shape != (n,):
        raise ValueError(f"{path}: images must be NCHW with one label and one index each, got images "
                         f"{tuple(images.shape)}, labels {tuple(labels.shape)}, indices {tuple(indices.shape)}")
    return save_weights({"images": to_uint8(images), "labels": labels.long(), "indices": indices.long()}, path,
                        {**sidecar, "kind": "image-set", "n": int(n), "image_shape": list(images.shape[1:])})


def load_image_file(path: str | os.PathLike, *, classes: list[str] | None = None) -> ImageSet:
    """Read a file written by :func:`save_image_file` (sha256 verified against its sidecar) as an ImageSet."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file {path} does not exist")
    meta = read_sidecar(path)
    if meta.get("kind") != "image-set":
        raise ValueError(f"{path}: the sidecar says kind {meta.get('kind')!r}, not an image set ('image-set')")
    verify_sha256(path, meta.get("sha256"))
    t = load_safetensors(path)
    missing = {"images", "labels", "indices"} - set(t)
    if missing:
        raise ValueError(f"{path}: missing tensors {sorted(missing)} (an image set has images, labels, indices)")
    if t["images"].dtype != torch.uint8:
        raise ValueError(f"{path}: images must be uint8, got {t['images'].dtype}")
    labels = t["labels"].long()
    n_classes = len(classes) if classes is not None else int(meta.get("num_classes", int(labels.max()) + 1))
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= n_classes):
        raise ValueError(f"{path}: labels outside [0, {n_classes})")
    names = list(classes) if classes is not None else [str(i) for i in range(n_classes)]
    return ImageSet(t["images"], labels, names, meta.get("name", path.stem), meta.get("split", "train"),
                    {"source_file": str(path), "indices": t["indices"].tolist(), "sidecar": meta})


def load_sources(s: ImageSet) -> ImageSet:
    """The images an image set was made from (its sidecar's ``source``: dataset, split, data location), at its
    recorded indices, in its order; an error if their labels differ from the set's."""
    from . import load_dataset

    src = s.meta.get("sidecar", {}).get("source")
    if not src:
        raise ValueError(f"{s.meta.get('source_file', s.name)}: the sidecar records no source to load")
    ref = load_dataset(src["dataset"], src["split"], data_dir=src.get("data"))
    idx = torch.tensor(s.meta["indices"], dtype=torch.long)
    out = ImageSet(ref.images[idx], ref.labels[idx], list(ref.classes), ref.name, ref.split, {"indices": idx.tolist()})
    if not torch.equal(out.labels, s.labels):
        raise ValueError(f"{s.meta.get('source_file', s.name)}: its labels differ from its source's at the recorded indices")
    return out
