import json, sys, time, torch
from advpure.data import load_dataset
from advpure.models import load_classifier
from advpure.eval.certify import certify, certified_accuracy
torch.set_num_threads(1)
sh = "../shared"
N = int(sys.argv[1])
ds = load_dataset("cifar10", "test", data_dir=f"{sh}/data/cifar10-jpeg.tar.gz").subset(N, seed=0)
x, y = ds.tensors()
m = load_classifier(f"resnet56:{sh}/models/resnet56-4bfd9763.th").eval()
g = torch.Generator().manual_seed(0)
t = time.time()
res = certify(m, x, sigma=0.25, n0=100, n=1000, alpha=0.001, batch_size=250, generator=g)
out = {"n_images": N, "sigma": 0.25, "n0": 100, "n": 1000, "alpha": 0.001, "seconds": time.time() - t,
       "certified_accuracy": certified_accuracy(res, y), "abstain": int((res.prediction < 0).sum()),
       "mean_radius_correct": float(res.radius[res.prediction == y].mean()) if (res.prediction == y).any() else 0.0,
       "predictions": res.prediction.tolist(), "labels": y.tolist(), "radius": [round(r, 4) for r in res.radius.tolist()]}
print(json.dumps(out))
