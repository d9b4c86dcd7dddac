"""The Ray implementation: the parameter server and the workers as Ray actors.

``OnRay(strategy)`` runs a ``Downpour``, ``EASGD`` (asynchronous) or
``SyncDataParallel`` strategy — same options, same update rules — with real
processes::

    Trainer(model, loss, opt, strategy=OnRay(Downpour(workers=4, n_push=4)))
    Trainer(model, loss, opt, strategy=OnRay(EASGD(workers=4, tau=4), address="auto"))

*Downpour / EASGD.* One ``ServerActor`` wraps the plain ``ParameterServer``
(``base.py``: its calls take and return NumPy arrays) over a copy of the
Trainer's model and optimizer; k ``AsyncWorker`` actors each hold a replica
and run the strategy's client rule against the server on their own:

    Downpour: pull every n_fetch steps, push the accrued gradient every n_push
              (the server applies the Trainer's optimizer, measures staleness τ)
    EASGD:    every τ steps an ``elastic`` call: x̃ ← x̃ + α(x − x̃), x^i ← x^i − α(x − x̃)

The Trainer hands ``OnRay`` whole epochs (``Strategy.runs_epochs``): the
training data go to Ray's object store once (``ray.put``; each worker
fetches them once), and each of the Trainer's mini-batches — drawn with the
Trainer's generator, in its order — is sent as an index array to the next
worker (round robin), with at most k calls in flight, so the k workers
compute at the same time and their gradients really are stale. Results are
counted in batch order (the epoch's ``loss`` / ``accuracy`` are exact) and
callbacks get ``on_batch_end`` as each comes back. At the epoch's end the
server's θ (Downpour: and its optimizer state) are copied into the
Trainer's model and optimizer, so validation, callbacks and checkpoints see
the server's state; the model goes to the object store once per fit.
``Trainer(augment=...)`` is refused (it needs each batch in this process).

*SyncDataParallel.* k ``SyncWorker`` actors each take a shard of the batch
(indices) at θ_t (sent once per step through the object store); the driver sums the
shard gradients weighted by size (a reduce at the driver, not a ring
all-reduce) and applies the Trainer's optimizer — the same update as
single-process training with batch k·b.

*Ray.* ``ray.init(address="local", num_cpus=..., include_dashboard=False,
object_store_memory=...)`` unless Ray is already running in this process,
or ``address`` / ``RAY_ADDRESS`` names a cluster to join (``ray start
--head`` on the first machine, ``ray start --address=HEAD:6379`` on the
others, then ``address="HEAD:6379"`` or ``"auto"`` on the head). A Ray that
``OnRay`` started is shut down, and the actors are killed, when the fit ends,
however it ends (``Strategy.end_fit``: success, an error anywhere in the fit —
a callback's included — or Ctrl-C), or on ``close()``.

*Faults.* Async workers are restartable actors (``max_restarts``): a killed
worker is restarted by Ray and its call retried; a restarted Downpour
worker pulls θ, an EASGD worker starts from the current centre; the epoch
logs count ``worker_restarts``. A dead synchronous worker stops the fit with
an error naming it (resume from the last checkpoint).

Not on Ray (refused before anything starts): ``delay`` (simulated, in
process only), ``shards > 1`` and synchronous EASGD.
"""

from __future__ import annotations

import copy
import math
import os
import shutil
import tempfile
from typing import Any

import numpy

from ermlab.distributed.base import ParameterServer, Pulled, Strategy, check_int
from ermlab.distributed.downpour import Downpour
from ermlab.distributed.easgd import EASGD
from ermlab.distributed.inprocess import Replica, batch_gradient
from ermlab.distributed.sync import SyncDataParallel

RAY_MISSING = 'the Ray backend needs Ray, which is not installed: pip install "ermlab[distributed]"'


