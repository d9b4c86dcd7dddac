"""Optimizers: θ ← θ + αΔ with per-parameter state, torch.optim's names and defaults."""

from ermlab.optim.base import Optimizer
from ermlab.optim.sgd import SGD

__all__ = ["Optimizer", "SGD"]
