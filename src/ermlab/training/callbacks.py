"""Callbacks observe and steer the Trainer (Keras's and Chainer's extensions)."""

from __future__ import annotations

from typing import Any


class Callback:
    """Base class: override the events you need. ``trainer.stop_training = True`` stops."""

    def on_train_begin(self, trainer: Any, logs: dict[str, Any]) -> None:
        pass

    def on_epoch_end(self, trainer: Any, logs: dict[str, Any]) -> None:
        pass

    def on_train_end(self, trainer: Any, logs: dict[str, Any]) -> None:
        pass


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs,
    then restore the weights of the best epoch (early stopping as regularization)."""

    def __init__(
        self, monitor: str = "val_loss", mode: str = "min", patience: int = 10,
        min_delta: float = 0.0,
    ) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"EarlyStopping mode must be 'min' or 'max'; got {mode!r}")
        if patience < 0 or min_delta < 0:
            raise ValueError("EarlyStopping needs patience ≥ 0 and min_delta ≥ 0")
        self.monitor, self.mode, self.patience, self.min_delta = monitor, mode, patience, min_delta

    def on_train_begin(self, trainer: Any, logs: dict[str, Any]) -> None:
        self.best, self.best_epoch, self.best_state, self.wait = None, 0, None, 0

    def on_epoch_end(self, trainer: Any, logs: dict[str, Any]) -> None:
        if self.monitor not in logs:
            raise ValueError(
                f"EarlyStopping monitors {self.monitor!r}, which the run does not log "
                f"(logged: {sorted(logs)}); pass validation_data or change monitor"
            )
        value = logs[self.monitor]
        sign = 1 if self.mode == "min" else -1
        if self.best is None or sign * (self.best - value) > self.min_delta:
            self.best, self.best_epoch, self.wait = value, logs["epoch"], 0
            self.best_state = trainer.model.state_dict()
        else:
            self.wait += 1
            if self.wait >= self.patience:
                trainer.stop_training = True

    def on_train_end(self, trainer: Any, logs: dict[str, Any]) -> None:
        if self.best_state is not None:
            trainer.model.load_state_dict(self.best_state)
