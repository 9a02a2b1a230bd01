"""The evaluation runner: clean and robust accuracy of a (defended) classifier under an attack, over
seeds, on a seeded subset, resumable, and shardable across processes with ``torchrun``.

Work is split into (seed, batch) tasks. Each task reseeds the defense and torch's global RNG from
(seed, batch index), so a task's result does not depend on which process ran it, nor on whether the
run was interrupted: a killed run restarted with the same arguments reads the journal, skips finished
tasks and produces the same final numbers. Under ``torchrun`` (``WORLD_SIZE`` > 1) tasks are dealt
round-robin to the ranks (gloo backend on CPU), each rank keeps its own journal
(``JOURNAL.rank{r}of{w}``), and rank 0 merges all records and writes the result.

Protocol: see :mod:`advpure.eval.protocol`; gradient-masking checks: :mod:`advpure.eval.sanity`. The settings of a
run are an :class:`EvalConfig`; ``run_eval(config, classifier=..., defense=..., attack=...)`` or, equivalently, the
settings as keywords (``run_eval(dataset="digits", n=8, classifier=...)``).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from dataclasses import dataclass, fields, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn

from .. import __version__
from ..attacks.base import Attack, is_stochastic
from ..contracts import check_int
from ..specs import SpecContext, build
from .journal import Journal, args_key, content_digest, sibling_records, strict_json, tensor_digest
from .metrics import interval95, mean_std, merge_perturbation_stats, perturbation_stats, success_rate
from .protocol import Protocol, correct_draws, summarize
from .sanity import BLOCKING, WARN, run_sanity_checks

log = logging.getLogger(__name__)


def _task_seed(seed: int, batch: int) -> int:
    return (int(seed) * 1_000_003 + int(batch) * 7919 + 12345) % (2**63 - 1)


def _reseed(model: nn.Module, s: int) -> None:
    torch.manual_seed(s)
    if hasattr(model, "reseed"):
        model.reseed(s)


def _versions() -> dict:
    v = {"advpure": __version__, "torch": torch.__version__, "python": platform.python_version()}
    try:
        import numpy

        v["numpy"] = numpy.__version__
    except ImportError:  # pragma: no cover
        pass
    return v


def _describe(obj: Any, spec: Any) -> Any:
    if isinstance(spec, str):
        return spec
    d = getattr(obj, "describe", None)
    return d() if callable(d) else type(obj).__name__


def _quality(model: nn.Module, x: torch.Tensor) -> dict | None:
    """Mean SSIM / PSNR of purified vs clean images (one draw), when advpure.eval.quality exists."""
    defense = getattr(model, "defense", None)
    if defense is None or type(defense).__name__ == "Identity":
        return None
    try:
        from . import quality  # written by another module owner; optional here
    except ImportError:
        return {"unavailable": "advpure.eval.quality not installed"}
    with torch.no_grad():
        xp = model.purify(x)
        out = {}
        for name in ("ssim", "psnr"):
            fn = getattr(quality, name, None)
            if callable(fn):
                out[name] = [float(v) for v in torch.as_tensor(fn(xp, x)).flatten()]
    return out


def _wrap(clf: nn.Module, defense: nn.Module | None, votes: int) -> nn.Module:
    """The attacked model: classifier(defense(x)), or a majority vote over purifications."""
    from ..defenses import DefendedClassifier

    check_int(votes, "votes", minimum=0)
    if votes == 0:
        return DefendedClassifier(clf, defense)
    if defense is None or not is_stochastic(defense):
        raise ValueError(f"votes: a majority vote needs a stochastic defense; {type(defense).__name__} would repeat "
                         "one prediction (use --votes 0)")
    from ..defenses.voting import voting_classifier

    return voting_classifier(clf, defense, votes)


def run_identity(config: dict, *, clf: nn.Module, defense: nn.Module | None, attack: Any, sub: Any,
                 seeds: Sequence[int]) -> dict:
    """What produced a run's numbers, as digests (the journal's header and the report's ``identity``): the classifier's
    and the defense's weights as they are in memory, the data subset's indices and pixels, the attack (its
    configuration and any networks it holds, e.g. a surrogate), seeds, protocol and code version."""
    x, y = sub.tensors()
    data = tensor_digest(x)[:16] + tensor_digest(y)[:16]
    att_nets = sorted(filter(None, (content_digest(v) for v in vars(attack).values()
                                     if isinstance(v, nn.Module)))) if attack is not None else []
    return {"classifier": content_digest(clf), "defense": content_digest(defense), "data": data,
            "indices": args_key({"i": sub.meta.get("indices")}), "attack": args_key({"a": config["attack"],
                                                                                   "p": config["attack_params"],
                                                                                   "nets": att_nets}),
            "defense_spec": args_key({"d": config["defense"]}), "seeds": ",".join(map(str, seeds)),
            "protocol": args_key(config["protocol"]), "code": __version__}


def _seed0_scores(records: list[dict], seed: int, m: int) -> list[float] | None:
    """Per image 0..m-1 of the subset, the share of evaluation draws that classified the main run's adversarial
    example correctly under ``seed``; None when the records do not cover them."""
    by_index = {}
    for r in records:
        if r["seed"] == seed and "robust" in r:
            rob = torch.tensor(r["robust"], dtype=torch.float).mean(0)
            for j, i in enumerate(r["indices"]):
                by_index[i] = float(rob[j])
    return [by_index[i] for i in range(m)] if all(i in by_index for i in range(m)) else None


def _dist_info() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        # A rank that finishes its tasks early waits in the final gather for the slowest one: on a CPU that wait
        # lasted over the default 30-minute timeout (two halves of a CIFAR-10 SSNI row) and both ranks exited.
        timeout = timedelta(seconds=float(os.environ.get("ADVPURE_DIST_TIMEOUT_S", 7 * 24 * 3600)))
        if torch.cuda.is_available():  # NCCL on GPU, one device per local rank; gloo on CPU
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            dist.init_process_group("nccl", timeout=timeout)
        else:
            dist.init_process_group("gloo", timeout=timeout)
    return dist.get_rank(), dist.get_world_size()


def close_distributed() -> None:
    """Wait for every rank and tear the process group down (an exit with gloo threads alive can abort)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


