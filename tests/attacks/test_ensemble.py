"""The standard attack lists per defense family, the surrogate processes they use, and an end-to-end
``--attack standard`` run through the evaluation runner."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from advpure.attacks import Ensemble, standard_attacks
from advpure.defenses.diffpure import DiffPure
from advpure.defenses.ssni import SSNI
from advpure.detect.eps import EPSReference, eps_norm
from advpure.diffusion.models import GaussianScoreModel
from advpure.diffusion.schedule import VPSchedule
from advpure.models import build_classifier

ZOO = Path(__file__).resolve().parents[2] / "zoo"


def _gauss(shape=(1, 8, 8)):
    sched = VPSchedule()
    return GaussianScoreModel(torch.full(shape, 0.2), torch.full(shape, 0.05), sched), sched


def _names(ens: Ensemble) -> list[str]:
    return [n for n, _ in ens.attacks]


def test_standard_list_for_diffusion_purifiers_is_cheapest_first():
    model, sched = _gauss()
    clf = build_classifier("small-cnn").eval()
    dp = DiffPure(model, t=0.1, n_steps=10, schedule=sched, freeze=False)
    ens = standard_attacks(classifier=clf, defense=dp, eps=0.2)
    assert _names(ens) == ["surrogate-one-step", "surrogate-ddim-2", "surrogate-ddim-5", "surrogate-sde-5", "bpda",
                           "apgd-ce", "pgd"]
    # the one- and two-call surrogates get CHEAP_FACTOR (2) x steps and EOT; the rest the ensemble's own 50 / 8
    budget = {n: (a.pgd.steps, a.pgd.eot) for n, a in ens.attacks if n.startswith("surrogate")}
    assert budget == {"surrogate-one-step": (100, 16), "surrogate-ddim-2": (100, 16), "surrogate-ddim-5": (50, 8),
                      "surrogate-sde-5": (50, 8)}
    assert _names(standard_attacks(classifier=clf, defense=dp, eps=0.2, level="lite")) == ["surrogate-one-step", "bpda"]
    clean = torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    ref = EPSReference.from_norms(eps_norm(model, clean, schedule=sched, generator=torch.Generator().manual_seed(1)),
                                  t_levels=[k / 1000 for k in range(1, 21)], checkpoint_sha256=None)
    ssni = SSNI(dp, reference=ref, mode="N")
    assert _names(standard_attacks(classifier=clf, defense=ssni, eps=0.2))[:3] == _names(ens)[:3]
    # an undefended classifier gets the full-gradient attacks only
    assert _names(standard_attacks(classifier=clf, defense=None, eps=0.2)) == ["apgd-ce", "pgd"]
    with pytest.raises(ValueError, match="attack level"):
        standard_attacks(classifier=clf, defense=dp, eps=0.2, level="heavy")


def test_fixed_sampler_purifiers_get_fewer_step_and_unguided_surrogates():
    """GDMP and distribution transfer cannot change their sampler, only their step count and their guidance: the
    standard list attacks the same process with 1 step (2x budget), 2 and 5 steps (per round), each only when
    cheaper, then the same process without guidance; distribution transfer adds its guidance-target attack."""
    from advpure.defenses.distribution_transfer import DistributionTransfer, GuidanceTarget
    from advpure.defenses.gdmp import GDMP

    model, _ = _gauss()
    clf = build_classifier("small-cnn").eval()
    gdmp = GDMP(model, t=0.036, iterations=2, freeze=False)  # 36 steps per round, 72 network evaluations
    dt = DistributionTransfer(model, clf, t=0.1, steps=4, freeze=False)  # 4 steps: a 5-step surrogate costs more
    full = ["bpda", "apgd-ce", "pgd"]
    for d, sur, tail in ((gdmp, ["surrogate-steps-1", "surrogate-steps-2", "surrogate-steps-5"], []),
                         (dt, ["surrogate-steps-1", "surrogate-steps-2"], ["dt-guidance-target"])):
        ens = standard_attacks(classifier=clf, defense=d, eps=0.2)
        assert _names(ens) == sur + ["surrogate-unguided"] + full + tail, type(d).__name__
        purifiers = {n: a.surrogate.defense for n, a in ens.attacks if n.startswith("surrogate-steps")}
        rounds = {GDMP: 2, DistributionTransfer: 1}[type(d)]
        assert {n: p.nfe for n, p in purifiers.items()} == {n: float(int(n.rsplit("-", 1)[1]) * rounds)
                                                            for n in purifiers}
        unguided = dict(ens.attacks)["surrogate-unguided"].surrogate.defense
        assert unguided.scale == 0 and unguided.steps == d.steps and d.scale == 100
        assert (ens.attacks[0][1].pgd.steps, ens.attacks[0][1].pgd.eot) == (100, 16)
        assert _names(standard_attacks(classifier=clf, defense=d, eps=0.2, level="lite")) == ["surrogate-steps-1",
                                                                                                "bpda"]
    target = dict(standard_attacks(classifier=clf, defense=dt, eps=0.2).attacks)["dt-guidance-target"]
    assert isinstance(target.surrogate.defense, GuidanceTarget) and target.surrogate.classifier is clf
    assert (target.pgd.steps, target.pgd.eot) == (100, 16)  # one classifier pass per gradient: the cheap budget
    assert gdmp.steps == 36  # the defenses themselves are untouched
    with pytest.raises(TypeError, match="no guidance"):
        DiffPure(model, t=0.1, freeze=False).without_guidance()


def test_gnsp_gets_the_diffpure_surrogate_family():
    """GNSP's stages can run DDIM: its list is DiffPure's (one-step, DDIM-2, DDIM-5 per stage), plus its own DDPM
    process with 5 steps per stage when that is cheaper than the defense, and last the deviated-reconstruction attack
    built for its stages (full gradients: the full-gradient budget, half the EOT)."""
    from advpure.defenses.gnsp import GNSP

    model, _ = _gauss()
    clf = build_classifier("small-cnn").eval()
    gnsp = GNSP(model, freeze=False)  # stages 30x4, 50x2, 125x2: 8 stages, 470 network evaluations
    ens = standard_attacks(classifier=clf, defense=gnsp, eps=0.2)
    assert _names(ens) == ["surrogate-one-step", "surrogate-ddim-2", "surrogate-ddim-5", "surrogate-ddpm-5", "bpda",
                           "apgd-ce", "pgd", "diffattack"]
    dev = dict(ens.attacks)["diffattack"]
    assert (dev.steps, dev.eot, dev.grad_checkpoint) == (20, 4, True)
    assert "diffattack" not in _names(standard_attacks(classifier=clf, defense=gnsp, eps=0.2, level="lite"))
    sur = {n: a.surrogate.defense for n, a in ens.attacks if n.startswith("surrogate")}
    assert {n: (p.sampler, p.nfe) for n, p in sur.items()} == {
        "surrogate-one-step": ("ddim", 8.0), "surrogate-ddim-2": ("ddim", 16.0), "surrogate-ddim-5": ("ddim", 40.0),
        "surrogate-ddpm-5": ("ddpm", 40.0)}
    five = GNSP(model, steps=5, freeze=False)  # its own process at 5 steps is the defense: not a surrogate
    assert "surrogate-ddpm-5" not in _names(standard_attacks(classifier=clf, defense=five, eps=0.2))
    assert gnsp.nfe == 470 and gnsp.sampler == "ddpm"


def test_gnsp_ddim_one_step_per_stage_is_tweedies_estimate_per_stage():
    """GNSP with DDIM and one step per stage: each stage diffuses to t_k and takes x0 = clip((x_t - std eps) / alpha)
    (Song et al. 2021, Eq. 12 with alpha_0 = 1, sigma_0 = 0), alpha from DDPM's linear betas 1e-4..0.02 written out
    here (alpha(n/1000)^2 = prod_{i<=n} (1 - beta_i))."""
    from advpure.defenses.gnsp import GNSP

    model, _ = _gauss()
    gnsp = GNSP(model, stages=[30, 125], freeze=False).with_sampler("ddim", 1)
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    got = gnsp.purify(x, generator=torch.Generator().manual_seed(5))
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    abar = torch.cumprod(1 - betas, 0)
    g = torch.Generator().manual_seed(5)
    z = 2 * x - 1
    for n in (30, 125):
        a, s = float(abar[n - 1].sqrt()), float((1 - abar[n - 1]).sqrt())
        xt = a * z + s * torch.randn(x.shape, generator=g)
        z = ((xt - s * model(xt, torch.full((3,), n / 1000))) / a).clamp(-1, 1)
    torch.testing.assert_close(got, ((z + 1) / 2).clamp(0, 1), rtol=1e-5, atol=1e-5)
    assert gnsp.nfe == 2 and gnsp.describe()["sampler"] == "ddim"


def test_guidance_target_is_the_input_diffused_as_the_guidance_sees_it():
    """Distribution transfer's guidance compares f(x'_t), x'_t = alpha(t) (2x - 1) + std(t) z at the reverse steps'
    times t* (1 - k / steps), k < steps: with one step that is t* itself, alpha from DDPM's betas written out here."""
    from advpure.defenses.distribution_transfer import DistributionTransfer

    model, _ = _gauss()
    clf = build_classifier("small-cnn").eval()
    target = DistributionTransfer(model, clf, t=0.1, steps=1, freeze=False).guidance_target()
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    got = target(x, generator=torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)
    torch.randint(1, (4,), generator=g)  # the per-image step (only one here)
    abar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)[99]
    want = float(abar.sqrt()) * (2 * x - 1) + float((1 - abar).sqrt()) * torch.randn(x.shape, generator=g)
    torch.testing.assert_close(got, ((want + 1) / 2).clamp(0, 1), rtol=1e-5, atol=1e-5)
    assert target.nfe == 0 and target.stochastic
    # with 4 steps the times are 0.1, 0.075, 0.05, 0.025 (std 0.321, 0.247, 0.170, 0.092): all four are drawn
    t4 = DistributionTransfer(model, clf, t=0.1, steps=4, freeze=False).guidance_target()
    out = t4(torch.full((400, 1, 8, 8), 0.5), generator=torch.Generator().manual_seed(0))
    std = (2 * out - 1).flatten(1).std(1)  # x = 1/2, so x'_t = std(t) z
    assert sorted(set(torch.bucketize(std, torch.tensor([0.13, 0.21, 0.284])).tolist())) == [0, 1, 2, 3]


