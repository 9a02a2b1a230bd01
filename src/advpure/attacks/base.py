"""The attack contract shared by every attack in :mod:`advpure.attacks` (foolbox-3 style).

An attack is configured once with keyword-only options and then called::

    attack = PGD(norm="linf", eps=8/255, steps=200, step_size=0.007, eot=20)
    x_adv = attack(model, x, y)

- ``model``: any ``nn.Module`` mapping float [0, 1] NCHW images to ``(N, classes)`` logits, e.g.
  :class:`advpure.defenses.DefendedClassifier`. A model whose ``stochastic`` attribute is true gets
  Expectation-over-Transformation (EOT, Athalye et al. 2018): the gradient is the average of ``eot``
  stochastic passes, computed by repeating the batch in one forward (``eot_batch`` copies per forward).
  Deterministic models (``stochastic`` false or absent) are attacked with one pass whatever ``eot`` is.
- ``x_adv`` lies inside the threat model: ``||x_adv - x||_p <= eps`` (p = inf or 2) and ``x_adv`` in [0, 1].
  :meth:`Attack.__call__` enforces it once for every attack (:func:`enforce_threat_model`): a rounding-level excess
  is projected away, a larger one is an error of the attack.

**Protocol for stochastic models** (enforced here, once, for every attack): every image is attacked (an image
misclassified on one random clean pass is *not* skipped: fresh draws often classify it correctly), and
``early_stop`` is ignored (an image is never frozen at the first iterate where the attack's own few noisy draws
misclassified it; the attack returns its last iterate, or its own loss-based choice such as APGD's best-loss
point). Whether the returned images fool the model is judged afterwards on fresh draws, by the caller
(:mod:`advpure.eval.runner`) or by :class:`advpure.attacks.ensemble.Ensemble`'s separate selection draws. Both
shortcuts overstated robustness by 13-19 points in an outside re-attack. Deterministic models keep both.

Everything is validated before any gradient is computed (:meth:`Attack._validate`). Each call leaves
``last_stats`` (model forward passes per image, effective EOT, iterations) for cost reporting. Every attack records
the arguments it was constructed with; :meth:`Attack.replace` rebuilds it with some of them changed.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import logging
import re
from typing import Any, Callable, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..contracts import check_images, check_int, check_labels, check_logits, check_positive
from ..specs import record_init_args

log = logging.getLogger(__name__)

NORMS = ("linf", "l2")


# --------------------------------------------------------------------------- small helpers
def is_stochastic(model: nn.Module) -> bool:
    """A model is stochastic when it says so (``model.stochastic``); absent means deterministic."""
    return bool(getattr(model, "stochastic", False))


def check_norm(norm: str) -> str:
    if not isinstance(norm, str) or norm.lower() not in NORMS:
        raise ValueError(f"norm: expected one of {', '.join(NORMS)}, got {norm!r}")
    return norm.lower()


def check_eps(eps: float) -> float:
    """eps must be a finite number >= 0 (0 = clean evaluation)."""
    return check_positive(eps, "eps", allow_zero=True)


def _flat_norm(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(p=2, dim=1).view(-1, *([1] * (t.dim() - 1)))


def project(x_adv: torch.Tensor, x: torch.Tensor, *, norm: str, eps: float) -> torch.Tensor:
    """Project ``x_adv`` onto {z : ||z - x||_p <= eps} ∩ [0, 1]^d.

    linf: per-coordinate clip to [x - eps, x + eps], then to [0, 1] (exact projection).
    l2: rescale delta to norm eps when larger, then clip to [0, 1]; clipping moves every coordinate
    towards x (x itself is in [0, 1]) so it never increases the norm.
    """
    delta = x_adv - x
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    else:
        n = _flat_norm(delta)
        delta = delta * torch.clamp(eps / (n + 1e-12), max=1.0)
    return (x + delta).clamp(0.0, 1.0)


def ascent_step(x_adv: torch.Tensor, grad: torch.Tensor, x: torch.Tensor, *, norm: str, eps: float,
                alpha: float) -> torch.Tensor:
    """One PGD step (Madry et al. 2018) up the gradient, projected back into the threat model around ``x``:
    ``P(x_adv + alpha * sign(grad))`` for linf, ``P(x_adv + alpha * grad / ||grad||_2)`` for l2 (detached)."""
    step = grad.sign() if norm == "linf" else grad / (_flat_norm(grad) + 1e-12)
    return project(x_adv.detach() + alpha * step, x, norm=norm, eps=eps).detach()


#: how far (in pixel units for linf, in l2 norm for l2) an attack's output may lie outside the threat model from
#: floating-point rounding; anything further is a bug of the attack
THREAT_MODEL_TOLERANCE = 1e-5


def enforce_threat_model(x_adv: torch.Tensor, x: torch.Tensor, *, norm: str, eps: float,
                         name: str = "attack") -> torch.Tensor:
    """``x_adv`` inside {z : ||z - x||_p <= eps} ∩ [0, 1]^d: entries (linf) or images (l2) already inside are kept
    bit for bit, a rounding-level excess is projected away (:func:`project`), and an excess beyond
    :data:`THREAT_MODEL_TOLERANCE` raises RuntimeError (the attack left its threat model)."""
    if x_adv.shape != x.shape:
        raise RuntimeError(f"{name}: returned shape {tuple(x_adv.shape)} for inputs of shape {tuple(x.shape)}")
    d = x_adv - x
    box = torch.maximum(-x_adv, x_adv - 1.0).clamp(min=0.0)  # excess over [0, 1], per entry
    if norm == "linf":
        ball = (d.abs() - eps).clamp(min=0.0)
        outside = (box > 0) | (ball > 0)
    else:
        ball = (_flat_norm(d) - eps).clamp(min=0.0)
        outside = ((box > 0).flatten(1).any(1).view_as(ball)) | (ball > 0)
    if not bool(outside.any()):
        return x_adv
    worst = max(float(box.max()), float(ball.max()))
    if worst > THREAT_MODEL_TOLERANCE:
        raise RuntimeError(f"{name}: returned images outside its threat model ({norm} eps={eps:g} within [0, 1]) by "
                           f"{worst:.3g}; the attack must project its iterates")
    return torch.where(outside, project(x_adv, x, norm=norm, eps=eps), x_adv)


def random_start(x: torch.Tensor, *, norm: str, eps: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """A uniform draw in the linf ball, or a draw in the l2 ball (Gaussian direction, radius eps*U)."""
    if norm == "linf":
        delta = (torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) * 2 - 1) * eps
    else:
        d = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        r = torch.rand((x.shape[0],) + (1,) * (x.dim() - 1), generator=generator, device=x.device, dtype=x.dtype)
        delta = d / (_flat_norm(d) + 1e-12) * r * eps
    return (x + delta).clamp(0.0, 1.0)


def perturbation_norm(x_adv: torch.Tensor, x: torch.Tensor, norm: str) -> torch.Tensor:
    d = (x_adv - x).flatten(1)
    return d.abs().max(dim=1).values if norm == "linf" else d.norm(p=2, dim=1)


# --------------------------------------------------------------------------- losses
def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Difference of Logits Ratio (Croce & Hein 2020, eq. 5), per sample, to be maximised.

    DLR(z, y) = -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3), with z sorted decreasingly (pi).
    """
    zs, _ = logits.sort(dim=1)
    onehot = F.one_hot(y, logits.shape[1]).bool()
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    z_other = logits.masked_fill(onehot, float("-inf")).max(dim=1).values
    return -(z_y - z_other) / (zs[:, -1] - zs[:, -3] + 1e-12)


