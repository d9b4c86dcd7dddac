"""Elastic averaging SGD (Zhang, Choromanska & LeCun 2015): EASGD and EAMSGD.

Each of the p workers keeps its own parameters x^i; a centre variable x̃ on
the server ties them together. Every τ steps of a worker, worker and centre
move toward each other with elasticity α (the worker's step counter t^i):

    x ← x^i                                          (the worker's value before the move)
    if τ divides t^i:
        x^i ← x^i − α (x − x̃)                        (a: the worker moves toward the centre)
        x̃   ← x̃   + α (x − x̃)                        (b: the centre moves toward the worker)
    EASGD:   x^i ← x^i − η g^i(x)
    EAMSGD:  v^i ← δ v^i − η g^i(x + δ v^i);  x^i ← x^i + v^i    (Nesterov momentum δ)
    t^i ← t^i + 1

(the paper's Algorithms 1 and 2; the gradient is taken at the value x before
the elastic move). *Asynchronous* (``asynchronous=True``, the default): each
worker's move (b) is applied to the centre at once, through the server's
``elastic`` call, with x̃ as the worker reads it — ``delay`` k makes that read
k centre updates old. *Synchronous*: all workers move toward the centre as
it was at the start of the round, and the centre takes the sum of their
moves at the round's end — the paper's Eq. (5)–(6) with α = ηρ:

    x^i_{t+1} = x^i_t − η g^i_t(x^i_t) − α (x^i_t − x̃_t)
    x̃_{t+1}   = x̃_t + α Σ_i (x^i_t − x̃_t)

A round is p consecutive mini-batches of the Trainer (one per worker). The
Trainer's model is the centre x̃: validation, predictions and checkpoints
use it. The paper recommends β = pα ≈ 0.9 (the default α = 0.9 / p); the
centre is stable for pα < 1 in the synchronous variant. A stale read
compounds: with the centre read k moves old, k moves push it by the same
stale difference, and α = 0.225 diverged at k = 16 (kα > 1) in
``benchmarks/staleness.py``. η is the Trainer's
optimizer's learning rate (read every step, so schedules apply) unless
``lr`` is given; the optimizer itself is not used.

Reference: S. Zhang, A. Choromanska and Y. LeCun (2015), "Deep learning with
Elastic Averaging SGD", NIPS 28, Algorithms 1–2 and Eq. (5)–(6).
"""

from __future__ import annotations

from typing import Any

import numpy

from ermlab.distributed.base import WorkerPoolStrategy, algorithm_name, check_float, check_int
from ermlab.distributed.inprocess import build_server, load_server_state, replicas, server_state


