"""The training loop shared by the diffusion and consistency trainers: EMA with warm-up, resumable state, exact
resume, settings that must match."""

import copy

import pytest
import torch
import torch.nn as nn

from advpure.train.loop import TrainLoop, ema_decay_at


def _setup(tmp_path, seed=0, **config):
    torch.manual_seed(seed)
    net = nn.Linear(3, 2)
    ema = copy.deepcopy(net).requires_grad_(False)
    opt = torch.optim.Adam(net.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(seed)
    loop = TrainLoop(model=net, ema=ema, optimizer=opt, generator=gen, ema_decay=0.9,
                     state_path=tmp_path / "toy.state.pt", config={"lr": 0.1, **config})

    def loss_step(step):
        x = torch.randn(4, 3, generator=gen)
        noise = torch.rand(1).item()  # torch's global RNG: restored on resume too
        return (net(x) - noise).pow(2).mean()

    return loop, loss_step


def test_ema_warm_up_formula():
    assert ema_decay_at(0, 0.999) == pytest.approx(0.1)
    assert ema_decay_at(5, 0.999) == pytest.approx(6 / 15)
    assert ema_decay_at(10_000, 0.999) == 0.999


def test_ema_follows_the_warm_up(tmp_path):
    loop, loss_step = _setup(tmp_path)
    ema = [p.detach().clone() for p in loop.model.parameters()]
    torch.manual_seed(1)
    for k in range(1, 4):
        loop.run(k, loss_step, progress=False)
        d = min(0.9, (1 + k) / (10 + k))
        ema = [d * e + (1 - d) * p.detach() for e, p in zip(ema, loop.model.parameters())]
        for e, pe in zip(ema, loop.ema.parameters()):
            torch.testing.assert_close(pe, e, rtol=1e-6, atol=1e-7)


def test_exact_resume_and_state_keys(tmp_path):
    a, step_a = _setup(tmp_path / "a")
    torch.manual_seed(7)
    ra = a.run(6, step_a, progress=False)
    b, step_b = _setup(tmp_path / "b")
    torch.manual_seed(7)
    b.run(3, step_b, progress=False)
    torch.manual_seed(123)  # the resumed run restores torch's RNG from the state file
    c, step_c = _setup(tmp_path / "b")
    assert c.resume() == 3
    rc = c.run(6, step_c, progress=False, save_every=2)
    assert ra.step == rc.step == 6 and len(rc.losses) == 3
    for m_a, m_c in ((a.model, c.model), (a.ema, c.ema)):
        assert all(torch.equal(p, q) for p, q in zip(m_a.parameters(), m_c.parameters()))
    st = torch.load(tmp_path / "b" / "toy.state.pt", weights_only=True)
    assert list(st) == ["model", "ema", "optimizer", "step", "generator", "torch_rng", "config"]
    assert st["step"] == 6 and st["config"] == {"lr": 0.1}


def test_resume_refuses_other_settings_and_needs_a_state(tmp_path):
    loop, loss_step = _setup(tmp_path, t=1)
    with pytest.raises(FileNotFoundError, match="--resume: no training state"):
        loop.resume()
    loop.run(1, loss_step, progress=False)
    other, _ = _setup(tmp_path, t=2)
    with pytest.raises(ValueError, match=r"other settings \(t: saved 1, now 2\)"):
        other.resume(must_match=("t", "lr"))
    assert other.resume(must_match=("lr",)) == 1  # only the keys asked for must match


def test_extra_modules_are_saved_and_restored(tmp_path):
    loop, loss_step = _setup(tmp_path)
    target = nn.Linear(3, 2)
    loop.extra = {"target": target}
    loop.run(2, loss_step, progress=False, after_update=lambda: target.weight.data.add_(1.0))
    st = torch.load(tmp_path / "toy.state.pt", weights_only=True)
    assert list(st)[:3] == ["model", "target", "ema"]
    fresh = nn.Linear(3, 2)
    loop2, _ = _setup(tmp_path)
    loop2.extra = {"target": fresh}
    loop2.resume()
    assert torch.equal(fresh.weight, target.weight)


def test_resumed_run_refuses_fewer_steps_than_its_state(tmp_path):
    # a resumed state at step 3 asked to train to step 2 would save step-3 weights under a step-2 name
    loop, loss_step = _setup(tmp_path)
    loop.run(3, loss_step, progress=False)
    again, step_again = _setup(tmp_path)
    assert again.resume() == 3
    with pytest.raises(ValueError, match=r"steps=2 is below the step of the resumed state .*\(3\)"):
        again.run(2, step_again, progress=False)
    assert again.run(3, step_again, progress=False).step == 3  # as many steps as the state: saves it as it is
