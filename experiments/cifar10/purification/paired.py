"""Two rows of this study on the images they share (the subset of N images with seed S is the first N of one
seeded permutation, so a smaller row's images are inside a larger row's): per-image clean and robust accuracy
(share of the 20 evaluation draws) read from the records of each report's journal key, each row's means with 95%
intervals on the shared images, and the paired difference B - A with its 95% interval.

usage: python experiments/cifar10/purification/paired.py ROW_A N_A ROW_B N_B [--seed 0] [--out FILE.json]
  e.g. paired.py diffpure 64 ssni-n 32   (reports/cifar10/purification/<row>-n<N>-seeds<S>.json and its journal
  runs/cifar10-purification/<row>-n<N>-seeds<S>.jsonl[.rank*of*])
"""
import argparse
import json
import sys

from advpure.data.base import subset_indices
from advpure.eval.journal import sibling_records
from advpure.eval.metrics import interval95, paired_difference

CIFAR10_TEST = 10000


def per_image(row: str, n: int, seed: int) -> dict[int, dict[str, float]]:
    """dataset index -> {"clean": share of draws correct, "robust": ..., "broken_by": attack or None}, from the
    finished tasks of the run that wrote reports/cifar10/purification/<row>-n<N>-seeds<S>.json (its journal key)."""
    name = f"{row}-n{n}-seeds{seed}"
    try:
        key = json.load(open(f"reports/cifar10/purification/{name}.json"))["journal_key"]
    except OSError as e:
        sys.exit(f"paired.py: {e}")
    idx = subset_indices(CIFAR10_TEST, n, seed).tolist()
    out = {}
    for r in sibling_records(f"runs/cifar10-purification/{name}.jsonl", None, key):
        if r.get("type") != "batch" or r["seed"] != seed:
            continue
        for j, pos in enumerate(r["indices"]):
            out[idx[pos]] = {k: sum(d[j] for d in r[k]) / len(r[k]) for k in ("clean", "robust")}
            out[idx[pos]]["broken_by"] = r["broken_by"][j]
    if len(out) != n:
        sys.exit(f"paired.py: {name}: the journals hold {len(out)} of {n} images")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("row_a"), p.add_argument("n_a", type=int), p.add_argument("row_b"), p.add_argument("n_b", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    A, B = per_image(a.row_a, a.n_a, a.seed), per_image(a.row_b, a.n_b, a.seed)
    shared = sorted(set(A) & set(B))
    res = {"seed": a.seed, "shared_images": len(shared), "rows": {}, "paired": {}}
    for name, R in ((f"{a.row_a} (n={a.n_a})", A), (f"{a.row_b} (n={a.n_b})", B)):
        res["rows"][name] = {k: interval95([R[i][k] for i in shared]) for k in ("clean", "robust")}
        res["rows"][name]["survived_all_attacks"] = sum(R[i]["broken_by"] is None for i in shared)
    for k in ("clean", "robust"):
        res["paired"][f"{k}: {a.row_b} - {a.row_a}"] = paired_difference([A[i][k] for i in shared],
                                                                         [B[i][k] for i in shared])
    print(json.dumps(res, indent=1))
    if a.out:
        json.dump(res, open(a.out, "w"), indent=1)


if __name__ == "__main__":
    main()