def dlr_targeted_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Targeted DLR (Croce & Hein 2020, eq. 6): -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)."""
    zs, _ = logits.sort(dim=1)
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    z_t = logits.gather(1, target[:, None]).squeeze(1)
    return -(z_y - z_t) / (zs[:, -1] - 0.5 * (zs[:, -3] + zs[:, -4]) + 1e-12)


def margin_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """C&W margin max_{i != y} z_i - z_y (to be maximised; > 0 means misclassified)."""
    onehot = F.one_hot(y, logits.shape[1]).bool()
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    return logits.masked_fill(onehot, float("-inf")).max(dim=1).values - z_y


def make_loss(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Per-sample untargeted loss to maximise: 'ce', 'dlr' or 'cw' (margin)."""
    table = {"ce": lambda z, y: F.cross_entropy(z, y, reduction="none"), "dlr": dlr_loss, "cw": margin_loss}
    if name not in table:
        raise ValueError(f"loss: expected one of {', '.join(table)}, got {name!r}")
    return table[name]


# --------------------------------------------------------------------------- model helpers
class _Counter:
    """Counts images passed through a module's forward (model evaluations) with a pre-hook."""

    def __init__(self) -> None:
        self.images = 0

    def __call__(self, module: nn.Module, args: tuple) -> None:
        if args and isinstance(args[0], torch.Tensor):
            self.images += int(args[0].shape[0])


