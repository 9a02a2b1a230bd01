"""``advpure train {classifier,diffusion,kernel,denoiser,...}``: each trainer module registers itself."""

from __future__ import annotations

import argparse
import importlib

TRAINERS = (
    "advpure.train.classifier",
    "advpure.train.diffusion",
    "advpure.train.consistency",
    "advpure.train.kernel",
    "advpure.train.denoiser",
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train models (classifier, diffusion, kernel, denoiser, ...)")
    train_sub = p.add_subparsers(dest="what", metavar="WHAT", required=True)
    for mod in TRAINERS:
        importlib.import_module(mod).register(train_sub)
