"""The in-memory image dataset every loader returns, and seeded evaluation subsets."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class ImageSet:
    """Images and labels held in memory.

    ``images`` is NCHW, either uint8 (0..255) or float in [0, 1]; ``batch``/``tensors`` always return
    float32 in [0, 1]. ``labels`` is int64. ``classes`` names the labels in order.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    name: str
    split: str
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.images.dim() != 4:
            raise ValueError(f"{self.name}: images must be NCHW, got shape {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(
                f"{self.name}: {self.images.shape[0]} images but labels of shape {tuple(self.labels.shape)}"
            )
        self.labels = self.labels.long()

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def batch(self, idx: torch.Tensor | slice | list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Float images in [0, 1] and int64 labels for the given indices."""
        x = self.images[idx]
        x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
        return x, self.labels[idx]

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole set as (float images in [0, 1], labels)."""
        return self.batch(slice(None))

    def subset(self, n: int, seed: int) -> "ImageSet":
        """A seeded subset of ``n`` images; see :func:`subset_indices`."""
        idx = subset_indices(len(self), n, seed)
        return ImageSet(
            self.images[idx], self.labels[idx], list(self.classes), self.name, self.split,
            {**self.meta, "subset": {"n": n, "seed": seed}, "indices": idx.tolist()},
        )


def subset_indices(total: int, n: int, seed: int) -> torch.Tensor:
    """Indices of a seeded evaluation subset, stable across runs and machines.

    The first ``n`` of a permutation of ``range(total)`` drawn by ``torch.Generator().manual_seed(seed)``
    (CPU generator, so the same on every machine), sorted. A larger ``n`` with the same seed extends
    a smaller one (the permutation prefix grows), like the data seeds used in the papers.
    """
    if n <= 0:
        raise ValueError(f"subset size n must be >= 1, got {n}")
    if n > total:
        raise ValueError(f"subset size n={n} exceeds the dataset size {total}")
    g = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(total, generator=g)
    return perm[:n].sort().values
