"""Early stopping: stop when the validation metric stops improving, keep the best weights."""

from __future__ import annotations

from typing import Any

from ermlab.training.callbacks.base import Callback, improved, monitored, resolve_mode


class EarlyStopping(Callback):
    """Stop after ``patience`` epochs without improvement; restore the best epoch's weights.

    An epoch improves when its ``monitor`` value beats the best so far by more
    than ``min_delta`` (``best − v > min_delta`` for mode "min",
    ``v − best > min_delta`` for "max"). After ``patience`` epochs in a row
    without improvement the run stops. ``patience`` is the look-ahead of
    Bengio (2012): how many epochs past the best one to keep training before
    concluding it was the best (Prechelt 1998 compares such stopping criteria).

    The weights of the best epoch are restored when training ends, however it
    ends (stopped early or at the last epoch): early stopping as
    regularization picks the best θ seen, not the last one (Keras restores only
    with ``restore_best_weights=True``, and TF 2.x's Keras only when the callback
    itself stopped the run).

    Training that continues — a later ``fit`` of the same trainer, or a run
    resumed from ``trainer.save``'s checkpoint — continues from the last
    epoch's weights, the ones its optimizer state, epoch and shuffling belong
    to: the callback keeps them (``last_state``, saved in its checkpoint
    state) while the model holds the best ones, and puts them back before
    the next epoch. Two ``fit`` calls or a save and a resume then train exactly
    as one uninterrupted run (Keras would go on from the restored weights with
    the last epoch's optimizer state, a state no run passed through).

    Args:
        monitor: a key of the epoch logs (default "val_loss").
        mode: "min", "max" or "auto" (default): "max" for a monitor ending in
            "accuracy", else "min" (as Keras's "auto").
        patience: epochs without improvement before stopping, ≥ 0 (default 10).
        min_delta: the smallest change that counts as improvement, ≥ 0 (default 0).

    References:
        Y. Bengio. Practical recommendations for gradient-based training of deep
        architectures. In Neural Networks: Tricks of the Trade, 2nd ed., 2012.
        L. Prechelt. Early stopping — but when? In Neural Networks: Tricks of the Trade, 1998.
    """

    def __init__(self, monitor: str = "val_loss", mode: str = "auto", patience: int = 10,
                 min_delta: float = 0.0) -> None:
        mode = resolve_mode("EarlyStopping", mode, monitor)
        if int(patience) != patience or patience < 0:
            raise ValueError(f"EarlyStopping patience must be an integer ≥ 0; got {patience}")
        if not min_delta >= 0:
            raise ValueError(f"EarlyStopping min_delta must be ≥ 0; got {min_delta}")
        self.monitor, self.mode = monitor, mode
        self.patience, self.min_delta = int(patience), float(min_delta)
        self.last_state: dict[str, Any] | None = None  # the last epoch's θ, while the best is in
        self._reset()

    def _reset(self) -> None:
        self.best: float | None = None
        self.best_epoch = 0
        self.best_state: dict[str, Any] | None = None
        self.wait = 0
        self.stopped_epoch = 0

    def on_train_begin(self, trainer: Any, logs: dict[str, Any]) -> None:
        self._reset()

    def on_epoch_begin(self, trainer: Any, logs: dict[str, Any]) -> None:
        if self.last_state is not None:  # training goes on from where it was, not from the best
            trainer.model.load_state_dict(self.last_state)
            self.last_state = None

    def on_epoch_end(self, trainer: Any, logs: dict[str, Any]) -> None:
        value = monitored(self, logs, self.monitor)
        if improved(value, self.best, self.mode, self.min_delta):
            self.best, self.best_epoch, self.wait = value, int(logs["epoch"]), 0
            self.best_state = trainer.model.state_dict()
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = int(logs["epoch"])
            trainer.stop_training = True
            best = ("no finite value yet" if self.best is None
                    else f"best {self.best:.6g} at epoch {self.best_epoch}")
            trainer.stop_reason = (
                f"early stopping: {self.monitor} did not improve for {self.patience} epochs; "
                f"{best}"
            )

    def on_train_end(self, trainer: Any, logs: dict[str, Any]) -> None:
        # last_state is still held when no epoch ran since it was kept (fit(epochs=0))
        if (self.best_state is None or self.last_state is not None
                or self.best_epoch == trainer.epoch):
            return
        self.last_state = trainer.model.state_dict()
        trainer.model.load_state_dict(self.best_state)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait,
                "stopped_epoch": self.stopped_epoch, "best_state": self.best_state,
                "last_state": self.last_state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch = state["best"], state["best_epoch"]
        self.wait, self.stopped_epoch = state["wait"], state["stopped_epoch"]
        self.best_state = state["best_state"]
        self.last_state = state.get("last_state")  # absent from checkpoints before it