@dataclass
class EvalConfig:
    """The settings of an evaluation (everything :func:`run_eval` takes besides the models and the outputs).

    ``dataset``/``split``/``data_dir``: the data (:func:`advpure.data.load_dataset`); ``n`` images of the seeded
    subset ``subset_seed`` (the same images for every seed), evaluated in batches of ``batch_size`` on ``device``;
    ``seeds``: the seeds the run is repeated over (the defense's and the attack's randomness; mean and std over them).
    ``eval_draws`` fresh draws of a stochastic defense in the final evaluation; ``early_stop``:
    evaluate-while-optimising (applied unless the attack spec sets ``early_stop`` itself). ``sanity``:
    gradient-masking checks on ``sanity_n`` samples (``sanity_queries`` Square queries in the black-box check).
    ``convergence``: on the sanity subset, double the attack's steps (and EOT) until robust accuracy is flat within
    its 95% interval, at most ``convergence_max_factor`` x (:func:`advpure.eval.sanity.convergence_curve`).
    ``votes``: 0 = classify one purification; K >= 2 = majority vote over K purifications
    (:class:`~advpure.defenses.voting.MajorityVote`); for a CMAP defense any ``votes >= 1`` votes over its own
    K latents (:class:`~advpure.defenses.cmap.CMAPClassifier`). ``progress``: a progress bar.

    Checked when made: a ``ValueError``/``TypeError`` naming the field.
    """

    dataset: str
    n: int = 100
    subset_seed: int = 0
    seeds: Sequence[int] = (0,)
    batch_size: int = 100
    split: str = "test"
    data_dir: str | os.PathLike | None = None
    device: str = "cpu"
    eval_draws: int = 20
    early_stop: bool = True
    sanity: bool = True
    sanity_n: int = 32
    sanity_queries: int = 200
    convergence: bool = False
    convergence_max_factor: int = 8
    votes: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.dataset, str) or not self.dataset:
            raise ValueError(f"dataset: expected a dataset name, got {self.dataset!r}")
        if not isinstance(self.split, str) or not self.split:
            raise ValueError(f"split: expected a split name such as 'test', got {self.split!r}")
        check_int(self.n, "n", minimum=1)
        check_int(self.batch_size, "batch_size", minimum=1)
        check_int(self.subset_seed, "subset_seed", minimum=0)
        if isinstance(self.seeds, (str, bytes)) or not hasattr(self.seeds, "__iter__"):
            raise TypeError(f"seeds: expected a sequence of integers such as (0, 1, 2), got {self.seeds!r}")
        self.seeds = tuple(check_int(int(s), "seed", minimum=0) for s in self.seeds)
        if not self.seeds:
            raise ValueError("seeds: expected at least one seed")
        check_int(self.eval_draws, "eval_draws", minimum=1)
        check_int(self.sanity_n, "sanity_n", minimum=1)
        check_int(self.sanity_queries, "sanity_queries", minimum=1)
        check_int(self.votes, "votes", minimum=0)
        check_int(self.convergence_max_factor, "convergence_max_factor", minimum=2 if self.convergence else 1)

    def check_sanity_size(self, attack: Any) -> None:
        """The sanity checks (and the convergence curve) need enough images to be able to fail."""
        from .sanity import MIN_SANITY_N

        n, sanity_n = self.n, self.sanity_n
        if (self.sanity or self.convergence) and attack not in (None, "none") and min(sanity_n, n) < MIN_SANITY_N:
            raise ValueError(f"sanity checks: need at least {MIN_SANITY_N} images to be able to fail, got "
                             f"min(sanity_n={sanity_n}, n={n}); raise them or pass sanity=False (--no-sanity)")


