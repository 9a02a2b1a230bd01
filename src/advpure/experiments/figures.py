"""Figures for purification results (PNG via matplotlib's Agg backend).

:func:`purification_figure` draws, for ``n`` images (columns), five rows:

1. clean images;
2. adversarial images;
3. purified images;
4. the perturbation ``adv - clean``, amplified and centred at 0.5 grey (0.5 = no change);
5. the purifier's change ``purified - adv``, amplified the same way.

Difference rows are shown as ``0.5 + gain * diff`` clipped to [0, 1]. The default gain maps the
largest absolute difference in that row to 0.5 (so the full grey range is used) and is written in the
row label. Grayscale images (1 channel) use the gray colormap; 3-channel ones are shown as RGB.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..contracts import check_images, check_int


def _to_hwc(img: torch.Tensor):
    img = img.detach().float().cpu().clamp(0, 1)
    if img.shape[0] == 1:
        return img[0].numpy()
    return img.permute(1, 2, 0).numpy()


def _amplify(diff: torch.Tensor, gain: float | None) -> tuple[torch.Tensor, float]:
    if gain is None:
        m = float(diff.abs().max())
        gain = 0.5 / m if m > 0 else 1.0
    return (0.5 + gain * diff).clamp(0, 1), gain


def _image_grid(rows: list[tuple[str, list[torch.Tensor]]], path: Path, *, gray: bool,
                figsize: tuple[float, float], dpi: int, title: str | None = None,
                col_titles: list[str] | None = None) -> Path:
    """Draw ``rows`` of (label, CHW images in [0, 1]) as a grid, the label left of each row and ``col_titles`` above
    the first, and write it to ``path`` (PNG, its folder created)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), len(rows[0][1]), figsize=figsize, squeeze=False)
    for r, (label, imgs) in enumerate(rows):
        for c, img in enumerate(imgs):
            ax = axes[r][c]
            ax.imshow(_to_hwc(img), cmap="gray" if gray else None, vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0 and col_titles:
                ax.set_title(col_titles[c], fontsize=8)
            if c == 0:
                ax.set_ylabel(label, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def purification_figure(clean: torch.Tensor, adv: torch.Tensor, purified: torch.Tensor,
                        path: str | os.PathLike, *, n: int = 8, diff_gain: float | None = None,
                        title: str | None = None, dpi: int = 120) -> Path:
    """Write the five-row purification figure (see the module docstring) to ``path`` (PNG).

    Args:
        clean, adv, purified: float [0, 1] NCHW batches of the same shape (1 or 3 channels).
        n: number of images (columns); the first ``min(n, N)`` are drawn.
        diff_gain: amplification of the difference rows; ``None`` picks one per row so the largest
            absolute difference reaches black/white.
        title: optional figure title.
    Returns the written path.
    """
    for t, name in ((clean, "clean"), (adv, "adv"), (purified, "purified")):
        check_images(t, name=name)
    if not (clean.shape == adv.shape == purified.shape):
        raise ValueError(f"clean, adv and purified must have the same shape, got {tuple(clean.shape)}, "
                         f"{tuple(adv.shape)} and {tuple(purified.shape)}")
    if clean.shape[1] not in (1, 3):
        raise ValueError(f"purification_figure: expected 1 or 3 channels, got {clean.shape[1]}")
    check_int(n, "n", minimum=1)
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"purification_figure: expected a .png path, got {path}")

    k = min(n, clean.shape[0])
    clean, adv, purified = clean[:k], adv[:k], purified[:k]
    pert, g1 = _amplify(adv - clean, diff_gain)
    change, g2 = _amplify(purified - adv, diff_gain)
    rows = [
        ("clean", clean), ("adversarial", adv), ("purified", purified),
        (f"adv - clean\n(x{g1:.3g}, 0.5 = 0)", pert), (f"purified - adv\n(x{g2:.3g}, 0.5 = 0)", change),
    ]
    return _image_grid([(label, list(imgs)) for label, imgs in rows], path, gray=clean.shape[1] == 1,
                       figsize=(1.3 * k + 1.2, 1.3 * len(rows)), title=title, dpi=dpi)


def corruption_grid(image: torch.Tensor, path: str | os.PathLike, *, severities=(1, 3, 5), seed: int = 0,
                    names=None, dpi: int = 90) -> Path:
    """One image under every corruption (rows) at the given severities (columns), first column clean."""
    from ..eval.corruptions import CORRUPTIONS, corrupt

    check_images(image)
    if image.shape[0] != 1 or image.shape[1] not in (1, 3):
        raise ValueError(f"corruption_grid: expected one 1- or 3-channel image (1CHW), got {tuple(image.shape)}")
    names = tuple(names) if names is not None else CORRUPTIONS
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"corruption_grid: expected a .png path, got {path}")

    labels = ["clean"] + [f"severity {s}" for s in severities]
    rows = [(name, [image[0]] + [corrupt(image, name, s, seed=seed)[0] for s in severities]) for name in names]
    return _image_grid(rows, path, gray=image.shape[1] == 1, col_titles=labels, dpi=dpi,
                       figsize=(1.6 * (len(severities) + 1) + 0.8, 1.6 * len(names)))


__all__ = ["purification_figure", "corruption_grid"]
