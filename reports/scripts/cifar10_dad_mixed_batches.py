"""DAD on CIFAR-10 (JPEG), shared ResNet-56: type-I / power of the batch test and the mixed-batch table.

Reference: 200 test images excluded from evaluation (``split_reference(..., "test")``); per-sample threshold
calibrated on 300 further held-out test images at 5% FPR; 9 disjoint batches of 50 from the rest.
Adversarial inputs: PGD-20 l_inf 8/255 on the classifier alone (as in the digits table).
usage: OMP_NUM_THREADS=1 python reports/scripts/cifar10_dad_mixed_batches.py [SEED ...]
"""
import json, sys, time, torch
torch.set_num_threads(1)
from advpure.models import load_classifier
from advpure.defenses.dad import DAD, load_denoiser
from advpure.detect.kernels import load_kernel
from advpure.attacks.pgd import make_adversarial
from advpure.detect.mmd_opt import test_power, type1_error
from advpure.experiments.dad_attacks import mixed_batch_table, split_reference

D = "../shared/data/cifar10-jpeg.tar.gz"
clf = load_classifier("resnet56:../shared/models/resnet56-4bfd9763.th")
for p in clf.parameters(): p.requires_grad_(False)
ref, pool = split_reference("cifar10", reference_split="test", n_reference=200, data_dir=D)
k = load_kernel("reports/cifar10/mmd-opt-kernel-resnet56.safetensors", classifier=clf, input_shape=(3, 32, 32))
den = load_denoiser("reports/cifar10/dad/dad-denoiser-resnet56.safetensors", input_shape=(3, 32, 32))
out = {}
for seed in [int(s) for s in sys.argv[1:]] or [0]:
    t0 = time.time(); r = {}
    xs, ys = pool.subset(750, seed).tensors()
    cal, (xt, yt) = xs[450:], (xs[:450], ys[:450])
    xa = make_adversarial(clf, xt, yt, eps=8 / 255, steps=20, seed=seed + 100)
    with torch.no_grad():
        r["clf_clean_acc"] = float((clf(xt).argmax(1) == yt).float().mean())
        r["clf_pgd_acc"] = float((clf(xa).argmax(1) == yt).float().mean())
    perm = torch.randperm(450, generator=torch.Generator().manual_seed(seed + 7))
    r["power_m50"] = test_power(k, xt[perm[:225]], xa[perm[225:]], m=50, n_tests=100, seed=seed)
    r["type1_m50_test_vs_test"] = type1_error(k, xt, m=50, n_tests=100, seed=seed)
    dad_b = DAD(den, k, ref, mode="batch", test="permutation", alpha=0.05, n_resamples=100)
    dad_s = DAD(den, k, ref, mode="sample"); r["sample_threshold"] = dad_s.calibrate_sample(cal, fpr=0.05)
    table = mixed_batch_table(clf, dad_b, dad_s, xt, yt, xa, perm, generator=torch.Generator().manual_seed(seed + 11))
    r["mixed"] = table
    r["seconds"] = time.time() - t0
    out[seed] = r
    print(json.dumps({seed: r}), flush=True)
json.dump(out, open("reports/cifar10/dad/mixed-batches-test-reference.json", "w"), indent=1)
