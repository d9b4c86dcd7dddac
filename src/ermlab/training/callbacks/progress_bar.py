"""ProgressBar: a tqdm bar per epoch (epoch i/N, running loss, rate, ETA), then a summary line."""

from __future__ import annotations

import os
import shutil
import sys
from typing import IO, Any

from ermlab.training.callbacks.base import Callback

HIDDEN = ("epoch", "time")
MIN_BAR_WIDTH = 40


def epoch_summary(logs: dict[str, Any], epochs: int | None = None) -> str:
    """One plain line with every metric of an epoch's logs: "epoch   3/20  loss 0.4127  ..."."""
    epoch = f"{logs['epoch']:3d}" + (f"/{epochs}" if epochs else "")
    parts = [f"epoch {epoch}"]
    parts += [f"{key} {value:.4g}" if key == "lr" else f"{key} {value:.4f}"
              for key, value in logs.items() if key not in HIDDEN]
    return "  ".join(parts)


def terminal_width(file: Any) -> int:
    """Columns of the terminal ``file`` draws on: the terminal's own size, else ``$COLUMNS``.

    0 when neither says (e.g. ``COLUMNS=0`` and no terminal).
    """
    try:
        return os.get_terminal_size(file.fileno()).columns
    except (AttributeError, ValueError, OSError):
        return shutil.get_terminal_size((0, 0)).columns


class ProgressBar(Callback):
    """A tqdm bar per epoch: "epoch 3/20 ██▌ 17/40 [00:01<00:01, 25.3batch/s, loss=0.4127]".

    During the epoch the postfix shows the running (size-weighted) mean of the
    training loss; tqdm supplies the rate and the ETA. When the epoch ends the
    bar is closed and one plain line gives all its metrics (``epoch_summary``),
    so they stay readable at any terminal width; the bar itself is drawn to the
    terminal's width, and left out (summary lines only) on a terminal narrower
    than ``MIN_BAR_WIDTH`` columns or of unknown width (0). Silent when ``file``
    is not a terminal (logs, pipes, CI), unless ``force=True``.

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
        self._width = terminal_width(self._out)

    def on_epoch_begin(self, trainer: Any, logs: dict[str, Any]) -> None:
        # A forced bar into a file (not a terminal) has no width to respect.
        unbounded = self._width == 0 and not _is_terminal(self._out)
        if not self._enabled or (self._width < MIN_BAR_WIDTH and not unbounded):
            return
        from tqdm import tqdm

        self._bar = tqdm(total=self._steps, desc=f"epoch {logs['epoch']}/{self._final_epoch}",
                         unit="batch", file=self._out, leave=False, mininterval=self.mininterval,
                         ncols=None if unbounded else self._width - 1, dynamic_ncols=False)
        self._total = self._count = 0.0

    def on_batch_end(self, trainer: Any, logs: dict[str, Any]) -> None:
        if self._bar is None:
            return
        self._total += logs["loss"] * logs["size"]
        self._count += logs["size"]
        if self._count:  # DP-SGD's Poisson batches may be empty
            self._bar.set_postfix_str(f"loss={self._total / self._count:.4f}", refresh=False)
        self._bar.update(1)

    def on_epoch_end(self, trainer: Any, logs: dict[str, Any]) -> None:
        if not self._enabled:
            return
        self._close()
        print(epoch_summary(logs, self._final_epoch), file=self._out, flush=True)

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
