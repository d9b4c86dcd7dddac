"""Synchronous data parallelism: shards of one mini-batch, gradients averaged, one update.

With k workers, the mini-batch B the Trainer draws (``fit(batch_size=...)`` is
the *global* batch k·b) is cut into k shards B_1 … B_k of about b examples.
Worker i computes the gradient of its shard's mean loss at the same θ_t,
the gradients are averaged (all-reduce) and every replica applies the same
update with the Trainer's optimizer:

    g_i = ∇θ (1/|B_i|) Σ_{n∈B_i} l(f(x_n; θ_t), y_n)
    g   = Σ_i (|B_i| / |B|) g_i  (+ λ∇Ω(θ_t))        = ∇θ (1/|B|) Σ_{n∈B} l(...)
    θ_{t+1} = optimizer step with g

so the run equals single-process training with batch k·b up to floating-point
rounding, for any optimizer (SGD momentum, Adam, ...). The shards are weighted
by their size (by their total sample weight with ``sample_weight``), which keeps
the equality for a smaller last batch; PyTorch's DistributedDataParallel
averages the workers' gradients with equal weights instead.

Where replicas differ from one big batch (documented, not hidden):

* Dropout: each worker draws its own masks from its own generator (spawned
  from ``seed``), as separate processes would; the masks differ from the one
  big-batch mask, so runs with dropout agree in distribution, not bitwise.
* Batch norm: each worker normalizes with its shard's statistics (as DDP
  without SyncBatchNorm): with batch norm the gradient is *not* the big-batch
  gradient. Running averages: before every step the replicas receive worker
  0's buffers (DDP's default ``broadcast_buffers``), and the Trainer's model,
  which is worker 0, keeps the running averages of its own shards.

In this process worker 0 is the Trainer's model and workers 1 … k−1 are
replicas that receive θ_t before each step (the broadcast). On Ray
(``OnRay(SyncDataParallel(...))``, ``ray_backend``) there is no broadcast:
each of the k replicas keeps its own θ and copy of the optimizer, the
replicas sum their scaled gradients by a ring all-reduce
(``allreduce.ring_allreduce``) and each applies the same update, so they
stay equal; the Trainer's model gets replica 0's θ, optimizer state and
running averages at each epoch's end.

References: Dean et al. (2012), "Large Scale Distributed Deep Networks"
(the synchronous baseline); Goyal et al. (2017), "Accurate, Large Minibatch SGD".
"""

from __future__ import annotations

from typing import Any

import numpy

from ermlab.backend import array_module
from ermlab.distributed.base import Strategy, algorithm_name, check_algorithm, check_int
from ermlab.distributed.inprocess import (
    batch_gradient,
    refuse_closure_optimizers,
    replicas,
)


class SyncDataParallel(Strategy):
    """Synchronous data parallelism over ``workers`` replicas (see the module docstring).

    Args:
        workers: k ≥ 1 replicas; each step cuts the Trainer's mini-batch in k shards.
        seed: seed of the replicas' dropout generators (one spawned per replica).

    Example:
        >>> trainer = Trainer(model, loss, optim.Adam(model.parameters()),
        ...                   strategy=SyncDataParallel(workers=4))
        >>> trainer.fit(x, y, batch_size=4 * 32)     # 32 examples per worker
    """

    def __init__(self, workers: int = 2, *, seed: int = 0) -> None:
        self.workers = check_int("SyncDataParallel", "workers", workers, 1)
        self.seed = check_int("SyncDataParallel", "seed", seed, 0)
        self._replicas: list | None = None
        self._pending: dict[str, Any] | None = None

    def bind(self, trainer: Any) -> None:
        refuse_closure_optimizers("SyncDataParallel", trainer.optimizer)

    def _start(self, trainer: Any) -> None:
        self._replicas = replicas(trainer.model, self.workers - 1, self.seed)
        if self._pending is not None:
            for replica, state in zip(self._replicas, self._pending["replicas"]):
                replica.load_state_dict(state)
            self._pending = None

    def train_step(self, trainer: Any, x: Any, y: Any, sample_weight: Any = None) -> float:
        if self._replicas is None:
            self._start(trainer)
        shards = [s for s in numpy.array_split(numpy.arange(len(x)), self.workers) if len(s)]
        masters = trainer.params
        weights = [float(len(s)) if sample_weight is None else float(sample_weight[s].sum())
                   for s in shards]
        total = sum(weights)
        value, parts = 0.0, []
        for i, index in enumerate(shards):
            w = None if sample_weight is None else sample_weight[index]
            if i == 0:
                model, params = trainer.model, masters
            else:
                replica = self._replicas[i - 1]
                for mine, master in zip(replica.params, masters):
                    numpy.copyto(mine.data, master.data)
                replica.load_buffers(trainer.model)
                model, params = replica.model, replica.params
            if weights[i] == 0:
                for param in params:
                    param.zero_grad()
                parts.append(model.train().forward(x[index]))
                continue
            shard_value, scores = batch_gradient(model, params, _Unregularized(trainer),
                                                 x[index], y[index], w)
            parts.append(scores)
            if not numpy.isfinite(shard_value):
                trainer.last_scores = scores
                return shard_value
            value += weights[i] / total * shard_value
        for master in masters:
            master.grad *= weights[0] / total
        for i in range(1, len(shards)):
            for mine, master in zip(self._replicas[i - 1].params, masters):
                mine.grad *= weights[i] / total
                master.grad += mine.grad
        if trainer.regularizer is not None:
            value += trainer.regularizer.penalty(masters)
            trainer.regularizer.add_gradient(masters)
        trainer.optimizer.step()
        if hasattr(trainer.regularizer, "apply"):
            trainer.regularizer.apply(masters)
        trainer.last_scores = array_module(parts[0]).concatenate(parts)
        trainer.step += 1
        return value

    def state_dict(self) -> dict[str, Any]:
        if self._replicas is None:
            return self._pending or {"algorithm": algorithm_name(self), "replicas": []}
        return {"algorithm": algorithm_name(self),
                "replicas": [r.state_dict() for r in self._replicas]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        check_algorithm(state, self)
        if len(state["replicas"]) not in (0, self.workers - 1):
            raise ValueError(f"the saved state has {len(state['replicas']) + 1} workers; "
                             f"this SyncDataParallel has {self.workers}")
        if self._replicas is None:
            self._pending = state if state["replicas"] else None
        else:
            for replica, saved in zip(self._replicas, state["replicas"]):
                replica.load_state_dict(saved)

    def __repr__(self) -> str:
        return f"SyncDataParallel(workers={self.workers}, seed={self.seed})"


class _Unregularized:
    """The Trainer's loss without its regularizer (added once, after the all-reduce)."""

    regularizer = None

    def __init__(self, trainer: Any) -> None:
        self.loss = trainer.loss
