"""The Ray actors of ``OnRay`` (plain classes here; ``ray.remote`` wraps them when a run starts).

* ``ServerActor``: a ``ParameterServer`` (``base.py``) over its own copy of the
  model's parameters — all of them, or one shard — and of the optimizer; with
  synchronous EASGD it also gathers each round's elastic moves (``elastic_round``).
* ``AsyncWorker``: a Downpour or EASGD client on its own replica; a call
  (``run``) takes a run of mini-batches (indices into the data in Ray's object
  store) and applies the strategy's client rule to each in turn, talking to the
  server(s) as the rule says — per step, exactly as the in-process strategy.
* ``SyncWorker``: a synchronous data-parallel replica with its own copy of the
  optimizer; every step it computes its shard's gradient, all-reduces it with
  the other replicas by the ring (``allreduce.ring_allreduce``, chunks passed
  actor to actor) and applies the same update as every other replica.

A call returns the per-batch (loss, scores) in the order of its batches, the
worker's process id (restarts are counted by it) and the seconds it computed
(``OnRay`` sizes its calls by them).
"""

from __future__ import annotations

import copy
import math
import os
import threading
import time
from typing import Any

import numpy

from ermlab.distributed.allreduce import Mailbox, ring_allreduce
from ermlab.distributed.base import ParameterServer, Pulled
from ermlab.distributed.inprocess import Replica, batch_gradient, clone_optimizer
from ermlab.threads import default_threads

PEER_TIMEOUT = 600.0  # seconds a replica waits for a peer's chunk before it gives up


class Objective:
    """The loss and regularizer a worker needs (what ``batch_gradient`` reads of a Trainer)."""

    def __init__(self, loss: Any, regularizer: Any) -> None:
        self.loss, self.regularizer = loss, regularizer

    @property
    def unregularized(self) -> Objective:
        """The loss alone (synchronous training adds λ∇Ω once, after the all-reduce)."""
        return Objective(self.loss, None)


class Data:
    """A worker's view of the training data: fetched once per ``ray.put``, then indexed;
    the Trainer's ``augment`` (if any) applied with the worker's own generator."""

    def __init__(self, augment: Any = None, seed: Any = None) -> None:
        self.key: Any = None
        self.arrays: Any = None
        self.augment = augment
        self.rng = None if augment is None else numpy.random.default_rng(seed)

    def rows(self, data: list, index: Any) -> tuple:
        """``(x, y, w)[index]``; ``data`` is ``[ObjectRef]`` (in a list: Ray leaves it as is)."""
        ref = data[0]
        if self.key != ref.binary():
            import ray

            self.arrays, self.key = ray.get(ref), ref.binary()
        x, y, w = self.arrays
        xb = x[index]
        if self.augment is not None and len(index):
            xb = self.augment(xb, self.rng)
        return xb, y[index], None if w is None else w[index]


def lanes_as_ray_cpus() -> int:
    """In an actor: ermlab's lanes (``ermlab.threads``: the optimizer's and Conv2d's) as many
    as the CPUs Ray assigned it — ⌊num_cpus⌋, at least 1, as Ray sets OMP_NUM_THREADS —
    not the machine's CPU count, so that k actors on k CPUs do not run 2k lanes. An
    ``ERMLAB_NUM_THREADS`` already set (the driver's, which Ray passes on) is kept.
    Returns the lanes now in force."""
    import ray

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU") or 1
    os.environ.setdefault("ERMLAB_NUM_THREADS", str(max(1, math.floor(cpus))))
    return default_threads()


def worker_seeds(seed: int, workers: int) -> list[tuple[Any, Any]]:
    """Per worker: (dropout seed, augmentation seed), as the in-process replicas' dropout."""
    spawned = numpy.random.SeedSequence(seed).spawn(workers)
    augment = numpy.random.SeedSequence([seed, 1]).spawn(workers)
    return list(zip(spawned, augment))


