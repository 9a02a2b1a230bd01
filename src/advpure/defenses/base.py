"""The defense contracts: purifiers and the defended classifier that attacks see.

Purifier: an ``nn.Module`` mapping float [0, 1] NCHW images to images of the same shape and range.
It is stochastic only through the ``generator`` it is given (``None`` means torch's global RNG),
differentiable end to end (attacks backpropagate through it), and reports its cost as network
evaluations per image (:attr:`Purifier.nfe`).

DefendedClassifier(classifier, defense): logits = classifier(defense(x)). It owns the generator that
makes the defense's randomness explicit and reproducible (``reseed``). Attacks treat it as any
classifier; they may also look at ``.classifier`` and ``.defense`` (BPDA needs both).

Every purifier records the arguments it was constructed with: :meth:`Purifier.replace` rebuilds it with some of them
changed (sharing its networks), and the cheaper surrogate processes of attacks, :meth:`Purifier.with_steps` and
:meth:`Purifier.with_sampler` and :meth:`Purifier.without_guidance`, are :meth:`~Purifier.replace` on the arguments
a purifier names in :attr:`~Purifier.steps_arg`, :attr:`~Purifier.sampler_arg` and :attr:`~Purifier.guidance_arg`.
"""

from __future__ import annotations

import abc
import copy
import inspect
from typing import Any, ClassVar

import torch
import torch.nn as nn

from ..contracts import check_images
from ..specs import record_init_args


def module_generator(module: nn.Module, seed: int) -> torch.Generator:
    """A generator seeded with ``seed`` on the device of ``module``'s parameters (CPU when it has none)."""
    dev = next((p.device for p in module.parameters()), torch.device("cpu"))
    return torch.Generator(device=dev).manual_seed(int(seed))


