"""Markdown table of the `advpure eval` JSON records in this folder (adversarial threat).

usage: python reports/cifar10/diffusion/summarize.py [NAME ...]   (default: every *.json with a robust accuracy)
"""
import json, sys
from pathlib import Path

here = Path(__file__).parent
names = sys.argv[1:] or sorted(p.stem for p in here.glob("*.json"))
print("| run | classifier | defense | attack | n x seeds | clean | robust (mean over draws) | robust (worst case) | s/image |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
pct = lambda d: f"{100 * d['mean']:.1f} ± {100 * d['std']:.1f}" if d else "-"
for name in names:
    p = here / f"{name}.json"
    if not p.is_file():
        continue
    r = json.loads(p.read_text())
    if "clean_accuracy" not in r:
        continue
    clf = r["classifier"].split("/")[-1]
    print(f"| {name} | {clf} | {r['defense']['spec'] or 'none'} | {r['attack']['spec'] or 'none'} | "
          f"{r['dataset']['n']} x {len(r['seeds'])} | {pct(r['clean_accuracy'])} | {pct(r.get('robust_accuracy'))} | "
          f"{pct(r.get('robust_accuracy_worst_case'))} | {r['cost']['seconds_per_image']:.2f} |")