class KeptActor:
    """What every OnRay actor answers besides its role: ``reset`` (drop the run while
    ``reuse_actors`` keeps the actor; the process id, which also shows it is alive) and
    ``lanes`` (the threads its optimizer and convolutions use, ``lanes_as_ray_cpus``)."""

    key: Any = None  # AsyncWorker: the run it is set up for (None: none)

    def reset(self) -> int:
        self.__dict__.clear()
        return os.getpid()

    def lanes(self) -> int:
        return default_threads()


class ServerActor(KeptActor):
    """A ``ParameterServer`` over ``names`` of its own copy of the model (all, or one shard).

    ``clone``: rebuild the optimizer over the shard's parameters (``shards > 1``, as
    the in-process ``build_server``); otherwise the Trainer's optimizer, copied.
    """

    def setup(self, payload: tuple, names: list[str], clone: bool, workers: int = 1,
              state: dict[str, Any] | None = None) -> int:
        """Become the server of a run (a new actor, or one kept by ``reuse_actors``):
        everything of a previous run is dropped; ``state``: saved counters to ``load``.
        Returns the process id."""
        self.__dict__.clear()
        lanes_as_ray_cpus()
        # one object, so the optimizer still holds the model's parameters; copied, as
        # arrays read from Ray's object store are read-only
        model, optimizer, regularizer = copy.deepcopy(payload)
        every = dict(model.named_parameters())
        named = {name: every[name] for name in names}
        params = list(named.values())
        if optimizer is not None and clone:
            optimizer = clone_optimizer(optimizer, params)
        constraint = ((lambda: regularizer.apply(params)) if hasattr(regularizer, "apply")
                      else None)
        self.server = ParameterServer(named, optimizer, constraint)
        self.workers = workers
        self.rounds_done = 0
        self.moves: dict[int, numpy.ndarray] = {}
        self.changed = threading.Condition()
        if state is not None:
            self.load(state)
        return os.getpid()

    def pull(self) -> Pulled:
        return self.server.pull()

    def push(self, grads: dict, version: int, read_state: Any, lrs: list) -> int:
        for group, lr in zip(self.server.optimizer.param_groups, lrs):
            group["lr"] = lr
        return self.server.push(grads, version, read_state)

    def push_pull(self, grads: dict, version: int, read_state: Any, lrs: list) -> Pulled:
        """``push`` then ``pull`` in one call (a Downpour step that pushes and fetches)."""
        self.push(grads, version, read_state, lrs)
        return self.server.pull()

    def elastic(self, arrays: dict, alpha: float) -> dict:
        return self.server.elastic(arrays, alpha)

    def elastic_round(self, rank: int, round_: int, arrays: dict, alpha: float) -> dict:
        """Synchronous EASGD: worker ``rank``'s move δ = α(x − x̃) in elastic round ``round_``,
        x̃ as it was after round ``round_ − 1``; once all workers' moves of the round are
        in, x̃ ← x̃ + Σ_i δ_i (summed in rank order, as the in-process rounds). Waits
        until round ``round_ − 1`` is complete."""
        with self.changed:
            self.changed.wait_for(lambda: self.rounds_done >= round_, PEER_TIMEOUT)
            if self.rounds_done != round_:
                raise TimeoutError(f"elastic round {round_} of worker {rank}: the other "
                                   "workers' moves never came")
            centre = self.server.arrays()
            moves = {k: numpy.multiply(arrays[k] - centre[k], alpha) for k in centre}
            self.moves[rank] = moves
            if len(self.moves) == self.workers:
                total = {k: numpy.zeros_like(a) for k, a in centre.items()}
                for i in range(self.workers):
                    for k, move in self.moves[i].items():
                        total[k] += move
                self.server.push_delta(total)
                self.moves = {}
                self.rounds_done += 1
                self.changed.notify_all()
            return moves

    def state(self) -> dict[str, Any]:
        optimizer = self.server.optimizer
        return {"server": self.server.state_dict(), "arrays": self.server.arrays(),
                "optimizer": None if optimizer is None else optimizer.state_dict(),
                "rounds_done": self.rounds_done}

    def load(self, state: dict[str, Any]) -> None:
        """Counters (and, for a shard, its optimizer state)."""
        self.server.load_state_dict(state["server"])
        if state.get("optimizer") is not None:
            self.server.optimizer.load_state_dict(state["optimizer"])


