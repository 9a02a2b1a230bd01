"""advpure: adversarial purification and detection as distribution shift.

Contracts (see README, "Design"):
- images are float tensors in [0, 1], NCHW; normalisation lives inside models;
- a classifier maps images to logits (N, classes);
- a purifier maps images to images (stochastic only through an explicit torch.Generator);
- a detector maps images to scores and a decision;
- :class:`DefendedClassifier` composes them.

The main entry points are available from the package itself, for example::

    import advpure
    defense = advpure.DiffPure(eps_model, t=0.1, n_steps=20)
    model = advpure.DefendedClassifier(my_classifier, defense)
    record = advpure.run_eval(dataset="digits", classifier=my_classifier, defense=defense, attack="standard")

They are loaded on first use (PEP 562), so ``import advpure`` stays cheap and importing one sub-module does not
import the rest of the library. ``advpure.EXPORTS`` lists them with the module each comes from; ``help()`` on each
gives its documentation.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: public name -> the module that defines it
EXPORTS: dict[str, str] = {
    # contracts and composition
    "Purifier": "advpure.defenses.base", "DefendedClassifier": "advpure.defenses.base",
    "Identity": "advpure.defenses.base",
    # defenses
    "DiffPure": "advpure.defenses.diffpure", "SSNI": "advpure.defenses.ssni", "GDMP": "advpure.defenses.gdmp",
    "GNSP": "advpure.defenses.gnsp", "CMAP": "advpure.defenses.cmap", "DAD": "advpure.defenses.dad",
    "DistributionTransfer": "advpure.defenses.distribution_transfer", "MajorityVote": "advpure.defenses.voting",
    "OneShotDenoiser": "advpure.defenses.one_shot",
    # attacks
    "Attack": "advpure.attacks.base", "PGD": "advpure.attacks.pgd", "APGD": "advpure.attacks.apgd",
    "BPDA": "advpure.attacks.bpda", "Square": "advpure.attacks.square", "SurrogateProcess": "advpure.attacks.surrogate",
    "Ensemble": "advpure.attacks.ensemble", "standard_attacks": "advpure.attacks.ensemble",
    # evaluation
    "run_eval": "advpure.eval.runner", "EvalConfig": "advpure.eval.runner", "format_markdown": "advpure.eval.runner",
    # loaders and specs
    "load_classifier": "advpure.models", "load_denoiser": "advpure.diffusion", "load_dataset": "advpure.data",
    "build": "advpure.specs", "names": "advpure.specs",
}

__all__ = ["EXPORTS", "__version__", *EXPORTS]


def __getattr__(name: str) -> Any:
    module = EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'advpure' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(EXPORTS))
