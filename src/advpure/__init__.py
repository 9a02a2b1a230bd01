"""advpure: adversarial purification and detection as distribution shift.

Contracts (see README, "Design"):
- images are float tensors in [0, 1], NCHW; normalisation lives inside models;
- a classifier maps images to logits (N, classes);
- a purifier maps images to images (stochastic only through an explicit torch.Generator);
- a detector maps images to scores and a decision;
- ``advpure.defenses.DefendedClassifier`` composes them.
"""

__version__ = "0.1.0"
