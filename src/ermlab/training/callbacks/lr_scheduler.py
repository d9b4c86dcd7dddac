"""Learning-rate schedules in a run: step a scheduler per update or per epoch, or on a plateau."""

from __future__ import annotations

from typing import Any

from ermlab.training.callbacks.base import Callback, monitored, resolve_mode

INTERVALS = ("update", "epoch")


class LearningRateScheduler(Callback):
    """Call ``scheduler.step()`` after every update or after every epoch.

    ``scheduler`` is an ``ermlab.optim.schedules`` object (torch.optim.lr_scheduler's
    interface: ``step()``, ``get_last_lr()``, ``state_dict()``) built on the
    trainer's optimizer. With ``interval="update"`` the t of α_t counts
    mini-batch updates (warmup, 1/t decay as in Bottou 2012); with ``"epoch"``
    it counts epochs (torch's usual ``for epoch: train(); scheduler.step()``).
    Update t uses α_t: the scheduler set α₀ when built, and each ``step()``
    after an update (or epoch) sets the rate for the next one. A param group
    added to the optimizer between two ``fit`` calls (unfreezing layers) is
    scheduled by the chainable forms and refused with a ValueError by those that
    need its initial rate, as in torch (``ermlab.optim.schedules``): build the
    scheduler after adding every group.

    Args:
        scheduler: the schedule object.
        interval: "update" or "epoch" (default "epoch").
    """

    def __init__(self, scheduler: Any, interval: str = "epoch") -> None:
        if interval not in INTERVALS:
            raise ValueError(f"LearningRateScheduler interval must be one of {INTERVALS}; "
                             f"got {interval!r}")
        self.scheduler, self.interval = scheduler, interval

    def on_train_begin(self, trainer: Any, logs: dict[str, Any]) -> None:
        if getattr(self.scheduler, "optimizer", trainer.optimizer) is not trainer.optimizer:
            raise ValueError("LearningRateScheduler's scheduler was built on another optimizer; "
                             "build it on the trainer's optimizer")

    def on_batch_end(self, trainer: Any, logs: dict[str, Any]) -> None:
        if self.interval == "update":
            self.scheduler.step()

    def on_epoch_end(self, trainer: Any, logs: dict[str, Any]) -> None:
        if self.interval == "epoch":
            self.scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        return {"scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scheduler.load_state_dict(state["scheduler"])


class ReduceLROnPlateau(Callback):
    """Multiply the learning rate by ``factor`` when ``monitor`` stops improving.

    A thin callback over ``ermlab.optim.schedules.ReduceLROnPlateau`` (torch's
    rule: after more than ``patience`` epochs without a relative improvement of
    ``threshold``, α ← max(factor · α, min_lr), then ``cooldown`` epochs of
    rest), fed ``logs[monitor]`` at the end of every epoch. Keras's callback
    of the same name counts patience the same way but its ``min_delta`` is
    absolute by default (here ``threshold_mode="rel"``, as in torch). The
    scheduler is kept across ``fit`` calls of one trainer, so a param group
    added in between is reduced too (a single ``min_lr`` extends to it).

    Args:
        monitor: a key of the epoch logs (default "val_loss").
        **options: ``mode``, ``factor``, ``patience``, ``threshold``,
            ``threshold_mode``, ``cooldown``, ``min_lr``, ``eps`` of the scheduler;
            ``mode`` may also be "auto" (the default here, as in Keras; torch's
            scheduler defaults to "min"): "max" for a monitor ending in "accuracy",
            else "min".
    """

    def __init__(self, monitor: str = "val_loss", **options: Any) -> None:
        options["mode"] = resolve_mode("ReduceLROnPlateau", options.get("mode", "auto"), monitor)
        self.monitor, self.options = monitor, options
        self.scheduler: Any = None
        self._pending: dict[str, Any] | None = None  # a state loaded before the first fit

    def on_train_begin(self, trainer: Any, logs: dict[str, Any]) -> None:
        # Kept across fit() calls of one trainer; rebuilt for another optimizer.
        if self.scheduler is None or self.scheduler.optimizer is not trainer.optimizer:
            from ermlab.optim.schedules import ReduceLROnPlateau as Schedule

            self.scheduler = Schedule(trainer.optimizer, **self.options)
        if self._pending is not None:
            self.scheduler.load_state_dict(self._pending)
            self._pending = None

    def on_epoch_end(self, trainer: Any, logs: dict[str, Any]) -> None:
        self.scheduler.step(monitored(self, logs, self.monitor))

    def state_dict(self) -> dict[str, Any]:
        return {} if self.scheduler is None else {"scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the scheduler; before the first ``fit`` (no scheduler yet) the state is
        kept and applied when ``fit`` builds it."""
        if "scheduler" not in state:
            return
        if self.scheduler is None:
            self._pending = state["scheduler"]
        else:
            self.scheduler.load_state_dict(state["scheduler"])
