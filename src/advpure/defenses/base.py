"""The defense contracts: purifiers and the defended classifier that attacks see.

Purifier: an ``nn.Module`` mapping float [0, 1] NCHW images to images of the same shape and range.
It is stochastic only through the ``generator`` it is given (``None`` means torch's global RNG),
differentiable end to end (attacks backpropagate through it), and reports its cost as network
evaluations per image (:attr:`Purifier.nfe`).

DefendedClassifier(classifier, defense): logits = classifier(defense(x)). It owns the generator that
makes the defense's randomness explicit and reproducible (``reseed``). Attacks treat it as any
classifier; they may also look at ``.classifier`` and ``.defense`` (BPDA needs both).
"""

from __future__ import annotations

import abc

import torch
import torch.nn as nn

from ..contracts import check_images


def module_generator(module: nn.Module, seed: int) -> torch.Generator:
    """A generator seeded with ``seed`` on the device of ``module``'s parameters (CPU when it has none)."""
    dev = next((p.device for p in module.parameters()), torch.device("cpu"))
    return torch.Generator(device=dev).manual_seed(int(seed))


class Purifier(nn.Module, abc.ABC):
    """Base class for purifiers; subclasses implement :meth:`purify`."""

    #: whether two calls on the same input can differ (used by the gradient-masking checks)
    stochastic: bool = True

    def forward(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.purify(x, generator=generator)

    @abc.abstractmethod
    def purify(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Map float [0, 1] NCHW images to purified images of the same shape and range."""

    @property
    def nfe(self) -> float:
        """Network evaluations per image for one purification."""
        return 0.0

    def describe(self) -> dict:
        """Name and parameters for reports."""
        return {"name": type(self).__name__}


class Identity(Purifier):
    """No defense: returns its input."""

    stochastic = False

    def purify(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        return x


class DefendedClassifier(nn.Module):
    """classifier(defense(x)) with an explicit generator for the defense's randomness."""

    def __init__(self, classifier: nn.Module, defense: nn.Module | None = None, *, seed: int = 0,
                 validate_inputs: bool = True) -> None:
        super().__init__()
        self.classifier = classifier
        self.defense = defense if defense is not None else Identity()
        self.validate_inputs = validate_inputs
        self.generator: torch.Generator | None = None
        self._seed = seed
        self.reseed(seed)

    def reseed(self, seed: int) -> None:
        """Reset the defense's random stream (the generator lives on the model's device)."""
        self._seed = seed
        self.generator = module_generator(self, seed)

    @property
    def stochastic(self) -> bool:
        return bool(getattr(self.defense, "stochastic", False))

    @property
    def nfe(self) -> float:
        """Network evaluations per image of the defense (the classifier call not counted)."""
        return float(getattr(self.defense, "nfe", 0.0))

    def purify(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.defense, Purifier):
            return self.defense(x, generator=self.generator)
        return self.defense(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.validate_inputs:
            check_images(x)
        return self.classifier(self.purify(x))

    def describe(self) -> dict:
        d = getattr(self.defense, "describe", None)
        return {"defense": d() if callable(d) else type(self.defense).__name__, "seed": self._seed}
