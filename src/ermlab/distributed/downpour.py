"""Downpour SGD (Dean et al. 2012): asynchronous workers around a parameter server.

Each worker (model replica) runs the client loop of Dean et al.'s Downpour
SGD on its own mini-batches:

    if step mod n_fetch = 0:  θ' ← pull()                  (parameters, version v)
    g  ← ∇ loss(θ'; batch)
    a  ← a + g                                            (accrued gradients)
    θ' ← θ' − α_local g                                   (local step; α_local = 0: none)
    step ← step + 1
    if step mod n_push = 0:   push(a) ;  a ← 0

and the server applies every pushed ``a`` with its optimizer — any ermlab
optimizer; the paper used Adagrad, which Dean et al. found made Downpour
robust, and the Trainer's optimizer is the server's:

    θ ← optimizer step with gradient a     (Adagrad: G ← G + a²; θ ← θ − γ a / (√G + ε))

A gradient computed on version v and applied when the server has made t
updates has staleness τ = t − v; the server counts every τ
(``staleness_counts``) and each epoch's logs report ``staleness_mean`` and
``staleness_max`` of the gradients applied during the epoch. With
``shards=s`` the parameters are spread over s servers (balanced by size),
each applying its own copy of the optimizer to its parameters.

In this process the workers take the Trainer's mini-batches in turn (worker
i gets batches i, i + k, i + 2k, ...). A worker's fetch is issued at the end
of its turn (after its push), as the paper's client fetches asynchronously
while it computes; the other k − 1 workers push before its next turn, so
with n_fetch = n_push = 1 each gradient is k − 1 updates stale (0 during the
first round); ``delay`` adds a simulated delay
(``inprocess.InProcessServer``). With one worker, ``delay=0`` and
n_fetch = n_push = 1, Downpour is single-process training with the server's
optimizer (a test checks it).

Reference: J. Dean, G. Corrado, R. Monga, et al. (2012), "Large Scale
Distributed Deep Networks", NIPS 25, Section 4.1 and Algorithm 7.1.
"""

from __future__ import annotations

from typing import Any

import numpy

from ermlab.distributed.base import (
    Pulled,
    WorkerPoolStrategy,
    algorithm_name,
    check_float,
    check_int,
)
from ermlab.distributed.inprocess import (
    build_server,
    load_server_state,
    refuse_closure_optimizers,
    replicas,
    server_optimizers,
    server_state,
    split_balanced,
)


class _Worker:
    """A Downpour client: its replica, local clock, last pull and accrued gradient."""

    def __init__(self, replica: Any) -> None:
        self.replica = replica
        self.steps = 0
        self.pulled: Any = None
        self.push_version: Any = None
        self.push_read_state: Any = None
        self.accrued: dict[str, numpy.ndarray] | None = None