def test_one_step_surrogate_is_tweedies_estimate():
    """DDIM with one step from t* to 0 is x0 = (x_t - std(t*) eps(x_t, t*)) / alpha(t*) (Song et al. 2021, Eq. 12
    with alpha_0 = 1, sigma_0 = 0), written out here from the schedule's alpha and std."""
    model, sched = _gauss()
    dp = DiffPure(model, t=0.1, n_steps=10, schedule=sched, freeze=False).with_sampler("ddim", 1)
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    got = dp.purify(x, generator=torch.Generator().manual_seed(3))
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    t = torch.full((4,), 0.1)
    a, s = sched.alpha(t).view(-1, 1, 1, 1), sched.std(t).view(-1, 1, 1, 1)
    x_t = a * (2 * x - 1) + s * noise
    x0 = (x_t - s * model(x_t, t)) / a
    torch.testing.assert_close(got, ((x0 + 1) / 2).clamp(0, 1), rtol=1e-5, atol=1e-6)
    assert dp.nfe == 1 and dp.describe()["solver"].startswith("deterministic DDIM")
    with pytest.raises(ValueError, match="sampler"):
        DiffPure(model, t=0.1, schedule=sched, freeze=False).with_sampler("heun", 2)


@pytest.mark.skipif(not (ZOO / "digits-cm.safetensors").is_file(), reason="zoo CMAP model missing")
def test_method_specific_attacks_join_the_standard_list():
    from advpure.defenses.cmap import load_cmap

    clf = build_classifier("small-cnn").eval()
    cmap = load_cmap(dataset="digits", iterations=2)
    assert _names(standard_attacks(classifier=clf, defense=cmap, eps=0.2))[-1] == "cmap-disruption"


