"""Loading shared by the detection studies (:mod:`.eps_ad`, :mod:`.dad_attacks`, :mod:`.discrepancy`): models
with their weights frozen (no gradient to the parameters; attacks still differentiate through them)."""

from __future__ import annotations

from pathlib import Path


def frozen_diffusion(model: str | None, dataset: str):
    """(eps-model, VP schedule, sidecar) of ``model``, or of the dataset's default diffusion model."""
    from ..defenses.diffusion_base import DEFAULT_MODELS
    from ..diffusion.models import load_denoiser
    from ..diffusion.schedule import VPSchedule

    path = Path(model) if model else DEFAULT_MODELS.get(dataset)
    if path is None:
        raise ValueError(f"no default diffusion model for dataset {dataset!r}; pass --model PATH")
    net, meta = load_denoiser(path)
    for p in net.parameters():
        p.requires_grad_(False)
    return net, VPSchedule(), meta


def frozen_classifier(spec: str):
    """The classifier of a spec, in eval mode."""
    from ..models import load_classifier

    clf = load_classifier(spec)
    for p in clf.parameters():
        p.requires_grad_(False)
    return clf.eval()
