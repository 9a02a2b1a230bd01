"""Two evaluation runs on the images they share, image by image: per-image clean and robust accuracy (the share of
each image's evaluation draws) read from the records of each report's journal, each run's means with 95% intervals on
the shared images, and the paired difference B - A with its 95% interval.

Both runs must use the same test split and subset seed (the runner's --subset-seed, the same images for every
evaluation seed); a subset of N images with seed S is the first N of one
seeded permutation, so a smaller run's images are inside a larger run's. Records are matched by dataset index.

usage: python experiments/lib/paired.py REPORT_A.json JOURNAL_A REPORT_B.json JOURNAL_B [--seed 0 | --seeds 0,1,2]
       [--out FILE.json]
  JOURNAL: the run's --journal path (its .rank<r>of<w> siblings are read too)
  --seeds: pool several seeds (units: image-seeds, as the runner's intervals); a side whose seeds come from several
  runs takes comma-separated lists of equal length, e.g. A.json,A-seeds1_2.json A.jsonl,A-seeds1_2.jsonl
  e.g. the convergence check on digits:
  python experiments/lib/paired.py reports/digits/ssni/diffpure-strong.json runs/digits-ssni/diffpure-strong.jsonl \
      reports/digits/ssni/diffpure-x2-seeds0.json runs/digits-ssni/diffpure-x2-seeds0.jsonl
"""
import argparse
import json
import sys

from advpure.data.base import subset_indices
from advpure.eval.journal import sibling_records
from advpure.eval.metrics import interval95, paired_difference

TEST_SIZE = {"digits": 450, "cifar10": 10000}  # the test splits the study scripts evaluate on


def per_image(report: str, journal: str, seed: int) -> tuple[dict, dict[int, dict]]:
    """(the report's dataset entry, dataset index -> {"clean", "robust": share of draws correct, "broken_by"}) from the
    finished tasks of ``seed`` in the run that wrote ``report``."""
    try:
        rep = json.load(open(report))
    except OSError as e:
        sys.exit(f"paired.py: {e}")
    ds = rep["dataset"]
    if ds["name"] not in TEST_SIZE or ds.get("split", "test") != "test":
        sys.exit(f"paired.py: {report}: dataset {ds['name']!r} split {ds.get('split')!r} is not one of the test "
                 f"splits {sorted(TEST_SIZE)}")
    if seed not in rep["seeds"]:
        sys.exit(f"paired.py: {report} has seeds {rep['seeds']}, not {seed}")
    idx = subset_indices(TEST_SIZE[ds["name"]], ds["n"], ds["subset_seed"]).tolist()  # the runner's data.subset
    out = {}
    for r in sibling_records(journal, None, rep["journal_key"]):
        if r.get("type") != "batch" or r["seed"] != seed:
            continue
        for j, pos in enumerate(r["indices"]):
            out[idx[pos]] = {k: sum(d[j] for d in r[k]) / len(r[k]) for k in ("clean", "robust")}
            out[idx[pos]]["broken_by"] = r["broken_by"][j]
    if len(out) != ds["n"]:
        sys.exit(f"paired.py: {journal}: the journal holds {len(out)} of {ds['n']} images of seed {seed} for "
                 f"{report} (journal key {rep['journal_key']})")
    return ds, out


def side(reports: str, journals: str, seeds: list[int]) -> tuple[dict, dict[tuple[int, int], dict]]:
    """(dataset entry, (dataset index, seed) -> per-image record) over ``seeds``, each seed from the one report of the
    comma-separated list that has it."""
    rs, js = reports.split(","), journals.split(",")
    if len(rs) != len(js):
        sys.exit(f"paired.py: {len(rs)} reports but {len(js)} journals: give one journal per report")
    try:
        seeds_of = {r: json.load(open(r))["seeds"] for r in rs}
    except OSError as e:
        sys.exit(f"paired.py: {e}")
    ds, out = None, {}
    for seed in seeds:
        have = [(r, j) for r, j in zip(rs, js) if seed in seeds_of[r]]
        if len(have) != 1:
            sys.exit(f"paired.py: seed {seed} is in {len(have)} of the reports {rs} (expected exactly one)")
        d, recs = per_image(*have[0], seed)
        if ds is not None and (d["n"], d["subset_seed"]) != (ds["n"], ds["subset_seed"]):
            sys.exit(f"paired.py: {have[0][0]} has other images than {rs[0]}")
        ds = d
        out.update({(i, seed): v for i, v in recs.items()})
    return ds, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("report_a"), p.add_argument("journal_a"), p.add_argument("report_b"), p.add_argument("journal_b")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", default=None, help="comma-separated seeds to pool (overrides --seed)")
    p.add_argument("--out", default=None)
    a = p.parse_args()
    seeds = [int(v) for v in a.seeds.split(",")] if a.seeds else [a.seed]
    (da, A), (db, B) = side(a.report_a, a.journal_a, seeds), side(a.report_b, a.journal_b, seeds)
    if (da["name"], da["subset_seed"]) != (db["name"], db["subset_seed"]):
        sys.exit(f"paired.py: the runs use different datasets or subset seeds: {da['name']} (subset seed "
                 f"{da['subset_seed']}) and {db['name']} (subset seed {db['subset_seed']})")
    shared = sorted(set(A) & set(B))
    name_a, name_b = f"A: {a.report_a} (n={da['n']})", f"B: {a.report_b} (n={db['n']})"
    res = {"seed": seeds[0] if len(seeds) == 1 else seeds, "shared_images": len(shared), "rows": {}, "paired": {}}
    for name, R in ((name_a, A), (name_b, B)):
        res["rows"][name] = {k: interval95([R[i][k] for i in shared]) for k in ("clean", "robust")}
        res["rows"][name]["survived_all_attacks"] = sum(R[i]["broken_by"] is None for i in shared)
    for k in ("clean", "robust"):
        res["paired"][f"{k}: B - A"] = paired_difference([A[i][k] for i in shared], [B[i][k] for i in shared])
    print(json.dumps(res, indent=1))
    if a.out:
        json.dump(res, open(a.out, "w"), indent=1)


if __name__ == "__main__":
    main()
