"""Which surrogate attack is strongest on digits DiffPure (t* = 0.1, 20 steps; seed 0, 32 test images, 20 fresh
evaluation draws, selection on 16 separate draws): each candidate alone, through the same runner and protocol as
``advpure eval --attack standard``. usage: study.py NAME [DEFENSE_SPEC]; writes
reports/digits/attack-strength/NAME-DEFENSE.json (per-image records in runs/digits-attack-strength/NAME-DEFENSE.jsonl, for
experiments/lib/paired.py). NAME: SURROGATE-LOSS-STEPSxEOT, e.g. one-ce-100x16
(the one-step denoising surrogate, CE loss, 100 steps, EOT 16) or ddim2-ce-100x16 (DDIM with 2 steps); for a
purifier with a fixed sampler (GDMP, GNSP) stepsN-ce-... is the same process with N reverse steps per round or
stage, e.g. study.py steps2-ce-50x8 gnsp:steps=5,checkpoint=true; full gradients through the whole purifier:
fullpgd-ce-STEPSxEOT (PGD-EOT on CE, the control), diffattack-every3-STEPSxEOT (CE plus DiffAttack's
deviated-reconstruction loss at the reverse chain's state after every 3rd step and at the end, Kang et al. 2023),
diffattack-end-STEPSxEOT (the loss at the output only); see C below."""
import json
import os
import sys
import time

import torch

from advpure.attacks.diffattack import DeviatedReconstruction
from advpure.attacks.ensemble import Ensemble
from advpure.attacks.surrogate import SurrogateProcess
from advpure.defenses import DefendedClassifier
from advpure.eval.runner import run_eval
from advpure.models import load_classifier
from advpure.specs import SpecContext, build

which = sys.argv[1]
defspec = sys.argv[2] if len(sys.argv) > 2 else "diffpure:t=0.1,steps=20,checkpoint=true"
clf = load_classifier("zoo/digits-small-cnn.safetensors").eval()
ctx = SpecContext(classifier=clf, dataset="digits", image_shape=(1, 8, 8), device=torch.device("cpu"))
defense = build("defense", defspec, ctx)
eps = 0.2
def through(purifier, steps, eot, loss="ce"):  # PGD-EOT on the classifier behind a surrogate purifier
    m = DefendedClassifier(clf, purifier).eval()
    return SurrogateProcess(surrogate=m, norm="linf", eps=eps, steps=steps, step_size=2.5 * eps / steps, eot=eot, loss=loss)
def sur(sampler, n, steps, eot, loss="ce"):  # the defense with another reverse process
    return through(defense.with_sampler(sampler, n), steps, eot, loss)
def sur_steps(n, steps, eot, loss="ce"):  # purifiers with a fixed sampler (GDMP, GNSP): the same process, n steps
    return through(defense.with_steps(n), steps, eot, loss)
def dev(every, steps, eot, weight=1.0):  # full gradients through the defense, CE + weight * l_dev (balanced per image)
    return DeviatedReconstruction(norm="linf", eps=eps, steps=steps, step_size=2.5 * eps / steps, eot=eot, every=every,
                                  dev_weight=weight)
C = {
 "one-ce-50x8": lambda: [("a", sur("ddim", 1, 50, 8))],
 "one-ce-200x32": lambda: [("a", sur("ddim", 1, 200, 32))],
 "one-cw-200x32": lambda: [("a", sur("ddim", 1, 200, 32, "cw"))],
 "one-dlr-200x32": lambda: [("a", sur("ddim", 1, 200, 32, "dlr"))],
 "ddim5-ce-100x16": lambda: [("a", sur("ddim", 5, 100, 16))],
 "ddim2-ce-100x16": lambda: [("a", sur("ddim", 2, 100, 16))],
 "one+ddim2-100x16": lambda: [("one", sur("ddim", 1, 100, 16)), ("ddim2", sur("ddim", 2, 100, 16)), ("ddim3", sur("ddim", 3, 100, 16))],
 "ddim3-ce-100x16": lambda: [("a", sur("ddim", 3, 100, 16))],
 "one-ce-100x16": lambda: [("a", sur("ddim", 1, 100, 16))],
 "one-dlr-100x16": lambda: [("a", sur("ddim", 1, 100, 16, "dlr"))],
 "one-cw-100x16": lambda: [("a", sur("ddim", 1, 100, 16, "cw"))],
 "steps1-ce-50x8": lambda: [("a", sur_steps(1, 50, 8))],
 "steps2-ce-50x8": lambda: [("a", sur_steps(2, 50, 8))],
 "fullpgd-ce-20x4": lambda: [("a", dev(0, 20, 4, weight=0.0))],
 "diffattack-end-20x4": lambda: [("a", dev(0, 20, 4))],
 "diffattack-every3-20x4": lambda: [("a", dev(3, 20, 4))],
 "fullpgd-ce-100x20": lambda: [("a", dev(0, 100, 20, weight=0.0))],
 "diffattack-every3-100x20": lambda: [("a", dev(3, 100, 20))],
 "diffattack-every3-w0.1-20x4": lambda: [("a", dev(3, 20, 4, weight=0.1))],
}
atts = C[which]()
ens = Ensemble(atts, select_draws=16)
t0 = time.time()
tag = f"{which}-{defspec.split(':')[0]}"
os.makedirs("runs/digits-attack-strength", exist_ok=True)
r = run_eval(dataset="digits", classifier=clf, defense=defense, attack=ens, n=32, batch_size=32, seeds=[0],
             sanity=False, progress=False, journal=f"runs/digits-attack-strength/{tag}.jsonl")
s = r["summary"] if "summary" in r else r
out = {"which": which, "defense": defspec, "seconds": time.time() - t0,
       "robust": {k: v for k, v in r.items() if "robust" in k}}
print(json.dumps(out)[:2000])
json.dump(r, open(f"reports/digits/attack-strength/{tag}.json", "w"), indent=1, default=str)
