"""The Callback interface: events of a run, and state that a checkpoint saves.

The Trainer calls, in this order (Keras's names; Chainer calls them extensions):

    on_train_begin(trainer, {"epochs", "initial_epoch", "steps_per_epoch"})
      on_epoch_begin(trainer, {"epoch"})
        on_batch_end(trainer, {"epoch", "batch", "loss", "size", "steps_per_epoch"})  per update
      on_epoch_end(trainer, logs)    logs = {"epoch", "loss", "lr", "time", "val_..."}
    on_train_end(trainer, {"epoch"})

Epochs and batches count from 1. A callback steers the run through the
trainer: ``trainer.stop_training = True`` stops it after the current batch,
``trainer.stop_reason`` says why. Callbacks run in ascending ``order`` (then
in the order given); writers that must see every other callback's state
(``ModelCheckpoint``) have a higher order.
"""

from __future__ import annotations

from typing import Any


class Callback:
    """Base class: override the events you need; ``state_dict`` for what must survive a resume."""

    order = 0

    def on_train_begin(self, trainer: Any, logs: dict[str, Any]) -> None:
        pass

    def on_epoch_begin(self, trainer: Any, logs: dict[str, Any]) -> None:
        pass

    def on_batch_end(self, trainer: Any, logs: dict[str, Any]) -> None:
        pass

    def on_epoch_end(self, trainer: Any, logs: dict[str, Any]) -> None:
        pass

    def on_train_end(self, trainer: Any, logs: dict[str, Any]) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        """The state to save in a checkpoint (arrays, numbers, strings, lists, dicts)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned (called after ``on_train_begin``)."""


def monitored(callback: Callback, logs: dict[str, Any], monitor: str) -> float:
    """``logs[monitor]`` as a float, or a ValueError naming what is logged."""
    if monitor not in logs:
        raise ValueError(
            f"{type(callback).__name__} monitors {monitor!r}, which the run does not log "
            f"(logged: {sorted(logs)}); pass validation_data to fit or change monitor"
        )
    return float(logs[monitor])


def resolve_mode(owner: str, mode: str, monitor: str) -> str:
    """"min" or "max" for ``mode``; "auto" is "max" for a monitor ending in "accuracy"
    (accuracy, val_accuracy, val_top_5_accuracy) and "min" for anything else (a loss), as
    Keras's "auto" reads the name."""
    if mode == "auto":
        return "max" if str(monitor).endswith("accuracy") else "min"
    if mode not in ("min", "max"):
        raise ValueError(f"{owner} mode must be 'min' (a loss), 'max' (an accuracy) or 'auto' "
                         f"(from the monitor's name); got {mode!r}")
    return mode


def improved(value: float, best: float | None, mode: str, min_delta: float) -> bool:
    """Whether ``value`` beats ``best`` by more than ``min_delta`` (NaN never improves)."""
    if value != value:
        return False
    if best is None:
        return True
    return (best - value if mode == "min" else value - best) > min_delta


EVENTS = ("on_train_begin", "on_epoch_begin", "on_batch_end", "on_epoch_end", "on_train_end")


def check_callbacks(callbacks: Any, owner: str) -> list[Callback]:
    """``callbacks`` as a list, after checking that it is a sequence of callbacks: ``Callback``
    instances or objects with at least one event method (``on_epoch_end``, ...).

    Raises a ``TypeError`` naming ``owner`` (where the callbacks were given) for anything
    else: a lone callback, a string, a number in the list.
    """
    if isinstance(callbacks, (Callback, str, bytes)) or not hasattr(callbacks, "__iter__"):
        raise TypeError(f"{owner} must be a list of callbacks; got {callbacks!r}. Wrap a "
                        "single callback in a list: [callback]")
    callbacks = list(callbacks)
    for i, callback in enumerate(callbacks):
        if isinstance(callback, type):
            raise TypeError(f"{owner}[{i}] is the class {callback.__name__}, not a callback; "
                            f"pass an instance: {callback.__name__}(...)")
        if not (isinstance(callback, Callback)
                or any(callable(getattr(callback, event, None)) for event in EVENTS)):
            raise TypeError(
                f"{owner}[{i}] is not a callback: got {callback!r} ({type(callback).__name__}). "
                f"A callback subclasses ermlab.training.Callback or has at least one of the "
                f"methods {', '.join(EVENTS)}")
    return callbacks