_CONFIG_FIELDS = tuple(f.name for f in fields(EvalConfig))


def run_eval(config: EvalConfig | None = None, *, classifier: str | nn.Module,
             defense: str | nn.Module | None = "none", attack: str | Attack | None = "none",
             surrogate_defense: str | None = None, surrogate_classifier: str | nn.Module | None = None,
             out: str | os.PathLike | None = None, journal: str | os.PathLike | None = None,
             **overrides: Any) -> dict:
    """Evaluate and return the result record (also written to ``out`` as JSON when given).

    ``config``: the settings (:class:`EvalConfig`); ``overrides``: settings given as keywords, which replace the
    config's (``run_eval(dataset="digits", n=8, classifier=...)`` builds the config from them alone).
    ``classifier``: a spec for :func:`advpure.models.load_classifier` or a module; ``defense``: a defense spec
    (``advpure.specs.build("defense", ...)``), a module, or None/"none"; ``attack``: an attack spec, an
    :class:`~advpure.attacks.Attack`, or None/"none" (clean accuracy only); ``surrogate_defense``: the defense spec
    the ``surrogate`` attack takes its gradient through; ``surrogate_classifier``: the classifier of the ``transfer``
    attack. ``journal``: a JSONL journal that makes the run resumable. Voting models (``votes``) are evaluated as the
    voted prediction.
    """
    unknown = sorted(set(overrides) - set(_CONFIG_FIELDS))
    if unknown:
        raise TypeError(f"run_eval() got an unexpected keyword argument {unknown[0]!r} (settings: "
                        f"{', '.join(_CONFIG_FIELDS)})")
    if config is None:
        config = EvalConfig(**overrides)
    elif not isinstance(config, EvalConfig):
        raise TypeError(f"run_eval: config must be an EvalConfig, got {type(config).__name__}")
    elif overrides:
        config = replace(config, **overrides)
    return _run(config, classifier=classifier, defense=defense, attack=attack, surrogate_defense=surrogate_defense,
                surrogate_classifier=surrogate_classifier, out=out, journal=journal)


