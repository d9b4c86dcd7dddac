"""Training: the Trainer, its callbacks, metrics and checkpoints."""

from ermlab.training.callbacks import (
    Callback,
    CSVLogger,
    DivergenceError,
    DivergenceGuard,
    EarlyStopping,
    JSONLogger,
    LearningRateScheduler,
    ModelCheckpoint,
    ProgressBar,
    ReduceLROnPlateau,
    TerminateOnNaN,
)
from ermlab.training.checkpoint import (
    Checkpoint,
    CheckpointError,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from ermlab.training.metrics import accuracy, confusion_matrix, top_k_accuracy
from ermlab.training.trainer import Trainer

__all__ = [
    "CSVLogger",
    "Callback",
    "Checkpoint",
    "CheckpointError",
    "DivergenceError",
    "DivergenceGuard",
    "EarlyStopping",
    "JSONLogger",
    "LearningRateScheduler",
    "ModelCheckpoint",
    "ProgressBar",
    "ReduceLROnPlateau",
    "TerminateOnNaN",
    "Trainer",
    "accuracy",
    "confusion_matrix",
    "load_checkpoint",
    "read_checkpoint",
    "save_checkpoint",
    "top_k_accuracy",
]


def __getattr__(name: str):
    """``ermlab.training.plots`` (matplotlib) is imported the first time it is used."""
    if name == "plots":
        import importlib

        return importlib.import_module(f"{__name__}.plots")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