class RemoteServer:
    """The ``Server`` interface over one or several ``ServerActor`` handles (shards):
    every call goes to all shards at once and waits for all (``base.ShardedServer``'s
    merge: the version is the tuple of the shards' versions)."""

    def __init__(self, ray: Any, shards: list, owner: dict[str, int]) -> None:
        self.ray, self.shards, self.owner = ray, shards, owner

    def _split(self, arrays: dict) -> list[dict]:
        parts: list[dict] = [{} for _ in self.shards]
        for name, array in arrays.items():
            parts[self.owner[name]][name] = array
        return parts

    def pull(self) -> Pulled:
        reads = self.ray.get([s.pull.remote() for s in self.shards])
        if len(reads) == 1:
            return reads[0]
        arrays = {name: a for read in reads for name, a in read.arrays.items()}
        return Pulled(tuple(r.version for r in reads), arrays, [r.read_state for r in reads])

    def push(self, grads: dict, version: Any, read_state: Any, lrs: list) -> None:
        if len(self.shards) == 1:
            self.ray.get(self.shards[0].push.remote(grads, version, read_state, lrs))
            return
        states = read_state if read_state is not None else [None] * len(self.shards)
        self.ray.get([shard.push.remote(part, v, s, lrs) for shard, part, v, s
                      in zip(self.shards, self._split(grads), version, states)])

    def push_pull(self, grads: dict, version: Any, read_state: Any, lrs: list) -> Pulled:
        """``push`` and the ``pull`` that follows it, one round trip per shard."""
        if len(self.shards) == 1:
            return self.ray.get(self.shards[0].push_pull.remote(grads, version, read_state, lrs))
        states = read_state if read_state is not None else [None] * len(self.shards)
        reads = self.ray.get([shard.push_pull.remote(part, v, s, lrs) for shard, part, v, s
                              in zip(self.shards, self._split(grads), version, states)])
        arrays = {name: a for read in reads for name, a in read.arrays.items()}
        return Pulled(tuple(r.version for r in reads), arrays, [r.read_state for r in reads])

    def elastic(self, arrays: dict, alpha: float) -> dict:
        moved: dict = {}
        for part in self.ray.get([shard.elastic.remote(part, alpha) for shard, part
                                  in zip(self.shards, self._split(arrays))]):
            moved.update(part)
        return moved

    def elastic_round(self, rank: int, round_: int, arrays: dict, alpha: float) -> dict:
        moved: dict = {}
        for part in self.ray.get([shard.elastic_round.remote(rank, round_, part, alpha)
                                  for shard, part in zip(self.shards, self._split(arrays))]):
            moved.update(part)
        return moved