def import_ray() -> Any:
    """``ray``, or a one-line ``ImportError`` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ImportError(RAY_MISSING) from None
    return ray


def start_ray(address: str | None = None, num_cpus: int | None = None,
              object_store_memory: int | None = None) -> tuple[bool, str | None]:
    """Connect to Ray; returns (whether this call started or joined it, its temp dir or None).

    Already running in this process: used as is. ``address`` (or
    ``RAY_ADDRESS``): join that cluster. Otherwise a local Ray with
    ``num_cpus`` CPUs (default: all), no dashboard, in a fresh temp dir of its
    own (under ``RAY_TMPDIR`` or /tmp; short, as Ray's sockets live in it), so
    no stale session files of another Ray get in its way; ``stop_ray``
    removes it.
    """
    ray = import_ray()
    if ray.is_initialized():
        return False, None
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
        return True, None
    temp = tempfile.mkdtemp(prefix="ermray", dir=os.environ.get("RAY_TMPDIR", "/tmp"))
    try:
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=False,
                 object_store_memory=object_store_memory, log_to_driver=False, _temp_dir=temp)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return True, temp


def stop_ray(temp_dir: str | None) -> None:
    """Shut down the Ray ``start_ray`` started (or disconnect) and remove its temp dir."""
    import_ray().shutdown()
    if temp_dir is not None:
        shutil.rmtree(temp_dir, ignore_errors=True)


class _Objective:
    """The loss and regularizer a worker needs (what ``batch_gradient`` reads of a Trainer)."""

    def __init__(self, loss: Any, regularizer: Any) -> None:
        self.loss, self.regularizer = loss, regularizer


class _Data:
    """A worker's view of the training data: fetched once per ``ray.put``, then indexed."""

    def __init__(self) -> None:
        self.key: Any = None
        self.arrays: Any = None

    def rows(self, data: list, index: Any) -> tuple:
        """``(x, y, w)[index]``; ``data`` is ``[ObjectRef]`` (in a list: Ray leaves it as is)."""
        ref = data[0]
        if self.key != ref.binary():
            import ray

            self.arrays, self.key = ray.get(ref), ref.binary()
        x, y, w = self.arrays
        return x[index], y[index], None if w is None else w[index]


# -- actors (plain classes here; ``ray.remote`` wraps them when a run starts) -----------------


class ServerActor:
    """A ``ParameterServer`` over its own copy of the model and optimizer."""

    def __init__(self, payload: tuple) -> None:
        # one object, so the optimizer still holds the model's parameters; copied, as
        # arrays read from Ray's object store are read-only
        model, optimizer, regularizer = copy.deepcopy(payload)
        named = dict(model.named_parameters())
        params = list(named.values())
        constraint = ((lambda: regularizer.apply(params)) if hasattr(regularizer, "apply")
                      else None)
        self.server = ParameterServer(named, optimizer, constraint)

    def pull(self) -> Pulled:
        return self.server.pull()

    def push(self, grads: dict, version: int, read_state: Any, lrs: list) -> int:
        for group, lr in zip(self.server.optimizer.param_groups, lrs):
            group["lr"] = lr
        return self.server.push(grads, version, read_state)

    def elastic(self, arrays: dict, alpha: float) -> dict:
        return self.server.elastic(arrays, alpha)

    def state(self) -> dict[str, Any]:
        optimizer = self.server.optimizer
        return {"server": self.server.state_dict(), "arrays": self.server.arrays(),
                "optimizer": None if optimizer is None else optimizer.state_dict()}

    def load(self, state: dict[str, Any]) -> None:
        self.server.load_state_dict(state)


class AsyncWorker:
    """A Downpour or EASGD client on its own replica, talking to the server actor."""

    def __init__(self, options: dict[str, Any], model: Any, objective: Any, seed: Any,
                 server: Any) -> None:
        import ray

        self.ray, self.o, self.objective, self.server = ray, options, objective, server
        self.replica = Replica(model, seed)
        self.data = _Data()
        self.steps = 0
        self.pulled: Any = None
        self.push_version = self.push_read_state = None
        self.accrued: dict | None = None
        if options["kind"] == "easgd":  # x^i = x̃ now (the start, or a restart mid-run)
            self.replica.load(ray.get(server.pull.remote()).arrays)
            self.velocity = [numpy.zeros_like(p.data) for p in self.replica.params]
            self.saved = [numpy.empty_like(p.data) for p in self.replica.params]

    def step(self, data: list, index: Any, lrs: list) -> tuple[float, Any, int]:
        """The mini-batch ``index`` of the client rule; returns (loss, scores, process id)."""
        x, y, w = self.data.rows(data, index)
        if self.o["kind"] == "easgd":
            value, scores = self._easgd(x, y, w, lrs[0])
        else:
            value, scores = self._downpour(x, y, w, lrs)
        return value, scores, os.getpid()

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
        if self.steps % o["n_push"] == 0:
            self.ray.get(self.server.push.remote(
                self.accrued if o["n_push"] > 1 else grads, self.push_version,
                self.push_read_state, lrs))
            self.push_version = self.push_read_state = None
            if self.accrued is not None:
                for a in self.accrued.values():
                    a.fill(0)
        if self.steps % o["n_fetch"] == 0:
            self._fetch()
        return value, scores

    def _fetch(self) -> None:
        self.pulled = self.ray.get(self.server.pull.remote())
        self.replica.load(self.pulled.arrays)

    def _easgd(self, x: Any, y: Any, w: Any, lr: float) -> tuple[float, Any]:
        """EASGD.train_step's worker part: g at x (EAMSGD: x + δv), elastic move, SGD step."""
        params, momentum = self.replica.params, self.o["momentum"]
        if momentum:
            for param, saved, v in zip(params, self.saved, self.velocity):
                numpy.copyto(saved, param.data)
                param.data += momentum * v
        value, scores = self.replica.gradient(self.objective, x, y, w)
        if momentum:
            for param, saved in zip(params, self.saved):
                numpy.copyto(param.data, saved)
        if not numpy.isfinite(value):
            return value, scores
        if self.steps % self.o["tau"] == 0:
            arrays = self.replica.arrays()
            moves = self.ray.get(self.server.elastic.remote(arrays, self.o["alpha"]))
            for k, move in moves.items():
                arrays[k] -= move
        for param, v in zip(params, self.velocity):
            if momentum:
                v *= momentum
                v -= lr * param.grad
                param.data += v
            else:
                param.data -= lr * param.grad
        self.steps += 1
        return value, scores

    def arrays(self) -> dict:
        return self.replica.arrays()

    def buffers(self) -> list:
        return [b for _, b in self.replica.model.named_buffers()]


class SyncWorker:
    """A synchronous data-parallel replica: the gradient of its shard at the θ it is sent."""

    def __init__(self, model: Any, objective: Any, seed: Any) -> None:
        self.replica, self.objective = Replica(model, seed), objective
        self.data = _Data()

    def gradient(self, theta: tuple, data: list, index: Any) -> tuple:
        """(shard loss, {name: gradient} or None for a zero-weight shard, scores, buffers)."""
        x, y, w = self.data.rows(data, index)
        arrays, buffers = theta
        self.replica.load(arrays)
        for (_, mine), theirs in zip(self.replica.model.named_buffers(), buffers):
            numpy.copyto(mine, theirs)
        if w is not None and float(w.sum()) == 0:
            scores = self.replica.model.train().forward(x)
            return 0.0, None, scores, None
        value, scores = batch_gradient(self.replica.model, self.replica.params, self.objective,
                                       x, y, w)
        grads = self.replica.grads() if numpy.isfinite(value) else None
        return value, grads, scores, [b for _, b in self.replica.model.named_buffers()]


# -- the strategy ---------------------------------------------------------------------------


class OnRay(Strategy):
    """Run ``strategy`` (Downpour, asynchronous EASGD, SyncDataParallel) on Ray actors.

    Args:
        strategy: the in-process strategy whose options to run.
        address: a Ray cluster to join (``"auto"``, ``"HEAD:6379"``); default
            ``RAY_ADDRESS``, else a local Ray.
        num_cpus: CPUs of a local Ray (default: all of the machine's).
        object_store_memory: bytes of a local Ray's object store (default 256 MiB).
        max_restarts: restarts of a killed asynchronous worker (Ray actor restarts).

    Example:
        >>> Trainer(model, loss, optim.Adagrad(model.parameters(), lr=0.05),
        ...         strategy=OnRay(Downpour(workers=4, n_push=4), address="auto"))
    """

    runs_epochs = True

    def __init__(self, strategy: Any, *, address: str | None = None,
                 num_cpus: int | None = None, object_store_memory: int = 256 * 2**20,
                 max_restarts: int = 3) -> None:
        import_ray()
        if not isinstance(strategy, (Downpour, EASGD, SyncDataParallel)):
            raise ValueError(f"OnRay runs Downpour, EASGD or SyncDataParallel; got "
                             f"{type(strategy).__name__}")
        if getattr(strategy, "delay", 0):
            raise ValueError("delay simulates staleness in process; on Ray staleness is real — "
                             "use delay=0")
        if getattr(strategy, "shards", 1) > 1:
            raise ValueError("OnRay runs one server actor; use shards=1")
        if isinstance(strategy, EASGD) and not strategy.asynchronous:
            raise ValueError("OnRay runs asynchronous EASGD only; use asynchronous=True")
        self.strategy = strategy
        self.workers = strategy.workers
        self.address = address
        self.num_cpus = None if num_cpus is None else check_int("OnRay", "num_cpus", num_cpus, 1)
        self.object_store_memory = check_int("OnRay", "object_store_memory",
                                             object_store_memory, 2**20)
        self.max_restarts = check_int("OnRay", "max_restarts", max_restarts, 0)
        self.kind = {Downpour: "downpour", EASGD: "easgd"}.get(type(strategy), "sync")
        self.server: Any = None
        self._actors: list | None = None
        self._model_ref: Any = None
        self._data: Any = None
        self._data_key: Any = None
        self._owns_ray = False
        self._temp_dir: str | None = None
        self._clock = 0
        self._saved: dict[str, Any] = {}
        self._epoch_counts: dict[int, int] = {}
        self._reset_epoch()

    def bind(self, trainer: Any) -> None:
        self.strategy.bind(trainer)
        if trainer.augment is not None:
            raise ValueError("OnRay's workers index the training data in Ray's object store; "
                             "the Trainer's augment needs each batch in this process — "
                             "leave out augment")

    # -- start and stop -------------------------------------------------------------

    def _start(self, trainer: Any) -> None:
        ray = import_ray()
        self._owns_ray, self._temp_dir = start_ray(self.address, self.num_cpus,
                                                   self.object_store_memory)
        try:
            cpus = ray.cluster_resources().get("CPU", 1.0)
            per_worker = min(1.0, cpus / self.workers)
            objective = _Objective(trainer.loss, trainer.regularizer)
            seeds = numpy.random.SeedSequence(self.strategy.seed).spawn(self.workers)
            model = self._model_ref = ray.put(trainer.model)  # kept: restarts rebuild from it
            if self.kind == "sync":
                remote = ray.remote(num_cpus=per_worker, max_restarts=0)(SyncWorker)
                self._actors = [remote.remote(model, objective, s) for s in seeds]
            else:
                optimizer = trainer.optimizer if self.kind == "downpour" else None
                self.server = ray.remote(num_cpus=0)(ServerActor).remote(
                    (trainer.model, optimizer, trainer.regularizer))
                if self._saved.get("server"):
                    ray.get(self.server.load.remote(self._saved["server"]))
                s = self.strategy
                options = {"kind": self.kind, "n_fetch": getattr(s, "n_fetch", 1),
                           "n_push": getattr(s, "n_push", 1),
                           "local_lr": getattr(s, "local_lr", 0.0), "tau": getattr(s, "tau", 1),
                           "alpha": getattr(s, "alpha", 0.0),
                           "momentum": getattr(s, "momentum", 0.0)}
                remote = ray.remote(num_cpus=per_worker, max_restarts=self.max_restarts,
                                    max_task_retries=self.max_restarts)(AsyncWorker)
                self._actors = [remote.remote(options, model, objective, seed, self.server)
                                for seed in seeds]
            self._clock = int(self._saved.get("clock", 0))
            self._epoch_counts = {int(k): v for k, v in
                                  self._saved.get("server", {}).get("staleness_counts",
                                                                    {}).items()}
        except BaseException:
            self.close()
            raise

    def end_fit(self, trainer: Any) -> None:
        self.close()

    def close(self) -> None:
        """Kill the actors; shut Ray down if this strategy started it."""
        if self._actors is None and not self._owns_ray:
            return
        ray = import_ray()
        if self._actors is not None and self.server is not None:
            try:
                self._saved = {"clock": self._clock,
                               "server": ray.get(self.server.state.remote())["server"]}
            except Exception:  # noqa: BLE001 - the server is gone; keep the last saved state
                pass
        for actor in (self._actors or []) + ([self.server] if self.server is not None else []):
            try:
                ray.kill(actor)
            except Exception:  # noqa: BLE001 - already dead
                pass
        self._actors, self.server, self._model_ref = None, None, None
        self._data = self._data_key = None
        self._inflight = []
        if self._owns_ray:
            stop_ray(self._temp_dir)
            self._owns_ray, self._temp_dir = False, None

    # -- one epoch --------------------------------------------------------------------

    def run_epoch(self, trainer: Any, x: Any, y: Any, batch_size: int | None,
                  sample_weight: Any, epoch: int) -> tuple[float, float, float]:
        """The Trainer's shuffled mini-batches (same generator, same order), as index arrays
        to the workers; returns (Σ loss·size, Σ size, Σ hits). Callbacks see
        ``on_batch_end`` as each batch's result comes back."""
        try:
            return self._epoch(trainer, x, y, batch_size, sample_weight, epoch)
        except BaseException:  # an error or Ctrl-C (mostly met waiting on Ray): clean up
            self.close()
            raise

    def _epoch(self, trainer: Any, x: Any, y: Any, batch_size: int | None, w: Any,
               epoch: int) -> tuple[float, float, float]:
        from ermlab.data.loader import batches

        if self._actors is None:
            self._start(trainer)
        ray = import_ray()
        if self._data_key != (id(x), id(y), id(w)):  # the data go to the object store once
            self._data = ray.put((numpy.asarray(x), numpy.asarray(y),
                                  None if w is None else numpy.asarray(w)))
            self._data_key = (id(x), id(y), id(w))
        self._reset_epoch()
        n = len(x)
        steps = math.ceil(n / (n if batch_size is None else min(batch_size, n)))
        for batch, index in enumerate(batches(n, batch_size, shuffle=True, rng=trainer.rng), 1):
            if w is not None and float(w[index].sum()) == 0:
                continue
            if self.kind == "sync":
                value = self._sync_step(trainer, index, y, w)
                self._count(trainer, epoch, batch, steps, value, trainer.last_scores, y, w, index)
            else:
                self._dispatch(trainer, index)
                self._inflight.append((batch, index))
                while len(self._inflight) >= self.workers:
                    self._collect(trainer, epoch, steps, y, w)
            if trainer.stop_training:
                break
        while self._inflight:
            self._collect(trainer, epoch, steps, y, w)
        return tuple(self._sums)

    def _dispatch(self, trainer: Any, index: Any) -> None:
        groups = trainer.optimizer.param_groups
        if self.kind == "easgd":
            lrs = [self.strategy.lr if self.strategy.lr is not None else groups[0]["lr"]]
        else:
            lrs = [g.get("lr") for g in groups]
        worker = self._clock % self.workers
        self._clock += 1
        self._refs.append((worker, self._actors[worker].step.remote([self._data], index, lrs)))
        trainer.step += 1

    def _collect(self, trainer: Any, epoch: int, steps: int, y: Any, w: Any) -> None:
        """Wait for the oldest call in flight; count its batch; ``on_batch_end``."""
        ray = import_ray()
        batch, index = self._inflight.pop(0)
        worker, ref = self._refs.pop(0)
        try:
            value, scores, pid = ray.get(ref)
        except ray.exceptions.RayActorError as error:
            raise RuntimeError(f"{type(self.strategy).__name__} on Ray: worker {worker} died and "
                               f"could not be restarted ({type(error).__name__}); resume the "
                               "run from its last checkpoint") from None
        if self._pids[worker] not in (None, pid):
            self.restarts += 1
        self._pids[worker] = pid
        trainer.last_scores = scores
        self._count(trainer, epoch, batch, steps, value, scores, y, w, index)

    def _count(self, trainer: Any, epoch: int, batch: int, steps: int, value: float,
               scores: Any, y: Any, w: Any, index: Any) -> None:
        from ermlab.training.trainer import _hits

        yb, wb = y[index], None if w is None else w[index]
        size = float(len(index)) if wb is None else float(wb.sum())
        self._sums[0] += value * size
        self._sums[1] += size
        if numpy.asarray(yb).dtype.kind in "iub":
            self._sums[2] += _hits(scores, yb, wb)
        trainer._notify("on_batch_end", {"epoch": epoch, "batch": batch, "loss": value,
                                         "size": len(index), "steps_per_epoch": steps})

    def _sync_step(self, trainer: Any, index: Any, y: Any, w: Any) -> float:
        ray = import_ray()
        shards = [s for s in numpy.array_split(index, self.workers) if len(s)]
        weights = [float(len(s)) if w is None else float(w[s].sum()) for s in shards]
        total = sum(weights)
        theta = ray.put(({k: p.data for k, p in trainer.model.named_parameters()},
                         [b for _, b in trainer.model.named_buffers()]))
        refs = [self._actors[i].gradient.remote(theta, [self._data], s)
                for i, s in enumerate(shards)]
        results = []
        for i, ref in enumerate(refs):
            try:
                results.append(ray.get(ref))
            except ray.exceptions.RayActorError as error:
                raise RuntimeError(f"SyncDataParallel on Ray: worker {i} died "
                                   f"({type(error).__name__}); the synchronous step cannot go "
                                   "on — resume the run from its last checkpoint") from None
        trainer.last_scores = numpy.concatenate([r[2] for r in results])
        value = 0.0
        for weight, (shard_value, _, _, _) in zip(weights, results):
            if weight and not math.isfinite(shard_value):
                return shard_value
            value += weight / total * shard_value if weight else 0.0
        for name, param in trainer.model.named_parameters():
            param.grad.fill(0)
            for weight, (_, grads, _, _) in zip(weights, results):
                if grads is not None:
                    param.grad += weight / total * grads[name]
        if results[0][3] is not None:  # worker 0's running averages (DDP broadcast_buffers)
            for (_, mine), theirs in zip(trainer.model.named_buffers(), results[0][3]):
                numpy.copyto(mine, theirs)
        if trainer.regularizer is not None:
            value += trainer.regularizer.penalty(trainer.params)
        trainer.apply_update()
        return value

    # -- epoch end: copy the server's state into the Trainer ---------------------------

    def _reset_epoch(self) -> None:
        self._inflight: list = []
        self._refs: list = []
        self._sums = [0.0, 0.0, 0.0]
        self._pids: list = [None] * self.workers
        self.restarts = 0

    def _sync_trainer(self, trainer: Any) -> dict[str, Any]:
        ray = import_ray()
        state = ray.get(self.server.state.remote())
        for name, param in trainer.model.named_parameters():
            numpy.copyto(param.data, state["arrays"][name])
        if state["optimizer"] is not None:
            trainer.optimizer.load_state_dict(state["optimizer"])
        for (_, mine), theirs in zip(trainer.model.named_buffers(),
                                     ray.get(self._actors[0].buffers.remote())):
            numpy.copyto(mine, theirs)
        self._saved = {"clock": self._clock, "server": state["server"]}
        return state

    def epoch_logs(self, trainer: Any) -> dict[str, Any]:
        """Downpour: ``staleness_mean`` / ``staleness_max`` / ``server_updates`` of the
        epoch; EASGD: ``elastic_distance``; both: ``worker_restarts``. The server's θ
        (Downpour: and optimizer state) are copied into the Trainer first."""
        if self._actors is None or self.kind == "sync":
            return {}
        try:
            state = self._sync_trainer(trainer)
        except BaseException:
            self.close()
            raise
        logs: dict[str, Any] = {"worker_restarts": self.restarts}
        if self.kind == "downpour":
            now = {int(k): v for k, v in state["server"]["staleness_counts"].items()}
            new = {t: n - self._epoch_counts.get(t, 0) for t, n in now.items()}
            new = {t: n for t, n in new.items() if n}
            self._epoch_counts = now
            applied = sum(new.values())
            logs.update({"staleness_mean": sum(t * n for t, n in new.items()) / applied
                         if applied else float("nan"),
                         "staleness_max": max(new) if new else 0,
                         "server_updates": state["server"]["version"]})
        else:
            ray = import_ray()
            centre = state["arrays"]
            logs["elastic_distance"] = float(numpy.mean([
                numpy.sqrt(sum(float(((a - centre[k]) ** 2).sum()) for k, a in arrays.items()))
                for arrays in ray.get([w.arrays.remote() for w in self._actors])]))
        return logs

    def staleness(self) -> dict[int, int]:
        """``{τ: count}`` over the run (the server's counts at the last epoch end)."""
        counts = self._saved.get("server", {}).get("staleness_counts", {})
        return {int(k): int(v) for k, v in counts.items()}

    # -- checkpoints: the server's counters (θ and its optimizer state are the Trainer's) --

    def state_dict(self) -> dict[str, Any]:
        return dict(self._saved)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._saved = dict(state)
        if self.server is not None and state.get("server"):
            import_ray().get(self.server.load.remote(state["server"]))

    def __repr__(self) -> str:
        return f"OnRay({self.strategy!r}, address={self.address!r})"
