"""DAD (:mod:`advpure.defenses.dad`) under detector-aware adaptive attacks (:mod:`advpure.attacks.detector_aware`),
mean and std over seeds (``advpure dad-attacks``), and DAD on batches mixing clean and adversarial inputs
(:func:`mixed_batch_table`)."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import torch

from ..data import DEFAULT_LINF_EPS
from .common import frozen_classifier

log = logging.getLogger(__name__)


def split_reference(dataset: str, *, reference_split: str = "train", n_reference: int = 200, seed: int = 0,
                    data_dir: str | None = None):
    """(clean reference images, the test images left for evaluation).

    ``reference_split="train"``: a seeded train subset (the ``dad`` defense spec's choice); all test images stay
    for evaluation. ``"test"``: the first ``n_reference`` images of a seeded permutation of the test split, and
    evaluation draws from the rest only. Use "test" when the classifier behind a semantic kernel has memorised
    its training set: its features then separate train from test images, and a train-split reference flags
    clean test batches (measured on CIFAR-10 with the shared ResNet-56: 4 of 6 clean batches flagged).
    """
    from ..data import load_dataset
    from ..data.base import ImageSet

    test = load_dataset(dataset, "test", data_dir=data_dir)
    if reference_split == "train":
        train = load_dataset(dataset, "train", data_dir=data_dir)
        idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
        return train.batch(idx[:n_reference])[0], test
    if reference_split != "test":
        raise ValueError(f"reference_split: expected 'train' or 'test', got {reference_split!r}")
    if n_reference >= len(test):
        raise ValueError(f"n_reference {n_reference}: the test split has only {len(test)} images")
    idx = torch.randperm(len(test), generator=torch.Generator().manual_seed(seed))
    rest = idx[n_reference:]
    pool = ImageSet(test.images[rest], test.labels[rest], list(test.classes), test.name, test.split,
                    {**test.meta, "excludes_reference": n_reference})
    return test.batch(idx[:n_reference])[0], pool


def build_dad(*, dataset: str, classifier, kernel: str, denoiser: str, reference: torch.Tensor,
              test: str = "permutation", n_resamples: int = 100, mode: str = "batch",
              calibration: torch.Tensor | None = None):
    """DAD around the given clean ``reference`` images (see :func:`split_reference`); sample mode calibrates its
    per-sample threshold at 5% FPR on ``calibration`` (clean images disjoint from reference and evaluation)."""
    from ..defenses.dad import DAD, load_denoiser
    from ..detect.kernels import load_kernel

    shape = tuple(reference.shape[1:])
    k = load_kernel(kernel, classifier=classifier, input_shape=shape)
    g = load_denoiser(denoiser, input_shape=shape)
    for p in g.parameters():
        p.requires_grad_(False)
    dad = DAD(g, k, reference, mode=mode, test=test, n_resamples=n_resamples)
    if mode == "sample":
        if calibration is None:
            raise ValueError("DAD sample mode needs clean calibration images for its per-sample threshold")
        dad.calibrate_sample(calibration, fpr=0.05)
    return dad


def mixed_batch_table(clf, dad_batch, dad_sample, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor,
                      order: torch.Tensor, *, fractions=(0.0, 0.1, 0.25, 0.5, 1.0), n_batches: int = 9,
                      batch_size: int = 50, generator: torch.Generator | None = None) -> dict:
    """DAD on batches that mix clean and adversarial inputs (issue: an attacker hides a few among clean ones).

    For each adversarial fraction f, ``n_batches`` disjoint batches (``order`` gives the image indices); the
    first ``round(f * batch_size)`` inputs of a batch are replaced by their adversarial versions. Returns, per f,
    the mean over batches of: accuracy through the batch-mode and the sample-mode DAD, the fraction of flagged
    batches (batch mode), and the fractions of flagged adversarial and clean inputs (sample mode; None when the
    batch has none of that kind).
    """
    table = {}
    for f in fractions:
        accs: dict[str, list[float]] = {"batch": [], "sample": [], "flag_batch": [], "flag_sample_adv": [],
                                        "flag_sample_clean": []}
        na = int(round(f * batch_size))
        for b in range(n_batches):
            ii = order[b * batch_size:(b + 1) * batch_size]
            xb = x[ii].clone()
            xb[:na] = x_adv[ii[:na]]
            yb = y[ii]
            with torch.no_grad():
                pb = clf(dad_batch(xb, generator=generator)).argmax(1)
                accs["flag_batch"].append(float(dad_batch.last_flags.float().mean()))
                ps = clf(dad_sample(xb, generator=generator)).argmax(1)
                fl = dad_sample.last_flags
            if na:
                accs["flag_sample_adv"].append(float(fl[:na].float().mean()))
            if na < batch_size:
                accs["flag_sample_clean"].append(float(fl[na:].float().mean()))
            accs["batch"].append(float((pb == yb).float().mean()))
            accs["sample"].append(float((ps == yb).float().mean()))
        table[f] = {k: (sum(v) / len(v) if v else None) for k, v in accs.items()}
        log.info("mixed batches f=%g: %s", f, table[f])
    return table


def dad_attacks(*, dataset: str = "digits", classifier: str, kernel: str, denoiser: str, data_dir: str | None = None,
                eps: float = DEFAULT_LINF_EPS["digits"], n: int = 150, batch_size: int = 50,
                seeds: tuple[int, ...] = (0, 1, 2),
                steps: int = 50, eot: int = 4, attacks: tuple[str, ...] = ("none", "pgd-oblivious", "dad-adaptive",
                                                                         "detector-aware", "dad-denoiser"),
                margin: float = 0.5, reference_split: str = "train", mode: str = "batch", n_calib: int = 300,
                out: str | Path | None = None) -> dict:
    """DAD's accuracy (batch mode: permutation test, alpha 0.05; sample mode: per-sample threshold at 5% FPR)
    under each attack, per seed and mean/std.

    Per seed s: a seeded test subset of ``n`` images (``subset(n, s)``), batches of ``batch_size``; each
    attacked batch is then classified once through DAD with a generator seeded by (s, batch). "flagged" is the
    fraction of flagged batches (batch mode) or of flagged inputs (sample mode). Sample mode takes ``n_calib``
    further clean images (after the 200 reference images, same split) for its threshold.
    """
    from ..attacks import PGD
    from ..attacks.detector_aware import DADPathPGD, DetectorAwarePGD
    from ..defenses import DefendedClassifier
    from ..eval.metrics import mean_std

    t0 = time.time()
    clf = frozen_classifier(classifier)
    if mode not in ("batch", "sample"):
        raise ValueError(f"mode: expected 'batch' or 'sample', got {mode!r}")
    extra = n_calib if mode == "sample" else 0
    ref, test = split_reference(dataset, reference_split=reference_split, n_reference=200 + extra, data_dir=data_dir)
    dad = build_dad(dataset=dataset, classifier=clf, kernel=kernel, denoiser=denoiser, reference=ref[:200],
                    mode=mode, calibration=ref[200:] if extra else None)
    model = DefendedClassifier(clf, dad)

    def make(a: str, s: int):
        if a == "pgd-oblivious":
            return PGD(norm="linf", eps=eps, steps=20, step_size=2.5 * eps / 20, seed=s)
        if a == "dad-adaptive":
            return DADPathPGD(eps=eps, steps=steps, eot=eot, mmd_weight=1.0, seed=s)
        if a == "dad-denoiser":
            return DADPathPGD(eps=eps, steps=steps, eot=eot, mmd_weight=0.0, seed=s)
        if a == "detector-aware":
            return DetectorAwarePGD(eps=eps, steps=2 * steps, margin=margin, seed=s)
        raise ValueError(f"attack: expected none, pgd-oblivious, dad-adaptive, detector-aware or dad-denoiser, got {a!r}")

    per = {a: {"accuracy": [], "detected_batches": [], "undefended_accuracy": []} for a in attacks}
    for s in seeds:
        x, y = test.subset(n, s).tensors()
        for a in attacks:
            correct = flagged = und = 0
            nb = 0
            for b, i in enumerate(range(0, n, batch_size)):
                xb, yb = x[i:i + batch_size], y[i:i + batch_size]
                if a == "none":
                    xa = xb
                elif a == "pgd-oblivious":
                    xa = make(a, s)(clf, xb, yb)  # attacks the classifier alone
                else:
                    xa = make(a, s)(model, xb, yb)
                g = torch.Generator().manual_seed(1000 * s + b)
                with torch.no_grad():
                    pred = clf(dad.purify(xa, generator=g)).argmax(1)
                    und += int((clf(xa).argmax(1) == yb).sum())
                correct += int((pred == yb).sum())
                flagged += float(dad.last_flags.float().mean()) if mode == "sample" else int(bool(dad.last_flags.all()))
                nb += 1
            per[a]["accuracy"].append(correct / n)
            per[a]["detected_batches"].append(flagged / nb)
            per[a]["undefended_accuracy"].append(und / n)
            log.info("dad-attacks seed %d %s: acc %.3f flagged %d/%d", s, a, correct / n, flagged, nb)
    summary = {a: {k: {"values": v, **mean_std(v)} for k, v in d.items()}
               for a, d in per.items()}
    result = {"command": "advpure " + " ".join(sys.argv[1:]), "dataset": dataset, "classifier": classifier,
              "kernel": kernel, "denoiser": denoiser, "eps": eps, "n": n, "batch_size": batch_size,
              "seeds": list(seeds), "steps": steps, "eot": eot, "margin": margin, "reference_split": reference_split, "mode": mode,
              "dad": dad.describe(), "results": summary,
              "seconds": time.time() - t0}
    if out is not None:
        o = Path(out)
        o.mkdir(parents=True, exist_ok=True)
        (o / "dad-attacks.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def dad_table(r: dict) -> str:
    mode = r.get("mode", "batch")
    how = "batch mode, permutation test alpha 0.05" if mode == "batch" else "sample mode, threshold at 5% FPR"
    lines = [f"DAD on {r['dataset']} ({how}, batches of {r['batch_size']}, {r.get('reference_split', 'train')}-split "
             f"reference), linf eps {r['eps']:.3g}, {r['n']} test images per seed, seeds {r['seeds']}",
             "", f"| attack | DAD accuracy (mean +- std) | {'batches' if mode == 'batch' else 'inputs'} flagged | "
             "classifier alone on the inputs |",
             "| --- | --- | --- | --- |"]
    for a, d in r["results"].items():
        acc, fl, und = d["accuracy"], d["detected_batches"], d["undefended_accuracy"]
        lines.append(f"| {a} | {acc['mean']:.3f} +- {acc['std']:.3f} | {fl['mean']:.2f} | {und['mean']:.3f} |")
    return "\n".join(lines)
