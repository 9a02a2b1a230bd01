"""scikit-learn's bundled handwritten digits: 1,797 images, 8x8, 1 channel, 10 classes (no download)."""

from __future__ import annotations

import torch

from .base import ImageSet

DIGITS_SPLIT_SEED = 0
DIGITS_TEST_FRACTION = 0.25


def load_digits(split: str = "train") -> ImageSet:
    """Digits as float images in [0, 1] (pixel value / 16), with a fixed seeded split.

    The split is a stratified 75/25 split with seed 0 (1,347 train, 450 test images).
    """
    from sklearn.datasets import load_digits as _sk_load
    from sklearn.model_selection import train_test_split

    if split not in ("train", "test"):
        raise ValueError(f"digits: unknown split {split!r}, expected 'train' or 'test'")
    d = _sk_load()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target, dtype=torch.int64)
    idx = torch.arange(len(y)).numpy()
    tr, te = train_test_split(
        idx, test_size=DIGITS_TEST_FRACTION, random_state=DIGITS_SPLIT_SEED, stratify=d.target
    )
    sel = torch.as_tensor(sorted(tr if split == "train" else te))
    return ImageSet(x[sel], y[sel], [str(i) for i in range(10)], "digits", split)