def _run(cfg: EvalConfig, *, classifier: str | nn.Module, defense: str | nn.Module | None,
         attack: str | Attack | None, surrogate_defense: str | None, surrogate_classifier: str | nn.Module | None,
         out: str | os.PathLike | None, journal: str | os.PathLike | None) -> dict:
    from ..data import load_dataset
    from ..defenses import DefendedClassifier
    from ..models import load_classifier

    cfg.check_sanity_size(attack)
    dataset, n, subset_seed, batch_size, split, data_dir = (cfg.dataset, cfg.n, cfg.subset_seed, cfg.batch_size,
                                                            cfg.split, cfg.data_dir)
    seeds = list(cfg.seeds)
    eval_draws, sanity, sanity_n, sanity_queries = cfg.eval_draws, cfg.sanity, cfg.sanity_n, cfg.sanity_queries
    convergence, convergence_max_factor, votes, progress = (cfg.convergence, cfg.convergence_max_factor, cfg.votes,
                                                            cfg.progress)
    protocol = Protocol(eval_draws=eval_draws, early_stop=cfg.early_stop)
    dev = torch.device(cfg.device)

    # ---- build everything before any compute
    data = load_dataset(dataset, split, data_dir=data_dir)
    sub = data.subset(n, subset_seed)
    clf = load_classifier(classifier) if isinstance(classifier, (str, os.PathLike)) else classifier
    clf = clf.to(dev).eval()
    ctx = SpecContext(classifier=clf, dataset=dataset, image_shape=data.shape, device=dev)
    if defense is None or (isinstance(defense, str) and defense == "none"):
        defense_mod: nn.Module | None = None
    elif isinstance(defense, str):
        defense_mod = build("defense", defense, ctx)
    else:
        defense_mod = defense
    model = _wrap(clf, defense_mod, votes).to(dev).eval()
    ctx.extra["defense"] = defense_mod
    ctx.extra["model"] = model
    if surrogate_defense is not None:
        ctx.extra["surrogate_model"] = DefendedClassifier(clf, build("defense", surrogate_defense, ctx)).to(dev).eval()
    if surrogate_classifier is not None:
        sc = load_classifier(surrogate_classifier) if isinstance(surrogate_classifier, (str, os.PathLike)) \
            else surrogate_classifier
        ctx.extra["surrogate_classifier"] = sc.to(dev).eval()
    if attack is None or (isinstance(attack, str) and attack == "none"):
        att: Attack | None = None
    elif isinstance(attack, str):
        att = build("attack", attack, ctx)
        if "early_stop" not in att.spec["params"] and hasattr(att, "early_stop"):
            att = att.replace(early_stop=protocol.early_stop)
    else:
        att = attack
    if att is not None:  # an attack object or a spec that sets early_stop keeps it: report what runs
        protocol = Protocol(eval_draws=eval_draws, early_stop=bool(getattr(att, "early_stop", protocol.early_stop)))
    draws = protocol.draws_for(model)

    config = {
        "dataset": dataset, "split": split, "data_dir": str(data_dir) if data_dir else None, "n": n,
        "subset_seed": subset_seed, "batch_size": batch_size,
        "classifier": _describe(clf, classifier), "defense": _describe(defense_mod, defense),
        "attack": _describe(att, attack) if att is not None else "none", "attack_params": att.params() if att else None,
        "protocol": {**protocol.describe(), "votes": votes}, "surrogate_defense": surrogate_defense,
        "surrogate_classifier": str(surrogate_classifier) if surrogate_classifier is not None else None,
    }
    identity = run_identity(config, clf=clf, defense=defense_mod, attack=att, sub=sub, seeds=seeds)
    key = args_key({**config, "identity": identity})
    rank, world = _dist_info()
    jpath = None
    if journal is not None:
        jpath = Path(journal) if world == 1 else Path(f"{journal}.rank{rank}of{world}")
    jr = Journal(jpath, key, identity)
    # finished tasks of this run written by any process count (JOURNAL, JOURNAL.rank{r}of{w}): resuming with another
    # number of processes reuses them (each task's result does not depend on which process ran it)
    shared = {(r["seed"], r["batch"]): r for r in sibling_records(journal, jpath, key) if r.get("type") == "batch"}
    shared.update({(r["seed"], r["batch"]): r for r in jr.of_type("batch")})

    n_batches = (n + batch_size - 1) // batch_size
    tasks = [(s, b) for s in seeds for b in range(n_batches)]
    mine = tasks[rank::world]
    done = set(shared)
    todo = [t for t in mine if t not in done]

    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(mine), initial=len(mine) - len(todo), desc=f"eval[{rank}]" if world > 1 else "eval",
                   unit="batch", dynamic_ncols=True)
    for s, b in todo:
        idx = list(range(b * batch_size, min(n, (b + 1) * batch_size)))
        x, y = sub.batch(idx)
        x, y = x.to(dev), y.to(dev)
        t0 = time.perf_counter()
        _reseed(model, _task_seed(s, b))
        clean = correct_draws(model, x, y, draws)
        rec: dict[str, Any] = {"type": "batch", "seed": s, "batch": b, "indices": idx,
                               "clean": clean.int().tolist()}
        q = _quality(model, x)
        if q is not None:
            rec["quality"] = q
        if att is not None:
            x_adv = att(model, x, y)
            robust = correct_draws(model, x_adv, y, draws)
            rec["robust"] = robust.int().tolist()
            if getattr(att, "last_broken_by", None):
                rec["broken_by"] = list(att.last_broken_by)
                rec["ensemble_rows"] = list(att.last_rows)
            rec["forwards_per_image"] = att.last_stats.forwards_per_image
            rec["eot"] = att.last_stats.eot
            rec["perturbation"] = perturbation_stats(x_adv, x)
        rec["seconds"] = time.perf_counter() - t0
        jr.append(rec)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()

    shared.update({(r["seed"], r["batch"]): r for r in jr.of_type("batch")})
    records = [shared[t] for t in mine if t in shared]
    # ---- merge across ranks
    if world > 1:
        import torch.distributed as dist

        gathered: list[Any] = [None] * world
        dist.all_gather_object(gathered, records)
        records = [r for part in gathered for r in part]

    def check_subset() -> tuple[torch.Tensor, torch.Tensor, list[float] | None]:
        """The first ``sanity_n`` images, and the main run's per-image scores on them (seed 0), which serve as
        the checks' base run instead of attacking the same images again."""
        m = min(sanity_n, n)
        xs, ys = sub.batch(list(range(m)))
        return xs.to(dev), ys.to(dev), _seed0_scores(records, seeds[0], m)

    def sanity_checks() -> list[dict]:
        xs, ys, base_scores = check_subset()
        return run_sanity_checks(model, att, xs, ys, draws=draws, square_queries=sanity_queries,
                                 base_scores=base_scores,
                                 reseed=lambda i: _reseed(model, _task_seed(seeds[0], 10_000 + i)))

    def convergence_check() -> dict:
        from .sanity import convergence_curve

        xs, ys, base_scores = check_subset()
        return convergence_curve(model, att, xs, ys, draws=draws, max_factor=convergence_max_factor,
                                 base_scores=base_scores,
                                 reseed=lambda i: _reseed(model, _task_seed(seeds[0], 20_000 + i)), progress=progress)

    # each check runs once: a resumed run takes its journalled result
    sanity_rows: list[dict] | None = None
    if sanity and att is not None and rank == 0:
        sanity_rows = jr.once("sanity", "rows", sanity_checks)
    convergence_rec: dict | None = None
    if convergence and att is not None and rank == 0:
        convergence_rec = jr.once("convergence", "result", convergence_check)
    jr.close()
    result = _assemble(config, key, records, seeds, n, model, att, protocol, sanity_rows, dev, world)
    result["identity"] = identity
    if convergence_rec is not None:
        result["convergence"] = convergence_rec
    if world > 1:
        import torch.distributed as dist

        obj = [result]
        dist.broadcast_object_list(obj, src=0)
        result = obj[0]
    if out is not None and rank == 0:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(strict_json(result), indent=2, sort_keys=False, allow_nan=False))
    return result


