"""CMAP purifier, its voting classifier, the consistency-disruption attack and purifier composition."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from advpure.defenses.cmap import CMAP, CMAPClassifier
from advpure.diffusion.consistency import build_consistency_model

TINY = dict(sample_size=8, in_channels=1, out_channels=1, block_out_channels=[8, 8],
            down_block_types=["DownBlock2D", "DownBlock2D"], up_block_types=["UpBlock2D", "UpBlock2D"],
            layers_per_block=1, norm_num_groups=4)


@pytest.fixture(scope="module")
def cm():
    torch.manual_seed(0)
    return build_consistency_model(TINY).eval()


@pytest.fixture()
def x():
    return torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.8 + 0.1


class MeanClassifier(nn.Module):
    """A fixed linear classifier on pixel sums (10 classes), enough to test voting and attacks."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(64, 10)
        torch.nn.init.normal_(self.lin.weight, generator=torch.Generator().manual_seed(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x.flatten(1))


def test_objective_reaches_latents_not_weights(cm, x):
    c = CMAP(cm, k=2, iterations=8, lr=0.05)
    assert not any(p.requires_grad for p in cm.parameters())
    xr = x.clone().requires_grad_(True)
    res = c.optimise(xr, generator=torch.Generator().manual_seed(0), trace_every=8)
    res.samples.sum().backward()
    assert all(p.grad is None for p in cm.parameters())
    assert xr.grad is not None and float(xr.grad.abs().sum()) > 0
    u0 = c.init_latents(3, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(res.latents.detach(), u0)  # the latents moved
    first, last = res.trace[0], res.trace[-1]
    assert float(last["recon_loss"].mean()) < float(first["recon_loss"].mean())
    assert res.samples.shape == (3, 2, 1, 8, 8) and float(res.samples.detach().min()) >= 0 and float(res.samples.detach().max()) <= 1


def test_manual_adam_matches_torch_adam(cm, x):
    """Without an outer graph the latent update is torch.optim.Adam's (an independent implementation)."""
    c = CMAP(cm, k=2, iterations=4, lr=0.03, lam=0.2, lam_s=0.5)
    res = c.optimise(x, generator=torch.Generator().manual_seed(5))
    u = c.init_latents(3, generator=torch.Generator().manual_seed(5)).requires_grad_(True)
    opt = torch.optim.Adam([u], lr=0.03)
    for _ in range(4):
        loss, _, _ = c.objective(u, x)
        opt.zero_grad()
        loss.sum().backward()
        opt.step()
    assert torch.allclose(res.latents, u.detach(), atol=1e-5)


def test_full_gradient_matches_finite_differences_and_checkpointing(cm, x):
    cmd = build_consistency_model(TINY).double().eval()
    cmd.load_state_dict(cm.state_dict())
    c = CMAP(cmd, k=2, iterations=3)
    xd = x.double()

    def out(xx):
        return c.optimise(xx, generator=torch.Generator().manual_seed(0)).samples.sum()

    xr = xd.clone().requires_grad_(True)
    g, = torch.autograd.grad(out(xr), xr)
    c.grad_checkpoint = True
    g_ck, = torch.autograd.grad(out(xr), xr)
    c.grad_checkpoint = False
    assert torch.allclose(g, g_ck, atol=1e-10)
    e = 1e-5
    for idx in [(0, 0, 3, 3), (2, 0, 1, 6)]:
        d = torch.zeros_like(xd)
        d[idx] = e
        with torch.no_grad():
            fd = (out(xd + d) - out(xd - d)) / (2 * e)
        assert float(fd) == pytest.approx(float(g[idx]), rel=1e-4, abs=1e-8)


def test_latent_loss_formulas(cm):
    c = CMAP(cm, k=3, lam=1.0, stats="latent")
    u = torch.randn(2, 3, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a = u.reshape(2, 3, 64).numpy()
    ref = ((a.mean(2) ** 2) + (a.var(2, ddof=1) - 1) ** 2).mean(1)
    assert torch.allclose(c.latent_loss(u), torch.from_numpy(ref))
    ck = CMAP(cm, k=3, lam=1.0, stats="k")
    ref_k = (a.mean(1) ** 2).mean(1) + ((a.var(1, ddof=1) - 1) ** 2).mean(1)
    assert torch.allclose(ck.latent_loss(u), torch.from_numpy(ref_k))


def test_lambda_pulls_latents_towards_the_prior(cm, x):
    """The latent term must keep the latents' moments nearer N(0, 1) than lam = 0 does (same start)."""
    kw = dict(k=2, iterations=20, lr=0.2)
    dev0 = CMAP(cm, lam=0.0, **kw).optimise(x, generator=torch.Generator().manual_seed(0))
    dev1 = CMAP(cm, lam=5.0, **kw).optimise(x, generator=torch.Generator().manual_seed(0))
    c = CMAP(cm, lam=1.0, **kw)
    l0 = c.latent_loss(dev0.latents.view(3, 2, 1, 8, 8)).mean()
    l1 = c.latent_loss(dev1.latents.view(3, 2, 1, 8, 8)).mean()
    assert float(l1) < float(l0)


def test_bad_inputs(cm, x):
    with pytest.raises(ValueError, match="k"):
        CMAP(cm, k=0)
    with pytest.raises(ValueError, match="k >= 2"):
        CMAP(cm, k=1, stats="k")
    with pytest.raises(TypeError, match="ConsistencyModel"):
        CMAP(nn.Linear(2, 2))
    c = CMAP(cm, k=1, iterations=1)
    with pytest.raises(ValueError, match="8"):
        c.purify(torch.rand(2, 1, 16, 16))
    with pytest.raises(ValueError, match="channels|1"):
        c.purify(torch.rand(2, 3, 8, 8))
    with pytest.raises(ValueError):
        c.purify(x + 2.0)  # out of [0, 1]


def test_non_finite_model_output_is_an_error(x):
    bad = build_consistency_model(TINY)
    with torch.no_grad():
        for p in bad.net.conv_out.parameters():
            p.fill_(float("nan"))
    c = CMAP(bad, k=1, iterations=2)
    with pytest.raises(FloatingPointError, match="non-finite"):
        c.purify(x)


def test_vote_from_logits_majority_and_ties():
    logits = torch.full((2, 4, 10), -5.0)
    # input 0: votes 3, 3, 7, 3 -> 3; input 1: 1, 2, 1, 2 -> tie, broken by the larger mean softmax (2)
    for k, c in enumerate([3, 3, 7, 3]):
        logits[0, k, c] = 5.0
    for k, c in enumerate([1, 2, 1, 2]):
        logits[1, k, c] = 5.0 if c == 1 else 6.0
    out = CMAPClassifier.vote_from_logits(logits)
    assert out.argmax(1).tolist() == [3, 2]
    assert float(out[0, 3].exp()) == pytest.approx(0.75, abs=1e-3)


def test_cmap_classifier_votes_and_straight_through_gradient(cm, x):
    clf = MeanClassifier()
    c = CMAP(cm, k=3, iterations=2)
    model = CMAPClassifier(clf, c, seed=0)
    assert model.voting and model.stochastic and model.nfe == 9
    with torch.no_grad():
        out = model(x)
    model.reseed(0)
    with torch.no_grad():
        logits = model.sample_logits(x)
    assert torch.equal(out.argmax(1), CMAPClassifier.vote_from_logits(logits).argmax(1))
    model.reseed(0)
    xr = x.clone().requires_grad_(True)
    out_g = model(xr)
    assert torch.allclose(out_g.detach(), out)  # the value is the vote
    out_g[:, 0].sum().backward()
    assert xr.grad is not None and float(xr.grad.abs().sum()) > 0  # the gradient is the surrogate's


def test_consistency_disruption_attack_stays_in_threat_model(cm, x):
    from advpure.attacks.cmap_attack import ConsistencyDisruption
    from advpure.defenses import DefendedClassifier

    clf = MeanClassifier()
    model = DefendedClassifier(clf, CMAP(cm, k=2, iterations=2))
    y = torch.tensor([0, 1, 2])
    atk = ConsistencyDisruption(eps=8 / 255, steps=2, seed=0)
    xa = atk(model, x, y)
    assert xa.shape == x.shape and float((xa - x).abs().max()) <= 8 / 255 + 1e-6
    with pytest.raises(TypeError, match="CMAP"):
        atk(DefendedClassifier(clf), x, y)


def test_compose_order_nfe_and_generator(cm, x):
    from advpure.defenses.base import Purifier
    from advpure.defenses.compose import Compose

    class Shift(Purifier):
        stochastic = False

        def __init__(self, d: float, nfe: float) -> None:
            super().__init__()
            self.d, self._nfe = d, nfe

        @property
        def nfe(self) -> float:
            return self._nfe

        def purify(self, x, *, generator=None):
            return (x * 0.5 + self.d)

    comp = Compose(Shift(0.1, 2), Shift(0.2, 3))
    assert torch.allclose(comp(x), (x * 0.5 + 0.1) * 0.5 + 0.2) and comp.nfe == 5 and not comp.stochastic
    full = Compose(Shift(0.1, 2), CMAP(cm, k=1, iterations=1))
    assert full.stochastic and full.nfe == 4
    a = full(x, generator=torch.Generator().manual_seed(3))
    b = full(x, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    with pytest.raises(ValueError):
        Compose()


def test_spec_builds_cmap(cm, tmp_path):
    from advpure.checkpoint import save_weights
    from advpure.defenses import cmap as cmap_mod  # noqa: F401  (registers "cmap")
    from advpure.specs import SpecContext, build

    path = tmp_path / "cm.safetensors"
    save_weights(cm.net.state_dict(), path, {"kind": "consistency", "unet_config": TINY, "sigma_min": 0.002,
                                             "sigma_max": 80.0, "sigma_data": 0.5})
    d = build("defense", f"cmap:model={path},k=2,iterations=3,lam=0.5", SpecContext(dataset="digits"))
    assert isinstance(d, CMAP) and d.k == 2 and d.iterations == 3 and d.lam == 0.5
    with pytest.raises(ValueError, match="requested"):
        build("defense", f"cmap:model={path}", SpecContext(image_shape=(3, 32, 32)))


ZOO = __import__("pathlib").Path(__file__).resolve().parents[2] / "zoo"


@pytest.mark.skipif(not (ZOO / "digits-cm.safetensors").is_file(), reason="zoo/digits-cm.safetensors not trained yet")
def test_zoo_consistency_model_with_cmap_keeps_clean_digits(digits_data, digits_classifier):
    """Integration: the trained digits consistency model + CMAP defaults keep clean digits classifiable."""
    from advpure.defenses.cmap import load_cmap

    x, y = digits_data[1].subset(16, 3).tensors()
    model = CMAPClassifier(digits_classifier, load_cmap(ZOO / "digits-cm.safetensors"), seed=0)
    with torch.no_grad():
        acc = float((model(x).argmax(1) == y).float().mean())
    assert acc >= 0.75


@pytest.mark.skipif(not ((ZOO / "digits-cm.safetensors").is_file() and (ZOO / "digits-ddpm.safetensors").is_file()),
                    reason="zoo digits consistency / diffusion models absent")
def test_diffpure_plus_cmap_spec():
    from advpure.defenses.compose import Compose
    from advpure.defenses.diffpure import DiffPure
    from advpure.specs import SpecContext, build

    d = build("defense", "diffpure+cmap:steps=5,k=2,iterations=3", SpecContext(dataset="digits"))
    assert isinstance(d, Compose) and isinstance(d.stages[0], DiffPure) and isinstance(d.stages[1], CMAP)
    assert d.nfe == 5 + 2 * 4
    x = torch.rand(2, 1, 8, 8)
    out = d(x, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape


def test_purify_selection(cm, x):
    g = lambda: torch.Generator().manual_seed(4)  # noqa: E731
    res = CMAP(cm, k=3, iterations=2).optimise(x, generator=g())
    best = CMAP(cm, k=3, iterations=2).purify(x, generator=g())
    first = CMAP(cm, k=3, iterations=2, select="first").purify(x, generator=g())
    idx = res.recon_loss.argmin(1)
    assert torch.allclose(best, res.samples[torch.arange(3), idx]) and torch.allclose(first, res.samples[:, 0])
    with pytest.raises(ValueError, match="select"):
        CMAP(cm, select="vote")


def test_zoo_cifar10_consistency_model_loads_and_checks_image_size():
    from advpure.defenses.cmap import load_cmap

    c = load_cmap(None, dataset="cifar10", k=2, iterations=1)
    assert c.cm.image_shape == (3, 32, 32)
    out = c(torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)),
            generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 3, 32, 32) and bool(torch.isfinite(out).all()) and 0 <= float(out.min()) <= float(out.max()) <= 1
    with pytest.raises(ValueError, match="3x32x32 images"):
        load_cmap(None, dataset="cifar10", image_shape=(1, 8, 8))
    with pytest.raises(ValueError, match=r"expected 3 channel\(s\)"):
        c(torch.rand(2, 1, 32, 32))
