import json, time, torch
from advpure.data import load_dataset
from advpure.models import load_classifier
from advpure.eval.corruptions import corruption_accuracy
torch.set_num_threads(1)
sh = "../shared"
ds = load_dataset("cifar10", "test", data_dir=f"{sh}/data/cifar10-jpeg.tar.gz").subset(200, seed=0)
x, y = ds.tensors()
m = load_classifier(f"resnet56:{sh}/models/resnet56-4bfd9763.th").eval()
t = time.time()
r = corruption_accuracy(m, x, y, names=("gaussian_noise", "glass_blur", "impulse_noise", "jpeg_compression", "shot_noise"),
                        severities=(5,), seed=0, batch_size=100)
r["seconds"] = time.time() - t
print(json.dumps(r, indent=1))
