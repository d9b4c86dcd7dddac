"""ProgressBar: one tqdm bar per epoch — epoch i/N, running loss, validation metrics, rate, ETA."""

from __future__ import annotations

import sys
from typing import IO, Any

from ermlab.training.callbacks.base import Callback

HIDDEN = ("epoch", "time")


class ProgressBar(Callback):
    """A tqdm bar per epoch: "epoch 3/20 ██▌ 17/40 [00:01<00:01, 25.3batch/s, loss=0.4127]".

    During the epoch the postfix shows the running (size-weighted) mean of the
    training loss; at its end the epoch's logs (loss, lr, validation metrics).
    tqdm supplies the rate and the ETA. Silent when ``file`` is not a terminal
    (logs, pipes, CI), unless ``force=True``.

    Args:
        force: draw even when ``file`` is not a terminal (default False).
        file: where to draw (default ``sys.stdout`` at the start of training).
        mininterval: least seconds between redraws (tqdm's; default 0.1).
    """

    def __init__(self, force: bool = False, file: IO[str] | None = None,
                 mininterval: float = 0.1) -> None:
        self.force, self.file, self.mininterval = force, file, mininterval
        self._bar: Any = None

    def on_train_begin(self, trainer: Any, logs: dict[str, Any]) -> None:
        self._out = self.file if self.file is not None else sys.stdout
        self._enabled = self.force or _is_terminal(self._out)
        self._final_epoch = logs["initial_epoch"] + logs["epochs"]
        self._steps = logs["steps_per_epoch"]

    def on_epoch_begin(self, trainer: Any, logs: dict[str, Any]) -> None:
        if not self._enabled:
            return
        from tqdm import tqdm

        self._bar = tqdm(total=self._steps, desc=f"epoch {logs['epoch']}/{self._final_epoch}",
                         unit="batch", file=self._out, leave=True, mininterval=self.mininterval)
        self._total = self._count = 0.0

    def on_batch_end(self, trainer: Any, logs: dict[str, Any]) -> None:
        if self._bar is None:
            return
        self._total += logs["loss"] * logs["size"]
        self._count += logs["size"]
        self._bar.set_postfix_str(f"loss={self._total / self._count:.4f}", refresh=False)
        self._bar.update(1)

    def on_epoch_end(self, trainer: Any, logs: dict[str, Any]) -> None:
        if self._bar is None:
            return
        self._bar.set_postfix_str(", ".join(
            f"{key}={value:.4g}" for key, value in logs.items() if key not in HIDDEN
        ), refresh=False)
        self._close()

    def on_train_end(self, trainer: Any, logs: dict[str, Any]) -> None:
        self._close()

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _is_terminal(file: Any) -> bool:
    isatty = getattr(file, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed file
        return False
