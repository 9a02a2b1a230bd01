"""How well classifiers fit an image set and the images it was made from: accuracy on the set (e.g. the purified
training images a classifier was fine-tuned on) and on its clean sources, paired per image, 95% intervals.

    python experiments/cifar10/purified-classifier/fit.py runs/purified/train-16384.safetensors --out F.json \
        --classifier NAME=SPEC [--classifier NAME=SPEC ...]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from advpure.data.imagefile import load_image_file, load_sources
from advpure.eval.metrics import interval95, paired_difference
from advpure.models import load_classifier


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("file")
    ap.add_argument("--classifier", action="append", required=True, metavar="NAME=SPEC")
    ap.add_argument("--out", required=True)
    ap.add_argument("--batch", type=int, default=500)
    a = ap.parse_args()
    s = load_image_file(a.file)
    xs, _ = s.tensors()
    xc, y = load_sources(s).tensors()
    rec = {"file": a.file, "sha256": s.meta["sidecar"]["sha256"], "n": len(y), "classifiers": {}}
    for c in a.classifier:
        name, spec = c.split("=", 1)
        m = load_classifier(spec).eval()
        with torch.no_grad():
            ok = {k: torch.cat([m(x[i:i + a.batch]).argmax(1) for i in range(0, len(y), a.batch)]) == y
                  for k, x in (("clean", xc), ("set", xs))}
        rec["classifiers"][name] = {"spec": spec, **{k: interval95(v.float().tolist()) for k, v in ok.items()},
                                    "set_minus_clean": paired_difference(ok["clean"].float().tolist(),
                                                                         ok["set"].float().tolist())}
        print(name, {k: round(float(v.float().mean()), 4) for k, v in ok.items()}, flush=True)
    Path(a.out).write_text(json.dumps(rec, indent=1))
    print("wrote", a.out)


if __name__ == "__main__":
    main()
