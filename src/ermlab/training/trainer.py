"""The Trainer: empirical risk minimization, one mini-batch at a time.

One training step is the seed algorithm, five lines:

    scores = model.forward(x)
    value  = loss.forward(scores, y) + regularizer.penalty(params)
    model.zero_grad()
    model.backward(loss.backward(), input_grad=False)
    regularizer.add_gradient(params); optimizer.step()

Everything optional (early stopping, logging, schedules) is a callback.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy

from ermlab.backend import as_generator, to_numpy
from ermlab.data.loader import batches
from ermlab.training.callbacks import Callback
from ermlab.training.metrics import accuracy


class Trainer:
    """Fits ``model`` by minimizing ``loss`` (+ ``regularizer``) with ``optimizer``.

    Args:
        model: an ``ermlab.nn.Module`` producing scores.
        loss: a loss with ``forward(scores, y, sample_weight)`` / ``backward()``.
        optimizer: an ``ermlab.optim.Optimizer`` over ``model.parameters()``.
        regularizer: optional penalty λΩ(θ) with ``penalty`` / ``add_gradient``.
        callbacks: ``Callback`` objects observing and steering the run.
    """

    def __init__(
        self,
        model: Any,
        loss: Any,
        optimizer: Any,
        regularizer: Any = None,
        callbacks: Sequence[Callback] = (),
    ) -> None:
        self.model, self.loss, self.optimizer = model, loss, optimizer
        self.regularizer = regularizer
        self.callbacks = list(callbacks)
        self.params = model.parameters()
        self.history: dict[str, list[float]] = {}
        self.stop_training = False
        self.epoch = 0

    def train_step(self, x: Any, y: Any, sample_weight: Any = None) -> float:
        """One update on one mini-batch; returns the regularized loss value."""
        self.model.train()
        value = self.loss.forward(self.model.forward(x), y, sample_weight=sample_weight)
        if self.regularizer is not None:
            value += self.regularizer.penalty(self.params)
        self.optimizer.zero_grad()
        self.model.backward(self.loss.backward(), input_grad=False)
        if self.regularizer is not None:
            self.regularizer.add_gradient(self.params)
        self.optimizer.step()
        return value

    def fit(
        self,
        x: Any,
        y: Any,
        epochs: int = 10,
        batch_size: int | None = 32,
        validation_data: tuple[Any, Any] | None = None,
        sample_weight: Any = None,
        rng: Any = None,
    ) -> dict[str, list[float]]:
        """Train for up to ``epochs`` epochs; returns the per-epoch history."""
        if len(x) != len(y):
            raise ValueError(f"x and y have different lengths: {len(x)} and {len(y)}")
        rng = as_generator(rng)
        self.stop_training = False
        self._notify("on_train_begin")
        for _ in range(epochs):
            total, count = 0.0, 0
            for index in batches(len(x), batch_size, shuffle=True, rng=rng):
                weight = None if sample_weight is None else sample_weight[index]
                total += self.train_step(x[index], y[index], weight) * len(index)
                count += len(index)
            self.epoch += 1
            logs = {"epoch": self.epoch, "loss": total / count}
            if validation_data is not None:
                logs.update({f"val_{k}": v for k, v in self.evaluate(*validation_data).items()})
            for key, value in logs.items():
                self.history.setdefault(key, []).append(value)
            self._notify("on_epoch_end", logs)
            if self.stop_training:
                break
        self._notify("on_train_end")
        return self.history

    def predict_scores(self, x: Any, batch_size: int = 1024) -> Any:
        """Model outputs in evaluation mode, in batches."""
        self.model.eval()
        xp_parts = [self.model.forward(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
        self.model.train()
        return numpy.concatenate([to_numpy(part) for part in xp_parts])

    def predict(self, x: Any, batch_size: int = 1024) -> numpy.ndarray:
        """Predicted class labels (argmax of the scores)."""
        return self.predict_scores(x, batch_size).argmax(axis=1)

    def evaluate(self, x: Any, y: Any, batch_size: int = 1024) -> dict[str, float]:
        """Loss (unregularized) and accuracy on (x, y)."""
        scores = self.predict_scores(x, batch_size)
        value = self.loss.forward(scores, to_numpy(y))
        return {"loss": float(value), "accuracy": accuracy(to_numpy(y), scores.argmax(axis=1))}

    def _notify(self, event: str, logs: dict[str, Any] | None = None) -> None:
        for callback in self.callbacks:
            getattr(callback, event)(self, logs or {})
