"""Measurement: shared ResNet-20 on a seeded 500-image CIFAR-10 JPEG test subset."""
import json, sys, time, torch, torchattacks
from advpure.data import load_dataset
from advpure.models import load_classifier
from advpure.attacks import PGD, APGD
STEPS = int(sys.argv[1]) if len(sys.argv) > 1 else 20
torch.set_num_threads(1)
sh = "../shared"
m = load_classifier(f"resnet20:{sh}/models/resnet20-12fca82f.th"); m.validate_inputs = False
d = load_dataset("cifar10", "test", data_dir=f"{sh}/data/cifar10-jpeg.tar.gz").subset(500, 0)
x, y = d.tensors()
def acc(xa):
    with torch.no_grad():
        return float(torch.cat([(m(xa[i:i+250]).argmax(1) == y[i:i+250]) for i in range(0, 500, 250)]).float().mean())
res = {"clean": acc(x), "steps": STEPS}
print(res, flush=True)
def run(name, fn):
    torch.manual_seed(0); t = time.time(); xa = fn(); res[name] = {"robust": acc(xa), "seconds": round(time.time() - t, 1),
        "max_linf": float((xa - x).abs().flatten(1).max()), "max_l2": float((xa - x).flatten(1).norm(dim=1).max())}
    print(name, res[name], flush=True)
a = 2 / 255
run("ours_pgd_linf", lambda: PGD(eps=8/255, steps=STEPS, step_size=a)(m, x, y))
run("ta_pgd_linf", lambda: torchattacks.PGD(m, eps=8/255, alpha=a, steps=STEPS)(x, y))
run("ours_apgd_ce_linf", lambda: APGD(eps=8/255, steps=STEPS)(m, x, y))
run("ta_apgd_ce_linf", lambda: torchattacks.APGD(m, eps=8/255, steps=STEPS)(x, y))
al2 = 2.5 * 0.5 / STEPS
run("ours_pgd_l2", lambda: PGD(norm="l2", eps=0.5, steps=STEPS, step_size=al2)(m, x, y))
run("ta_pgd_l2", lambda: torchattacks.PGDL2(m, eps=0.5, alpha=al2, steps=STEPS)(x, y))
run("ours_apgd_ce_l2", lambda: APGD(norm="l2", eps=0.5, steps=STEPS)(m, x, y))
json.dump(res, open(f"reports/cifar10/attacks-resnet20-{STEPS}.json", "w"), indent=1)