@contextlib.contextmanager
def count_forwards(model: nn.Module) -> Iterator[_Counter]:
    """Context manager counting the images forwarded through ``model``."""
    c = _Counter()
    h = model.register_forward_pre_hook(c)
    try:
        yield c
    finally:
        h.remove()


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Attack a model in eval mode (a model left in train() mode would update its BatchNorm statistics and use
    dropout during the attack); every submodule's own mode is restored on exit."""
    if not isinstance(model, nn.Module):
        yield
        return
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, was in modes:
            m.training = was


@contextlib.contextmanager
def grad_checkpointing(model: nn.Module, enabled: bool) -> Iterator[bool]:
    """Switch on ``grad_checkpoint`` of every submodule that has the attribute (iterative purifiers
    use :func:`advpure.ops.checkpointing.checkpointed_loop` when it is set); restored on exit.
    Yields whether any submodule supports it."""
    if not enabled:
        yield False
        return
    saved = [(m, m.grad_checkpoint) for m in model.modules() if hasattr(m, "grad_checkpoint")]
    for m, _ in saved:
        m.grad_checkpoint = True
    if not saved:
        log.warning("grad_checkpoint requested but no submodule of %s has a grad_checkpoint attribute",
                    type(model).__name__)
    try:
        yield bool(saved)
    finally:
        for m, v in saved:
            m.grad_checkpoint = v


# --------------------------------------------------------------------------- base class
@dataclasses.dataclass
class AttackStats:
    forwards_per_image: float = 0.0
    eot: int = 1
    iterations: int = 0


#: the literature's default budget per norm for images in [0, 1] (CIFAR-10 scale: linf 8/255, l2 0.5); per-dataset
#: l_inf budgets are :data:`advpure.data.DEFAULT_LINF_EPS`
DEFAULT_EPS = {"linf": 8 / 255, "l2": 0.5}


