"""The deviated-reconstruction attack (after DiffAttack, Kang, Song & Li 2023) on GNSP's stage outputs: its objective
against the formula written out here from DDPM's betas, the stage outputs against GNSP's own output, and the attack
contract (threat model, the defense it needs, the objective it raises)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from advpure.attacks.base import random_start
from advpure.attacks.diffattack import DeviatedReconstruction, deviation_objective
from advpure.defenses.base import DefendedClassifier, Purifier
from advpure.defenses.diffpure import DiffPure
from advpure.defenses.gnsp import GNSP
from advpure.defenses.ssni import SSNI
from advpure.diffusion.models import GaussianScoreModel
from advpure.diffusion.schedule import VPSchedule


def _parts():
    model = GaussianScoreModel(torch.full((1, 8, 8), 0.2), torch.full((1, 8, 8), 0.05), VPSchedule())
    torch.manual_seed(0)
    clf = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    return model, clf


def test_stage_outputs_end_in_the_purified_image():
    model, _ = _parts()
    gnsp = GNSP(model, stages=[30, 50, 125], steps=3, freeze=False)
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    stages = gnsp.purify_stages(x, generator=torch.Generator().manual_seed(7))
    out = gnsp.purify(x, generator=torch.Generator().manual_seed(7))
    assert len(stages) == 3 and all(z.shape == x.shape for z in stages)
    torch.testing.assert_close(((stages[-1] + 1) / 2).clamp(0, 1), out)


def test_objective_is_ce_plus_the_mean_stage_deviation_from_the_clean_image():
    """l_dev = (1/K) sum_k mean_pixels (z_k - (2x - 1))^2, z_k the k-th stage's output; with DDIM and one step per stage
    z_k = clip((x_t - std eps(x_t)) / alpha), x_t = alpha z_{k-1} + std noise, alpha(n/1000)^2 = prod_{i<=n}(1 - beta_i),
    betas linear 1e-4..0.02 (Ho et al. 2020), written out here."""
    model, clf = _parts()
    gnsp = GNSP(model, stages=[30, 125], freeze=False).with_sampler("ddim", 1)
    g = torch.Generator().manual_seed(3)
    x = torch.rand(3, 1, 8, 8, generator=g)
    x_adv = (x + 0.1 * torch.rand(x.shape, generator=g)).clamp(0, 1)
    y = torch.tensor([1, 4, 7])
    obj, ce, dev = deviation_objective(gnsp, clf, x_adv, x, y, dev_weight=0.5, generator=torch.Generator().manual_seed(9))

    abar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)
    gr = torch.Generator().manual_seed(9)
    z, devs = 2 * x_adv - 1, []
    for n in (30, 125):
        a, s = float(abar[n - 1].sqrt()), float((1 - abar[n - 1]).sqrt())
        xt = a * z + s * torch.randn(x.shape, generator=gr)
        z = ((xt - s * model(xt, torch.full((3,), n / 1000))) / a).clamp(-1, 1)
        devs.append(((z - (2 * x - 1)) ** 2).mean(dim=(1, 2, 3)))
    want_dev = (devs[0] + devs[1]) / 2
    want_ce = F.cross_entropy(clf(((z + 1) / 2).clamp(0, 1)), y, reduction="none")
    torch.testing.assert_close(dev, want_dev, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ce, want_ce, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(obj, want_ce + 0.5 * want_dev, rtol=1e-5, atol=1e-6)


def test_attack_stays_in_the_threat_model_and_raises_its_objective():
    model, clf = _parts()
    gnsp = GNSP(model, stages=[30, 125], steps=2, freeze=False)
    defended = DefendedClassifier(clf, gnsp).eval()
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    y = torch.arange(6) % 10
    attack = DeviatedReconstruction(eps=0.1, steps=8, eot=4, seed=0)
    x_adv = attack(defended, x, y)
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert len(attack.last_curve) == 8

    def mean_obj(z: torch.Tensor) -> float:  # the objective averaged over 64 fresh draws, CE + l_dev
        with torch.no_grad():
            o = [deviation_objective(gnsp, clf, z, x, y, dev_weight=1.0, generator=torch.Generator().manual_seed(100 + i))[0]
                 for i in range(64)]
        return float(torch.stack(o).mean())

    x_rand = random_start(x, norm="linf", eps=0.1, generator=torch.Generator().manual_seed(0))  # the same budget, no gradient
    assert mean_obj(x_adv) > max(mean_obj(x), mean_obj(x_rand)) + 0.05  # 2.61 against 2.53 and 2.49 when written
    assert attack.last_stats.forwards_per_image >= 8 * 4  # the stage path is counted


def test_needs_a_defense_that_exposes_its_reverse_process():
    model, clf = _parts()
    x = torch.rand(2, 1, 8, 8)

    class Blur(Purifier):
        def purify(self, x, *, generator=None):
            return x

    with pytest.raises(TypeError, match="purify_path"):
        DeviatedReconstruction(eps=0.1, steps=1)(DefendedClassifier(clf, Blur()), x, torch.tensor([0, 1]))


def _vp(t: float) -> tuple[float, float, float]:
    """alpha(t), std(t), beta(t) of the VP SDE with beta in [0.1, 20] (Song et al. 2021, Eq. 33), written out."""
    a = math.exp(-0.25 * t * t * (20 - 0.1) - 0.5 * t * 0.1)
    return a, math.sqrt(1 - a * a), 0.1 + t * (20 - 0.1)


def _euler_maruyama(model, x, t_star, n, gen):
    """DiffPure's purification written from its equations: x_t* = alpha x + std n, then n Euler-Maruyama steps of the
    reverse VP SDE, x <- x + h (beta x / 2 + beta score) + sqrt(beta h) z, score = -eps / std, h = t* / n; returns the
    state after every step with its time."""
    a, s, _ = _vp(t_star)
    z = a * (2 * x - 1) + s * torch.randn(x.shape, generator=gen)
    states, h = [], t_star / n
    for k in range(n):
        t = t_star * (1 - k / n)
        _, std, beta = _vp(t)
        eps = model(z, torch.full((x.shape[0],), t))
        z = z + h * (0.5 * beta * z - beta * eps / std) + math.sqrt(beta * h) * torch.randn(x.shape, generator=gen)
        states.append((t_star * (1 - (k + 1) / n), z))
    return states


def test_diffpure_path_is_the_reverse_sde_written_out_and_ends_in_the_purified_image():
    model, _ = _parts()
    dp = DiffPure(model, t=0.1, n_steps=7, freeze=False)
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    path = dp.purify_path(x, generator=torch.Generator().manual_seed(5), every=3)
    want = _euler_maruyama(model, x, 0.1, 7, torch.Generator().manual_seed(5))
    assert [k for k, _ in enumerate(want, 1) if k % 3 == 0 or k == 7] == [3, 6, 7] and len(path) == 3
    for (t, z), (tw, zw) in zip(path, [want[2], want[5], want[6]]):
        assert float(torch.as_tensor(t).flatten()[0]) == pytest.approx(tw, abs=1e-7)
        torch.testing.assert_close(z, zw, rtol=1e-4, atol=1e-5)
    out = dp.purify(x, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(((path[-1][1] + 1) / 2).clamp(0, 1), out, rtol=1e-5, atol=1e-6)
    assert len(dp.purify_path(x, every=0)) == 1 and len(dp.purify_path(x, every=7)) == 1


def test_objective_on_diffpure_averages_the_deviation_from_the_clean_diffusion_mean_over_the_path():
    """l_dev = (1/P) sum_k mean_pixels (z_k - alpha(t_k) (2x - 1))^2 over the states after steps 2, 4 and 5 of a 5-step
    reverse SDE (written out above); alpha(0) = 1 at the final state."""
    model, clf = _parts()
    dp = DiffPure(model, t=0.1, n_steps=5, freeze=False)
    g = torch.Generator().manual_seed(8)
    x = torch.rand(4, 1, 8, 8, generator=g)
    x_adv = (x + 0.1 * torch.rand(x.shape, generator=g)).clamp(0, 1)
    y = torch.tensor([0, 2, 5, 9])
    obj, ce, dev = deviation_objective(dp, clf, x_adv, x, y, dev_weight=2.0, every=2,
                                       generator=torch.Generator().manual_seed(4))
    states = _euler_maruyama(model, x_adv, 0.1, 5, torch.Generator().manual_seed(4))
    devs = [((z - _vp(t)[0] * (2 * x - 1)) ** 2).mean(dim=(1, 2, 3)) for t, z in (states[1], states[3], states[4])]
    want_dev = sum(devs) / 3
    want_ce = F.cross_entropy(clf(((states[4][1] + 1) / 2).clamp(0, 1)), y, reduction="none")
    torch.testing.assert_close(dev, want_dev, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(ce, want_ce, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(obj, want_ce + 2.0 * want_dev, rtol=1e-4, atol=1e-6)


def test_gnsp_path_holds_the_states_inside_each_stage_and_its_stage_outputs():
    model, _ = _parts()
    for sampler in ("ddpm", "sde", "ddim"):
        gnsp = GNSP(model, stages=[30, 125], steps=5, sampler=sampler, freeze=False)
        x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(3))
        path = gnsp.purify_path(x, generator=torch.Generator().manual_seed(6), every=2)
        times = [float(torch.as_tensor(t).flatten()[0]) for t, _ in path]
        # steps 2, 4 and the end (5) of each stage's 5-step chain from t = 30/1000 and 125/1000
        assert times == pytest.approx([0.03 * 3 / 5, 0.03 * 1 / 5, 0.0, 0.125 * 3 / 5, 0.125 * 1 / 5, 0.0])
        stages = gnsp.purify_stages(x, generator=torch.Generator().manual_seed(6))
        torch.testing.assert_close(path[2][1], stages[0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(path[5][1], stages[1], rtol=1e-5, atol=1e-6)


def test_ssni_path_runs_at_its_per_sample_levels():
    from advpure.detect.eps import EPSReference

    model, _ = _parts()
    ref = EPSReference.from_norms(torch.linspace(5, 9, 32), t_levels=[k / 1000 for k in range(1, 21)],
                                  checkpoint_sha256=None)
    ssni = SSNI(DiffPure(model, t=0.1, n_steps=6, freeze=False), reference=ref, mode="N")
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    path = ssni.purify_path(x, generator=torch.Generator().manual_seed(2), every=3)
    t_first = path[0][0]
    assert isinstance(t_first, torch.Tensor) and t_first.shape == (3,)
    torch.testing.assert_close(t_first, ssni.last_t * 0.5)
    out = ssni.purify(x, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(((path[-1][1] + 1) / 2).clamp(0, 1), out, rtol=1e-5, atol=1e-6)


def test_attack_on_diffpure_with_intermediate_points_raises_its_objective():
    model, clf = _parts()
    dp = DiffPure(model, t=0.1, n_steps=6, freeze=False)
    defended = DefendedClassifier(clf, dp).eval()
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    y = torch.arange(6) % 10
    attack = DeviatedReconstruction(eps=0.1, steps=8, eot=4, every=2, seed=0)
    x_adv = attack(defended, x, y)
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1

    def mean_obj(z: torch.Tensor) -> float:
        with torch.no_grad():
            o = [deviation_objective(dp, clf, z, x, y, dev_weight=1.0, every=2,
                                     generator=torch.Generator().manual_seed(100 + i))[0] for i in range(64)]
        return float(torch.stack(o).mean())

    x_rand = random_start(x, norm="linf", eps=0.1, generator=torch.Generator().manual_seed(0))
    assert mean_obj(x_adv) > max(mean_obj(x), mean_obj(x_rand)) + 0.05


def test_lambda_balances_the_two_gradients_at_the_first_iterate_or_is_given():
    """balance: lambda_i = dev_weight * ||grad CE_i|| / ||grad l_dev_i|| at the first iterate (recomputed here at the
    random start with the defense's random stream where the attack finds it: after the clean validation pass);
    balance=False: as given."""
    model, clf = _parts()
    gnsp = GNSP(model, stages=[30, 125], freeze=False).with_sampler("ddim", 2)
    defended = DefendedClassifier(clf, gnsp).eval()
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(6))
    y = torch.tensor([3, 1, 4, 1])
    attack = DeviatedReconstruction(eps=0.1, steps=2, dev_weight=0.5, eot=1, seed=3)
    defended.reseed(11)
    attack(defended, x, y)
    defended.reseed(11)
    with torch.no_grad():
        defended(x)  # the attack's validation pass
    x0 = random_start(x, norm="linf", eps=0.1, generator=torch.Generator().manual_seed(3)).requires_grad_(True)
    _, ce, dev = deviation_objective(gnsp, clf, x0, x, y, dev_weight=0.0, generator=defended.generator)
    g_ce, = torch.autograd.grad(ce.sum(), x0, retain_graph=True)
    g_dev, = torch.autograd.grad(dev.sum(), x0)
    want = 0.5 * g_ce.flatten(1).norm(dim=1) / g_dev.flatten(1).norm(dim=1)
    torch.testing.assert_close(attack.last_lambda, want, rtol=1e-4, atol=1e-8)
    fixed = DeviatedReconstruction(eps=0.1, steps=1, dev_weight=0.5, balance=False, seed=3)
    fixed(defended, x, y)
    assert fixed.last_lambda.tolist() == [0.5] * 4