class Downpour(WorkerPoolStrategy):
    """Downpour SGD with a parameter server applying the Trainer's optimizer.

    Args:
        workers: k ≥ 1 asynchronous workers.
        n_fetch: a worker pulls θ every n_fetch of its steps (≥ 1).
        n_push: a worker pushes its accrued gradient every n_push steps (≥ 1); the
            server receives the *sum* of the n_push gradients, as in the paper.
        local_lr: α_local ≥ 0 of the worker's local SGD step between fetches
            (the paper's client takes one; default 0: none).
        shards: number of parameter servers the parameters are spread over.
        delay: simulated delay k ≥ 0 of the in-process server (pulls see θ_{t−k}).
        seed: seed of the workers' dropout generators.

    Example:
        >>> opt = optim.Adagrad(model.parameters(), lr=0.05)
        >>> Trainer(model, loss, opt, strategy=Downpour(workers=4, n_fetch=1, n_push=4))
    """

    def __init__(self, workers: int = 2, n_fetch: int = 1, n_push: int = 1, *,
                 local_lr: float = 0.0, shards: int = 1, delay: int = 0, seed: int = 0) -> None:
        name = "Downpour"
        self.workers = check_int(name, "workers", workers, 1)
        self.n_fetch = check_int(name, "n_fetch", n_fetch, 1)
        self.n_push = check_int(name, "n_push", n_push, 1)
        self.local_lr = check_float(name, "local_lr", local_lr, 0.0)
        self.shards = check_int(name, "shards", shards, 1)
        self.delay = check_int(name, "delay", delay, 0)
        self.seed = check_int(name, "seed", seed, 0)
        self.server: Any = None
        self._workers: list[_Worker] | None = None
        self._clock = 0
        self._pending: dict[str, Any] | None = None
        self._epoch_counts: dict[int, int] = {}

    def bind(self, trainer: Any) -> None:
        refuse_closure_optimizers("Downpour", trainer.optimizer)
        if self.shards > 1:
            split_balanced(dict(trainer.model.named_parameters()), self.shards)

    def _start(self, trainer: Any) -> None:
        self.server = build_server(trainer, self.shards, self.delay)
        self._workers = [_Worker(r) for r in replicas(trainer.model, self.workers, self.seed)]
        self._load_pending()
        self._epoch_counts = dict(self.server.staleness_counts)

    def train_step(self, trainer: Any, x: Any, y: Any, sample_weight: Any = None) -> float:
        if self._workers is None:
            self._start(trainer)
        worker = self._workers[self._clock % self.workers]
        self._clock += 1
        replica = worker.replica
        if worker.pulled is None:
            self._fetch(worker)
        for opt in server_optimizers(self.server):  # LR schedules act on the Trainer's
            opt.param_groups[0]["lr"] = trainer.optimizer.param_groups[0]["lr"]
        value, scores = replica.gradient(trainer, x, y, sample_weight)
        trainer.last_scores = scores
        if not numpy.isfinite(value):
            return value
        if worker.push_version is None:  # the first gradient of this push: its version
            worker.push_version = worker.pulled.version
            worker.push_read_state = worker.pulled.read_state
        grads = replica.grads()
        if self.n_push > 1:
            if worker.accrued is None:
                worker.accrued = {k: numpy.zeros_like(g) for k, g in grads.items()}
            for name, g in grads.items():
                worker.accrued[name] += g
        if self.local_lr:
            for param in replica.params:
                param.data -= self.local_lr * param.grad
        worker.steps += 1
        if worker.steps % self.n_push == 0:
            self.server.push(worker.accrued if self.n_push > 1 else grads,
                             worker.push_version, worker.push_read_state)
            worker.push_version = worker.push_read_state = None
            if worker.accrued is not None:
                for a in worker.accrued.values():
                    a.fill(0)
        if worker.steps % self.n_fetch == 0:
            self._fetch(worker)
        trainer.step += 1
        return value

    def _fetch(self, worker: _Worker) -> None:
        """Pull θ into the worker's replica; it computes its next gradients on it."""
        worker.pulled = self.server.pull()
        worker.replica.load(worker.pulled.arrays)

    def epoch_logs(self, trainer: Any) -> dict[str, Any]:
        """``staleness_mean`` / ``staleness_max`` of the gradients applied this epoch, and
        the server's update count ``server_updates``."""
        if self.server is None:
            return {}
        now = self.server.staleness_counts
        new = {tau: n - self._epoch_counts.get(tau, 0) for tau, n in now.items()}
        new = {tau: n for tau, n in new.items() if n}
        self._epoch_counts = dict(now)
        applied = sum(new.values())
        if self._workers:  # the evaluated model gets worker 0's batch-norm averages
            for (_, mine), (_, theirs) in zip(trainer.model.named_buffers(),
                                              self._workers[0].replica.model.named_buffers()):
                numpy.copyto(mine, theirs)
        return {"staleness_mean": sum(t * n for t, n in new.items()) / applied
                if applied else float("nan"),
                "staleness_max": max(new) if new else 0,
                "server_updates": _updates(self.server)}

    def staleness(self) -> dict[int, int]:
        """``{τ: count}`` over the whole run."""
        return {} if self.server is None else dict(self.server.staleness_counts)

    # -- checkpoints ------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        if self._workers is None:
            return self._pending or {"algorithm": algorithm_name(self)}
        return {
            "algorithm": algorithm_name(self),
            "clock": self._clock,
            "server": server_state(self.server),
            "workers": [{
                "steps": w.steps,
                "replica": w.replica.state_dict(),
                "pulled_version": None if w.pulled is None else w.pulled.version,
                "pulled_read_state": None if w.pulled is None else w.pulled.read_state,
                "push_version": w.push_version,
                "push_read_state": w.push_read_state,
                "accrued": w.accrued,
            } for w in self._workers],
        }

    def _load(self, state: dict[str, Any]) -> None:
        self._clock = int(state["clock"])
        load_server_state(self.server, state["server"])
        for worker, saved in zip(self._workers, state["workers"]):
            worker.steps = int(saved["steps"])
            worker.replica.load_state_dict(saved["replica"])
            worker.pulled = None
            if saved["pulled_version"] is not None:
                worker.pulled = Pulled(saved["pulled_version"], {}, saved["pulled_read_state"])
            worker.push_version = saved["push_version"]
            worker.push_read_state = saved["push_read_state"]
            worker.accrued = saved["accrued"]
        self._epoch_counts = dict(self.server.staleness_counts)

    def __repr__(self) -> str:
        return (f"Downpour(workers={self.workers}, n_fetch={self.n_fetch}, n_push={self.n_push}, "
                f"local_lr={self.local_lr}, shards={self.shards}, delay={self.delay})")


def _updates(server: Any) -> int:
    shards = getattr(server, "shards", None)
    return server.version if shards is None else shards[0].version
