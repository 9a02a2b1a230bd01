"""EPS against the closed form of a Gaussian's score, and SSNI's reweighting."""

from __future__ import annotations

import math

import pytest
import torch

from advpure.detect.eps import DEFAULT_MAX_BATCH, EPSReference, eps_norm, expected_perturbation_score
from advpure.diffusion.models import GaussianScoreModel
from advpure.diffusion.schedule import VPSchedule


def _gaussian(mu=0.2, var=0.05, shape=(1, 4, 4)):
    sched = VPSchedule()
    return GaussianScoreModel(torch.full(shape, mu), torch.full(shape, var), sched), sched, mu, var


def test_eps_matches_gaussian_closed_form():
    """For x0 ~ N(mu, var): E_z score(x_t, t) = -alpha (x' - mu) / (alpha^2 var + std^2), x' = 2x - 1."""
    model, sched, mu, var = _gaussian()
    x = torch.rand(3, 1, 4, 4)
    levels = torch.arange(1, 21) / 1000
    g = torch.Generator().manual_seed(0)
    reps = 400
    est = torch.stack([expected_perturbation_score(model, x, schedule=sched, t_levels=levels, generator=g)
                       for _ in range(reps)]).mean(0)
    a, s = sched.alpha(levels).float(), sched.std(levels).float()
    coef = (a / (a * a * var + s * s)).mean()
    exact = -coef * ((2 * x - 1) - mu)
    # Monte Carlo error: per level the score noise has std 1/std(t) * std(t)/(a^2 var+s^2)... bound it loosely
    torch.testing.assert_close(est, exact, rtol=0.05, atol=0.15)


def test_eps_norm_grows_with_distance_from_the_data():
    model, sched, mu, _ = _gaussian()
    x_mode = torch.full((1, 1, 4, 4), (mu + 1) / 2)  # the data mean in [0, 1] scale
    g = torch.Generator().manual_seed(1)
    norms = [float(eps_norm(model, (x_mode + d).clamp(0, 1), schedule=sched, generator=g)) for d in (0.0, 0.1, 0.2, 0.3)]
    assert norms == sorted(norms), norms


def test_eps_is_batched_and_chunking_does_not_change_it():
    model, sched, _, _ = _gaussian()
    x = torch.rand(5, 1, 4, 4)
    model.calls = 0
    a = expected_perturbation_score(model, x, schedule=sched, generator=torch.Generator().manual_seed(2),
                                    max_batch=100)
    assert model.calls == 1  # 20 levels x 5 samples in one call
    model.calls = 0
    expected_perturbation_score(model, x, schedule=sched, generator=torch.Generator().manual_seed(2))
    assert model.calls == math.ceil(100 / DEFAULT_MAX_BATCH)
    b = expected_perturbation_score(model, x, schedule=sched, generator=torch.Generator().manual_seed(2), max_batch=7)
    torch.testing.assert_close(a, b)


def test_eps_bad_inputs():
    model, sched, _, _ = _gaussian()
    with pytest.raises(ValueError, match="noise levels must lie in"):
        expected_perturbation_score(model, torch.rand(1, 1, 4, 4), schedule=sched, t_levels=[0.0, 0.01])
    with pytest.raises(ValueError, match="NaN"):
        expected_perturbation_score(model, torch.full((1, 1, 4, 4), float("nan")), schedule=sched)
    with pytest.raises(ValueError, match="autocast_dtype: expected torch.bfloat16, torch.float16 or None"):
        expected_perturbation_score(model, torch.rand(1, 1, 4, 4), schedule=sched, autocast_dtype=torch.float64)


def test_reference_round_trip_and_checkpoint_mismatch(tmp_path):
    ref = EPSReference.from_norms(torch.tensor([1.0, 2.0, 3.0]), t_levels=[0.001], checkpoint_sha256="abc")
    p = tmp_path / "r.json"
    ref.save(p)
    back = EPSReference.load(p, checkpoint_sha256="abc")
    assert back.mean == 2.0 and back.min == 1.0 and back.max == 3.0 and back.n == 3
    with pytest.raises(ValueError, match="recompute them for this model"):
        EPSReference.load(p, checkpoint_sha256="def")
    with pytest.raises(FileNotFoundError, match="compute them with `advpure eps reference`"):
        EPSReference.load(tmp_path / "missing.json")


def test_reference_path_of_published_checkpoints(tmp_path):
    """Statistics live beside the checkpoint file of a ``score_sde:``/``guided_diffusion:`` spec (with or without
    ``@config.json``), as beside an advpure checkpoint; inside a diffusers folder."""
    from advpure.detect.eps import reference_path

    ckpt = tmp_path / "checkpoint_8.pth"
    ckpt.write_bytes(b"")
    assert reference_path(ckpt) == tmp_path / "checkpoint_8.eps-ref.json"
    assert reference_path(f"score_sde:{ckpt}") == tmp_path / "checkpoint_8.eps-ref.json"
    assert reference_path(f"score_sde:{ckpt}@{tmp_path / 'cfg.json'}") == tmp_path / "checkpoint_8.eps-ref.json"
    assert reference_path(f"guided_diffusion:{tmp_path / 'adm.pt'}") == tmp_path / "adm.eps-ref.json"  # not yet there
    assert reference_path(tmp_path) == tmp_path / "eps-ref.json"
    with pytest.raises(ValueError, match="no checkpoint path after 'score_sde:'"):
        reference_path("score_sde:@cfg.json")
