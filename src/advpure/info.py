"""``advpure info``: versions, device, and where data and checkpoints are looked up."""

from __future__ import annotations

import argparse
import json
import os
import platform


def collect() -> dict:
    import numpy
    import torch

    from . import __version__
    from .paths import cache_dir, data_dir, shared_dir

    try:
        import diffusers

        diffusers_version = diffusers.__version__
    except Exception as e:  # pragma: no cover - reported, not hidden
        diffusers_version = f"unavailable ({e})"
    return {
        "advpure": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "diffusers": diffusers_version,
        "device": "cuda (" + torch.cuda.get_device_name(0) + ")" if torch.cuda.is_available() else "cpu",
        "threads": torch.get_num_threads(),
        "cache_dir": str(cache_dir()),
        "ADVPURE_DATA": str(data_dir()) if data_dir() else None,
        "ADVPURE_CIFAR10": os.environ.get("ADVPURE_CIFAR10"),
        "shared_dir": str(shared_dir()) if shared_dir() else None,
    }


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="versions, device, data and checkpoint locations")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    info = collect()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        width = max(map(len, info))
        for k, v in info.items():
            print(f"{k:<{width}}  {v}")
    return 0
