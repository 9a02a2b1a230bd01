"""Evaluation: the runner (:func:`advpure.eval.runner.run_eval`, ``advpure eval``), the protocol for
stochastic defenses (:mod:`.protocol`), gradient-masking checks (:mod:`.sanity`), metrics (:mod:`.metrics`),
and image-quality measures (:mod:`.quality`). Submodules are imported on use to keep ``import advpure`` light."""
