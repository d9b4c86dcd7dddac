"""History loggers: the epoch logs as a CSV table (a row per epoch) or a JSON document."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from ermlab.training.callbacks.base import Callback
from ermlab.training.checkpoint import atomic_write_bytes


class CSVLogger(Callback):
    """Append one row per epoch to a CSV file; the columns are the first epoch's log keys.

    Rows are flushed as they are written, so the file is readable during the
    run. ``append=True`` continues an existing file (a resumed run) with its
    header; otherwise the file is started afresh when training begins. When
    appending, rows of epochs after the trainer's (written by a run that
    crashed before its checkpoint) and a half-written last line are dropped
    first, so each epoch appears once.
    Non-finite values are written as ``nan``/``inf`` (Python's float spelling).

    Args:
        path: the CSV file.
        append: continue an existing file (default False).
    """

    def __init__(self, path: str | Path, append: bool = False) -> None:
        self.path, self.append = Path(path), append
        self._file: Any = None
        self._writer: Any = None

    def on_train_begin(self, trainer: Any, logs: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fields = None
        if self.append and self.path.is_file() and self.path.stat().st_size > 0:
            fields = self._keep_epochs_up_to(int(getattr(trainer, "epoch", 0)))
        self._file = self.path.open("a" if fields else "w", newline="")
        self._writer = None if not fields else self._dict_writer(fields)

    def _keep_epochs_up_to(self, epoch: int) -> list[str] | None:
        """Rewrite the file without rows past ``epoch`` or torn rows; return its header."""
        text = self.path.read_text()
        lines = text.splitlines(keepends=True)
        if lines and not lines[-1].endswith("\n"):
            lines.pop()  # the writer died in the middle of this line
        rows = list(csv.reader(lines))
        if not rows:
            return None
        fields, column = rows[0], rows[0].index("epoch") if "epoch" in rows[0] else None
        kept = [lines[0]]
        for line, row in zip(lines[1:], rows[1:]):
            if len(row) == len(fields) and (column is None or _int(row[column]) <= epoch):
                kept.append(line)
        if len(kept) != len(lines) or "".join(kept) != text:
            atomic_write_bytes(self.path, "".join(kept).encode(), durable=False)
        return fields

    def _dict_writer(self, fields: list[str]) -> csv.DictWriter:
        return csv.DictWriter(self._file, fieldnames=fields, extrasaction="ignore", restval="")

    def on_epoch_end(self, trainer: Any, logs: dict[str, Any]) -> None:
        if self._writer is None:
            self._writer = self._dict_writer(list(logs))
            self._writer.writeheader()
        self._writer.writerow(logs)
        self._file.flush()

    def on_train_end(self, trainer: Any, logs: dict[str, Any]) -> None:
        if self._file is not None:
            self._file.close()
            self._file = self._writer = None


class JSONLogger(Callback):
    """Rewrite ``{"history": {key: [value per epoch]}, "stop_reason": ...}`` after each epoch.

    The whole history (including epochs restored from a checkpoint) is written
    atomically, so the file is always a complete JSON document. NaN and ±∞
    are written as ``null`` (strict JSON has no spelling for them).

    Args:
        path: the JSON file.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def on_epoch_end(self, trainer: Any, logs: dict[str, Any]) -> None:
        self._write(trainer)

    def on_train_end(self, trainer: Any, logs: dict[str, Any]) -> None:
        self._write(trainer)

    def _write(self, trainer: Any) -> None:
        history = {key: [_finite_or_none(v) for v in values]
                   for key, values in trainer.history.items()}
        document = {"history": history, "stop_reason": getattr(trainer, "stop_reason", None)}
        text = json.dumps(document, indent=1, allow_nan=False)
        atomic_write_bytes(self.path, text.encode(), durable=False)


def _int(text: str) -> float:
    try:
        return int(text)
    except ValueError:
        return math.inf  # not an epoch number: not kept


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