def _assemble(config: dict, key: str, records: list[dict], seeds: list[int], n: int, model: nn.Module,
              att: Attack | None, protocol: Protocol, sanity_rows: list[dict] | None, dev: torch.device,
              world: int) -> dict:
    per_seed = []
    total_seconds = 0.0
    fwd, perts, quality = [], [], {"ssim": [], "psnr": []}
    pooled: dict[str, list[float]] = {"clean": [], "robust": [], "robust_worst": []}
    broken_by: dict[str, int] = {}
    for s in seeds:
        rs = sorted((r for r in records if r["seed"] == s), key=lambda r: r["batch"])
        got = sum(len(r["indices"]) for r in rs)
        if got != n:
            raise RuntimeError(f"seed {s}: {got} evaluated samples, expected {n} (journal incomplete)")
        clean = torch.cat([torch.tensor(r["clean"], dtype=torch.bool) for r in rs], dim=1)
        entry: dict[str, Any] = {"seed": s, "clean": summarize(clean)}
        pooled["clean"] += clean.float().mean(0).tolist()
        if att is not None:
            robust = torch.cat([torch.tensor(r["robust"], dtype=torch.bool) for r in rs], dim=1)
            pooled["robust"] += robust.float().mean(0).tolist()
            pooled["robust_worst"] += robust.all(0).float().tolist()
            for r in rs:
                for name in r.get("broken_by") or []:
                    key_b = name or "survived"
                    broken_by[key_b] = broken_by.get(key_b, 0) + 1
            entry["robust"] = summarize(robust)
            entry["success_rate"] = success_rate(clean, robust)
            fwd += [r["forwards_per_image"] * len(r["indices"]) for r in rs]
            perts += [r["perturbation"] for r in rs]
        for r in rs:
            for k in quality:
                quality[k] += (r.get("quality") or {}).get(k, [])
        total_seconds += sum(r["seconds"] for r in rs)
        per_seed.append(entry)

    def agg(part: str, stat: str) -> dict:
        return mean_std([e[part][stat] for e in per_seed])

    n_eval = n * len(seeds)
    nfe = float(getattr(model, "nfe", 0.0))
    fpi = sum(fwd) / n_eval if fwd else 0.0
    eval_fpi = float(protocol.draws_for(model) * (2 if att is not None else 1))  # clean (+ robust) draws
    result: dict[str, Any] = {
        "dataset": {"name": config["dataset"], "split": config["split"], "subset_seed": config["subset_seed"],
                    "n": n},
        "classifier": config["classifier"],
        "defense": {"spec": config["defense"], "describe": model.describe() if hasattr(model, "describe") else None,
                    "stochastic": is_stochastic(model), "nfe": nfe},
        "attack": {"spec": config["attack"], "params": config["attack_params"],
                   "describe": att.describe() if att is not None else None},
        "protocol": {**protocol.describe(model), "votes": config["protocol"]["votes"]},
        "seeds": seeds,
        "per_seed": per_seed,
        "clean_accuracy": agg("clean", "mean"),
        "clean_accuracy_ci95": interval95(pooled["clean"]),
        "cost": {"seconds_total": total_seconds, "seconds_per_image": total_seconds / n_eval,
                 "attack_forwards_per_image": fpi, "evaluation_forwards_per_image": eval_fpi,
                 "network_evals_per_image": (fpi + eval_fpi) * (1.0 + nfe),
                 "processes": world},
        "sanity_checks": sanity_rows,
        "sanity_warnings": sum(r["status"] == WARN for r in sanity_rows) if sanity_rows else 0,
        "versions": _versions(),
        "device": str(dev) if dev.type != "cuda" else torch.cuda.get_device_name(dev),
        "journal_key": key,
    }
    if att is not None:
        result["robust_accuracy"] = agg("robust", "mean")
        result["robust_accuracy_ci95"] = interval95(pooled["robust"])
        result["robust_accuracy_worst_case"] = agg("robust", "worst")
        result["robust_accuracy_worst_case_ci95"] = interval95(pooled["robust_worst"])
        result["worst_case_draws"] = protocol.draws_for(model)
        if broken_by:
            result["broken_by"] = broken_by
        blocked = [r["check"] for r in (sanity_rows or []) if r["status"] == WARN and r["check"] in BLOCKING]
        result["publishable"] = not blocked
        if blocked:
            result["not_publishable_because"] = blocked
        result["attack_success_rate"] = mean_std([e["success_rate"] for e in per_seed])
        result["perturbation"] = merge_perturbation_stats(perts)
    q: dict[str, Any] = {}
    for k, v in quality.items():
        if v:
            q[k] = mean_std(v)
    if q:
        result["purified_quality"] = q
    result["purified_quality_lpips"] = "unavailable (no local weights)"
    return result


