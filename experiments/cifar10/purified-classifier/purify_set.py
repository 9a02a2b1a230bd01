"""Purify a seeded subset of a CIFAR-10 split with a purifier spec and save it as an image set (issue 17: a
classifier fine-tuned on purified images).

    python experiments/cifar10/purified-classifier/purify_set.py --n 12800 --out runs/purified/train-12800.safetensors
        [--defense SPEC] [--split train] [--subset-seed 0] [--seed 0] [--chunk 128]

Resumable exactly: chunk ``i`` (``--chunk`` images of the subset, in order) is purified with its own generator
``manual_seed(seed * 1_000_003 + i)`` and journaled as ``<out>.parts/chunk-<i>.safetensors``, so a killed run skips
the chunks it finished and the result does not depend on where it stopped. Output: uint8 images, labels, and each
image's index in the split (``advpure.data.imagefile``), with a sidecar naming the spec, seeds and source.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from advpure.checkpoint import load_safetensors
from advpure.data import load_dataset
from advpure.data.imagefile import save_image_file, to_uint8
from advpure.specs import build

DATA = "../shared/data/cifar10-jpeg.tar.gz"
DEFAULT = "diffpure:model=zoo/cifar10-purify-t0.2.safetensors,t=0.1,steps=20"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--defense", default=DEFAULT, help=f"purifier spec (default {DEFAULT})")
    ap.add_argument("--split", default="train")
    ap.add_argument("--n", type=int, required=True, help="images: the seeded subset subset(n, subset_seed)")
    ap.add_argument("--subset-seed", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0, help="seed of the purifier's noise")
    ap.add_argument("--chunk", type=int, default=128)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    from tqdm.auto import tqdm

    out = Path(a.out)
    if out.suffix != ".safetensors":
        raise SystemExit(f"--out must end in .safetensors, got {out}")
    parts = Path(str(out) + ".parts")
    parts.mkdir(parents=True, exist_ok=True)
    sub = load_dataset("cifar10", a.split, data_dir=DATA).subset(a.n, a.subset_seed)
    idx = torch.tensor(sub.meta["indices"])
    purifier = build("defense", a.defense).eval()
    n_chunks = -(-a.n // a.chunk)
    t0 = time.perf_counter()
    done = 0
    for i in tqdm(range(n_chunks), desc="purify", mininterval=5):
        f = parts / f"chunk-{i:05d}.safetensors"
        if f.is_file():
            continue
        x, _ = sub.batch(slice(i * a.chunk, (i + 1) * a.chunk))
        g = torch.Generator().manual_seed(a.seed * 1_000_003 + i)
        with torch.no_grad():
            xp = purifier(x, generator=g).clamp(0, 1)
        save_file({"images": to_uint8(xp)}, str(f.with_suffix(".tmp")))
        f.with_suffix(".tmp").replace(f)
        done += x.shape[0]
    images = torch.cat([load_safetensors(parts / f"chunk-{i:05d}.safetensors")["images"] for i in range(n_chunks)])
    meta = save_image_file(out, images, sub.labels, idx, {
        "name": f"cifar10-{a.split}-purified", "split": a.split, "num_classes": sub.num_classes,
        "source": {"dataset": "cifar10", "data": DATA, "split": a.split, "subset": {"n": a.n, "seed": a.subset_seed}},
        "purifier": a.defense, "noise_seed": a.seed, "chunk": a.chunk,
        "generator": "chunk i: torch.Generator().manual_seed(seed * 1_000_003 + i)",
        "seconds_this_run": round(time.perf_counter() - t0, 1), "images_this_run": done,
        "command": "python " + " ".join(sys.argv)})
    print(f"wrote {out}: {a.n} images, sha256 {meta['sha256'][:12]}")


if __name__ == "__main__":
    main()