def test_standard_run_reports_which_attack_broke_each_image(digits_classifier):
    from advpure.eval.runner import format_markdown, run_eval

    ddpm = ZOO / "digits-ddpm.safetensors"
    if not ddpm.is_file():
        pytest.skip("zoo digits DDPM missing")
    res = run_eval(dataset="digits", classifier=digits_classifier, defense=f"diffpure:model={ddpm},t=0.1,steps=2",
                   attack="standard:eps=0.2,steps=2,eot=1,full_steps=1,select_draws=2", n=8, batch_size=8,
                   eval_draws=3, sanity=False, progress=False)
    names = {"surrogate-one-step", "surrogate-ddim-2", "surrogate-ddim-5", "surrogate-sde-5", "bpda", "apgd-ce", "pgd", "survived"}
    assert set(res["broken_by"]) <= names and sum(res["broken_by"].values()) == 8
    assert res["protocol"]["early_stop_applied"] is False
    assert res["perturbation"]["max_linf"] <= 0.2 + 1e-6
    assert res["robust_accuracy_ci95"]["n"] == 8 and res["worst_case_draws"] == 3
    assert "worst case over 3 draws" in format_markdown(res)


@pytest.mark.parametrize("name", ["pgd", "apgd", "bpda-free"])
def test_attacks_leave_batchnorm_statistics_and_modes_alone(name):
    """A model left in train() mode: the attack runs it in eval mode (no BatchNorm update, no dropout) and gives
    every submodule its mode back."""
    from advpure.attacks import APGD, PGD

    torch.manual_seed(0)
    clf = build_classifier("resnet8", num_classes=10).train()
    clf.linear.eval()  # a mixed state must come back as it was
    before = {k: v.clone() for k, v in clf.state_dict().items() if "running" in k or "num_batches" in k}
    x, y = torch.rand(4, 3, 32, 32), torch.randint(0, 10, (4,))
    att = {"pgd": PGD(eps=8 / 255, steps=2), "apgd": APGD(eps=8 / 255, steps=2),
           "bpda-free": PGD(eps=8 / 255, steps=1, random_start=False)}[name]
    att(clf, x, y)
    after = {k: v for k, v in clf.state_dict().items() if k in before}
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert clf.training and not clf.linear.training and clf.conv1.training
