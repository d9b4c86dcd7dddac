"""Ensembles: average the predicted probabilities of several models.

    p(y | x) = Σ_m w_m p_m(y | x),   Σ_m w_m = 1   (w_m = 1/M by default)

``Ensemble`` averages models that output class scores (softmax is applied to
each model's scores, then the probabilities are averaged; averaging scores
instead would be a different, geometric-mean-like, ensemble). Members that are
random at test time (noise-injected ResNets, ``zoo.resnet20(noise_std=σ)``, Wang,
Yuan, Shi & Osher 2019; fractional max pooling, Graham 2014) are also averaged
over D noise draws, p(y | x) = Σ_m w_m (1/D) Σ_d p_m(y | x; ξ_d) (``draws=D``). Snapshot
ensembles (Huang et al. 2017) come from one training run: the learning rate
follows cosine annealing with warm restarts,

    α(t) = (α₀ / 2) (cos(π mod(t − 1, ⌈T/M⌉) / ⌈T/M⌉) + 1),

and the weights at the end of each of the M cycles — each a local minimum —
are the members. ``SnapshotEnsemble`` is the Trainer callback that sets that
rate after every update and keeps the snapshots.

References:
    T. G. Dietterich. Ensemble Methods in Machine Learning. MCS 2000.
    G. Huang, Y. Li, G. Pleiss, Z. Liu, J. Hopcroft, K. Weinberger. Snapshot
    Ensembles: Train 1, Get M for Free. ICLR 2017.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import numpy

from ermlab.backend import array_module, to_numpy
from ermlab.nn.module import Module
from ermlab.optim.schedules import CosineAnnealingWarmRestarts
from ermlab.training.callbacks.base import Callback


def softmax(scores: Any) -> Any:
    """Row-wise softmax, stable: e^{s − max s} / Σ e^{s − max s}."""
    xp = array_module(scores)
    e = xp.exp(scores - scores.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class Ensemble:
    """The weighted average of the members' predicted probabilities.

    Args:
        models: Modules mapping a batch x to scores (N, classes).
        weights: finite nonnegative weights w_m (normalized to sum to 1); default
            equal weights.
        to_probabilities: maps a member's output to probabilities (default
            ``softmax``; ``None`` when the members already output
            probabilities).
        draws: forward passes D ≥ 1 averaged per member (fresh noise in each when
            the member is random at test time); default 1.

    Members are run in evaluation mode (dropout off, batch-norm running
    statistics) and put back in the mode they were in.
    """

    def __init__(
        self,
        models: Sequence[Module],
        weights: Sequence[float] | None = None,
        to_probabilities: Callable[[Any], Any] | None = softmax,
        draws: int = 1,
    ) -> None:
        self.models = list(models)
        if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
            raise ValueError(f"Ensemble draws must be an integer ≥ 1; got {draws!r}")
        self.draws = draws
        if not self.models:
            raise ValueError("Ensemble needs at least one model")
        if weights is None:
            weights = [1.0] * len(self.models)
        weights = numpy.asarray(weights, dtype=numpy.float64)
        if (weights.shape != (len(self.models),) or not numpy.isfinite(weights).all()
                or (weights < 0).any() or weights.sum() <= 0):
            raise ValueError(
                f"Ensemble weights must be {len(self.models)} nonnegative numbers, finite and "
                f"not all 0; got {weights.tolist()}"
            )
        self.weights = weights / weights.sum()
        self.to_probabilities = to_probabilities

    @classmethod
    def from_snapshots(cls, model: Module, states: Sequence[dict[str, Any]], **kwargs: Any):
        """One copy of ``model`` per state dict (e.g. the snapshots of ``SnapshotEnsemble``)."""
        members = []
        for state in states:
            member = copy.deepcopy(model)
            member.load_state_dict(state)
            members.append(member)
        return cls(members, **kwargs)

    def member_probabilities(self, x: Any, batch_size: int = 1024) -> list[numpy.ndarray]:
        """Each member's predicted probabilities (N, classes), averaged over its draws, as
        NumPy arrays."""
        return [self._predict(model, x, batch_size) for model in self.models]

    def predict_proba(self, x: Any, batch_size: int = 1024) -> numpy.ndarray:
        """Σ_m w_m p_m(y | x), shape (N, classes)."""
        probabilities = self.member_probabilities(x, batch_size)
        return sum(w * p for w, p in zip(self.weights, probabilities))

    def predict(self, x: Any, batch_size: int = 1024) -> numpy.ndarray:
        """The most probable class under the averaged probabilities."""
        return self.predict_proba(x, batch_size).argmax(axis=1)

    def _predict(self, model: Module, x: Any, batch_size: int) -> numpy.ndarray:
        training = model.training
        model.eval()
        try:
            parts = []
            for start in range(0, len(x), batch_size):
                total = 0.0
                for _ in range(self.draws):
                    out = model.forward(x[start:start + batch_size])
                    if self.to_probabilities is not None:
                        out = self.to_probabilities(out)
                    total = total + to_numpy(out).astype(numpy.float64)
                parts.append(total / self.draws)
        finally:
            model.train(training)
        return numpy.concatenate(parts)

    def __len__(self) -> int:
        return len(self.models)


class SnapshotEnsemble(Callback):
    """Cosine annealing with warm restarts, and a snapshot of the model at each cycle's end.

    After every update t the learning rate of every param group becomes
    α(t + 1) = (α₀/2)(cos(π mod(t, C) / C) + 1), with C = ``cycle_epochs`` ×
    updates per epoch and α₀ the group's rate when training first begins (the
    paper's schedule, via ``CosineAnnealingWarmRestarts``). The schedule counts
    the trainer's epochs: a second ``fit`` call, or a run resumed from a
    checkpoint, continues it at update ``initial_epoch`` × updates per epoch, as
    one uninterrupted ``fit`` would. At the end of
    epochs ``cycle_epochs``, 2 ``cycle_epochs``, … the model's ``state_dict``
    is appended to ``snapshots``; ``ensemble(model, last=m)`` averages the
    last m of them (the paper's M snapshots, or fewer).

    Args:
        cycle_epochs: epochs per cycle, T/M in the paper (e.g. 300/6 = 50).
    """

    def __init__(self, cycle_epochs: int) -> None:
        if isinstance(cycle_epochs, bool) or not isinstance(cycle_epochs, int) or cycle_epochs < 1:
            raise ValueError(f"SnapshotEnsemble cycle_epochs must be an integer ≥ 1; "
                             f"got {cycle_epochs!r}")
        self.cycle_epochs = cycle_epochs
        self.snapshots: list[dict[str, numpy.ndarray]] = []
        self.scheduler = None

    def on_train_begin(self, trainer: Any, logs: dict[str, Any]) -> None:
        steps = logs.get("steps_per_epoch")
        if not steps:
            raise ValueError("SnapshotEnsemble needs the number of updates per epoch; the "
                             "Trainer passes it as logs['steps_per_epoch'] to on_train_begin")
        self.scheduler = CosineAnnealingWarmRestarts(trainer.optimizer,
                                                     T_0=self.cycle_epochs * int(steps))
        self._move_to(int(logs.get("initial_epoch") or 0) * int(steps))

    def _move_to(self, updates: int) -> None:
        """Put the schedule where it is after ``updates`` updates, so that the next update
        uses α(updates + 1): a second ``fit``, or a resumed one, continues the cycle."""
        scheduler = self.scheduler
        scheduler.last_epoch, scheduler.T_i = updates, scheduler.T_0
        scheduler.T_cur = updates % scheduler.T_0
        scheduler.apply_lr()

    def on_batch_end(self, trainer: Any, logs: dict[str, Any]) -> None:
        self.scheduler.step()

    def on_epoch_end(self, trainer: Any, logs: dict[str, Any]) -> None:
        if int(logs["epoch"]) % self.cycle_epochs == 0:
            self.snapshots.append(trainer.model.state_dict())

    def ensemble(self, model: Module, last: int | None = None, **kwargs: Any) -> Ensemble:
        """The Ensemble of the last ``last`` snapshots (all by default) on copies of ``model``.

        ``last`` is an integer ≥ 1; one above the number of snapshots takes them all.
        """
        if not self.snapshots:
            raise ValueError("SnapshotEnsemble has no snapshots yet: train for at least "
                             f"{self.cycle_epochs} epochs (one cycle)")
        if last is not None and (isinstance(last, bool) or not isinstance(last, int) or last < 1):
            raise ValueError(f"SnapshotEnsemble.ensemble last must be an integer ≥ 1 (how many "
                             f"of the {len(self.snapshots)} snapshots, most recent first, to "
                             f"average; None for all); got {last!r}")
        chosen = self.snapshots if last is None else self.snapshots[-last:]
        return Ensemble.from_snapshots(model, chosen, **kwargs)

    def state_dict(self) -> dict[str, Any]:
        scheduler = {} if self.scheduler is None else self.scheduler.state_dict()
        return {"snapshots": [dict(s) for s in self.snapshots], "scheduler": scheduler}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.snapshots = [dict(s) for s in state["snapshots"]]
        if self.scheduler is not None and state["scheduler"]:
            self.scheduler.load_state_dict(state["scheduler"])
            self.scheduler.apply_lr()  # the first update after a resume: the scheduled rate