class AsyncWorker(KeptActor):
    """A Downpour or EASGD client on its own replica, talking to the server actor(s).

    ``options["kind"]``: ``downpour``, ``easgd`` (asynchronous) or ``easgd_sync``.
    """

    def _setup(self, setup: list) -> None:
        """Become worker ``rank`` of the run ``setup`` = [ref to (options, model, objective,
        shards, owner, augment), seeds, rank] names, unless it already is. Every call
        carries ``setup``, so a worker Ray restarted (blank: built with no arguments)
        sets itself up again from it at its next call, and so does an actor that
        ``reuse_actors`` kept from another run."""
        key = (setup[0].binary(), setup[2])
        if self.key == key:
            return
        import ray

        self.__dict__.clear()
        lanes_as_ray_cpus()
        options, model, objective, shards, owner, augment = ray.get(setup[0])
        seeds, rank = setup[1], setup[2]
        self.key = key
        self.ray, self.o, self.objective = ray, options, objective
        self.server = RemoteServer(ray, shards, owner)
        self.replica = Replica(model, seeds[0])
        self.data = Data(augment, seeds[1])
        self.rank = rank
        self.steps = 0
        self.pulled: Any = None
        self.push_version = self.push_read_state = None
        self.accrued: dict | None = None
        if options["kind"] != "downpour":  # x^i = x̃ now (the start, or a restart mid-run)
            self.replica.load(self.server.pull().arrays)
            self.velocity = [numpy.zeros_like(p.data) for p in self.replica.params]
            self.saved = [numpy.empty_like(p.data) for p in self.replica.params]

    def run(self, setup: list, data: list, indices: list, lrs: list) -> tuple[list, int, float]:
        """The client rule on each mini-batch of ``indices`` in turn: ([(loss, scores)],
        process id, seconds)."""
        start = time.perf_counter()
        self._setup(setup)
        results = []
        for index in indices:
            x, y, w = self.data.rows(data, index)
            if self.o["kind"] == "downpour":
                results.append(self._downpour(x, y, w, lrs))
            else:
                results.append(self._easgd(x, y, w, lrs[0]))
        return results, os.getpid(), time.perf_counter() - start

    def _downpour(self, x: Any, y: Any, w: Any, lrs: list) -> tuple[float, Any]:
        o, replica = self.o, self.replica
        if self.pulled is None:
            self._fetch()
        value, scores = replica.gradient(self.objective, x, y, w)
        if not numpy.isfinite(value):
            return value, scores
        if self.push_version is None:
            self.push_version, self.push_read_state = self.pulled.version, self.pulled.read_state
        grads = replica.grads()
        if o["n_push"] > 1:
            if self.accrued is None:
                self.accrued = {k: numpy.zeros_like(g) for k, g in grads.items()}
            for name, g in grads.items():
                self.accrued[name] += g
        if o["local_lr"]:
            for param in replica.params:
                param.data -= o["local_lr"] * param.grad
        self.steps += 1
        fetch = self.steps % o["n_fetch"] == 0
        if self.steps % o["n_push"] == 0:
            pushed = (self.accrued if o["n_push"] > 1 else grads, self.push_version,
                      self.push_read_state, lrs)
            if fetch:  # the push and the fetch after it in one round trip
                self._load(self.server.push_pull(*pushed))
                fetch = False
            else:
                self.server.push(*pushed)
            self.push_version = self.push_read_state = None
            if self.accrued is not None:
                for a in self.accrued.values():
                    a.fill(0)
        if fetch:
            self._fetch()
        return value, scores

    def _fetch(self) -> None:
        self._load(self.server.pull())

    def _load(self, pulled: Pulled) -> None:
        self.pulled = pulled
        self.replica.load(pulled.arrays)

    def _easgd(self, x: Any, y: Any, w: Any, lr: float) -> tuple[float, Any]:
        """EASGD.train_step's worker part: g at x (EAMSGD: x + δv), elastic move, SGD step.
        Synchronous: a non-finite batch still takes part in its round's elastic move (the
        other workers wait for it), with no SGD step."""
        params, momentum = self.replica.params, self.o["momentum"]
        synchronous = self.o["kind"] == "easgd_sync"
        if momentum:
            for param, saved, v in zip(params, self.saved, self.velocity):
                numpy.copyto(saved, param.data)
                param.data += momentum * v
        value, scores = self.replica.gradient(self.objective, x, y, w)
        if momentum:
            for param, saved in zip(params, self.saved):
                numpy.copyto(param.data, saved)
        finite = bool(numpy.isfinite(value))
        if not finite and not synchronous:
            return value, scores
        if self.steps % self.o["tau"] == 0:
            arrays = self.replica.arrays()
            if synchronous:
                moves = self.server.elastic_round(self.rank, self.steps // self.o["tau"],
                                                  arrays, self.o["alpha"])
            else:
                moves = self.server.elastic(arrays, self.o["alpha"])
            for k, move in moves.items():
                arrays[k] -= move
        if finite:
            for param, v in zip(params, self.velocity):
                if momentum:
                    v *= momentum
                    v -= lr * param.grad
                    param.data += v
                else:
                    param.data -= lr * param.grad
        self.steps += 1
        return value, scores

    def arrays(self, setup: list) -> dict:
        self._setup(setup)
        return self.replica.arrays()

    def buffers(self, setup: list) -> list:
        self._setup(setup)
        return [b for _, b in self.replica.model.named_buffers()]


