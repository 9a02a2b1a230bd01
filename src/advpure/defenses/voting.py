"""Majority voting over independent purifications (Lee & Kim, ICCV 2023; also used by DiffPure-style
evaluations): classify K independent purifications of each image and return the most frequent class.

A voting classifier (:class:`VotingClassifier`: :class:`MajorityVote` here, CMAP's
:class:`~advpure.defenses.cmap.CMAPClassifier` over its K latents) behaves like a classifier: ``forward(x)``
returns **log vote frequencies** ``log((votes_c + tie) / (K + tie_total))`` so that ``argmax`` is the voted
class. Ties between classes with equal votes are broken by the mean softmax probability
(``tie = 1e-3 * mean_softmax``), which is also what keeps the log finite for classes nobody voted for. The vote
is piecewise constant (no useful gradient); its gradient is taken from the surrogate, the log of the mean
softmax over the K draws (differentiable through the purifier), the EOT-style surrogate of the vote
(straight-through: :func:`straight_through_vote`).
"""

from __future__ import annotations

import abc

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..contracts import check_images, check_int, check_logits
from .base import Purifier, module_generator


def vote_log_frequencies(logits: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Log vote frequencies from the logits of K draws (along ``dim``; classes last), ties broken by the mean
    softmax: (K, N, classes) -> (N, classes) for ``dim=0``. Not differentiable (a count)."""
    k = logits.shape[dim]
    counts = F.one_hot(logits.argmax(-1), logits.shape[-1]).sum(dim).to(logits.dtype)
    tie = 1e-3 * logits.softmax(-1).mean(dim)
    return torch.log((counts + tie) / (k + 1e-3))


def vote_surrogate(logits: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """The differentiable surrogate of the vote: ``log mean_k softmax(logits_k)`` over the K draws along ``dim``."""
    return torch.logsumexp(logits.log_softmax(-1), dim=dim) - torch.log(torch.tensor(float(logits.shape[dim])))


def straight_through_vote(logits: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """The vote's log frequencies as the *value* and, when ``logits`` carry a graph, the gradient of
    :func:`vote_surrogate` (from the same K draws): gradient attacks run on a voting model directly and
    their success is judged on the real vote."""
    vote = vote_log_frequencies(logits.detach(), dim)
    if not logits.requires_grad:
        return vote
    sur = vote_surrogate(logits, dim)
    return vote + (sur - sur.detach())


class VotingClassifier(nn.Module, abc.ABC):
    """Straight-through majority vote of ``classifier`` over K draws of a stochastic ``defense``.

    Subclasses implement :meth:`draw_logits` (the K draws' logits, shape (K, N, classes)) from the module's own
    generator (``reseed``). Attributes used by attacks/evaluation: ``voting = True``, ``classifier``,
    ``defense``, ``stochastic``, ``nfe``.
    """

    voting = True

    def __init__(self, classifier: nn.Module, defense: nn.Module, *, seed: int = 0) -> None:
        super().__init__()
        self.classifier = classifier
        self.defense = defense
        self.generator: torch.Generator | None = None
        self.reseed(seed)

    def reseed(self, seed: int) -> None:
        self._seed = int(seed)
        self.generator = module_generator(self, seed)

    @property
    def stochastic(self) -> bool:
        return bool(getattr(self.defense, "stochastic", False))

    @abc.abstractmethod
    def draw_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the K draws, shape (K, N, classes)."""

    def purify(self, x: torch.Tensor) -> torch.Tensor:
        """One purification of ``x`` (for image-quality reports and BPDA's forward)."""
        return self.defense(x, generator=self.generator) if isinstance(self.defense, Purifier) else self.defense(x)

    def votes(self, x: torch.Tensor) -> torch.Tensor:
        """Vote counts per class, shape (N, classes)."""
        with torch.no_grad():
            logits = self.draw_logits(x)
        return F.one_hot(logits.argmax(-1), logits.shape[-1]).sum(0).to(logits.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Log vote frequencies; when autograd is recording, the gradient is the surrogate's
        (:func:`straight_through_vote`)."""
        return straight_through_vote(self.draw_logits(x))

    def surrogate(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable surrogate of the vote: ``log mean_k softmax(classifier(purify_k(x)))``, shape (N, classes)."""
        return vote_surrogate(self.draw_logits(x))


class MajorityVote(VotingClassifier):
    """Majority vote of ``classifier(purifier(x))`` over ``k`` independent purifications.

    The K purifications run as one batch of K*N images (``chunk`` limits the batch size), each with its
    own noise from the module's generator (``reseed``). ``nfe`` = k * purifier nfe.
    """

    def __init__(self, classifier: nn.Module, purifier: nn.Module, *, k: int = 10, seed: int = 0,
                 chunk: int | None = None) -> None:
        super().__init__(classifier, purifier, seed=seed)
        self.k = check_int(k, "k")
        self.chunk = check_int(chunk, "chunk") if chunk is not None else None

    @property
    def nfe(self) -> float:
        return self.k * float(getattr(self.defense, "nfe", 0.0))

    def draw_logits(self, x: torch.Tensor) -> torch.Tensor:
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

    def describe(self) -> dict:
        d = getattr(self.defense, "describe", None)
        return {"voting": self.k, "defense": d() if callable(d) else type(self.defense).__name__, "seed": self._seed}


def voting_classifier(classifier: nn.Module, defense: nn.Module, votes: int) -> VotingClassifier:
    """The majority vote of ``classifier`` over ``votes`` draws of a stochastic ``defense``: the defense's own
    voting model when it offers one (``defense.voting_classifier(classifier, votes)``, e.g. CMAP votes over its
    K latents), else :class:`MajorityVote` over ``votes >= 2`` purifications."""
    own = getattr(defense, "voting_classifier", None)
    if callable(own):
        return own(classifier, votes)
    if votes < 2:
        raise ValueError(f"votes: a majority vote needs K >= 2 purifications, got {votes} (0 = no vote)")
    return MajorityVote(classifier, defense, k=votes)


__all__ = ["MajorityVote", "VotingClassifier", "straight_through_vote", "vote_log_frequencies", "vote_surrogate",
           "voting_classifier"]