class Attack(abc.ABC):
    """Base class; subclasses implement :meth:`_run` on validated inputs.

    Common keyword options (each subclass documents its defaults):

    - ``eps``, ``norm``: the threat model (``'linf'`` or ``'l2'``);
    - ``eot``: stochastic passes averaged per gradient (ignored for deterministic models);
      ``eot_batch``: copies of the batch per forward (memory knob; default all ``eot`` at once);
    - ``early_stop``: evaluate-while-optimising: per sample, return the first iterate at which the model
      misclassified it, instead of the final iterate. Deterministic models only: for a stochastic model it is
      ignored (see the module docstring) and :attr:`early_stop_active` is false;
    - ``grad_checkpoint``: switch on ``grad_checkpoint`` of the defense during the attack so the
      full-gradient attack through an iterative purifier uses memory independent of its step count;
    - ``seed``: the attack's own randomness (random start, Square's squares); None = torch's global RNG.
    """

    name = "attack"
    #: whether the attack differentiates the model (used by the gradient-masking checks)
    gradient_based = True
    #: :meth:`replace` option names that are another constructor argument (e.g. Square's ``steps`` = ``n_queries``)
    _option_aliases: dict[str, str] = {}
    #: :meth:`replace` options an attack ignores (e.g. ``eot`` for one that takes no EOT)
    _ignored_options: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Every attack records the keyword arguments it was constructed with (``_init_args``,
        :func:`advpure.specs.record_init_args`), so that :meth:`replace` rebuilds it with some of them changed."""
        super().__init_subclass__(**kwargs)
        record_init_args(cls)

    def __init__(self, *, eps: float = DEFAULT_EPS["linf"], norm: str = "linf", eot: int = 1,
                 eot_batch: int | None = None, early_stop: bool = False, grad_checkpoint: bool = False,
                 seed: int | None = None) -> None:
        self.norm = check_norm(norm)
        self.eps = check_eps(eps)
        self.eot = check_int(eot, "eot", minimum=1)
        self.eot_batch = None if eot_batch is None else check_int(eot_batch, "eot_batch", minimum=1)
        self.early_stop = bool(early_stop)
        self.grad_checkpoint = bool(grad_checkpoint)
        self.seed = None if seed is None else check_int(seed, "seed", minimum=0)
        self.last_stats = AttackStats()
        self._stochastic_target = False

    # ---- protocol for stochastic models (see the module docstring)
    @property
    def early_stop_active(self) -> bool:
        """Early stopping applies to the model being attacked now: requested and the model is deterministic."""
        return self.early_stop and not self._stochastic_target

    def skip_mask(self, logits0: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Images the attack may leave unchanged because the clean pass already misclassified them: none for a
        stochastic model (one random pass says little), the misclassified ones for a deterministic model."""
        if self._stochastic_target:
            return torch.zeros_like(y, dtype=torch.bool)
        return logits0.argmax(1) != y

    # ---- configuration
    def params(self) -> dict[str, Any]:
        """The configuration as a JSON-able dict (for reports)."""
        out: dict[str, Any] = {}
        for k, v in vars(self).items():
            if k.startswith("_") or k in ("last_stats", "spec", "last_broken_by", "last_rows"):
                continue
            if isinstance(v, (int, float, str, bool, type(None))):
                out[k] = v
            elif isinstance(v, Attack):
                out[k] = v.describe()
            elif isinstance(v, nn.Module):
                out[k] = type(v).__name__
        return out

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "params": self.params()}

    def replace(self, **changes: Any) -> "Attack":
        """A copy with some options changed: the attack rebuilt from the arguments it was constructed with and the
        changes, so its constructor validates them (an attack built around another one, ``base=``, passes the
        changes on to it). An option that is an attribute but no constructor argument (``eot`` of an attack
        without EOT) is set on the copy; anything else is a ValueError."""
        changes = {self._option_aliases.get(k, k): v for k, v in changes.items() if k not in self._ignored_options}
        args = dict(self._init_args)
        options = dict(self.__dict__.get("_set_options", {}))
        if isinstance(args.get("base"), Attack):
            args["base"] = args["base"].replace(**changes)
        else:
            args.update(changes)
        while True:
            try:
                new = type(self)(**args)
                break
            except TypeError as e:
                m = re.search(r"unexpected keyword argument '(\w+)'", str(e))
                if m is None or m.group(1) not in changes:
                    raise
                key = m.group(1)
                if not hasattr(self, key):
                    raise ValueError(f"{self.name}: no option {key!r}") from None
                options[key] = args.pop(key)
        for k, v in options.items():
            if k in ("eot", "steps"):
                v = check_int(v, k, minimum=1)
            setattr(new, k, v)
        new.__dict__["_set_options"] = options
        for k, v in vars(self).items():  # what was set after construction (the spec it was built from)
            if k not in vars(new):
                setattr(new, k, v)
        return new

    # ---- call
    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits0 = self._validate(model, x, y)
        gen = None
        if self.seed is not None:
            gen = torch.Generator(device=x.device).manual_seed(self.seed)
        eot = self.effective_eot(model)
        with count_forwards(model) as counter, grad_checkpointing(model, self.grad_checkpoint), eval_mode(model):
            x_adv = self._run(model, x.detach(), y, logits0=logits0, eot=eot, generator=gen)
        self.last_stats.forwards_per_image = (counter.images + x.shape[0]) / x.shape[0]
        self.last_stats.eot = eot
        # the threat model, enforced here once for every attack
        return enforce_threat_model(x_adv.detach(), x.detach(), norm=self.norm, eps=self.eps, name=self.name)

    def effective_eot(self, model: nn.Module) -> int:
        return self.eot if is_stochastic(model) else 1

    def _validate(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if not isinstance(model, nn.Module) and not callable(model):
            raise TypeError(f"{self.name}: model must be an nn.Module mapping images to logits, got {type(model).__name__}")
        check_images(x, name=f"{self.name}: x")
        check_labels(y, x.shape[0], name=f"{self.name}: y")
        self._stochastic_target = is_stochastic(model)
        with torch.no_grad(), eval_mode(model):
            logits = check_logits(model(x), x.shape[0], name=f"{self.name}: model output")
        if y.numel() and int(y.max()) >= logits.shape[1]:
            raise ValueError(f"{self.name}: label {int(y.max())} out of range for a model with {logits.shape[1]} classes")
        return logits

    @abc.abstractmethod
    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, logits0: torch.Tensor, eot: int,
             generator: torch.Generator | None) -> torch.Tensor:
        """The attack itself, on validated inputs; returns adversarial images inside the threat model."""

    # ---- gradient with EOT
    def loss_and_grad(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                      loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], eot: int
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """EOT gradient of the per-sample loss: returns (grad, loss per sample, mean logits).

        grad = (1/eot) sum_j d loss(model_j(x)) / dx, where model_j is the j-th stochastic pass; the batch
        is repeated ``eot_batch`` times per forward (default: all ``eot`` copies in one forward).
        """
        n = x.shape[0]
        chunk = min(self.eot_batch or eot, eot)
        grad = torch.zeros_like(x)
        loss_sum = torch.zeros(n, device=x.device)
        logit_sum: torch.Tensor | None = None
        done = 0
        while done < eot:
            k = min(chunk, eot - done)
            xr = x.detach().repeat(k, *([1] * (x.dim() - 1))).requires_grad_(True)
            with torch.enable_grad():
                logits = model(xr)
                loss = loss_fn(logits, y.repeat(k))
                g, = torch.autograd.grad(loss.sum(), xr)
            grad += g.view(k, *x.shape).sum(0)
            loss_sum += loss.detach().view(k, n).sum(0)
            ls = logits.detach().view(k, n, -1).sum(0)
            logit_sum = ls if logit_sum is None else logit_sum + ls
            done += k
        assert logit_sum is not None
        return grad / eot, loss_sum / eot, logit_sum / eot


