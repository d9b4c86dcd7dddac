"""Training: the Trainer, its callbacks and metrics."""

from ermlab.training.callbacks import Callback, EarlyStopping
from ermlab.training.trainer import Trainer

__all__ = ["Callback", "EarlyStopping", "Trainer"]
