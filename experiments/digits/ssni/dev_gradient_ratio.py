"""The scale of the deviated-reconstruction term against CE (advpure.attacks.diffattack, why lambda is balanced per
image): per image, ||grad l_dev|| / ||grad CE|| for digits GNSP (the gnsp-strong row's defense: 8 stages, 5 steps
each), 16 test images (subset seed 0), one draw of the purifier, at the clean image and at a random corner of the 0.2
l_inf ball; prints the median and range. usage: python experiments/digits/ssni/dev_gradient_ratio.py"""
import torch

from advpure.attacks.diffattack import deviation_objective
from advpure.data import load_dataset
from advpure.defenses.gnsp import GNSP
from advpure.diffusion import load_denoiser
from advpure.models import load_classifier

torch.manual_seed(0)
clf = load_classifier("zoo/digits-small-cnn.safetensors").eval()
net, _ = load_denoiser("zoo/digits-ddpm.safetensors")
gnsp = GNSP(net, steps=5)
x, y = load_dataset("digits", "test").subset(16, seed=0).tensors()
corner = (x + 0.2 * torch.sign(torch.randn(x.shape, generator=torch.Generator().manual_seed(1)))).clamp(0, 1)
for name, start in (("clean image", x), ("random corner", corner)):
    xr = start.clone().requires_grad_(True)
    _, ce, dev = deviation_objective(gnsp, clf, xr, x, y, dev_weight=0.0, generator=torch.Generator().manual_seed(0))
    g_ce, = torch.autograd.grad(ce.sum(), xr, retain_graph=True)
    g_dev, = torch.autograd.grad(dev.sum(), xr)
    r = g_dev.flatten(1).norm(dim=1) / g_ce.flatten(1).norm(dim=1)
    print(f"{name}: ||grad l_dev|| / ||grad CE|| per image: median {r.median():.0f}, range {r.min():.2g}-{r.max():.3g}")