class PathAttack(Attack):
    """An attack that runs the defense's parts (DAD's denoiser, GNSP's stages, the classifier) instead of
    ``model.forward``, which :meth:`Attack.__call__` counts: the images its ``_run`` passes through the classifier
    (``_path_images``) are added to ``last_stats.forwards_per_image``."""

    _path_images = 0

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self._path_images = 0
        x_adv = super().__call__(model, x, y)
        self.last_stats.forwards_per_image += self._path_images / x.shape[0]
        return x_adv


class FirstSuccess:
    """Keeps, per sample, the first iterate at which the model misclassified it (early stopping)."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x.detach().clone()
        self.found = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)

    def update(self, x_k: torch.Tensor, fooled: torch.Tensor) -> None:
        new = fooled & ~self.found
        if bool(new.any()):
            self.x[new] = x_k.detach()[new]
            self.found |= new

    def result(self, x_final: torch.Tensor) -> torch.Tensor:
        return torch.where(self.found.view(-1, *([1] * (x_final.dim() - 1))), self.x, x_final)


def check_step_size(step_size: float | None) -> float | None:
    return None if step_size is None else check_positive(step_size, "step_size")


__all__ = ["Attack", "AttackStats", "DEFAULT_EPS", "FirstSuccess", "NORMS", "PathAttack", "THREAT_MODEL_TOLERANCE",
           "ascent_step", "check_eps", "check_norm", "count_forwards", "dlr_loss", "dlr_targeted_loss", "enforce_threat_model",
           "eval_mode", "grad_checkpointing", "is_stochastic", "make_loss", "margin_loss", "perturbation_norm", "project",
           "random_start"]
