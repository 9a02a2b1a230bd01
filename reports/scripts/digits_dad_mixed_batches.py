"""DAD on digits: MMD-OPT power/type-I, denoiser, DAD clean/robust accuracy, mixed-batch table."""
import json, sys, time, torch
torch.set_num_threads(1)
from advpure.models import load_classifier
from advpure.data import load_dataset
from advpure.detect import build_deep_kernel
from advpure.attacks.pgd import make_adversarial
from advpure.detect.mmd_opt import train_kernel, test_power, type1_error
from advpure.defenses.dad import DAD, ResidualUNet, add_noise
from advpure.train.denoiser import train_denoiser
from advpure.experiments.dad_attacks import mixed_batch_table
EPS = 0.2; M = 50
clf = load_classifier("zoo/digits-small-cnn.safetensors")
for p in clf.parameters(): p.requires_grad_(False)
train = load_dataset("digits", "train"); test = load_dataset("digits", "test")
xt, yt = test.tensors()
out = {}
seeds = [int(s) for s in sys.argv[1:]] or [0, 1, 2]
for seed in seeds:
    t0 = time.time(); r = {}
    idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    xc, _ = train.batch(idx[:500]); xs, ys = train.batch(idx[500:1000])
    xadv_tr = make_adversarial(clf, xs, ys, eps=EPS, steps=10, seed=seed)
    torch.manual_seed(seed)
    k = build_deep_kernel(input_shape=train.shape, featurizer="semantic", classifier=clf)
    h = train_kernel(k, xc, xadv_tr, epochs=200, lr=2e-4, seed=seed)
    r["J"] = [h.objective[0], h.objective[-1]]
    xa_t = make_adversarial(clf, xt, yt, eps=EPS, steps=10, seed=seed + 100)
    with torch.no_grad():
        r["clf_clean_acc"] = float((clf(xt).argmax(1) == yt).float().mean())
        r["clf_pgd_acc"] = float((clf(xa_t).argmax(1) == yt).float().mean())
    perm = torch.randperm(450, generator=torch.Generator().manual_seed(seed + 7))
    r["power_m50"] = test_power(k, xt[perm[:225]], xa_t[perm[225:]], m=M, n_tests=100, seed=seed)
    r["type1_m50"] = type1_error(k, xt, m=M, n_tests=200, seed=seed)
    # denoiser: clean = idx[:500], adversarial = the other 847 train images (incl. the kernel's 500)
    xs2, ys2 = train.batch(idx[500:])
    xadv2 = torch.cat([xadv_tr, make_adversarial(clf, xs2[500:], ys2[500:], eps=EPS, steps=10, seed=seed + 1)])
    den = ResidualUNet(in_channels=1, width=32, depth=2)
    hd = train_denoiser(den, k, clf, xc, xadv2, ys2, epochs=60, lr=1e-3, batch_size=100, alpha=0.01, seed=seed)
    r["den_train_acc_last"] = hd.accuracy[-1]
    # reference set: 200 held-out train images (idx[1000:1200]); calibration: idx[1200:]
    ref, _ = train.batch(idx[1000:1200]); cal, _ = train.batch(idx[1200:])
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        r["denoised_clean_acc"] = float((clf(den(add_noise(xt, std=0.25, generator=gen))).argmax(1) == yt).float().mean())
        r["denoised_pgd_acc"] = float((clf(den(add_noise(xa_t, std=0.25, generator=gen))).argmax(1) == yt).float().mean())
    dad_b = DAD(den, k, ref, mode="batch", test="permutation", alpha=0.05, n_resamples=100)
    dad_s = DAD(den, k, ref, mode="sample"); r["sample_threshold"] = dad_s.calibrate_sample(cal, fpr=0.05)
    # mixed batches of 50 from the test set at adversarial fraction f
    table = mixed_batch_table(clf, dad_b, dad_s, xt, yt, xa_t, perm, generator=torch.Generator().manual_seed(seed + 11))
    r["mixed"] = table
    r["seconds"] = time.time() - t0
    out[seed] = r
    print(json.dumps({seed: r}), flush=True)
json.dump(out, open(f"reports/digits/dad-mixed-batches-{'_'.join(map(str,seeds))}.json", "w"), indent=1)
