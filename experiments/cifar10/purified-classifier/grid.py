"""A picture of an image set next to its sources: for each class, the first K images of the set (bottom row of each
pair) under the training images they were made from (top row). PNG, upscaled 3x.

    python experiments/cifar10/purified-classifier/grid.py runs/purified/train-16384.safetensors OUT.png [--k 8]
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
from PIL import Image

from advpure.data.imagefile import load_image_file, load_sources


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("file")
    ap.add_argument("out")
    ap.add_argument("--k", type=int, default=8)
    a = ap.parse_args()
    s = load_image_file(a.file)
    ref = load_sources(s)
    rows = []
    for c in range(ref.num_classes):
        pick = (s.labels == c).nonzero().flatten()[:a.k]
        top = torch.cat(list(ref.images[pick]), 2)
        bottom = torch.cat(list(s.images[pick]), 2)
        rows += [top, bottom, torch.full((3, 2, top.shape[2]), 255, dtype=torch.uint8)]
    g = torch.cat(rows, 1).permute(1, 2, 0).numpy().astype(np.uint8)
    Image.fromarray(g).resize((g.shape[1] * 3, g.shape[0] * 3), Image.NEAREST).save(a.out)
    print("wrote", a.out)


if __name__ == "__main__":
    main()
