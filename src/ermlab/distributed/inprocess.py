"""The in-process implementation: server and workers in this process, delays simulated.

Workers are replicas of the model (``Replica``: a deep copy with its own
parameters, buffers and dropout generator) that the strategy runs one after
the other, one mini-batch each in turn; the server (``InProcessServer``) is a
``ParameterServer`` over the Trainer's own model parameters, so the Trainer
evaluates and checkpoints θ (or EASGD's centre x̃) as in single-process runs.

Simulated delay: with ``delay=k`` a pull returns the parameters as they were
k updates ago (θ_{t−k}; θ_0 during the first k updates), so every gradient
computed on a pull is applied k updates after the parameters it saw —
staleness τ = k exactly, on top of what the round-robin of workers adds
(``workers − 1`` for Downpour with n_fetch = n_push = 1). The server keeps the
last k + 1 versions (k + 1 copies of θ).
"""

from __future__ import annotations

import copy
from collections import deque
from typing import Any

import numpy

from ermlab.backend import array_module
from ermlab.distributed.base import Arrays, ParameterServer, Pulled, ShardedServer
from ermlab.nn.stochastic import use_generator


class InProcessServer(ParameterServer):
    """A ``ParameterServer`` whose pulls see the parameters ``delay`` updates old."""

    def __init__(self, params: dict, optimizer: Any = None, constraint: Any = None,
                 delay: int = 0) -> None:
        super().__init__(params, optimizer, constraint)
        self.delay = int(delay)
        self.history: deque[Pulled] = deque(maxlen=self.delay + 1)
        if self.delay:
            self._remember()

    def read(self) -> Pulled:
        return self.history[0] if self.delay else super().read()

    def _remember(self) -> None:
        now = super().read()
        state = now.read_state
        self.history.append(Pulled(self.version, {k: v.copy() for k, v in now.arrays.items()},
                                   None if state is None else [s.copy() for s in state]))

    def _updated(self) -> None:
        super()._updated()
        if self.delay:
            self._remember()

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["history"] = [{"version": p.version, "arrays": p.arrays,
                             "read_state": p.read_state} for p in self.history]
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if self.delay:
            self.history.clear()
            for p in state["history"]:
                self.history.append(Pulled(int(p["version"]), dict(p["arrays"]),
                                           p["read_state"]))


class Replica:
    """A worker's copy of the model: own parameters, buffers and dropout generator."""

    def __init__(self, model: Any, seed: Any) -> None:
        self.model = copy.deepcopy(model)
        self.generator = numpy.random.default_rng(seed)
        use_generator(self.model, self.generator)
        self.named = dict(self.model.named_parameters())
        self.params = list(self.named.values())

    def load(self, arrays: Arrays) -> None:
        """Copy ``{name: array}`` into the replica's parameters."""
        for name, param in self.named.items():
            numpy.copyto(param.data, arrays[name])

    def load_buffers(self, model: Any) -> None:
        """Copy ``model``'s buffers (batch-norm running averages) into the replica's."""
        for (_, mine), (_, theirs) in zip(self.model.named_buffers(), model.named_buffers()):
            numpy.copyto(mine, theirs)

    def arrays(self) -> Arrays:
        return {name: param.data for name, param in self.named.items()}

    def grads(self) -> Arrays:
        return {name: param.grad for name, param in self.named.items()}

    def gradient(self, trainer: Any, x: Any, y: Any, sample_weight: Any) -> tuple[float, Any]:
        """∇ of the regularized batch loss at the replica's parameters, into its grads.

        Returns ``(value, scores)``; a non-finite value leaves the gradients unset.
        """
        return batch_gradient(self.model, self.params, trainer, x, y, sample_weight)

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "generator": self.generator.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.generator.bit_generator.state = state["generator"]


def batch_gradient(model: Any, params: list, trainer: Any, x: Any, y: Any,
                   sample_weight: Any) -> tuple[float, Any]:
    """The Trainer's forward / backward on ``model``, without the optimizer step."""
    model.train()
    scores = model.forward(x)
    if not bool(array_module(scores).isfinite(scores).all()):
        return float("nan"), scores
    value = trainer.loss.forward(scores, y, sample_weight=sample_weight)
    if trainer.regularizer is not None:
        value += trainer.regularizer.penalty(params)
    if not numpy.isfinite(value):
        return value, scores
    for param in params:
        param.zero_grad()
    model.backward(trainer.loss.backward(), input_grad=False)
    if trainer.regularizer is not None:
        trainer.regularizer.add_gradient(params)
    return value, scores


