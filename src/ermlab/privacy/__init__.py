"""Differential privacy: per-example gradients, DP-SGD and its privacy accountant."""

from ermlab.privacy.accountant import calibrate_noise, epsilon
from ermlab.privacy.dp_sgd import DPSGD
from ermlab.privacy.per_example import (
    check_per_example_support,
    clip_and_sum,
    per_example_gradients,
)
from ermlab.privacy.sampling import poisson_batches

__all__ = [
    "DPSGD",
    "calibrate_noise",
    "check_per_example_support",
    "clip_and_sum",
    "epsilon",
    "per_example_gradients",
    "poisson_batches",
]