def format_markdown(result: dict) -> str:
    """A Markdown table of the headline numbers and the sanity checks (WARNING rows in capitals)."""

    def pct(d: dict | None, ci: dict | None = None) -> str:
        if not d:
            return "-"
        txt = f"{100 * d['mean']:.2f}% ± {100 * d['std']:.2f}" if d.get("n", 1) > 1 else f"{100 * d['mean']:.2f}%"
        if ci and ci.get("mean") is not None:
            txt += f" [95% CI {100 * ci['low']:.1f}-{100 * ci['high']:.1f}, {ci['n']} image-seeds]"
        return txt

    rows = [("dataset", f"{result['dataset']['name']}/{result['dataset']['split']} n={result['dataset']['n']} "
                        f"(subset seed {result['dataset']['subset_seed']})"),
            ("classifier", str(result["classifier"])),
            ("defense", f"{result['defense']['spec']} (stochastic={result['defense']['stochastic']}, "
                        f"nfe={result['defense']['nfe']:g})"),
            ("attack", str(result["attack"]["spec"])),
            ("protocol", result["protocol"].get("statement") or
             f"draws={result['protocol'].get('draws_used')}, early_stop={result['protocol']['early_stop']}"),
            ("seeds", ",".join(map(str, result["seeds"]))),
            ("clean accuracy", pct(result["clean_accuracy"], result.get("clean_accuracy_ci95")))]
    if "robust_accuracy" in result:
        if not result.get("publishable", True):
            rows.append(("**NOT PUBLISHABLE**", "**a blocking sanity check failed: "
                         + ", ".join(result.get("not_publishable_because", [])) + "**"))
        rows += [("robust accuracy (mean over draws)", pct(result["robust_accuracy"], result.get("robust_accuracy_ci95"))),
                 (f"robust accuracy (worst case over {result.get('worst_case_draws', '?')} draws)",
                  pct(result["robust_accuracy_worst_case"], result.get("robust_accuracy_worst_case_ci95"))),
                 ("attack success rate", pct(result["attack_success_rate"]))]
        if result.get("broken_by"):
            rows.append(("broken by (image-seeds)", ", ".join(f"{k}: {v}" for k, v in result["broken_by"].items())))
        p = result["perturbation"]
        rows.append(("perturbation", f"max linf {p['max_linf']:.5f}, max l2 {p['max_l2']:.4f}, NaN {p['nan']}, "
                                     f"pixels [{p['min_pixel']:.3f}, {p['max_pixel']:.3f}]"))
    c = result["cost"]
    rows.append(("cost", f"{c['seconds_per_image']:.3f} s/image, {c['attack_forwards_per_image']:.1f} attack + "
                         f"{c.get('evaluation_forwards_per_image', 0):.0f} evaluation forwards/image, "
                         f"{c['network_evals_per_image']:.1f} network evals/image (classifier + denoiser)"))
    for k, v in (result.get("purified_quality") or {}).items():
        rows.append((f"purified {k.upper()}", f"{v['mean']:.4f} ± {v['std']:.4f}"))
    rows.append(("purified LPIPS", result.get("purified_quality_lpips", "-")))
    conv = result.get("convergence")
    if conv:
        rows.append(("convergence", ("CONVERGED" if conv["converged"] else "**NOT CONVERGED**") + ": "
                     + " -> ".join(f"{100 * p['robust']:.1f}% (steps x{p['factor']})" for p in conv["curve"])))
    for r in result.get("sanity_checks") or []:
        label = f"sanity: {r['check']}"
        if r["status"] == WARN:
            rows.append((f"**WARNING** {label}", f"**WARNING: {r['detail']}**"))
        else:
            rows.append((label, f"{r['status']}: {r['detail']}"))
    lines = ["| metric | value |", "|---|---|"]
    lines += [f"| {k} | {str(v).replace('|', '/')} |" for k, v in rows]
    return "\n".join(lines)
