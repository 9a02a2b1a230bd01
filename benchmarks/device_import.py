"""Bring weights from an accelerator run (``benchmarks/device_train.py``) into the zoo as float16 safetensors.

The device run writes fp32 weights (4.06M parameters = 15.5 MiB); the zoo keeps files under 10 MB, so each chosen
file is stored in float16 (7.75 MiB) with its sidecar. Loaders copy the tensors into the fp32 model
(``load_state_dict`` casts), so nothing else changes. The new sidecar keeps every field of the device sidecar (the
command, steps, seconds, loss curve, device) and adds ``stored_dtype``, ``source`` (the fp32 file's name and sha256)
and ``fp16_max_rel_error`` (the largest |w16 - w32| / max|w32| over tensors); the sha256 is the new file's. A tensor
outside float16's range is refused by name rather than stored as inf.

    python benchmarks/device_import.py runs/device-out/cifar10-ddpm-gpu-t0.2.safetensors zoo/cifar10-purify-gpu-t0.2
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import torch  # noqa: E402

from advpure.checkpoint import load_artifact, save_weights  # noqa: E402

FP16_MAX = torch.finfo(torch.float16).max


def to_half(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], float]:
    """Float tensors cast to float16 (others kept); returns the tensors and the largest relative rounding error."""
    out, worst = {}, 0.0
    for k, v in sd.items():
        if not v.is_floating_point():
            out[k] = v
            continue
        v32 = v.float()
        scale = v32.abs().max().item() if v32.numel() else 0.0
        if scale > FP16_MAX:
            raise ValueError(f"tensor {k!r}: |w| up to {scale:.3g} is outside float16's range")
        h = v32.half()
        if scale > 0:
            worst = max(worst, ((h.float() - v32).abs().max().item()) / scale)
        out[k] = h
    return out, worst


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", help="a .safetensors file with its JSON sidecar (fp32, from the device run)")
    ap.add_argument("dst", help="destination name, e.g. zoo/cifar10-purify-gpu-t0.2 (.safetensors added)")
    a = ap.parse_args(argv)
    sd, meta = load_artifact(a.src, kind=None, what="device weights")
    half, err = to_half(sd)
    dst = Path(a.dst)
    if dst.suffix != ".safetensors":
        dst = dst.with_name(dst.name + ".safetensors")
    side = {k: v for k, v in meta.items() if k not in ("sha256", "created", "advpure_version", "torch_version")}
    side.update(stored_dtype="float16", fp16_max_rel_error=err,
                source={"file": Path(a.src).name, "sha256": meta.get("sha256"), "created": meta.get("created"),
                        "torch_version": meta.get("torch_version")},
                import_command=f"python benchmarks/device_import.py {a.src} {a.dst}")
    new = save_weights(half, dst, side)
    print(f"{dst}: {dst.stat().st_size / 2**20:.2f} MiB float16, max relative rounding error {err:.2e}, "
          f"sha256 {new['sha256'][:16]}")


if __name__ == "__main__":
    main()
