"""DivergenceGuard: stop at the first non-finite loss and say where it happened."""

from __future__ import annotations

import math
from typing import Any

from ermlab.training.callbacks.base import Callback


class DivergenceError(FloatingPointError, ValueError):
    """Training diverged: the loss became NaN or infinite (names the epoch and batch)."""


class DivergenceGuard(Callback):
    """Stop the run at the first mini-batch whose loss is NaN or ±∞.

    The Trainer skips the update of a batch whose loss (or scores) is not
    finite, so the weights are those before that batch. The guard sets
    ``trainer.stop_training`` and ``trainer.stop_reason`` to a message such as
    "training diverged: loss nan at epoch 3, batch 17 of 40 ...", keeps it in
    ``self.message``, and with ``raise_error=True`` raises ``DivergenceError``
    (a ``ValueError``) instead of returning normally from ``fit``. Keras's
    ``TerminateOnNaN`` stops without saying where; ``TerminateOnNaN`` here is
    this class.

    Args:
        raise_error: raise ``DivergenceError`` rather than stop quietly (default False).
    """

    def __init__(self, raise_error: bool = False) -> None:
        self.raise_error = raise_error
        self.message: str | None = None

    def on_train_begin(self, trainer: Any, logs: dict[str, Any]) -> None:
        self.message = None

    def on_batch_end(self, trainer: Any, logs: dict[str, Any]) -> None:
        value = float(logs["loss"])
        if math.isfinite(value):
            return
        self.message = (
            f"training diverged: loss {value} at epoch {logs['epoch']}, batch {logs['batch']} "
            f"of {logs['steps_per_epoch']} (counting from 1); lower the learning rate, clip "
            "gradients or check the data for NaN/inf"
        )
        trainer.stop_training = True
        trainer.stop_reason = self.message
        if self.raise_error:
            raise DivergenceError(self.message)


TerminateOnNaN = DivergenceGuard