def replicas(model: Any, count: int, seed: Any) -> list[Replica]:
    """``count`` replicas of ``model``, each with its own generator spawned from ``seed``."""
    return [Replica(model, s) for s in numpy.random.SeedSequence(seed).spawn(count)]


def constraint_of(trainer: Any) -> Any:
    """The regularizer's projection as a no-argument call (None when it has none)."""
    regularizer = trainer.regularizer
    if not hasattr(regularizer, "apply"):
        return None
    return lambda: regularizer.apply(trainer.params)


def build_server(trainer: Any, shards: int, delay: int, optimizer: bool = True) -> Any:
    """The in-process server over the Trainer's model: one server, or ``shards`` of them.

    With one shard the server applies the Trainer's own optimizer (its state is
    the Trainer's and is checkpointed with it); with more, each shard gets a
    copy of it over its parameters, rebuilt from its hyperparameters.
    """
    named = dict(trainer.model.named_parameters())
    constraint = constraint_of(trainer)
    if shards == 1:
        return InProcessServer(named, trainer.optimizer if optimizer else None, constraint, delay)
    servers = []
    for part in split_balanced(named, shards):
        opt = clone_optimizer(trainer.optimizer, list(part.values())) if optimizer else None
        params = [p for p in trainer.params if any(p is q for q in part.values())]
        servers.append(InProcessServer(
            part, opt, None if constraint is None else _sub_constraint(trainer, params), delay))
    return ShardedServer(servers)


def _sub_constraint(trainer: Any, params: list) -> Any:
    return lambda: trainer.regularizer.apply(params)


def split_balanced(named: dict, shards: int) -> list[dict]:
    """Parameters over ``shards`` groups of about equal size (largest first, to the lightest)."""
    if shards > len(named):
        raise ValueError(f"shards={shards} is more than the model's {len(named)} parameter "
                         f"arrays; use shards ≤ {len(named)}")
    parts: list[dict] = [{} for _ in range(shards)]
    sizes = [0] * shards
    for name, param in sorted(named.items(), key=lambda item: -item[1].size):
        i = sizes.index(min(sizes))
        parts[i][name] = param
        sizes[i] += param.size
    order = list(named)
    return [dict(sorted(part.items(), key=lambda item: order.index(item[0]))) for part in parts]


def clone_optimizer(template: Any, params: list) -> Any:
    """A new optimizer of ``template``'s class and hyperparameters over ``params``."""
    if len(template.param_groups) != 1:
        raise ValueError(f"sharding rebuilds the optimizer per shard and needs one parameter "
                         f"group; {type(template).__name__} has {len(template.param_groups)} "
                         "(use shards=1)")
    group = template.param_groups[0]
    try:
        clone = type(template)(params, **{k: group[k] for k in template.defaults})
    except TypeError as error:
        raise ValueError(f"sharding rebuilds the optimizer per shard; {type(template).__name__} "
                         f"cannot be rebuilt from its hyperparameters ({error}); use shards=1"
                         ) from None
    for key, value in group.items():  # what schedules added (initial_lr, ...)
        if key != "params":
            clone.param_groups[0][key] = value
    return clone


def server_optimizers(server: Any) -> list:
    """The optimizers of a sharded server's shards (empty for a single server)."""
    return [s.optimizer for s in server.shards] if isinstance(server, ShardedServer) else []


def server_state(server: Any) -> Any:
    if isinstance(server, ShardedServer):
        return [{"server": s.state_dict(), "optimizer": s.optimizer.state_dict()
                 if s.optimizer is not None else None} for s in server.shards]
    return server.state_dict()


def load_server_state(server: Any, state: Any) -> None:
    if isinstance(server, ShardedServer):
        if not isinstance(state, list) or len(state) != len(server.shards):
            raise ValueError("the saved server state does not have this run's number of shards")
        for shard, saved in zip(server.shards, state):
            shard.load_state_dict(saved["server"])
            if saved["optimizer"] is not None:
                shard.optimizer.load_state_dict(saved["optimizer"])
    else:
        if isinstance(state, list):
            raise ValueError("the saved server state is sharded; this run uses shards=1")
        server.load_state_dict(state)


def refuse_closure_optimizers(owner: str, optimizer: Any) -> None:
    """Full-batch optimizers (L-BFGS, BFGS, Newton) need closures; no server can run them."""
    from ermlab.optim.full_batch import FullBatchOptimizer

    if isinstance(optimizer, FullBatchOptimizer):
        raise ValueError(f"{owner} applies gradients one push at a time; "
                         f"{type(optimizer).__name__} needs the full-batch closure — use a "
                         "first-order optimizer (SGD, Adagrad, Adam, ...)")
