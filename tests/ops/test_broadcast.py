"""``per_sample``: one value per sample broadcast against a batch, the dtype cast explicit."""

import torch

from advpure.ops.broadcast import per_sample


def test_shapes():
    x = torch.zeros(3, 2, 4, 4)
    assert per_sample(torch.arange(3.0), x, cast=True).shape == (3, 1, 1, 1)
    assert per_sample(torch.tensor(2.0), x, cast=False).shape == (1, 1, 1, 1)
    assert per_sample(0.5, x, cast=True).shape == (1, 1, 1, 1)
    already = torch.ones(3, 1, 1, 1)
    assert per_sample(already, x, cast=False) is already
    assert per_sample(torch.arange(3.0), torch.zeros(3, 5), cast=True).shape == (3, 1)


def test_cast_is_explicit():
    x = torch.zeros(2, 1, 2, 2)
    v = torch.tensor([1.0, 2.0], dtype=torch.float64)
    assert (per_sample(v, x, cast=True) * x).dtype == torch.float32  # cast to the batch's dtype
    assert (per_sample(v, x, cast=False) * x).dtype == torch.float64  # type promotion decides
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    per_sample(w, x, cast=True).sum().backward()  # same dtype: no copy, the graph kept
    assert torch.equal(w.grad, torch.ones(2))