def _call_args(sig: inspect.Signature, args: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    """(positional, keyword) arguments that call a constructor of signature ``sig`` with the recorded ``args``."""
    pos: list[Any] = []
    kw: dict[str, Any] = {}
    params = list(sig.parameters.values())
    var_pos = any(p.kind is p.VAR_POSITIONAL for p in params)
    for p in params:
        if p.kind is p.VAR_POSITIONAL:
            pos.extend(args.get(p.name, ()))
        elif p.kind is p.VAR_KEYWORD:
            kw.update({k: v for k, v in args.items() if k not in sig.parameters})
        elif p.name not in args:
            continue
        elif p.kind is p.POSITIONAL_ONLY or (var_pos and p.kind is p.POSITIONAL_OR_KEYWORD):
            pos.append(args[p.name])  # before *args: must be passed by position
        else:
            kw[p.name] = args[p.name]
    return pos, kw


class Purifier(nn.Module, abc.ABC):
    """Base class for purifiers; subclasses implement :meth:`purify`.

    Constructor arguments are recorded (``_init_args``, the outermost constructor's explicit arguments; an
    attribute of the same name assigned after construction counts as that argument), so :meth:`replace` rebuilds
    the purifier with some of them changed and no subclass writes its own copy.
    """

    #: whether two calls on the same input can differ (used by the gradient-masking checks)
    stochastic: bool = True
    #: the constructor argument :meth:`with_steps` changes (reverse steps of the surrogate process); None: no such
    steps_arg: str | None = None
    #: the constructor argument :meth:`with_sampler` changes (the reverse process); None: no such argument
    sampler_arg: str | None = None
    #: the constructor argument that scales a guidance term of the reverse process (0 switches it off), which
    #: :meth:`without_guidance` sets to 0; None: no guidance
    guidance_arg: str | None = None
    #: state set after construction (a calibration) that :meth:`replace` carries over to the copy: attribute ->
    #: the constructor arguments it depends on (changing any of them drops it)
    _carried: ClassVar[dict[str, tuple[str, ...]]] = {}
    #: the signature of the recording constructor (without ``self``); a purifier without one takes no arguments
    _init_signature: ClassVar[inspect.Signature] = inspect.Signature()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Every purifier records the arguments it was constructed with (:func:`advpure.specs.record_init_args`)."""
        super().__init_subclass__(**kwargs)
        sig = record_init_args(cls)
        if sig is not None:
            cls._init_signature = sig

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if self.__dict__.get("_init_done") and name in self._init_signature.parameters:
            self.__dict__["_init_args"][name] = value  # e.g. grad_checkpoint switched on by an attack

    # ---- copies
    def replace_keys(self) -> list[str]:
        """The names :meth:`replace` accepts: the constructor's arguments, and those of a wrapped ``base``."""
        keys = {p.name for p in self._init_signature.parameters.values() if p.kind is not p.VAR_KEYWORD}
        base = self.__dict__.get("_init_args", {}).get("base")
        if isinstance(base, Purifier):
            keys |= set(base.replace_keys())
        return sorted(keys)

    def replace(self, **changes: Any) -> "Purifier":
        """A copy with some constructor arguments changed.

        The purifier is rebuilt from the arguments it was constructed with and ``changes``, so its constructor
        validates them; modules passed in (the networks, the classifier) are shared, not copied. A purifier built
        around another (``base=``) passes the changes that are no argument of its own on to that one's
        :meth:`replace`. The copy follows the original's device and ``training`` flag and keeps what
        :attr:`_carried` names. An unknown name is a ValueError that lists the valid ones.
        """
        sig = self._init_signature
        var_kw = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
        args = dict(self.__dict__.get("_init_args", {}))
        own = {k: v for k, v in changes.items() if var_kw or k in sig.parameters}
        rest = {k: v for k, v in changes.items() if k not in own}
        base = own.get("base", args.get("base"))
        wrapped = base if isinstance(base, Purifier) else None
        unknown = sorted(set(rest) - set(wrapped.replace_keys() if wrapped is not None else ()))
        if unknown:
            self._unknown(unknown)
        if wrapped is not None and (rest or "base" not in own):
            own["base"] = wrapped.replace(**rest)  # a copy even unchanged: the two share no wrapped purifier's state
        args.update(own)
        pos, kw = _call_args(sig, args)
        new = type(self)(*pos, **kw)
        for attr, depends in self._carried.items():
            if attr in self.__dict__ and not set(depends) & set(changes):
                setattr(new, attr, copy.copy(self.__dict__[attr]))
        devices = {t.device for t in (*self.parameters(), *self.buffers())}
        if len(devices) == 1:
            new.to(devices.pop())
        new.training = self.training
        return new

    def _unknown(self, names: list[str]) -> None:
        valid = self.replace_keys()
        raise ValueError(f"{type(self).__name__}.replace: no argument {', '.join(map(repr, names))}; "
                         + (f"valid: {', '.join(valid)}" if valid else "it takes no arguments"))

    def with_steps(self, steps: Any) -> "Purifier":
        """A copy sharing the networks that runs the same process with ``steps`` reverse steps (the surrogate
        process of cheaper attacks): :meth:`replace` on :attr:`steps_arg`."""
        if self.steps_arg is None:
            raise TypeError(f"{type(self).__name__} has no number of reverse steps to change (steps_arg is None)")
        return self.replace(**{self.steps_arg: steps})

    def with_sampler(self, sampler: str, steps: int) -> "Purifier":
        """A copy sharing the networks with another reverse process of ``steps`` steps (surrogate process, e.g.
        ``("ddim", 1)``: the one-step denoising estimate): :meth:`replace` on :attr:`sampler_arg` and
        :attr:`steps_arg`."""
        if self.sampler_arg is None or self.steps_arg is None:
            raise TypeError(f"{type(self).__name__} has no reverse process to change (sampler_arg is None)")
        return self.replace(**{self.sampler_arg: sampler, self.steps_arg: steps})

    def without_guidance(self) -> "Purifier":
        """A copy sharing the networks that runs the same reverse process with its guidance switched off (the
        unguided surrogate process: its gradient needs no second derivative through the guidance term):
        :meth:`replace` with :attr:`guidance_arg` = 0."""
        if self.guidance_arg is None:
            raise TypeError(f"{type(self).__name__} has no guidance to switch off (guidance_arg is None)")
        return self.replace(**{self.guidance_arg: 0.0})

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
