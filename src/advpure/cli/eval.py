"""``advpure eval``: clean and robust accuracy of a defended classifier under an attack (:mod:`advpure.eval.runner`,
:mod:`advpure.eval.threats`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import threads
from .options import old_spelling, seeds


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval", help="evaluate a (defended) classifier under an attack",
        description="Clean and robust accuracy over seeds on a seeded subset; resumable (--journal) and "
                    "shardable with torchrun. Example: advpure eval --dataset digits --classifier "
                    "zoo/digits-small-cnn.safetensors --attack pgd:eps=0.1,steps=20 --n 100 --out r.json",
    )
    p.add_argument("--threat", default="adversarial", choices=("adversarial", "corruptions", "certify"),
                   help="adversarial (under --attack), corruptions (15 common corruptions x severities, "
                        "with and without the defense) or certify (randomized smoothing)")
    p.add_argument("--corruptions", default="all", help="comma-separated corruption names (threat corruptions)")
    p.add_argument("--severities", default="1,2,3,4,5", help="comma-separated severities 1..5 (threat corruptions)")
    p.add_argument("--sigma", type=float, default=0.25, help="smoothing noise std in [0,1] pixels (threat certify)")
    p.add_argument("--n0", type=int, default=100, help="selection samples (threat certify; Cohen et al.: 100)")
    p.add_argument("--n-mc", type=int, default=10000, help="estimation samples (threat certify; Cohen et al.: 100000)")
    p.add_argument("--alpha", type=float, default=0.001, help="failure probability (threat certify)")
    p.add_argument("--model", default=None, help="diffusion model for one-shot denoised smoothing (threat certify; "
                                                  "without it the classifier itself is smoothed)")
    p.add_argument("--dataset", required=True, help="digits, cifar10, folder, imagenet... (advpure list datasets)")
    p.add_argument("--data-dir", default=None, help="dataset path (CIFAR-10 archive/folder, image folder)")
    p.add_argument("--split", default="test", help="dataset split evaluated")
    p.add_argument("--classifier", required=True, help="classifier spec: PATH.safetensors, ARCH:PATH, module:... "
                                                       "(advpure list models)")
    p.add_argument("--defense", default="none", help="defense spec NAME:key=value,... (advpure list defenses)")
    p.add_argument("--attack", default="none", help="attack spec, e.g. standard (worst case over the standard attack "
                                                    "list for the defense, cheapest first), lite, "
                                                    "pgd:norm=linf,eps=8/255,steps=200,eot=20; 'none' for clean "
                                                    "accuracy only (advpure list attacks)")
    p.add_argument("--surrogate-defense", default=None, help="defense spec used by the 'surrogate' attack")
    p.add_argument("--surrogate-classifier", default=None, help="classifier spec used by the 'transfer' attack")
    p.add_argument("--n", "--n-samples", dest="n", type=int, default=100,
                   help="images (a seeded subset); use --n-samples under torchrun, whose own options clash with --n")
    p.add_argument("--subset-seed", type=int, default=0, help="which images: the seed of the subset, the same for "
                                                              "every --seeds")
    p.add_argument("--seeds", type=seeds, default=[0], help="comma-separated seeds the run is repeated over (the "
                                                            "defense's and the attack's randomness)")
    p.add_argument("--batch-size", type=int, default=100, help="images per batch (a journal entry per batch)")
    p.add_argument("--eval-draws", type=int, default=20, help="fresh draws of a stochastic defense in the final "
                                                               "evaluation (default 20; the worst case is over these)")
    p.add_argument("--no-early-stop", action="store_true", help="return the last iterate instead of the first successful one")
    p.add_argument("--no-sanity", action="store_true", help="skip the gradient-masking checks")
    p.add_argument("--sanity-n", type=int, default=32, help="samples used by the sanity checks (default 32, at least 8)")
    p.add_argument("--convergence", action="store_true", help="on the sanity subset, double the attack's steps (and EOT) "
                                                              "until robust accuracy is flat within its 95%% interval "
                                                              "(at most --convergence-max-factor x) and report it")
    p.add_argument("--convergence-max-factor", type=int, default=8, help="largest steps/EOT multiple tried (default 8)")
    p.add_argument("--sanity-queries", type=int, default=200, help="Square queries in the black-box check")
    p.add_argument("--votes", type=int, default=0, help="majority vote over K purifications (0 = none; "
                                                        "for cmap, >= 1 votes over its K latents)")
    p.add_argument("--allow-random-weights", action="store_true",
                   help="accept a bare architecture name as --classifier (a randomly initialised network)")
    p.add_argument("--out", default=None, help="write the result JSON here")
    p.add_argument("--journal", default=None, help="JSONL journal for resuming an interrupted run")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    threads.add_argument(p)
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    old_spelling(p, "--denoiser", "--model")
    p.set_defaults(func=_handler)
    _DEFAULTS.update({a.dest: a.default for a in p._actions if a.default is not argparse.SUPPRESS})


#: default value of every option (filled by :func:`register`), to tell which ones the user gave
_DEFAULTS: dict[str, object] = {}
#: options that only some threats use; giving one to another threat is an error, never silently ignored
_USED_BY = {
    "attack": ("adversarial",), "surrogate_defense": ("adversarial",), "surrogate_classifier": ("adversarial",),
    "journal": ("adversarial",), "seeds": ("adversarial",), "votes": ("adversarial",),
    "eval_draws": ("adversarial",), "no_early_stop": ("adversarial",), "no_sanity": ("adversarial",),
    "sanity_n": ("adversarial",), "sanity_queries": ("adversarial",), "convergence": ("adversarial",),
    "convergence_max_factor": ("adversarial",), "split": ("adversarial",),
    "corruptions": ("corruptions",), "severities": ("corruptions",),
    "sigma": ("certify",), "n0": ("certify",), "n_mc": ("certify",), "alpha": ("certify",), "model": ("certify",),
}


def _option(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def check_options(args: argparse.Namespace) -> None:
    """Unknown or conflicting options are errors naming the option, raised before anything is loaded."""
    from ..eval.sanity import MIN_SANITY_N
    from ..specs import check_spec, parse_spec

    for dest, threats_ in _USED_BY.items():
        v = getattr(args, dest)
        given = len(v) > 1 if dest == "seeds" else v != _DEFAULTS.get(dest, v)
        if given and args.threat not in threats_:
            shown = ",".join(map(str, v)) if isinstance(v, list) else v
            what = "runs one seed" if dest == "seeds" else "does not use it"
            raise ValueError(f"{_option(dest)} {shown}: --threat {args.threat} {what}; remove it "
                             f"(it is used by --threat {' or '.join(threats_)})")
    for dest, minimum in (("n", 1), ("batch_size", 1), ("subset_seed", 0), ("eval_draws", 1),
                          ("sanity_n", MIN_SANITY_N), ("votes", 0), ("convergence_max_factor", 2),
                          ("sanity_queries", 1), ("n0", 1), ("n_mc", 1)):
        if getattr(args, dest) < minimum:
            extra = " (smaller sanity checks cannot fail)" if dest == "sanity_n" else ""
            raise ValueError(f"{_option(dest)} {getattr(args, dest)}: expected an integer >= {minimum}{extra}")
    checks_run = args.threat == "adversarial" and args.attack != "none" and (not args.no_sanity or args.convergence)
    if checks_run and args.n < MIN_SANITY_N:
        raise ValueError(f"--n {args.n}: the sanity checks (and --convergence) run on min(--sanity-n, --n) images and "
                         f"need at least {MIN_SANITY_N}; raise --n or pass --no-sanity")
    for dest in ("defense", "attack", "surrogate_defense"):
        spec = getattr(args, dest)
        if spec is None or spec == "none":
            continue
        try:  # name, options and value types, before anything is loaded
            check_spec("attack" if dest == "attack" else "defense", spec)
        except ValueError as e:
            raise ValueError(f"{_option(dest)} {spec}: {e}") from None
    if args.votes:
        if args.defense in (None, "none"):
            raise ValueError(f"--votes {args.votes}: a majority vote needs a stochastic defense, and --defense is none "
                             "(the classifier alone is deterministic)")
        if args.votes == 1 and parse_spec(args.defense)[0] != "cmap":
            raise ValueError("--votes 1: a majority vote needs K >= 2 purifications (1 is only for cmap, which votes "
                             "over its own K latents)")
    if args.out is not None and args.journal is not None and Path(args.out).resolve() == Path(args.journal).resolve():
        raise ValueError(f"--out and --journal are the same file ({args.out})")


def check_outputs(args: argparse.Namespace) -> None:
    """Fail before compute when an output cannot be written."""
    from ..paths import check_writable

    if args.out is not None:
        check_writable(args.out, "--out", "file")
    if args.journal is not None:
        check_writable(args.journal, "--journal", "file")


def check_data_fits(args: argparse.Namespace) -> None:
    """The classifier must take the dataset's images and have one output per class: checked from the classifier's
    sidecar (its weights are not loaded twice) and the dataset (decoded once; later loads read the cache)."""
    from ..data import load_dataset
    from ..models import classifier_info

    info = classifier_info(args.classifier, allow_random_weights=args.allow_random_weights, what="--classifier")
    if args.surrogate_classifier is not None:
        classifier_info(args.surrogate_classifier, allow_random_weights=args.allow_random_weights,
                        what="--surrogate-classifier")
    split = args.split if args.threat == "adversarial" else "test"
    ds = load_dataset(args.dataset, split, data_dir=args.data_dir)
    if info["num_classes"] is not None and info["num_classes"] != ds.num_classes:
        shown = ", ".join(ds.classes[:10]) + (", ..." if ds.num_classes > 10 else "")
        raise ValueError(f"--classifier {args.classifier}: {info['num_classes']} output classes, but --dataset "
                         f"{args.dataset} ({split}) has {ds.num_classes} classes ({shown})")
    c, h, w = ds.shape
    if (info["in_channels"] is not None and info["in_channels"] != c) or \
            (info["image_size"] is not None and (h, w) != (info["image_size"], info["image_size"])):
        raise ValueError(f"--classifier {args.classifier}: takes {info['in_channels']}x{info['image_size']}x"
                         f"{info['image_size']} images, but --dataset {args.dataset} has {c}x{h}x{w}")


def _classifier_arg(spec: str | None, allow_random_weights: bool):
    """The spec itself, or (with --allow-random-weights and a bare architecture name) the random network, labelled
    as such in the report."""
    from ..models import ARCHS, load_classifier

    if spec is None or not allow_random_weights or spec not in ARCHS:
        return spec
    clf = load_classifier(spec, allow_random_weights=True)
    clf.describe = lambda: f"{spec} (random weights: --allow-random-weights)"
    return clf


def _other_threat(args: argparse.Namespace) -> int:
    import json

    from ..eval import threats
    from ..eval.corruptions import CORRUPTIONS

    seed = args.seeds[0]
    if args.threat == "corruptions":
        names = CORRUPTIONS if args.corruptions == "all" else tuple(c for c in args.corruptions.split(",") if c)
        res = threats.run_corruptions(dataset=args.dataset, data_dir=args.data_dir, classifier=args.classifier,
                                      defense=args.defense, names=names,
                                      severities=[int(v) for v in args.severities.split(",")], n=args.n,
                                      subset_seed=args.subset_seed, seed=seed, batch_size=args.batch_size,
                                      allow_random_weights=args.allow_random_weights)
        table = threats.corruptions_table(res)
    else:
        if args.defense not in (None, "none"):
            raise ValueError("--threat certify smooths the classifier itself; use --model PATH (a diffusion model) "
                             "for denoised smoothing instead of --defense")
        res = threats.run_certify(dataset=args.dataset, data_dir=args.data_dir, classifier=args.classifier,
                                  sigma=args.sigma, n0=args.n0, n_mc=args.n_mc, alpha=args.alpha, n=args.n,
                                  subset_seed=args.subset_seed, seed=seed, denoiser=args.model,
                                  batch_size=args.batch_size, allow_random_weights=args.allow_random_weights)
        table = "| radius | certified accuracy |\n|---|---|\n" + "\n".join(
            f"| {r} | {100 * a:.1f}% |" for r, a in res["certified_accuracy"].items())
        table += f"\n\nsigma {res['sigma']}, n0 {res['n0']}, n {res['n_mc']}, alpha {res['alpha']}, " \
                 f"{res['abstain']} of {res['n']} abstained, denoiser {res['denoiser']}"
    print(table)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
        print(f"\nwrote {args.out}")
    return 0


def eval_config(args: argparse.Namespace):
    """The :class:`~advpure.eval.runner.EvalConfig` of the parsed options."""
    from ..eval.runner import EvalConfig

    return EvalConfig(dataset=args.dataset, n=args.n, subset_seed=args.subset_seed, seeds=args.seeds,
                      batch_size=args.batch_size, split=args.split, data_dir=args.data_dir, device=args.device,
                      eval_draws=args.eval_draws, early_stop=not args.no_early_stop, sanity=not args.no_sanity,
                      sanity_n=args.sanity_n, sanity_queries=args.sanity_queries, convergence=args.convergence,
                      convergence_max_factor=args.convergence_max_factor, votes=args.votes,
                      progress=not args.no_progress)


def _handler(args: argparse.Namespace) -> int:
    # ---- every check before anything is loaded or attacked (--device and --threads: advpure.cli.run_command)
    check_options(args)
    if args.threat == "adversarial":
        eval_config(args)  # the settings' own checks
    check_outputs(args)
    check_data_fits(args)
    if args.threat != "adversarial":
        return _other_threat(args)
    from ..eval.runner import close_distributed, format_markdown, run_eval

    result = run_eval(
        eval_config(args),
        classifier=_classifier_arg(args.classifier, args.allow_random_weights),
        defense=args.defense, attack=args.attack, surrogate_defense=args.surrogate_defense,
        surrogate_classifier=_classifier_arg(args.surrogate_classifier, args.allow_random_weights),
        out=args.out, journal=args.journal,
    )
    import os

    if int(os.environ.get("RANK", "0")) == 0:
        print(format_markdown(result))
        if args.out:
            print(f"\nwrote {args.out}")
    close_distributed()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m advpure.cli.eval ...`` = ``advpure eval ...``), with the same error handling."""
    from . import run_command
    from .options import HelpFormatter, all_parsers

    parser = argparse.ArgumentParser(prog="advpure")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    register(sub)
    for q in all_parsers(parser):
        q.formatter_class = HelpFormatter
    args = parser.parse_args(["eval", *(sys.argv[1:] if argv is None else argv)])
    return run_command(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
