"""Seeded, resumable supervised training of a classifier (``advpure train classifier``).

SGD with Nesterov momentum and a cosine or one-cycle (linear warm-up, linear decay) schedule, optional
label smoothing, crop(+flip) augmentation, a resume file written after every epoch (a killed run continues
from the last finished epoch), channels_last (and bf16 autocast on CUDA). Architectures with a data-set
whitening stem (``fastnet``) are initialised from the training images before the first step. Models with a
``flip_tta`` switch record their test accuracy with and without test-time flipping. The result is saved as safetensors with a JSON sidecar that records the measured
test accuracy and the command that produced it.

Fine-tuning: ``init`` starts from a saved classifier (its architecture and weights; no whitening re-initialisation),
and ``extra_train`` appends image sets (:mod:`advpure.data.imagefile`, e.g. purified copies of training images) to
the training set, so every epoch sees the clean set and the extra images once each, shuffled together. Both are
recorded in the sidecar with their sha256.

Training on purified images, fresh draws every step: ``purify_aug`` names a purifier (a ``--defense`` spec, e.g.
Tweedie's one-step estimate ``diffpure:model=...,t=0.1,steps=1,sampler=ddim``) and ``purify_frac`` the share of each
augmented batch it replaces by its purification (no gradient through the purifier; its randomness from the run's
generator, so a resumed run continues exactly). Unlike a stored ``extra_train`` set, no purified image is seen twice,
the denoised-smoothing recipe of fine-tuning the classifier on the denoiser's outputs (Salman et al., NeurIPS 2020;
Carlini et al., ICLR 2023) applied to the purifier used at test time.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..data import ImageSet, load_dataset
from ..data.imagefile import load_image_file
from ..models import ImageClassifier, build_classifier, load_classifier, save_classifier
from .common import augment_crop_flip, load_resume, pick_device, save_resume

# Per-dataset defaults (measured: see README "Results").
DEFAULTS = {
    "digits": dict(arch="small-cnn", epochs=30, batch_size=64, lr=0.05, weight_decay=5e-4, pad=1, flip=False),
    "cifar10": dict(arch="resnet20", epochs=30, batch_size=128, lr=0.1, weight_decay=5e-4, pad=4, flip=True),
    "folder": dict(arch="resnet20", epochs=30, batch_size=128, lr=0.1, weight_decay=5e-4, pad=4, flip=True),
}


@dataclass
class ClassifierTrainConfig:
    dataset: str = "digits"
    arch: str | None = None
    data_dir: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float | None = None
    seed: int = 0
    device: str = "auto"
    train_subset: int | None = None
    out: str = "classifier.safetensors"
    label_smoothing: float = 0.0
    schedule: str = "cosine"
    warmup: float = 0.2
    momentum: float = 0.9
    pad: int | None = None
    arch_kwargs: dict | None = None
    init: str | None = None
    extra_train: tuple[str, ...] = ()
    weights_dtype: str = "float32"
    purify_aug: str | None = None
    purify_frac: float = 0.5

    def resolved(self) -> dict:
        if self.dataset not in DEFAULTS:
            raise ValueError(f"unknown dataset {self.dataset!r}; expected one of {', '.join(DEFAULTS)}")
        d = dict(DEFAULTS[self.dataset])
        for k in ("arch", "epochs", "batch_size", "lr", "weight_decay"):
            v = getattr(self, k)
            if v is not None:
                d[k] = v
        if d["epochs"] < 1 or d["batch_size"] < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {d['epochs']} and {d['batch_size']}")
        if self.schedule not in ("cosine", "onecycle"):
            raise ValueError(f"schedule: expected cosine or onecycle, got {self.schedule!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing: expected a value in [0, 1), got {self.label_smoothing}")
        if not 0.0 <= self.warmup < 1.0:
            raise ValueError(f"warmup: expected a fraction in [0, 1), got {self.warmup}")
        if self.weights_dtype not in ("float32", "float16"):
            raise ValueError(f"weights_dtype: expected float32 or float16, got {self.weights_dtype!r}")
        if self.purify_aug is not None and not 0.0 < self.purify_frac <= 1.0:
            raise ValueError(f"purify_frac: expected a share in (0, 1], got {self.purify_frac}")
        if self.pad is not None:
            if self.pad < 0:
                raise ValueError(f"pad: expected >= 0, got {self.pad}")
            d["pad"] = self.pad
        return d


def lr_factor(step: int, total: int, schedule: str, warmup: float) -> float:
    """Multiplier of the peak learning rate at ``step`` of ``total``: cosine decay, or one-cycle (linear from
    0.1 to 1 over the first ``warmup`` fraction, then linear to 0)."""
    s = min(step, total)
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * s / total))
    w = warmup * total
    if s < w:
        return 0.1 + 0.9 * s / w
    return max(0.0, (total - s) / max(total - w, 1.0))


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 500,
             device: torch.device | None = None) -> float:
    """Top-1 accuracy of ``model`` on (x, y), in eval mode, batched."""
    device = device or next(model.parameters()).device
    was = model.training
    model.eval()
    correct = 0
    for i in range(0, len(y), batch_size):
        correct += int((model(x[i:i + batch_size].to(device)).argmax(1).cpu() == y[i:i + batch_size]).sum())
    model.train(was)
    return correct / len(y)


def _model_kwargs(dataset: str, shape: tuple[int, int, int], num_classes: int) -> dict:
    kw = {"num_classes": num_classes, "in_channels": shape[0], "image_size": shape[1]}
    if dataset == "digits":
        kw.update(mean=None, std=None)
    return kw


def purify_part(x: torch.Tensor, purifier: torch.nn.Module, frac: float, generator: torch.Generator,
                purify_generator: torch.Generator | None = None) -> torch.Tensor:
    """``x`` with a random share ``frac`` of its images (each independently, drawn from the CPU ``generator``)
    replaced by ``purifier(image, generator=purify_generator or generator)``, computed without gradients (a
    purifier on an accelerator needs a generator on that device)."""
    pick = torch.rand(len(x), generator=generator) < frac
    if not pick.any():
        return x
    x = x.clone()
    pick = pick.to(x.device)
    with torch.no_grad():
        x[pick] = purifier(x[pick], generator=purify_generator or generator).to(x.dtype)
    return x


def _purifier(spec: str, dataset: str, shape: tuple[int, int, int], device: torch.device) -> torch.nn.Module:
    """The ``--purify-aug`` purifier, refused when the spec names no purifier (e.g. a detector or ``none``)."""
    from .. import defenses  # noqa: F401  (registers the defense specs)
    from ..specs import SpecContext, build

    purifier = build("defense", spec, SpecContext(dataset=dataset, image_shape=shape, device=device))
    if not isinstance(purifier, defenses.Purifier) or isinstance(purifier, defenses.Identity):
        raise ValueError(f"--purify-aug {spec!r}: expected a purifier (images -> images), got {type(purifier).__name__}")
    return purifier.to(device).eval()


def _extra_train_set(path: str, dataset: str, train: ImageSet) -> ImageSet:
    """An ``--extra-train`` image set, refused when made from another dataset, from the test split, or at another
    image shape than the training set's."""
    extra = load_image_file(path, classes=list(train.classes))
    source = extra.meta["sidecar"].get("source") or {}
    if source.get("dataset") not in (None, dataset):
        raise ValueError(f"--extra-train {path}: made from {source['dataset']!r}, not from {dataset!r}")
    if source.get("split") == "test" or extra.split == "test":
        raise ValueError(f"--extra-train {path}: made from the test split; training on it would leak the test set")
    if extra.shape != train.shape:
        raise ValueError(f"--extra-train {path}: images of shape {extra.shape}, the {dataset} train set's are {train.shape}")
    return extra


