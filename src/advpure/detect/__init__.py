"""Detectors: MMD two-sample tests with Gaussian and (semantic-aware) deep kernels, MMD-OPT training."""

from __future__ import annotations

from .kernels import (
    DeepKernel,
    GaussianKernel,
    build_deep_kernel,
    classifier_fingerprint,
    load_kernel,
    save_kernel,
)
from .mmd import (
    TestResult,
    h_matrix,
    min_sample_size,
    mmd2_unbiased,
    mmd2_variance,
    mmd_opt_objective,
    mmd_test,
    permutation_test,
    split_gram,
    wild_bootstrap_test,
)

__all__ = [
    "DeepKernel", "GaussianKernel", "TestResult", "build_deep_kernel", "classifier_fingerprint", "h_matrix",
    "load_kernel", "min_sample_size", "mmd2_unbiased", "mmd2_variance", "mmd_opt_objective", "mmd_test",
    "permutation_test", "save_kernel", "split_gram", "wild_bootstrap_test",
]
