"""Versions, device, and where data and checkpoints are looked up (``advpure info``)."""

from __future__ import annotations

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
