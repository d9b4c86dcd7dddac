"""Callbacks observe and steer the Trainer (Keras's callbacks, Chainer's extensions).

One file per callback; the interface and the order of events are in ``base``.
"""

from ermlab.training.callbacks.base import Callback
from ermlab.training.callbacks.divergence_guard import (
    DivergenceError,
    DivergenceGuard,
    TerminateOnNaN,
)
from ermlab.training.callbacks.early_stopping import EarlyStopping
from ermlab.training.callbacks.history_logger import CSVLogger, JSONLogger
from ermlab.training.callbacks.lr_scheduler import LearningRateScheduler, ReduceLROnPlateau
from ermlab.training.callbacks.model_checkpoint import ModelCheckpoint
from ermlab.training.callbacks.progress_bar import ProgressBar

__all__ = [
    "CSVLogger",
    "Callback",
    "DivergenceError",
    "DivergenceGuard",
    "EarlyStopping",
    "JSONLogger",
    "LearningRateScheduler",
    "ModelCheckpoint",
    "ProgressBar",
    "ReduceLROnPlateau",
    "TerminateOnNaN",
]