class EASGD(WorkerPoolStrategy):
    """EASGD / EAMSGD with a centre variable on a server (see the module docstring).

    Args:
        workers: p ≥ 1 workers.
        tau: communication period τ ≥ 1 (worker steps between elastic moves).
        alpha: elasticity α ∈ (0, 1); default 0.9 / workers (β = pα = 0.9).
        lr: η > 0; default None: the Trainer's optimizer's ``lr``.
        momentum: δ ∈ [0, 1); δ > 0 is EAMSGD.
        asynchronous: True for Algorithm 1/2, False for the synchronous rounds.
        shards: number of servers the centre is spread over.
        delay: simulated delay k ≥ 0 of the centre a worker reads (asynchronous only).
        seed: seed of the workers' dropout generators.
    """

    def __init__(self, workers: int = 2, tau: int = 1, alpha: float | None = None, *,
                 lr: float | None = None, momentum: float = 0.0, asynchronous: bool = True,
                 shards: int = 1, delay: int = 0, seed: int = 0) -> None:
        name = "EASGD"
        self.workers = check_int(name, "workers", workers, 1)
        self.tau = check_int(name, "tau", tau, 1)
        self.alpha = (0.9 / self.workers if alpha is None
                      else check_float(name, "alpha", alpha, 0.0, 1.0, open_low=True))
        self.lr = None if lr is None else check_float(name, "lr", lr, 0.0, open_low=True)
        self.momentum = check_float(name, "momentum", momentum, 0.0, 1.0)
        if not isinstance(asynchronous, bool):
            raise ValueError(f"EASGD needs asynchronous to be True or False; got {asynchronous!r}")
        self.asynchronous = asynchronous
        self.shards = check_int(name, "shards", shards, 1)
        self.delay = check_int(name, "delay", delay, 0)
        if self.delay and not asynchronous:
            raise ValueError("EASGD's delay simulates stale reads of the centre, which only the "
                             "asynchronous variant has; use asynchronous=True or delay=0")
        if not asynchronous and self.workers * self.alpha >= 1:
            raise ValueError(f"synchronous EASGD needs workers·alpha < 1 for a stable centre; "
                             f"got {self.workers}·{self.alpha} (the paper uses 0.9)")
        self.seed = check_int(name, "seed", seed, 0)
        self.server: Any = None
        self._workers: list | None = None
        self._clock = 0
        self._pending: dict[str, Any] | None = None

    def bind(self, trainer: Any) -> None:
        if self.lr is None and "lr" not in trainer.optimizer.param_groups[0]:
            raise ValueError("EASGD takes η from the Trainer's optimizer, which has no lr; "
                             "pass EASGD(lr=...)")

    def _start(self, trainer: Any) -> None:
        self.server = build_server(trainer, self.shards, self.delay, optimizer=False)
        self._workers = [_Worker(r) for r in replicas(trainer.model, self.workers, self.seed)]
        centre = {k: p.data for k, p in trainer.model.named_parameters()}
        for worker in self._workers:  # x^i = x̃ at the start
            worker.replica.load(centre)
        self._round = {k: numpy.zeros_like(a) for k, a in self._workers[0].replica.arrays().items()}
        self._load_pending()

    def train_step(self, trainer: Any, x: Any, y: Any, sample_weight: Any = None) -> float:
        if self._workers is None:
            self._start(trainer)
        index = self._clock % self.workers
        worker = self._workers[index]
        replica, params = worker.replica, worker.replica.params
        lr = self.lr if self.lr is not None else trainer.optimizer.param_groups[0]["lr"]
        if self.momentum:  # g at x + δv, then back to x exactly
            for param, saved, v in zip(params, worker.saved, worker.velocity):
                numpy.copyto(saved, param.data)
                param.data += self.momentum * v
        value, scores = replica.gradient(trainer, x, y, sample_weight)
        if self.momentum:
            for param, saved in zip(params, worker.saved):
                numpy.copyto(param.data, saved)
        trainer.last_scores = scores
        if not numpy.isfinite(value):
            return value
        self._clock += 1
        if worker.steps % self.tau == 0:
            self._elastic(replica)
        if self.momentum:
            for param, v in zip(params, worker.velocity):
                v *= self.momentum
                v -= lr * param.grad
                param.data += v
        else:
            for param in params:
                param.data -= lr * param.grad
        worker.steps += 1
        if not self.asynchronous and index == self.workers - 1:
            self.server.push_delta(self._round)
            for a in self._round.values():
                a.fill(0)
        trainer.step += 1
        return value

    def _elastic(self, replica: Any) -> None:
        """a) x^i ← x^i − α (x − x̃);  b) x̃ ← x̃ + α (x − x̃) (now, or at the round's end)."""
        arrays = replica.arrays()
        if self.asynchronous:
            moves = self.server.elastic(arrays, self.alpha)
        else:
            centre = self.server.pull().arrays
            moves = {k: self.alpha * (arrays[k] - centre[k]) for k in arrays}
            for k, move in moves.items():
                self._round[k] += move
        for k, move in moves.items():
            arrays[k] -= move

    def epoch_logs(self, trainer: Any) -> dict[str, Any]:
        """``elastic_distance``: mean over workers of ‖x^i − x̃‖₂ (how far the workers roam)."""
        if self._workers is None:
            return {}
        centre = {k: p.data for k, p in trainer.model.named_parameters()}
        distances = [numpy.sqrt(sum(float(((a - centre[k]) ** 2).sum())
                                    for k, a in w.replica.arrays().items()))
                     for w in self._workers]
        for (_, mine), (_, theirs) in zip(trainer.model.named_buffers(),
                                          self._workers[0].replica.model.named_buffers()):
            numpy.copyto(mine, theirs)
        return {"elastic_distance": float(numpy.mean(distances))}

    # -- checkpoints ------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        if self._workers is None:
            return self._pending or {"algorithm": algorithm_name(self)}
        return {"algorithm": algorithm_name(self), "clock": self._clock,
                "server": server_state(self.server),
                "round": self._round,
                "workers": [{"steps": w.steps, "replica": w.replica.state_dict(),
                             "velocity": w.velocity} for w in self._workers]}

    def _load(self, state: dict[str, Any]) -> None:
        self._clock = int(state["clock"])
        load_server_state(self.server, state["server"])
        for k, a in state["round"].items():
            numpy.copyto(self._round[k], a)
        for worker, saved in zip(self._workers, state["workers"]):
            worker.steps = int(saved["steps"])
            worker.replica.load_state_dict(saved["replica"])
            for v, s in zip(worker.velocity, saved["velocity"]):
                numpy.copyto(v, s)

    def __repr__(self) -> str:
        return (f"EASGD(workers={self.workers}, tau={self.tau}, alpha={self.alpha}, "
                f"lr={self.lr}, momentum={self.momentum}, asynchronous={self.asynchronous})")


class _Worker:
    def __init__(self, replica: Any) -> None:
        self.replica = replica
        self.steps = 0
        self.velocity = [numpy.zeros_like(p.data) for p in replica.params]
        self.saved = [numpy.empty_like(p.data) for p in replica.params]
