"""The Trainer: empirical risk minimization, one mini-batch at a time.

One training step is the seed algorithm, five lines:

    scores = model.forward(x)
    value  = loss.forward(scores, y, sample_weight) + regularizer.penalty(params)
    model.zero_grad()
    model.backward(loss.backward(), input_grad=False)
    regularizer.add_gradient(params); optimizer.step(); regularizer.apply(params)

``fit`` repeats it over shuffled mini-batches, epoch after epoch, and records
a per-epoch history. Everything optional — early stopping, schedules,
checkpoints, progress, logging, the divergence guard — is a callback
(``ermlab.training.callbacks``).

The Trainer owns the generator it shuffles with (``trainer.rng``), so a
checkpoint saves its state and a resumed run draws the same batches:

    trainer.fit(x, y, epochs=2); trainer.save("run/ckpt.safetensors")
    fresh = Trainer(model, loss, optimizer, callbacks=...)
    fresh.fit(x, y, epochs=2, resume_from="run/ckpt.safetensors")   # = 4 epochs in one go
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy

from ermlab.backend import array_module, as_generator, on_device_of, to_numpy
from ermlab.data.loader import batches
from ermlab.losses import (
    LabelError,
    MulticlassHinge,
    NegativeLogLikelihood,
    OneVsAllHinge,
    SoftmaxCrossEntropy,
    check_labels,
)
from ermlab.training import metrics
from ermlab.training.callbacks.base import Callback, check_callbacks

# losses whose targets are class indices: whole-number float labels are taken as integers
INDEX_LOSSES = (SoftmaxCrossEntropy, NegativeLogLikelihood, MulticlassHinge, OneVsAllHinge)


class Trainer:
    """Fits ``model`` by minimizing ``loss`` (+ ``regularizer``) with ``optimizer``.

    Args:
        model: an ``ermlab.nn.Module`` producing scores.
        loss: a loss with ``forward(scores, y, sample_weight)`` / ``backward()``.
        optimizer: an ``ermlab.optim.Optimizer`` over ``model.parameters()``.
        regularizer: optional penalty λΩ(θ) with ``penalty`` / ``add_gradient`` / ``apply``.
        callbacks: ``Callback`` objects observing and steering the run.
        rng: the generator that shuffles the batches (a Generator or a seed);
            default: one seeded from ``ermlab.backend``'s module-wide generator.
            ``fit(rng=...)`` replaces it.
        top_k: k values for which ``evaluate`` (and validation) also report
            ``top_{k}_accuracy``, e.g. ``(5,)``. Default none.
        augment: data augmentation ``augment(x_batch, rng) -> x_batch`` applied to
            every training batch (``ermlab.data.transforms``); it draws from the
            trainer's generator, so a resumed run augments identically.
        strategy: a distributed strategy (``ermlab.distributed``: ``SyncDataParallel``,
            ``Downpour``, ``EASGD``) that takes the place of the single-process update
            in ``train_step``, or (``Hogwild``: worker processes over shared memory) of
            the whole epoch's batch loop; callbacks, history, validation and checkpoints
            (which then also hold the strategy's state) stay the same. Default: none.
        adversary: adversarial training (Madry et al. 2018), min_θ E max_{‖δ‖≤ε} L(f(x+δ), y):
            an attack (``ermlab.robustness.PGD``, ``FGSM``) that replaces every training
            batch by ``adversary(model, x, y, rng=trainer.rng, loss=loss)`` before the step
            (after ``augment``); the running accuracy is then the adversarial one.
        privacy: differentially private training (``ermlab.privacy.DPSGD``): Poisson-
            sampled batches, clipped per-example gradients plus noise in place of the
            update, (ε, δ) in the epoch logs, a stop at a target ε. Default: none.

    Attributes:
        history: ``{key: [value per epoch]}`` over all ``fit`` calls (and restored runs).
        epoch, step: epochs and updates done so far.
        stop_training, stop_reason: set by callbacks to stop a run and say why.
    """

    def __init__(
        self,
        model: Any,
        loss: Any,
        optimizer: Any,
        regularizer: Any = None,
        callbacks: Sequence[Callback] = (),
        *,
        rng: Any = None,
        top_k: Sequence[int] = (),
        augment: Any = None,
        strategy: Any = None,
        adversary: Any = None,
        privacy: Any = None,
    ) -> None:
        self.model, self.loss, self.optimizer = model, loss, optimizer
        self.regularizer = regularizer
        self.callbacks = _in_order(check_callbacks(callbacks, "Trainer callbacks"))
        self.params = model.parameters()
        self.rng = (as_generator(rng) if rng is not None
                    else numpy.random.default_rng(as_generator(None).integers(2**63)))
        self.top_k = tuple(top_k)
        self.augment = augment
        if adversary is not None and strategy is not None:
            raise ValueError("adversarial training runs in the Trainer's own loop; use it "
                             "without a distributed strategy")
        self.adversary = adversary
        self.history: dict[str, list[Any]] = {}
        self.epoch = 0
        self.step = 0
        self.stop_training = False
        self.stop_reason: str | None = None
        self.pending_callback_states: dict[str, Any] = {}
        self.last_scores: Any = None
        self._rate: Any = None  # the learning rate of the epoch's last update
        self._unchecked_labels: list[tuple[str, Any]] = []  # checked against the first scores
        self._modules: list[Any] | None = None  # the model's modules, for _training_mode
        self.strategy = strategy
        if strategy is not None:
            strategy.bind(self)
        self.privacy = privacy
        if privacy is not None:
            privacy.bind(self)

    # -- one update ---------------------------------------------------------------

    def train_step(self, x: Any, y: Any, sample_weight: Any = None) -> float:
        """One update on one mini-batch; returns the regularized loss value.

        A batch whose scores or loss are not finite (a diverging run) makes no
        update and returns the non-finite value, for ``DivergenceGuard`` to report.
        With a ``strategy``, the strategy makes the update.
        """
        if self.strategy is not None:
            return self.strategy.train_step(self, x, y, sample_weight)
        if self.privacy is not None:
            return self.privacy.train_step(self, x, y, sample_weight)
        self._training_mode()
        scores = self.last_scores = self.model.forward(x)
        if not bool(array_module(scores).isfinite(scores).all()):
            return math.nan
        value = self.loss.forward(scores, y, sample_weight=sample_weight)
        if self.regularizer is not None:
            value += self.regularizer.penalty(self.params)
        if not math.isfinite(value):
            return value
        self.optimizer.zero_grad()
        self.model.backward(self.loss.backward(), input_grad=False)
        self.apply_update()
        return value

    def _check_class_labels(self, scores: Any) -> None:
        """Every label of the fit in [0, C), C the columns of a batch's ``scores``: once."""
        classes = scores.shape[1] if scores.ndim == 2 else 1
        labels, self._unchecked_labels = self._unchecked_labels, []
        for name, y in labels:
            try:
                check_labels(array_module(y), y, len(y), classes)
            except LabelError as error:
                raise LabelError(error.expected, error.value, error.where, name) from None

    def _training_mode(self) -> None:
        """``model.train()``, skipped while every module is in training mode already (a flag
        read per module instead of a walk of the module tree at every step)."""
        modules = self._modules
        if modules is None or not all(module.training for module in modules):
            self.model.train()
            self._modules = list(self.model.modules()) if hasattr(self.model, "modules") else None

    def apply_update(self) -> None:
        """The end of a step, once ∂L/∂θ is in the parameters' gradients: add λ∇Ω, take the
        optimizer's step, project onto the constraint (max-norm), count the update."""
        if self.regularizer is not None:
            self.regularizer.add_gradient(self.params)
        self.optimizer.step()
        if hasattr(self.regularizer, "apply"):
            self.regularizer.apply(self.params)
        self.step += 1

    # -- the loop ---------------------------------------------------------------------

    def fit(
        self,
        x: Any,
        y: Any,
        epochs: int = 10,
        batch_size: int | None = 32,
        validation_data: tuple[Any, Any] | None = None,
        sample_weight: Any = None,
        rng: Any = None,
        resume_from: str | Path | None = None,
    ) -> dict[str, list[Any]]:
        """Train for up to ``epochs`` more epochs; returns the history of all epochs so far.

        Args:
            x, y: training inputs and targets (same length), arrays (NumPy, CuPy);
                ``x`` of the model's dtype (float32 by default: lists and float64 arrays
                are refused, not converted). Labels of a loss that takes class
                indices (softmax cross-entropy, NLL, hinge) may be whole-number floats;
                they are used as integers, and accuracy is logged.
            epochs: epochs to run in this call (a resumed run continues from its epoch).
            batch_size: mini-batch size; 1 is per-example SGD, None the full batch.
            validation_data: ``(x_val, y_val)`` evaluated after every epoch (``val_*`` logs);
                checked, as ``x`` and ``y`` are, before the first update.
            sample_weight: one non-negative weight per training example; each
                batch minimizes its weighted mean loss (batches of zero total weight
                are skipped).
            rng: replaces the shuffling generator (a Generator or a seed).
            resume_from: a checkpoint (``save`` / ``ModelCheckpoint``) to continue from.

        Before any update ``x`` and ``validation_data``'s inputs are checked for NaN and
        infinite values (a pass in blocks of rows, ~1 % of an MLP's epoch). For a loss that
        takes class indices, the labels of ``y`` and ``validation_data`` are checked against
        the model's number of outputs C once the first batch has told C (a bad label in the
        first batch stops it before its update), each bad one named by its row in ``y``.
        """
        _check_arrays(x=x, y=y)
        n = _check_lengths(x, y, sample_weight)
        y = _class_indices(self.loss, y)
        if validation_data is not None:
            validation_data = _check_validation(validation_data, x, self.loss)
        _check_finite(x, "x")
        if int(epochs) != epochs or epochs < 0:
            raise ValueError(f"epochs must be an integer ≥ 0; got {epochs}")
        if batch_size is not None and (int(batch_size) != batch_size or batch_size < 1):
            raise ValueError(f"batch_size must be an integer ≥ 1 (or None for the full batch); "
                             f"got {batch_size}")
        if sample_weight is not None and not hasattr(sample_weight, "shape"):
            sample_weight = numpy.asarray(sample_weight)
        if rng is not None:
            self.rng = as_generator(rng)
        if resume_from is not None:
            self.resume(resume_from)
        self._unchecked_labels = (
            [("y", y)] + ([] if validation_data is None
                          else [("validation_data's y_val", validation_data[1])])
            if isinstance(self.loss, INDEX_LOSSES) else [])
        if self.privacy is not None:
            self.privacy.begin_fit(self, n, epochs, batch_size, sample_weight)
        self.stop_training, self.stop_reason = False, None
        self._modules = None
        self.callbacks = _in_order(check_callbacks(self.callbacks, "Trainer callbacks"))
        steps = (self.strategy.steps_per_epoch(n, batch_size) if self.strategy is not None
                 else math.ceil(n / (n if batch_size is None else min(batch_size, n))))
        self._notify("on_train_begin", {"epochs": epochs, "initial_epoch": self.epoch,
                                        "steps_per_epoch": steps})
        self._restore_callback_states()
        try:
            for _ in range(epochs):
                logs = self._train_epoch(x, y, batch_size, sample_weight, steps)
                if validation_data is not None:
                    logs.update({f"val_{k}": v
                                 for k, v in self.evaluate(*validation_data).items()})
                for key, value in logs.items():
                    self.history.setdefault(key, []).append(value)
                self._notify("on_epoch_end", logs)
                if self.stop_training:
                    break
            self._notify("on_train_end", {"epoch": self.epoch})
        finally:  # however the fit ends (an error, Ctrl-C): the strategy's workers stop
            if self.strategy is not None:
                self.strategy.end_fit(self)
        return self.history

    def _train_epoch(self, x: Any, y: Any, batch_size: int | None, sample_weight: Any,
                     steps: int) -> dict[str, Any]:
        epoch, start = self.epoch + 1, time.perf_counter()
        self._notify("on_epoch_begin", {"epoch": epoch})
        classify = to_numpy(y[:1]).dtype.kind in "iub"
        if getattr(self.strategy, "runs_epochs", False):
            total, weight, hits = self.strategy.run_epoch(self, x, y, batch_size, sample_weight,
                                                          epoch)
        else:
            total, weight, hits = self._batch_loop(x, y, batch_size, sample_weight, steps, epoch,
                                                   classify)
        self.epoch = epoch
        logs = {"epoch": epoch, "loss": total / weight if weight else math.nan}
        if classify:
            logs["accuracy"] = hits / weight if weight else math.nan
        if "lr" in getattr(self.optimizer, "param_groups", [{}])[0]:
            # the rate of the epoch's last update (a per-update schedule has set the next one)
            rate = self.optimizer.param_groups[0]["lr"] if self._rate is None else self._rate
            logs["lr"] = float(rate)
        if self.strategy is not None:
            logs.update(self.strategy.epoch_logs(self))
        if self.privacy is not None:
            logs.update(self.privacy.epoch_logs(self))
        logs["time"] = time.perf_counter() - start
        return logs

    def _batch_loop(self, x: Any, y: Any, batch_size: int | None, sample_weight: Any,
                    steps: int, epoch: int, classify: bool) -> tuple[float, float, float]:
        """The epoch's mini-batches: (Σ loss·size, Σ size, Σ hits)."""
        total = weight = hits = 0.0
        groups = getattr(self.optimizer, "param_groups", None)
        self._rate = None
        order = (self.privacy.batches(len(x), self.rng) if self.privacy is not None
                 else batches(len(x), batch_size, shuffle=True, rng=self.rng))
        device = self.params[0].data if self.params else None  # host batches go to its device
        for batch, index in enumerate(order, 1):
            w = None if sample_weight is None else sample_weight[index]
            size = float(len(index)) if w is None else float(w.sum())
            if size == 0 and self.privacy is None:  # DP-SGD steps on an empty batch too
                continue
            # numpy.take gathers rows ~15 % faster than x[index] (128 random rows of
            # Fashion-MNIST: 28 against 33 µs), the same values
            xb = numpy.take(x, index, axis=0) if type(x) is numpy.ndarray else x[index]
            if self.augment is not None and len(index):  # an empty DP batch: noise alone
                xb = self.augment(xb, self.rng)
            xb, yb, w = (on_device_of(device, a) for a in (xb, y[index], w))
            if self.adversary is not None and len(index):
                xb = self.adversary(self.model, xb, yb, rng=self.rng, loss=self.loss)
            if groups:
                self._rate = groups[0].get("lr")
            try:
                value = self.train_step(xb, yb, w)
            except LabelError as error:  # in a batch: named by its row of y
                raise LabelError(error.expected, error.value, int(index[error.where]), "y"
                                 ) from None
            if self._unchecked_labels and len(index):  # scores of rows (DP's may be empty)
                self._check_class_labels(self.last_scores)
            total, weight = total + value * size, weight + size
            if classify:
                hits += _hits(self.last_scores, yb, w)
            self._notify("on_batch_end", {"epoch": epoch, "batch": batch, "loss": value,
                                          "size": len(index), "steps_per_epoch": steps})
            if self.stop_training:
                break
        return total, weight, hits

    # -- inference -------------------------------------------------------------------

    def predict_scores(self, x: Any, batch_size: int = 1024) -> numpy.ndarray:
        """Model outputs in evaluation mode, in batches; the model's mode is restored after.

        No examples give no scores: an array of 0 rows, of the shape and dtype the model
        gives one example (an all-zero one, forwarded for them).
        """
        _check_arrays(x=x)
        was_training = self.model.training
        self.model.eval()
        device = self.params[0].data if self.params else None
        try:
            parts = [to_numpy(self.model.forward(on_device_of(device, x[i:i + batch_size])))
                     for i in range(0, len(x), batch_size)]
            if not parts:
                zero = array_module(x).zeros((1, *x.shape[1:]), dtype=x.dtype)
                parts = [to_numpy(self.model.forward(on_device_of(device, zero)))[:0]]
        finally:
            self.model.train(was_training)
        return numpy.concatenate(parts)

    def predict(self, x: Any, batch_size: int = 1024) -> numpy.ndarray:
        """Predicted class labels: argmax of the scores (score > 0 for a single logit)."""
        return _labels(self.predict_scores(x, batch_size))

    def evaluate(self, x: Any, y: Any, batch_size: int = 1024, sample_weight: Any = None,
                 top_k: Sequence[int] | None = None) -> dict[str, float]:
        """Loss (unregularized), and for class labels accuracy and top-k accuracies.

        Class labels are integer labels, and whole-number float labels of a loss that
        takes class indices (as in ``fit``).

        Returns ``{"loss", "accuracy", "top_{k}_accuracy" for k in top_k}``
        (``top_k`` defaults to the trainer's). The loss is NaN when the scores
        are not finite.
        """
        _check_lengths(x, y, sample_weight)
        scores, y = self.predict_scores(x, batch_size), _class_indices(self.loss, to_numpy(y))
        weight = None if sample_weight is None else to_numpy(sample_weight)
        finite = bool(numpy.isfinite(scores).all())
        results = {"loss": float(self.loss.forward(scores, y, sample_weight=weight))
                   if finite else math.nan}
        if y.dtype.kind in "iub":
            results["accuracy"] = metrics.accuracy(y, _labels(scores), weight)
            for k in self.top_k if top_k is None else top_k:
                results[f"top_{k}_accuracy"] = metrics.top_k_accuracy(y, scores, k, weight)
        return results

    def confusion_matrix(self, x: Any, y: Any, batch_size: int = 1024) -> numpy.ndarray:
        """C[i, j] = number of examples of class i predicted as class j (one per score column)."""
        scores = self.predict_scores(x, batch_size)
        classes = 2 if scores.ndim == 1 or scores.shape[1] == 1 else scores.shape[1]
        return metrics.confusion_matrix(to_numpy(y), _labels(scores), num_classes=classes)

    # -- checkpoints -----------------------------------------------------------------

    def save(self, path: str | Path, **extra: Any) -> Path:
        """Save a full checkpoint (``ermlab.training.checkpoint``); returns the file written."""
        from ermlab.training.checkpoint import save_checkpoint

        return save_checkpoint(path, self, extra=extra)

    def resume(self, path: str | Path) -> Any:
        """Restore a checkpoint into this trainer (model, optimizer, RNG, epoch, history).

        Callback states (early stopping, schedules, ...) are handed over when the
        next ``fit`` starts. Returns the ``Checkpoint`` read.
        """
        from ermlab.training.checkpoint import load_checkpoint

        return load_checkpoint(path, self)

    def callback_states(self) -> dict[str, Any]:
        """``{name: state}`` of the callbacks with state; names are class names, numbered
        when a class appears more than once ("EarlyStopping", "EarlyStopping#2")."""
        states = {}
        for name, callback in self._named_callbacks():
            state = callback.state_dict() if hasattr(callback, "state_dict") else {}
            if state:
                states[name] = state
        return states

    def _restore_callback_states(self) -> None:
        states, self.pending_callback_states = self.pending_callback_states, {}
        for name, callback in self._named_callbacks():
            if name in states and hasattr(callback, "load_state_dict"):
                try:
                    callback.load_state_dict(states[name])
                except (KeyError, ValueError, TypeError) as error:
                    raise ValueError(
                        f"the checkpoint's state for callback {name} does not fit this run's "
                        f"{name} ({type(error).__name__}: {error}); build the same callbacks "
                        "as the saved run") from None

    def _named_callbacks(self) -> list[tuple[str, Callback]]:
        seen: dict[str, int] = {}
        named = []
        for callback in self.callbacks:
            kind = type(callback).__name__
            seen[kind] = seen.get(kind, 0) + 1
            named.append((kind if seen[kind] == 1 else f"{kind}#{seen[kind]}", callback))
        return named

    def _notify(self, event: str, logs: dict[str, Any]) -> None:
        for callback in self.callbacks:
            method = getattr(callback, event, None)
            if method is not None:
                method(self, logs)


def _in_order(callbacks: Sequence[Callback]) -> list[Callback]:
    """Callbacks by ascending ``order``, keeping the given order among equals."""
    return sorted(callbacks, key=lambda callback: getattr(callback, "order", 0))


def _hits(scores: Any, y: Any, weight: Any) -> float:
    """Σ w·[predicted = y] over a batch (its running training accuracy, as Keras reports it:
    measured on the batch's forward pass in training mode, before the update)."""
    xp = array_module(scores)
    if scores.ndim == 1 or scores.shape[1] == 1:
        correct = (scores.reshape(-1) > 0) == (y != 0)
    else:
        correct = scores.argmax(axis=1) == y
    return float(correct.sum() if weight is None else (correct * xp.asarray(weight)).sum())


def _labels(scores: numpy.ndarray) -> numpy.ndarray:
    if scores.ndim == 1 or scores.shape[1] == 1:
        return (scores.reshape(-1) > 0).astype(numpy.int64)
    return scores.argmax(axis=1)


def _class_indices(loss: Any, y: Any) -> Any:
    """``y`` as int64 when ``loss`` takes class indices and ``y`` holds whole-number floats in
    [0, 2³¹); other labels unchanged (the loss refuses 6.5 or −1.0 with its own message)."""
    if not isinstance(loss, INDEX_LOSSES) or y.dtype.kind != "f":
        return y
    xp = array_module(y)
    whole = bool(((y >= 0) & (y < 2**31) & (y == xp.floor(y))).all())
    return y.astype(xp.int64) if whole else y


def _check_arrays(owner: str = "", **arrays: Any) -> None:
    """Refuse lists and other non-arrays, with what to do (the Trainer converts nothing);
    ``owner`` prefixes the names ("validation_data's ")."""
    for name, array in arrays.items():
        if not (hasattr(array, "shape") and hasattr(array, "dtype")):
            dtype = ", dtype=numpy.float32" if name.startswith("x") else ""
            raise TypeError(f"{owner}{name} must be an array (NumPy or CuPy); got "
                            f"{type(array).__name__}. Convert it: numpy.asarray({name}{dtype})")


def _check_validation(data: Any, x: Any, loss: Any) -> tuple[Any, Any]:
    """``validation_data`` as ``(x_val, y_val)``: arrays of equal length, rows shaped and typed
    as ``x``'s, finite; whole-number float labels as integers (as ``fit`` takes ``y``)."""
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise TypeError(f"validation_data must be a pair (x_val, y_val); got "
                        f"{type(data).__name__}"
                        + (f" of length {len(data)}" if isinstance(data, (tuple, list)) else ""))
    x_val, y_val = data
    _check_arrays("validation_data's ", x_val=x_val, y_val=y_val)
    if len(x_val) != len(y_val):
        raise ValueError(f"validation_data's x_val and y_val have different lengths: "
                         f"{len(x_val)} and {len(y_val)}")
    if tuple(x_val.shape[1:]) != tuple(x.shape[1:]) or x_val.dtype != x.dtype:
        raise ValueError(f"validation_data's x_val has rows of shape {tuple(x_val.shape[1:])} "
                         f"and dtype {x_val.dtype}; x has {tuple(x.shape[1:])} and {x.dtype}. "
                         "Prepare both the same way")
    _check_finite(x_val, "validation_data's x_val")
    return x_val, _class_indices(loss, y_val)


def _check_finite(x: Any, name: str, chunk_bytes: int | None = None) -> None:
    """A ValueError naming the first row of ``x`` with a NaN or infinite value: read in the
    blocks of ``ermlab.data.rows.block_ranges`` (no copy of ``x``; a memory map is read
    once; a CuPy array in one pass, one synchronization)."""
    from ermlab.data.rows import block_ranges

    if getattr(x, "dtype", None) is None or numpy.dtype(x.dtype).kind not in "fc":
        return
    xp = array_module(x)
    if xp is not numpy:  # a GPU array: one pass
        chunk_bytes = max(1, x.nbytes)
    for start, stop in block_ranges(x, chunk_bytes):
        part = x[start:stop]
        if not bool(xp.isfinite(part).all()):
            bad = ~xp.isfinite(part.reshape(len(part), -1)).all(axis=1)
            row = start + int(to_numpy(bad).argmax())
            raise ValueError(f"{name} has NaN or infinite values (first in row {row}); "
                             "remove or impute those rows before training")


def _check_lengths(x: Any, y: Any, sample_weight: Any) -> int:
    if len(x) != len(y):
        raise ValueError(f"x and y have different lengths: {len(x)} and {len(y)}")
    if len(x) == 0:
        raise ValueError("x is empty; pass at least one example")
    if sample_weight is not None and len(sample_weight) != len(x):
        raise ValueError(f"sample_weight has {len(sample_weight)} entries; x has {len(x)} "
                         "examples (one weight per example)")
    return len(x)
