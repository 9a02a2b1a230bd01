"""experiments/lib/paired.py: two runs compared on the images they share, matched by dataset index through the
runner's seeded subsets (a smaller subset is a prefix of a larger one's permutation)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

from advpure.data.base import subset_indices

SCRIPT = Path(__file__).resolve().parents[2] / "experiments" / "lib" / "paired.py"


def _run(tmp: Path, name: str, n: int, per_image: dict[int, tuple[list[int], list[int], str | None]],
         positions_per_task: list[list[int]]) -> tuple[Path, Path]:
    """A report and a 2-process journal whose batch records hold, per dataset index, its clean and robust draws."""
    idx = subset_indices(450, n, 0).tolist()
    report = tmp / f"{name}.json"
    report.write_text(json.dumps({"dataset": {"name": "digits", "split": "test", "subset_seed": 0, "n": n},
                                  "seeds": [0], "journal_key": f"key-{name}"}))
    journal = tmp / f"{name}.jsonl"
    for r, positions in enumerate(positions_per_task):
        recs = [{"key": "other-run", "type": "batch", "seed": 0, "indices": [0], "clean": [[0]], "robust": [[0]],
                 "broken_by": ["x"]}]  # another run's record in the same file: ignored
        draws = len(per_image[idx[positions[0]]][0])
        recs.append({"key": f"key-{name}", "type": "batch", "seed": 0, "indices": positions,
                     "clean": [[per_image[idx[p]][0][d] for p in positions] for d in range(draws)],
                     "robust": [[per_image[idx[p]][1][d] for p in positions] for d in range(draws)],
                     "broken_by": [per_image[idx[p]][2] for p in positions]})
        Path(f"{journal}.rank{r}of{len(positions_per_task)}").write_text("".join(json.dumps(x) + "\n" for x in recs))
    return report, journal


def test_paired_matches_images_by_dataset_index(tmp_path):
    a_idx, b_idx = subset_indices(450, 4, 0).tolist(), subset_indices(450, 2, 0).tolist()
    assert set(b_idx) <= set(a_idx)
    # run A: 4 images, 4 draws each; run B: 2 images (inside A's), 4 draws each
    A = {i: ([1, 1, 1, 1], [0, 0, 0, 0], "pgd") for i in a_idx}
    A[b_idx[0]] = ([1, 1, 1, 1], [1, 1, 0, 0], "pgd")  # robust 0.5
    A[b_idx[1]] = ([1, 0, 1, 0], [0, 0, 0, 0], "bpda")  # clean 0.5, robust 0
    B = {b_idx[0]: ([1, 1, 1, 1], [1, 1, 1, 0], None),  # robust 0.75
         b_idx[1]: ([1, 1, 1, 1], [1, 1, 0, 0], "pgd")}  # robust 0.5
    ra, ja = _run(tmp_path, "a", 4, A, [[0, 1], [2, 3]])
    rb, jb = _run(tmp_path, "b", 2, B, [[1], [0]])
    out = tmp_path / "paired.json"
    subprocess.run([sys.executable, str(SCRIPT), str(ra), str(ja), str(rb), str(jb), "--out", str(out)], check=True,
                   capture_output=True)
    res = json.loads(out.read_text())
    assert res["shared_images"] == 2
    d = [0.75 - 0.5, 0.5 - 0.0]  # robust B - A per shared image
    m = sum(d) / 2
    half = 1.959964 * math.sqrt(sum((v - m) ** 2 for v in d) / 1) / math.sqrt(2)
    rob = res["paired"]["robust: B - A"]
    assert math.isclose(rob["diff"], 0.375) and math.isclose(rob["half_width"], half, rel_tol=1e-5)
    assert math.isclose(res["paired"]["clean: B - A"]["diff"], (0.0 + 0.5) / 2)
    rows = list(res["rows"].values())
    assert [r["survived_all_attacks"] for r in rows] == [0, 1]


def test_paired_refuses_incomplete_journals(tmp_path):
    a_idx = subset_indices(450, 4, 0).tolist()
    A = {i: ([1], [0], "pgd") for i in a_idx}
    ra, ja = _run(tmp_path, "a", 4, A, [[0, 1]])  # the second task never finished
    r = subprocess.run([sys.executable, str(SCRIPT), str(ra), str(ja), str(ra), str(ja)], capture_output=True, text=True)
    assert r.returncode != 0 and "holds 2 of 4 images" in r.stderr


def _seeded_run(tmp: Path, name: str, robust: dict[int, list[int]]) -> tuple[Path, Path]:
    """A 2-image run over the seeds in ``robust`` (seed -> each image's one robust draw), one task per seed."""
    report = tmp / f"{name}.json"
    report.write_text(json.dumps({"dataset": {"name": "digits", "split": "test", "subset_seed": 0, "n": 2},
                                  "seeds": sorted(robust), "journal_key": f"key-{name}"}))
    recs = [{"key": f"key-{name}", "type": "batch", "seed": s, "indices": [0, 1], "clean": [[1, 1]], "robust": [r],
             "broken_by": [None, None]} for s, r in robust.items()]
    journal = tmp / f"{name}.jsonl"
    journal.write_text("".join(json.dumps(x) + "\n" for x in recs))
    return report, journal


def test_paired_pools_seeds_from_several_runs(tmp_path):
    """--seeds 0,1: units are image-seeds; side A's seeds come from two runs (comma-separated lists)."""
    a0, ja0 = _seeded_run(tmp_path, "a0", {0: [0, 0]})
    a1, ja1 = _seeded_run(tmp_path, "a1", {1: [1, 0]})
    b, jb = _seeded_run(tmp_path, "b", {0: [1, 1], 1: [1, 0]})
    out = tmp_path / "pooled.json"
    subprocess.run([sys.executable, str(SCRIPT), f"{a0},{a1}", f"{ja0},{ja1}", str(b), str(jb), "--seeds", "0,1",
                    "--out", str(out)], check=True, capture_output=True)
    res = json.loads(out.read_text())
    assert res["shared_images"] == 4 and res["seed"] == [0, 1]
    d = [1, 1, 0, 0]  # B - A per image-seed
    m = sum(d) / 4
    half = 1.959964 * math.sqrt(sum((v - m) ** 2 for v in d) / 3) / 2
    rob = res["paired"]["robust: B - A"]
    assert math.isclose(rob["diff"], 0.5) and math.isclose(rob["half_width"], half, rel_tol=1e-5)
    r = subprocess.run([sys.executable, str(SCRIPT), f"{a0},{a1}", str(ja0), str(b), str(jb), "--seeds", "0,1"],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "one journal per report" in r.stderr