class SyncWorker(KeptActor):
    """A synchronous data-parallel replica: its shard's gradient, a ring all-reduce with the
    other replicas, then the same optimizer step as theirs (see ``ray_backend``).

    Runs with two concurrency groups: ``run`` in the default one (one call at a time),
    ``deliver`` (a peer's chunk) in ``"mail"``, so chunks arrive while ``run`` waits.
    """

    def setup(self, payload: tuple, objective: Any, seeds: tuple, rank: int, size: int,
              augment: Any, peers: list) -> int:
        """Become replica ``rank`` of ``size`` of a run (a new actor, or one kept by
        ``reuse_actors``: everything of its previous run is dropped), talking to ``peers``
        (all replicas' handles). Returns the process id."""
        self.__dict__.clear()
        lanes_as_ray_cpus()
        model, optimizer = payload  # one object: the optimizer holds the model's parameters
        self.replica = Replica(model, seeds[0])
        originals = list(dict(model.named_parameters()).values())
        self.optimizer = copy.deepcopy(optimizer, {id(p): q for p, q
                                                   in zip(originals, self.replica.params)})
        self.objective, self.rank, self.size = objective, rank, size
        self.data = Data(augment, seeds[1])
        self.mailbox = Mailbox()
        self.peers = peers
        self.calls = 0
        return os.getpid()

    def deliver(self, tag: Any, chunk: numpy.ndarray) -> None:
        self.mailbox.put(tag, chunk)

    def _send(self, rank: int, tag: Any, chunk: numpy.ndarray) -> None:
        self.peers[rank].deliver.options(concurrency_group="mail").remote(tag, chunk)

    def _receive(self, tag: Any) -> numpy.ndarray:
        return self.mailbox.take(tag, PEER_TIMEOUT)

    def run(self, data: list, steps: list, lrs: list) -> tuple[list, int, float]:
        """``steps``: per step (this shard's indices, its share w_i / W of the batch weight).
        Returns per step (w_i/W · ℓ_i — or ℓ_i itself when not finite —, this shard's scores
        or None, the penalty λΩ(θ_t)), the process id and the seconds spent."""
        start = time.perf_counter()
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        results = [self._step(data, index, share) for index, share in steps]
        return results, os.getpid(), time.perf_counter() - start

    def _step(self, data: list, index: Any, share: float) -> tuple[float, Any, float]:
        """g_i·w_i/W all-reduced with a non-finite flag appended: Σ is the batch gradient,
        and a flag > 0 (some shard's loss not finite) makes every replica skip the update."""
        replica, params = self.replica, self.replica.params
        regularizer = self.objective.regularizer
        penalty = 0.0 if regularizer is None else float(regularizer.penalty(params))
        scores, value = None, 0.0
        for param in params:
            param.zero_grad()
        if len(index):
            x, y, w = self.data.rows(data, index)
            if share == 0:
                scores = replica.model.train().forward(x)
            else:
                value, scores = batch_gradient(replica.model, params, self.objective.unregularized,
                                               x, y, w)
        finite = bool(numpy.isfinite(value))
        if not finite:
            for param in params:
                param.zero_grad()
        flat = numpy.concatenate([p.grad.ravel() * share for p in params]
                                 + [numpy.asarray([0.0 if finite else 1.0], params[0].grad.dtype)])
        self.calls += 1
        ring_allreduce(flat, self.rank, self.size, self._send, self._receive, tag=self.calls)
        contribution = share * value if finite else value
        if flat[-1] > 0:  # every replica sees it: none updates
            return contribution, scores, penalty
        start = 0
        for param in params:
            param.grad[...] = flat[start:start + param.size].reshape(param.shape)
            start += param.size
        if regularizer is not None:
            regularizer.add_gradient(params)
        self.optimizer.step()
        if hasattr(regularizer, "apply"):
            regularizer.apply(params)
        return contribution, scores, penalty

    def state(self) -> dict[str, Any]:
        """θ, the optimizer state and the buffers of this replica."""
        return {"arrays": self.replica.arrays(), "optimizer": self.optimizer.state_dict(),
                "buffers": [b for _, b in self.replica.model.named_buffers()]}
