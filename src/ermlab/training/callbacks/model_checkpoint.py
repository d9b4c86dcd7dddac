"""ModelCheckpoint: save the run's state to a directory — the best epoch, and/or every k epochs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ermlab.training.callbacks.base import Callback, improved, monitored, resolve_mode
from ermlab.training.checkpoint import save_checkpoint


class ModelCheckpoint(Callback):
    """Write full checkpoints (``ermlab.training.checkpoint``) into ``directory``.

    Files, each written atomically (a failed write leaves the previous one intact):

    * ``best.safetensors`` — when ``save_best`` and ``monitor`` improved by more
      than ``min_delta`` (same rule as ``EarlyStopping``); only then is it written;
    * ``epoch-0007.safetensors`` — every ``every`` epochs (``every=1``: each epoch);
    * ``last.safetensors`` — after every epoch when ``save_last``: the file to
      resume an interrupted run from.

    It runs after the other callbacks (``order = 100``), so the saved state
    includes this epoch's early-stopping and schedule updates.

    Args:
        directory: where to write (created if needed).
        monitor, mode, min_delta: what "best" means (default "val_loss", "auto", 0; "auto":
            "max" for a monitor ending in "accuracy", else "min").
        save_best: keep ``best.safetensors`` (default True).
        every: also keep one file per ``every`` epochs; None (default) for none.
        save_last: keep ``last.safetensors`` (default True).
        extra: a JSON-able dict stored in every file (e.g. the run's config).
    """

    order = 100

    def __init__(self, directory: str | Path, monitor: str = "val_loss", mode: str = "auto",
                 save_best: bool = True, every: int | None = None, save_last: bool = True,
                 min_delta: float = 0.0, extra: dict[str, Any] | None = None) -> None:
        mode = resolve_mode("ModelCheckpoint", mode, monitor)
        if every is not None and (int(every) != every or every < 1):
            raise ValueError(f"ModelCheckpoint every must be an integer ≥ 1 or None; got {every}")
        self.directory = Path(directory)
        self.monitor, self.mode, self.min_delta = monitor, mode, float(min_delta)
        self.save_best, self.every, self.save_last = save_best, every, save_last
        self.extra = extra
        self.best: float | None = None
        self.best_epoch = 0

    @property
    def best_path(self) -> Path:
        return self.directory / "best.safetensors"

    @property
    def last_path(self) -> Path:
        return self.directory / "last.safetensors"

    def epoch_path(self, epoch: int) -> Path:
        return self.directory / f"epoch-{epoch:04d}.safetensors"

    def on_epoch_end(self, trainer: Any, logs: dict[str, Any]) -> None:
        epoch = int(logs["epoch"])
        if self.save_best:
            value = monitored(self, logs, self.monitor)
            if improved(value, self.best, self.mode, self.min_delta):
                self.best, self.best_epoch = value, epoch
                save_checkpoint(self.best_path, trainer, extra=self.extra)
        if self.every is not None and epoch % self.every == 0:
            save_checkpoint(self.epoch_path(epoch), trainer, extra=self.extra)
        if self.save_last:
            save_checkpoint(self.last_path, trainer, extra=self.extra)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch = state["best"], state["best_epoch"]
