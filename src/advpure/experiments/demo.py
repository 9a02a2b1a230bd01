"""The main job (``advpure demo``), on scikit-learn's bundled digits (no download, CPU, minutes).

It loads (or trains into the user cache) the digits classifier and the digits diffusion model, then
evaluates every defense the project has against attacks that know it, through the same runner as
``advpure eval``, and writes ``report.json``, ``report.md`` and a figure (clean / adversarial /
purified / perturbation / purifier's change) to ``--out``. The diffusion defenses are attacked with the ``lite``
ensemble (one-step denoising surrogate, then BPDA-EOT; worst case per image on separate selection draws), the
others with their adaptive attacks. Attack settings are reduced for time and printed in the table; use
``advpure eval --attack standard`` for the full protocol.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..data import DEFAULT_LINF_EPS
from ..paths import cache_dir, zoo_dir

ZOO = zoo_dir()

#: digits l_inf budget (pixels are k/16 in [0, 1]): 0.2 drives the undefended CNN to 0.5% under PGD-20
DIGITS_EPS = DEFAULT_LINF_EPS["digits"]


def _classifier_path(progress: bool) -> Path:
    zoo = ZOO / "digits-small-cnn.safetensors"
    if zoo.is_file():
        return zoo
    cached = cache_dir() / "demo" / "digits-small-cnn.safetensors"
    if not cached.is_file():
        from ..train.classifier import ClassifierTrainConfig, train_classifier

        train_classifier(ClassifierTrainConfig(dataset="digits", out=str(cached)), progress=progress)
    return cached


def _diffusion_path(progress: bool) -> Path | None:
    zoo = ZOO / "digits-ddpm.safetensors"
    if zoo.is_file():
        return zoo
    cached = cache_dir() / "demo" / "digits-ddpm.safetensors"
    if not cached.is_file():
        try:
            from ..train.diffusion import DiffusionTrainConfig, train_diffusion
        except ImportError:
            return None
        train_diffusion(DiffusionTrainConfig(dataset="digits", out=str(cached)), progress=progress)
    return cached


def demo_rows(clf: str, *, steps: int, eot: int, eps: float) -> list[dict]:
    """One row per (defense, attack); settings are reduced for time and stated in the table."""
    step = 2.5 * eps / steps
    pgd = f"pgd:norm=linf,eps={eps},steps={steps},step_size={step:.5f}"
    ddpm = ZOO / "digits-ddpm.safetensors"
    dp = f"diffpure:model={ddpm},t=0.1,steps=10"
    dad = (f"dad:kernel={ZOO / 'digits-dad-kernel.safetensors'},denoiser={ZOO / 'digits-dad-denoiser.safetensors'},"
           "mode=batch")
    lite = f"lite:eps={eps},steps={steps},eot={eot}"
    rows = [
        {"name": "undefended", "defense": "none", "attack": pgd},
        {"name": "DiffPure (lite ensemble: one-step surrogate, BPDA)", "defense": dp, "attack": lite},
        {"name": "DiffPure (full gradient, checkpointed)", "defense": dp + ",checkpoint=true", "attack": f"{pgd},eot={eot}"},
        {"name": "SSNI-N + DiffPure (lite ensemble)", "defense": f"ssni:model={ddpm},t=0.1,steps=10,mode=N",
         "attack": lite},
        {"name": "distribution-transfer guided (full gradient)",
         "defense": f"distribution-transfer:model={ddpm},t=0.05,steps=5,checkpoint=true", "attack": f"{pgd},eot={eot}"},
        {"name": "DAD, batch mode (detector-aware attack)", "defense": dad,
         "attack": f"detector-aware:eps={eps},steps={4 * steps}"},
        {"name": "DAD, batch mode (full gradient through the denoiser)", "defense": dad,
         "attack": f"dad-denoiser:eps={eps},steps={4 * steps}"},
        {"name": "CMAP, vote over K=4, 15 latent iterations (BPDA)",
         "defense": f"cmap:model={ZOO / 'digits-cm.safetensors'},iterations=15",
         "attack": pgd.replace("pgd:", "bpda:") + f",eot={eot}", "votes": 1},
    ]
    return [r for r in rows if _available(r)]


def _available(row: dict) -> bool:
    """Rows whose zoo weights are missing (an install without the repository's zoo/) are left out."""
    import re

    return all(Path(p).is_file() for p in re.findall(r"=(/[^,]+\.safetensors)", row["defense"]))


#: fresh draws of a stochastic defense in the demo's final evaluation (advpure eval: 20)
DEMO_DRAWS = 10


def run_demo(out: Path, *, n: int = 24, steps: int = 5, eot: int = 2, sanity_n: int = 8, progress: bool = True) -> dict:
    from ..eval import threats
    from ..eval.runner import format_markdown, run_eval
    from ..eval.sanity import MIN_SANITY_N

    if n < MIN_SANITY_N or sanity_n < MIN_SANITY_N or steps < 1 or eot < 1:
        raise ValueError(f"demo: need --n >= {MIN_SANITY_N}, --sanity-n >= {MIN_SANITY_N} (smaller checks cannot fail), "
                         f"--steps >= 1 and --eot >= 1; got n={n}, sanity_n={sanity_n}, steps={steps}, eot={eot}")
    t0 = time.time()
    out.mkdir(parents=True, exist_ok=True)
    clf = str(_classifier_path(progress))
    ddpm = _diffusion_path(progress)
    rows = demo_rows(clf, steps=steps, eot=eot, eps=DIGITS_EPS)
    results = []
    details = out / "details.md"
    details.write_text("# advpure demo: full reports per row\n")
    for r in rows:
        t_row = time.time()
        res = run_eval(dataset="digits", classifier=clf, defense=r["defense"], attack=r["attack"], n=n,
                       seeds=(0,), batch_size=n, eval_draws=DEMO_DRAWS, sanity_n=sanity_n, sanity_queries=20,
                       votes=r.get("votes", 0), progress=progress)
        res["row"] = r["name"]
        res["row_seconds_with_sanity_checks"] = round(time.time() - t_row, 1)
        results.append(res)
        with details.open("a") as f:
            f.write(f"\n## {r['name']}\n\n{format_markdown(res)}\n")
    table = summary_table(results)
    extra = ""
    corr = cert = None
    if ddpm is not None:
        corr = threats.run_corruptions(dataset="digits", classifier=clf, defense=f"diffpure:model={ddpm},t=0.1,steps=10",
                                       names=("gaussian_noise", "glass_blur", "impulse_noise", "jpeg_compression",
                                              "shot_noise"), severities=(5,), n=100)
        cert = {}
        for name, den in (("plain", None), ("denoised (one-shot DDPM)", str(ddpm))):
            cert[name] = threats.run_certify(dataset="digits", classifier=clf, sigma=0.25, n0=20, n_mc=200,
                                             alpha=0.001, n=24, denoiser=den)
        extra = ("\n\nCommon corruptions, severity 5, 100 test images (DiffPure t*=0.1, 10 steps):\n\n"
                 + threats.corruptions_table(corr)
                 + "\n\nRandomized smoothing, sigma 0.25, n0 20, n 200, alpha 0.001, 24 test images:\n\n"
                 + "| smoothing | " + " | ".join(f"r={r}" for r in cert["plain"]["certified_accuracy"]) + " |\n"
                 + "|---|" + "---|" * len(cert["plain"]["certified_accuracy"]) + "\n"
                 + "\n".join(f"| {k} | " + " | ".join(f"{100 * a:.0f}%" for a in v["certified_accuracy"].values()) + " |"
                             for k, v in cert.items()))
    report = {"dataset": "digits", "n": n, "eps_linf": DIGITS_EPS, "pgd_steps": steps, "eot": eot,
              "classifier": clf, "diffusion_model": str(ddpm) if ddpm else None,
              "seconds": round(time.time() - t0, 1), "rows": results, "corruptions": corr, "certify": cert}
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(table + extra + "\n")
    _figure(out, clf, ddpm, n=8)
    report["seconds"] = round(time.time() - t0, 1)
    return {"table": table + extra, "report": report}


def summary_table(results: list[dict]) -> str:
    def pct(d):
        return "-" if not d else f"{100 * d['mean']:.1f}%"

    lines = ["| defense | attack | clean acc | robust acc (mean over draws) | robust acc (worst case over "
             f"{DEMO_DRAWS} draws) | sanity checks | network evals / image | s / image |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        checks = r.get("sanity_checks") or []
        warns = [c["check"] for c in checks if c["status"] == "WARNING"]
        sanity = ("**WARNING: " + "; ".join(warns) + "**") if warns else (f"{len(checks)} passed" if checks else "-")
        if not r.get("publishable", True):
            sanity += " (NOT PUBLISHABLE)"
        lines.append(f"| {r['row']} | {r['attack']['spec']} | {pct(r['clean_accuracy'])} | {pct(r.get('robust_accuracy'))} "
                     f"| {pct(r.get('robust_accuracy_worst_case'))} | {sanity} | {r['defense']['nfe']:g} | "
                     f"{r['cost']['seconds_per_image']:.3f} |")
    return "\n".join(lines)


def _figure(out: Path, clf: str, ddpm: Path | None, n: int) -> None:
    """Clean, adversarial (PGD on the undefended classifier), purified (DiffPure), and the differences."""
    import torch

    from ..attacks import PGD
    from ..data import load_dataset
    from ..models import load_classifier
    from .figures import purification_figure

    model = load_classifier(clf)
    x, y = load_dataset("digits", "test").subset(n, 0).tensors()
    x_adv = PGD(norm="linf", eps=DIGITS_EPS, steps=20, step_size=2.5 * DIGITS_EPS / 20, seed=0)(model, x, y)
    purified = x_adv
    if ddpm is not None:
        from ..defenses.diffpure import DiffPure
        from ..diffusion.models import load_denoiser

        net, _ = load_denoiser(ddpm)
        with torch.no_grad():
            purified = DiffPure(net, t=0.1).purify(x_adv, generator=torch.Generator().manual_seed(0))
    purification_figure(x, x_adv, purified, out / "purification.png", n=n)
