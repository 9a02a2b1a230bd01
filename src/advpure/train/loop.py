"""The training loop the generative-model trainers share (:mod:`advpure.train.diffusion`,
:mod:`advpure.train.consistency`).

Per step: the trainer's ``loss_step(step)`` draws its batch from the seeded generator and returns the loss; the
loop takes one optimizer step, runs the trainer's ``after_update`` (e.g. a consistency target network), and
updates the EMA of the weights with the usual warm-up, ``decay_k = min(decay, (1 + k) / (10 + k))`` after step k
(:func:`ema_decay_at`). The loop itself draws no random numbers, so a trainer's draws per step are its own.

State (``<name>.state.pt``, written atomically every ``save_every`` steps and at the end, read back with
``weights_only=True``): ``model``, the trainer's extra modules (e.g. ``target``), ``ema``, ``optimizer``,
``step``, ``generator`` (the batch generator's state), ``torch_rng`` (torch's global CPU RNG state) and
``config``. Resuming restores all of them, so a run stopped after k steps and resumed is bit-identical to an
uninterrupted one.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn as nn

from .common import load_resume, save_resume

log = logging.getLogger(__name__)


def ema_decay_at(step: int, decay: float) -> float:
    """The EMA decay after ``step`` optimizer steps: ``min(decay, (1 + step) / (10 + step))`` (warm-up)."""
    return min(decay, (1 + step) / (10 + step))


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """``ema <- decay * ema + (1 - decay) * model``, parameter by parameter."""
    for pe, p in zip(ema.parameters(), model.parameters()):
        pe.lerp_(p.detach(), 1 - decay)


@dataclass
class LoopResult:
    step: int                                     #: optimizer steps taken in all (including resumed ones)
    seconds: float                                #: wall time of this run's steps
    losses: list[float] = field(default_factory=list)  #: this run's losses, one per step

    @property
    def final_loss(self) -> float | None:
        """Mean of the last 100 losses of this run (None when it took no step)."""
        tail = self.losses[-100:]
        return sum(tail) / max(1, len(tail)) if self.losses else None


class TrainLoop:
    """Seeded, resumable training of ``model`` with an EMA copy ``ema`` (see the module docstring).

    ``generator`` is the trainer's batch generator (its state is saved); ``extra`` names further modules whose
    state is saved and restored (e.g. ``{"target": target}``); ``config`` is saved with the state; ``writer``:
    whether this process writes the state file and shows the progress bar (rank 0 under torchrun).
    """

    def __init__(self, *, model: nn.Module, ema: nn.Module, optimizer: torch.optim.Optimizer,
                 generator: torch.Generator, ema_decay: float, state_path: str | Path, config: Mapping[str, Any],
                 extra: Mapping[str, nn.Module] | None = None, writer: bool = True) -> None:
        self.model, self.ema, self.optimizer, self.generator = model, ema, optimizer, generator
        self.ema_decay = float(ema_decay)
        self.state_path = Path(state_path)
        self.config = dict(config)
        self.extra = dict(extra or {})
        self.writer = bool(writer)
        self.step = 0

    # ------------------------------------------------------------------ state
    def state(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), **{k: m.state_dict() for k, m in self.extra.items()},
                "ema": self.ema.state_dict(), "optimizer": self.optimizer.state_dict(), "step": self.step,
                "generator": self.generator.get_state(), "torch_rng": torch.get_rng_state(), "config": self.config}

    def save(self) -> None:
        """Write the state file (only the writer process)."""
        if self.writer:
            save_resume(self.state_path, self.state())

    def resume(self, *, must_match: Sequence[str] = ()) -> int:
        """Restore the state file (FileNotFoundError when there is none); the saved ``config`` must equal this
        run's for the keys in ``must_match`` that both record. Returns the step it resumes at."""
        st = load_resume(self.state_path)
        if st is None:
            raise FileNotFoundError(f"--resume: no training state at {self.state_path}")
        saved = st.get("config", {})
        differ = [f"{k}: saved {saved[k]!r}, now {self.config[k]!r}" for k in must_match
                  if k in saved and k in self.config and saved[k] != self.config[k]]
        if differ:
            raise ValueError(f"--resume: {self.state_path} was trained with other settings ({'; '.join(differ)}); "
                             "resume with the same settings or start a new --name")
        self.model.load_state_dict(st["model"])
        for k, m in self.extra.items():
            m.load_state_dict(st[k])
        self.ema.load_state_dict(st["ema"])
        self.optimizer.load_state_dict(st["optimizer"])
        self.step = int(st["step"])
        self.generator.set_state(st["generator"].cpu())
        torch.set_rng_state(st["torch_rng"].cpu())
        log.info("resumed %s at step %d", self.state_path, self.step)
        return self.step

    # ------------------------------------------------------------------ the loop
    def run(self, steps: int, loss_step: Callable[[int], torch.Tensor], *, save_every: int = 0,
            progress: bool = True, desc: str = "train", after_update: Callable[[], None] | None = None,
            postfix: Callable[[float], dict[str, Any]] | None = None) -> LoopResult:
        """Train until ``steps`` optimizer steps in all; save every ``save_every`` steps (0: only at the end) and
        at the end. ``postfix(mean of the last 50 losses)`` -> the progress bar's fields, every 50 steps."""
        from tqdm.auto import tqdm

        if steps < self.step:
            raise ValueError(f"steps={steps} is below the step of the resumed state {self.state_path} "
                             f"({self.step}): ask for at least {self.step} steps (that many saves the state's weights "
                             "as they are)")
        postfix = postfix or (lambda m: {"loss": f"{m:.4f}"})
        losses: list[float] = []
        t0 = time.perf_counter()
        bar = tqdm(total=steps, initial=self.step, desc=desc, disable=not progress or not self.writer, leave=False)
        self.model.train()
        while self.step < steps:
            loss = loss_step(self.step)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.step += 1
            if after_update is not None:
                after_update()
            update_ema(self.ema, self.model, ema_decay_at(self.step, self.ema_decay))
            losses.append(float(loss.detach()))
            bar.update(1)
            if self.step % 50 == 0:
                bar.set_postfix(**postfix(sum(losses[-50:]) / len(losses[-50:])))
            if save_every and self.step % save_every == 0:
                self.save()
        bar.close()
        seconds = time.perf_counter() - t0
        self.save()
        return LoopResult(step=self.step, seconds=seconds, losses=losses)


__all__ = ["LoopResult", "TrainLoop", "ema_decay_at", "update_ema"]
