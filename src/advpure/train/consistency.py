"""``advpure train consistency``: consistency distillation (CD) or consistency training (CT) of a
consistency model (Song, Dhariwal, Chen & Sutskever, ICML 2023; the model and losses are in
:mod:`advpure.diffusion.consistency`).

- ``--mode cd`` (Algorithm 2): teacher = the project's VP eps-model (``--teacher PATH``, loaded with
  :func:`advpure.diffusion.models.load_denoiser`), one Heun step of its PF ODE between adjacent Karras
  noise levels (N = 18, rho = 7), target network = EMA of the online network with ``mu = 0.95``
  (the paper's CD setting for N = 18), squared-l2 metric (the paper's LPIPS needs ImageNet weights,
  and l2 is the paper's other CD metric).
- ``--mode ct`` (Algorithm 3): no teacher; the paper's adaptive schedules N(k) (s0 = 2, s1 = 150) and
  mu(k) (mu0 = 0.9), Appendix C; pseudo-Huber metric (c = 0.00054 sqrt(d), Song & Dhariwal 2023), which is
  more robust than l2 for CT.

Adam (lr 1e-3 here: a 0.27M-parameter UNet on 8x8 digits; the paper uses 4e-4 on CIFAR-10), seeded,
tqdm progress bar, resumable (``<name>.state.pt``, read back with ``weights_only=True``; the loop is
:class:`advpure.train.loop.TrainLoop`). What is saved
is a slow EMA (0.999, with the usual (1+k)/(10+k) warm-up) of the online weights, as the paper evaluates
an EMA. A grid of 64 one-step samples ``f(z, sigma_max)``, ``z ~ N(0, sigma_max^2 I)``, is written as PNG,
and, when a classifier is given, the recognisability of 1000 one-step samples (fraction classified with
confidence > 0.9, and the class histogram) is recorded in the sidecar.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..contracts import check_int, check_positive
from ..diffusion.consistency import (
    SIGMA_DATA,
    SIGMA_MAX,
    SIGMA_MIN,
    UNET_CONFIGS,
    ConsistencyModel,
    cd_loss,
    ct_loss,
    ct_schedule,
    karras_sigmas,
    vp_denoiser,
)
from ..diffusion.models import DATASET_PRESET, _shape_of, build_unet, load_denoiser, unet_config
from .common import pick_device
from .loop import TrainLoop

CD_N = 18
CD_MU = 0.95


@torch.no_grad()
def confidence_summary(classifier: nn.Module, images: torch.Tensor, *, threshold: float = 0.9, batch: int = 250
                       ) -> dict[str, Any]:
    """Fraction of ``images`` ([0, 1] NCHW) the classifier labels with confidence > ``threshold``, the mean
    confidence, and the histogram of predicted classes (all images)."""
    p = torch.cat([classifier(b).softmax(-1) for b in images.split(batch)])
    conf, pred = p.max(-1)
    hist = torch.bincount(pred, minlength=int(p.shape[-1]))
    return {"n": len(images), "threshold": threshold, "confident_fraction": float((conf > threshold).float().mean()),
            "mean_confidence": float(conf.mean()), "class_histogram": [int(v) for v in hist]}


@torch.no_grad()
def one_step_samples(cm: ConsistencyModel, n: int, *, seed: int = 0, batch: int = 250) -> torch.Tensor:
    """``n`` one-step samples in [0, 1], drawn in batches of ``batch`` from one generator seeded ``seed``."""
    dev = next(cm.parameters()).device
    g = torch.Generator(device=dev).manual_seed(seed)
    return torch.cat([((cm.sample(min(batch, n - i), generator=g, device=dev) + 1) / 2).clamp(0, 1)
                      for i in range(0, n, batch)])


@torch.no_grad()
def recognisability(cm: ConsistencyModel, classifier: nn.Module, *, n: int = 1000, seed: int = 0,
                    threshold: float = 0.9, batch: int = 250) -> dict[str, Any]:
    """:func:`confidence_summary` of ``n`` one-step samples (:func:`one_step_samples`)."""
    x = one_step_samples(cm, n, seed=seed, batch=batch)
    return confidence_summary(classifier, x, threshold=threshold, batch=batch)


def train_consistency(*, dataset: str = "digits", mode: str = "cd", teacher: str | None = None, steps: int = 3000,
                      batch_size: int = 128, out: str, lr: float = 1e-3, n_cd: int = CD_N, mu_cd: float = CD_MU,
                      metric: str | None = None, solver: str = "heun", ema_decay: float = 0.999, seed: int = 0,
                      resume: bool = False, preset: str | None = None, data_dir: str | None = None,
                      device: str | None = None, name: str | None = None, save_every: int = 500,
                      classifier: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Train and save ``<out>/<name>.safetensors`` (+ sidecar, state, sample grid); returns a summary."""
    if mode not in ("cd", "ct"):
        raise ValueError(f"mode: expected 'cd' or 'ct', got {mode!r}")
    if mode == "cd" and not teacher:
        raise ValueError("mode 'cd' needs --teacher PATH (a VP diffusion eps-model, e.g. zoo/digits-ddpm.safetensors)")
    check_int(steps, "steps")
    check_int(batch_size, "batch_size")
    check_int(n_cd, "n_cd", minimum=2)
    check_positive(lr, "lr")
    if not (0 <= mu_cd < 1 and 0 <= ema_decay < 1):
        raise ValueError(f"mu_cd and ema_decay must be in [0, 1), got {mu_cd}, {ema_decay}")
    metric = metric or ("l2" if mode == "cd" else "pseudo-huber")
    preset = preset or ("digits-cm" if dataset == "digits" else DATASET_PRESET.get(dataset))
    if preset is None:
        raise ValueError(f"no UNet preset for dataset {dataset!r}; pass preset=")
    name = name or f"{dataset}-cm-{mode}"
    out_p = Path(out)
    dev = pick_device(device)

    from ..data import load_dataset

    data = load_dataset(dataset, "train", data_dir=data_dir).tensors()[0].to(dev) * 2 - 1
    cfg = dict(UNET_CONFIGS[preset]) if preset in UNET_CONFIGS else unet_config(preset)
    shape = _shape_of(cfg)
    if tuple(data.shape[1:]) != shape:
        raise ValueError(f"dataset {dataset} has images {tuple(data.shape[1:])} but preset {preset} expects {shape}")
    den = None
    teacher_meta: dict[str, Any] = {}
    if mode == "cd":
        eps_model, teacher_meta = load_denoiser(teacher, image_shape=shape)
        eps_model = eps_model.to(dev).eval().requires_grad_(False)

        def den(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
            return vp_denoiser(eps_model, x, s)

    torch.manual_seed(seed)
    model = ConsistencyModel(build_unet(cfg), image_shape=shape).to(dev)
    target = copy.deepcopy(model).requires_grad_(False)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator(device=dev).manual_seed(seed)
    loop = TrainLoop(model=model, ema=ema, optimizer=opt, generator=gen, ema_decay=ema_decay,
                     state_path=out_p / f"{name}.state.pt", extra={"target": target},
                     config={"dataset": dataset, "mode": mode, "seed": seed, "steps": steps})
    if resume:
        loop.resume()
    now = {"n": n_cd, "mu": mu_cd}  # the current step's discretisation and target decay

    def loss_step(step: int) -> torch.Tensor:
        if mode == "ct":
            now["n"], now["mu"] = ct_schedule(step, steps)
        sig = karras_sigmas(now["n"]).to(dev)
        x0 = data[torch.randint(0, data.shape[0], (batch_size,), generator=gen, device=dev)]
        idx = torch.randint(0, now["n"] - 1, (batch_size,), generator=gen, device=dev)
        z = torch.randn(x0.shape, generator=gen, device=dev)
        if mode == "cd":
            return cd_loss(model, target, den, x0, idx, sig, z, solver=solver, metric=metric).mean()
        return ct_loss(model, target, x0, idx, sig, z, metric=metric).mean()

    @torch.no_grad()
    def update_target() -> None:
        for pt, p in zip(target.parameters(), model.parameters()):
            pt.lerp_(p, 1 - now["mu"])

    run = loop.run(steps, loss_step, save_every=save_every, progress=progress, desc=f"train {name}",
                   after_update=update_target, postfix=lambda m: {"loss": f"{m:.4g}", "N": now["n"]})
    step, seconds = run.step, run.seconds
    ema.eval()
    result: dict[str, Any] = {"steps": step, "seconds": seconds, "final_loss": run.final_loss}
    grid_png = out_p / f"{name}-samples.png"
    from .diffusion import save_grid

    g = torch.Generator(device=dev).manual_seed(seed)
    xs = ema.sample(64, generator=g, device=dev)
    save_grid((xs + 1) / 2, grid_png, title=f"{name}: one-step samples f(z, 80), EMA after {step} steps")
    result["grid"] = str(grid_png)
    if classifier:
        from ..models import load_classifier

        clf = load_classifier(classifier).to(dev).eval()
        result["recognisability"] = recognisability(ema, clf, seed=seed)
    from ..checkpoint import save_weights

    weights = out_p / f"{name}.safetensors"
    meta = save_weights(ema.net.state_dict(), weights, {
        "kind": "consistency", "format": "diffusers UNet2DModel as F in f = c_skip x + c_out F(c_in x, 250 ln sigma)",
        "preset": preset, "unet_config": cfg, "dataset": dataset, "image_shape": list(shape), "mode": mode,
        "data_scale": "[-1, 1] (2 x - 1)", "sigma_min": SIGMA_MIN, "sigma_max": SIGMA_MAX, "sigma_data": SIGMA_DATA,
        "rho": 7.0, "noise_conditioning": "timestep = 1000 * 0.25 * ln(sigma)", "metric": metric,
        "n_cd": n_cd if mode == "cd" else None, "mu_cd": mu_cd if mode == "cd" else None,
        "ct_schedule": "s0=2, s1=150, mu0=0.9" if mode == "ct" else None, "solver": solver if mode == "cd" else None,
        "teacher": str(teacher) if teacher else None, "teacher_sha256": teacher_meta.get("sha256"),
        "training_steps": step, "batch_size": batch_size, "lr": lr, "ema_decay": ema_decay, "seed": seed,
        "final_loss": result["final_loss"], "train_seconds_this_run": round(seconds, 1),
        "torch_threads": torch.get_num_threads(), "device": str(dev),
        "recognisability": result.get("recognisability"),
    })
    result.update(weights=str(weights), sidecar=meta)
    return result
