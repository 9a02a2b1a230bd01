"""Majority voting over independent purifications (Lee & Kim, ICCV 2023; also used by DiffPure-style
evaluations): classify K independent purifications of each image and return the most frequent class.

:class:`MajorityVote` behaves like a classifier: ``forward(x)`` returns **log vote frequencies**
``log((votes_c + tie) / (K + tie_total))`` so that ``argmax`` is the voted class. Ties between classes
with equal votes are broken by the mean softmax probability (``tie = 1e-3 * mean_softmax``), which is
also what keeps the log finite for classes nobody voted for. The vote is piecewise constant (no useful
gradient); its gradient is taken from :meth:`MajorityVote.surrogate`, the log of the mean softmax over
the K runs (differentiable through the purifier), the EOT-style surrogate of the vote (straight-through).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..contracts import check_images, check_int, check_logits
from .base import Purifier, module_generator


class MajorityVote(nn.Module):
    """Majority vote of ``classifier(purifier(x))`` over ``k`` independent purifications.

    The K purifications run as one batch of K*N images (``chunk`` limits the batch size), each with its
    own noise from the module's generator (``reseed``). Attributes used by attacks/evaluation:
    ``voting = True``, ``classifier``, ``defense``, ``k``, ``stochastic``, ``nfe`` (= k * purifier nfe).
    """

    voting = True

    def __init__(self, classifier: nn.Module, purifier: nn.Module, *, k: int = 10, seed: int = 0,
                 chunk: int | None = None) -> None:
        super().__init__()
        self.classifier = classifier
        self.defense = purifier
        self.k = check_int(k, "k")
        self.chunk = check_int(chunk, "chunk") if chunk is not None else None
        self.generator: torch.Generator | None = None
        self.reseed(seed)

    def reseed(self, seed: int) -> None:
        self._seed = int(seed)
        self.generator = module_generator(self, seed)

    @property
    def stochastic(self) -> bool:
        return bool(getattr(self.defense, "stochastic", False))

    @property
    def nfe(self) -> float:
        return self.k * float(getattr(self.defense, "nfe", 0.0))

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the K purifications, shape (K, N, classes)."""
        check_images(x)
        n = x.shape[0]
        xs = x.repeat(self.k, 1, 1, 1)  # run-major: rows r*N .. r*N+N-1 are run r
        step = self.chunk or xs.shape[0]
        outs = []
        for i in range(0, xs.shape[0], step):
            xb = xs[i:i + step]
            xp = self.defense(xb, generator=self.generator) if isinstance(self.defense, Purifier) else self.defense(xb)
            outs.append(self.classifier(xp))
        logits = check_logits(torch.cat(outs), xs.shape[0], name="classifier output")
        return logits.view(self.k, n, -1)

    def purify(self, x: torch.Tensor) -> torch.Tensor:
        """One purification of ``x`` (for image-quality reports)."""
        return self.defense(x, generator=self.generator) if isinstance(self.defense, Purifier) else self.defense(x)

    def votes(self, x: torch.Tensor) -> torch.Tensor:
        """Vote counts per class, shape (N, classes)."""
        with torch.no_grad():
            logits = self._run(x)
        return F.one_hot(logits.argmax(-1), logits.shape[-1]).sum(0).to(logits.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Log vote frequencies. When autograd is recording, the output's *value* is the vote and its
        *gradient* is that of :meth:`surrogate` (straight-through), from the same K purifications, so
        gradient attacks run on this module directly and their success is judged on the real vote."""
        logits = self._run(x)
        ld = logits.detach()
        counts = F.one_hot(ld.argmax(-1), ld.shape[-1]).sum(0).to(ld.dtype)
        tie = 1e-3 * ld.softmax(-1).mean(0)
        vote = torch.log((counts + tie) / (self.k + 1e-3))
        if not logits.requires_grad:
            return vote
        sur = torch.logsumexp(logits.log_softmax(-1), dim=0) - torch.log(torch.tensor(float(self.k)))
        return vote + (sur - sur.detach())

    def surrogate(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable surrogate of the vote: ``log mean_k softmax(classifier(purify_k(x)))``, shape (N, classes)."""
        logits = self._run(x)
        return torch.logsumexp(logits.log_softmax(-1), dim=0) - torch.log(torch.tensor(float(self.k)))

    def describe(self) -> dict:
        d = getattr(self.defense, "describe", None)
        return {"voting": self.k, "defense": d() if callable(d) else type(self.defense).__name__, "seed": self._seed}
