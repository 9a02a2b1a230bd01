"""``advpure eval``: clean and robust accuracy of a defended classifier under an attack."""

from __future__ import annotations

import argparse
import json
import sys


def _seeds(s: str) -> list[int]:
    try:
        out = [int(v) for v in s.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds: expected comma-separated integers like 0,1,2, got {s!r}") from None
    if not out:
        raise argparse.ArgumentTypeError("--seeds: expected at least one seed")
    return out


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval", help="evaluate a (defended) classifier under an attack",
        description="Clean and robust accuracy over seeds on a seeded subset; resumable (--journal) and "
                    "shardable with torchrun. Example: advpure eval --dataset digits --classifier "
                    "zoo/digits-small-cnn.safetensors --attack pgd:eps=0.1,steps=20 --n 100 --out r.json",
    )
    p.add_argument("--threat", default="adversarial", choices=("adversarial", "corruptions", "certify"),
                   help="adversarial (default: --attack), corruptions (15 common corruptions x severities, "
                        "with and without the defense) or certify (randomized smoothing)")
    p.add_argument("--corruptions", default="all", help="comma-separated corruption names (threat corruptions)")
    p.add_argument("--severities", default="1,2,3,4,5", help="comma-separated severities 1..5 (threat corruptions)")
    p.add_argument("--sigma", type=float, default=0.25, help="smoothing noise std in [0,1] pixels (threat certify)")
    p.add_argument("--n0", type=int, default=100, help="selection samples (threat certify; Cohen et al.: 100)")
    p.add_argument("--n-mc", type=int, default=10000, help="estimation samples (threat certify; Cohen et al.: 100000)")
    p.add_argument("--alpha", type=float, default=0.001, help="failure probability (threat certify)")
    p.add_argument("--denoiser", default=None, help="diffusion model for one-shot denoised smoothing (threat certify)")
    p.add_argument("--dataset", required=True, help="digits, cifar10 or folder")
    p.add_argument("--data-dir", default=None, help="dataset path (CIFAR-10 archive/folder, image folder)")
    p.add_argument("--split", default="test")
    p.add_argument("--classifier", required=True, help="classifier spec for advpure.models.load_classifier")
    p.add_argument("--defense", default="none", help="defense spec NAME:key=value,... (default none)")
    p.add_argument("--attack", default="none", help="attack spec, e.g. standard (worst case over the standard attack "
                                                    "list for the defense, cheapest first), lite, "
                                                    "pgd:norm=linf,eps=8/255,steps=200,eot=20; 'none' for clean accuracy only")
    p.add_argument("--surrogate-defense", default=None, help="defense spec used by the 'surrogate' attack")
    p.add_argument("--surrogate-classifier", default=None, help="classifier spec used by the 'transfer' attack")
    p.add_argument("--n", "--n-samples", dest="n", type=int, default=100,
                   help="subset size (default 100); use --n-samples under torchrun, whose own options clash with --n")
    p.add_argument("--subset-seed", type=int, default=0)
    p.add_argument("--seeds", type=_seeds, default=[0], help="comma-separated seeds (default 0)")
    p.add_argument("--batch-size", type=int, default=100)
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
    p.add_argument("--out", default=None, help="write the result JSON here")
    p.add_argument("--journal", default=None, help="JSONL journal for resuming an interrupted run")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=_handler)


def _other_threat(args: argparse.Namespace) -> int:
    import json

    from . import threats
    from .corruptions import CORRUPTIONS

    seed = args.seeds[0]
    if args.threat == "corruptions":
        names = CORRUPTIONS if args.corruptions == "all" else tuple(c for c in args.corruptions.split(",") if c)
        res = threats.run_corruptions(dataset=args.dataset, data_dir=args.data_dir, classifier=args.classifier,
                                      defense=args.defense, names=names,
                                      severities=[int(v) for v in args.severities.split(",")], n=args.n,
                                      subset_seed=args.subset_seed, seed=seed, batch_size=args.batch_size)
        table = threats.corruptions_table(res)
    else:
        if args.defense not in (None, "none"):
            raise ValueError("--threat certify smooths the classifier itself; use --denoiser PATH for denoised "
                             "smoothing instead of --defense")
        res = threats.run_certify(dataset=args.dataset, data_dir=args.data_dir, classifier=args.classifier,
                                  sigma=args.sigma, n0=args.n0, n_mc=args.n_mc, alpha=args.alpha, n=args.n,
                                  subset_seed=args.subset_seed, seed=seed, denoiser=args.denoiser,
                                  batch_size=args.batch_size)
        table = "| radius | certified accuracy |\n|---|---|\n" + "\n".join(
            f"| {r} | {100 * a:.1f}% |" for r, a in res["certified_accuracy"].items())
        table += f"\n\nsigma {res['sigma']}, n0 {res['n0']}, n {res['n_mc']}, alpha {res['alpha']}, " \
                 f"{res['abstain']} of {res['n']} abstained, denoiser {res['denoiser']}"
    print(table)
    if args.out:
        from pathlib import Path

        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
        print(f"\nwrote {args.out}")
    return 0


def _handler(args: argparse.Namespace) -> int:
    if args.threat != "adversarial":
        return _other_threat(args)
    from .runner import close_distributed, format_markdown, run_eval

    result = run_eval(
        dataset=args.dataset, data_dir=args.data_dir, split=args.split, classifier=args.classifier,
        defense=args.defense, attack=args.attack, n=args.n, subset_seed=args.subset_seed, seeds=args.seeds,
        batch_size=args.batch_size, out=args.out, journal=args.journal, device=args.device,
        eval_draws=args.eval_draws, early_stop=not args.no_early_stop, sanity=not args.no_sanity,
        sanity_n=args.sanity_n, sanity_queries=args.sanity_queries, convergence=args.convergence,
        convergence_max_factor=args.convergence_max_factor,
        surrogate_defense=args.surrogate_defense,
        surrogate_classifier=args.surrogate_classifier, votes=args.votes, progress=not args.no_progress,
    )
    import os

    if int(os.environ.get("RANK", "0")) == 0:
        print(format_markdown(result))
        if args.out:
            print(f"\nwrote {args.out}")
    close_distributed()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m advpure.eval.cli ...`` = ``advpure eval ...``)."""
    parser = argparse.ArgumentParser(prog="advpure")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    register(sub)
    args = parser.parse_args(["eval", *(sys.argv[1:] if argv is None else argv)])
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError) as e:
        if args.debug:
            raise
        print(f"advpure eval: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
