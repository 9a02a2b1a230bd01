"""Differentiable building blocks shared by several floors (second floor: imports only ``contracts`` and
``torch``): gradient checkpointing of iterative loops, SSIM, broadcasting helpers.

Import from the submodules (``advpure.ops.checkpointing``, ``advpure.ops.ssim``, ...); this package
re-exports nothing, so each submodule stays cheap to import. No input validation in hot loops: callers check
their arguments once, at construction.
"""
