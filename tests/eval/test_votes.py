"""Majority-vote models: straight-through gradient and evaluation as the voted prediction."""

from __future__ import annotations

import torch

from advpure.defenses.base import Purifier
from advpure.defenses.voting import MajorityVote
from advpure.eval.runner import run_eval


class _Noise(Purifier):
    def __init__(self, sigma: float) -> None:
        super().__init__()
        self.sigma = sigma

    @property
    def nfe(self) -> float:
        return 1.0

    def purify(self, x, *, generator=None):
        n = torch.randn(x.shape, generator=generator, device=x.device)
        return (x + self.sigma * n).clamp(0, 1)


def test_vote_value_and_surrogate_gradient(digits_classifier, digits_data):
    x, _ = digits_data[1].subset(8, 0).tensors()
    mv = MajorityVote(digits_classifier, _Noise(0.1), k=5)
    mv.reseed(0)
    with torch.no_grad():
        plain = mv(x)
    mv.reseed(0)
    xg = x.clone().requires_grad_(True)
    out = mv(xg)
    torch.testing.assert_close(out.detach(), plain)  # same value with and without autograd
    out.gather(1, out.argmax(1, keepdim=True)).sum().backward()
    assert xg.grad is not None and float(xg.grad.abs().sum()) > 0
    votes = mv.votes(x)
    assert torch.equal(votes.sum(1), torch.full((8,), 5.0))


def test_runner_evaluates_the_voted_prediction(digits_classifier):
    res = run_eval(dataset="digits", classifier=digits_classifier, defense=_Noise(0.1), attack="pgd:eps=0.2,steps=3",
                   n=12, batch_size=12, votes=3, sanity=False, eval_draws=2, progress=False)
    assert res["protocol"]["votes"] == 3 and res["defense"]["nfe"] == 3.0
    assert res["robust_accuracy"]["mean"] < res["clean_accuracy"]["mean"]