def train_classifier(cfg: ClassifierTrainConfig, *, progress: bool = True) -> tuple[ImageClassifier, dict]:
    """Train (or resume) and save; returns the model and its sidecar."""
    p = cfg.resolved()
    device = pick_device(cfg.device)
    train = load_dataset(cfg.dataset, "train", data_dir=cfg.data_dir)
    test = load_dataset(cfg.dataset, "test", data_dir=cfg.data_dir)
    if cfg.train_subset:
        train = train.subset(cfg.train_subset, cfg.seed)
    torch.manual_seed(cfg.seed)
    init_meta = None
    if cfg.init:
        model = load_classifier(cfg.init, **(cfg.arch_kwargs or {})).to(device)
        arch = (getattr(model, "arch_spec", None) or {}).get("arch")
        if cfg.arch is not None and arch != cfg.arch:
            raise ValueError(f"--init {cfg.init} is a {arch!r} classifier, not the --arch {cfg.arch!r} asked for")
        p["arch"] = arch or p["arch"]
        side = getattr(model, "sidecar", {})
        init_meta = {"spec": cfg.init, "sha256": side.get("sha256"), "accuracy": side.get("accuracy")}
    else:
        model = build_classifier(p["arch"], **{**_model_kwargs(cfg.dataset, train.shape, train.num_classes),
                                               **(cfg.arch_kwargs or {})}).to(device)
    model.validate_inputs = False  # the data is checked once below
    x_all, y_all = train.tensors()
    n_clean = len(y_all)
    extra_sets = [_extra_train_set(f, cfg.dataset, train) for f in cfg.extra_train]
    if extra_sets:
        x_all = torch.cat([x_all, *(e.tensors()[0] for e in extra_sets)])
        y_all = torch.cat([y_all, *(e.labels for e in extra_sets)])
    extras = [{"file": str(f), "sha256": e.meta["sidecar"].get("sha256"), "n": len(e),
               "made_by": e.meta["sidecar"].get("purifier")} for f, e in zip(cfg.extra_train, extra_sets)]
    from ..contracts import check_images

    check_images(x_all, name=f"{cfg.dataset} train images")
    purifier = _purifier(cfg.purify_aug, cfg.dataset, train.shape, device) if cfg.purify_aug else None
    # the purifier's noise: the run's generator on the CPU; on an accelerator a generator there, seeded from the run
    pgen = torch.Generator(device=device).manual_seed(cfg.seed + 1) if purifier is not None and device.type != "cpu" else None
    if hasattr(model, "init_whitening") and not cfg.init:
        model.init_whitening(x_all[:5000].to(device))
    model = model.to(memory_format=torch.channels_last)
    params = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.SGD(params, lr=p["lr"], momentum=cfg.momentum, nesterov=True, weight_decay=p["weight_decay"])
    steps_per_epoch = math.ceil(len(y_all) / p["batch_size"])
    total = p["epochs"] * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total, cfg.schedule, cfg.warmup))
    gen = torch.Generator().manual_seed(cfg.seed)
    out = Path(cfg.out)
    if out.suffix != ".safetensors":
        raise ValueError(f"--out must end in .safetensors, got {out}")
    resume_path = out.with_suffix(".resume.pt")
    start_epoch = 0
    state = load_resume(resume_path)
    if state is not None:
        if state.get("config") != {**asdict(cfg), **p}:
            raise ValueError(f"{resume_path} was written by a run with other settings; delete it or use the same arguments")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        gen.set_state(state["gen"])
        if pgen is not None:
            pgen.set_state(state["pgen"])
        start_epoch = int(state["epoch"])
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    t0 = time.time()
    model.train()
    for epoch in range(start_epoch, p["epochs"]):
        perm = torch.randperm(len(y_all), generator=gen)
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{p['epochs']}", disable=not progress,
                   leave=False, mininterval=1)
        run_loss, run_acc = 0.0, 0.0
        for i in bar:
            idx = perm[i * p["batch_size"]:(i + 1) * p["batch_size"]]
            xb = augment_crop_flip(x_all[idx], pad=p["pad"], flip=p["flip"], generator=gen).to(device)
            if purifier is not None:
                xb = purify_part(xb, purifier, cfg.purify_frac, gen, pgen)
            yb = y_all[idx].to(device)
            xb = xb.contiguous(memory_format=torch.channels_last)
            with autocast:
                logits = model(xb)
                loss = F.cross_entropy(logits, yb, label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            run_loss = 0.9 * run_loss + 0.1 * float(loss.detach()) if i else float(loss.detach())
            run_acc = 0.9 * run_acc + 0.1 * float((logits.argmax(1) == yb).float().mean()) if i else float((logits.argmax(1) == yb).float().mean())
            bar.set_postfix(loss=f"{run_loss:.3f}", acc=f"{run_acc:.3f}")
        save_resume(resume_path, {"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                                  "gen": gen.get_state(), "epoch": epoch + 1, "config": {**asdict(cfg), **p},
                                  **({"pgen": pgen.get_state()} if pgen is not None else {})})
        if progress:
            tqdm.write(f"epoch {epoch + 1}/{p['epochs']}: train loss {run_loss:.3f}, {time.time() - t0:.0f}s")
    model.eval()
    if cfg.weights_dtype == "float16":  # measure the weights as stored: every float tensor rounded to float16
        with torch.no_grad():
            for t in [*model.parameters(), *model.buffers()]:
                if t.is_floating_point():
                    t.copy_(t.half().float())
    x_te, y_te = test.tensors()
    acc = accuracy(model, x_te, y_te, device=device)
    extra = {}
    if hasattr(model, "flip_tta"):
        model.flip_tta = not model.flip_tta
        extra["accuracy_flip_tta" if model.flip_tta else "accuracy_no_flip_tta"] = accuracy(model, x_te, y_te, device=device)
        model.flip_tta = not model.flip_tta
    model = model.cpu().to(memory_format=torch.contiguous_format)
    model.validate_inputs = True
    meta = save_classifier(
        model, out, weights_dtype=cfg.weights_dtype, dataset=cfg.dataset, split_evaluated="test", accuracy=acc, n_test=len(y_te), **extra,
        train=dict(**p, seed=cfg.seed, label_smoothing=cfg.label_smoothing, schedule=cfg.schedule,
                   warmup=cfg.warmup, momentum=cfg.momentum, train_subset=cfg.train_subset, seconds=round(time.time() - t0, 1),
                   device=str(device), resumed_from_epoch=start_epoch, init=init_meta, extra_train=extras,
                   n_train_clean=n_clean, n_train=len(y_all),
                   purify_aug=None if purifier is None else {"spec": cfg.purify_aug, "frac": cfg.purify_frac,
                                                              "purifier": purifier.describe()}),
        command="advpure " + " ".join(sys.argv[1:]) if sys.argv[0].endswith("advpure") else " ".join(sys.argv),
    )
    resume_path.unlink(missing_ok=True)
    return model, meta
