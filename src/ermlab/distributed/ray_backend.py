"""The Ray implementation: parameter servers, workers and replicas as Ray actors.

``OnRay(strategy)`` runs a ``Downpour``, ``EASGD`` (asynchronous or
synchronous) or ``SyncDataParallel`` strategy — same options, same update
rules — with real processes (the actors: ``ray_workers``)::

    Trainer(model, loss, opt, strategy=OnRay(Downpour(workers=4, n_push=4, shards=2)))
    Trainer(model, loss, opt, strategy=OnRay(EASGD(workers=4, tau=4), address="auto"))

*Calls of several steps.* The Trainer hands ``OnRay`` whole epochs
(``Strategy.runs_epochs``): the training data go to Ray's object store once
(``ray.put``; each worker fetches them once), and the Trainer's mini-batches —
drawn with its generator, in its order — go to the workers as index arrays,
``steps_per_call`` mini-batches per actor call (default: sized from the
measured seconds per step so that a call computes ≥ ~20 ms, up to 256 steps),
with at most two calls per worker in flight. Inside a call the worker applies
its rule to each mini-batch in turn, exactly as one call per mini-batch would
(Downpour counts n_fetch and n_push per step, EASGD τ per step). Results come
back per mini-batch and are counted in batch order (the epoch's ``loss`` /
``accuracy`` are exact); callbacks get ``on_batch_end`` per mini-batch as its
call comes back. What a call cannot see: a learning rate a callback changes
during the call (a call uses the rate at its dispatch) and ``stop_training``
set during it (the batches in flight still run and are counted). At the
epoch's end the Trainer's model (and optimizer state) are set from the
actors' — the server's θ, EASGD's centre x̃, replica 0 of synchronous
training — so validation, callbacks and checkpoints see them.

*Downpour / EASGD.* ``shards`` servers (``ServerActor``, each a
``ParameterServer`` over its share of the parameters, balanced by size as
in process, each with its own copy of the optimizer when ``shards > 1``); k
``AsyncWorker`` actors each hold a replica and run the client rule against
the shards (every pull / push / elastic move goes to all shards at once):

    Downpour: pull every n_fetch steps, push the accrued gradient every n_push
              (the servers apply the optimizer and measure staleness τ); a step
              that pushes and pulls does both in one round trip (``push_pull``)
    EASGD:    every τ steps an elastic move: x̃ ← x̃ + α(x − x̃), x^i ← x^i − α(x − x̃)

Asynchronous workers take runs of ``steps_per_call`` consecutive mini-batches,
call after call round robin. *Synchronous EASGD*: worker i takes the
mini-batches i, i + k, i + 2k, … (the in-process rounds); in its elastic round
r a worker's move uses x̃ after round r − 1 (``ServerActor.elastic_round``
waits for it) and x̃ takes the sum of the round's k moves, in worker order,
once all are in — the in-process update, computed by the actors.

*SyncDataParallel.* k ``SyncWorker`` replicas, each with its own copy of the
Trainer's optimizer. Each step every replica takes its shard of the
mini-batch, scales its gradient by the shard's share of the batch weight,
and the replicas **all-reduce** the gradients with a ring
(``allreduce.ring_allreduce``: reduce-scatter then all-gather, 2(k − 1)
chunk transfers actor to actor); every replica then applies the same update
(λ∇Ω, optimizer step, constraint) to the same bits, as DDP does — the run
equals single-process training with batch k·b up to rounding. Each replica
keeps its own batch-norm running averages; the Trainer gets replica 0's.

*Augmentation.* The Trainer's ``augment`` goes to the workers (it must be
picklable): each worker applies it to its own mini-batches (synchronous:
shards) with its own generator, spawned from the strategy's ``seed``; a run
is reproducible from the seed when the order of the calls is (one worker,
or SyncDataParallel), though not equal to the single-process augmentation,
which draws from the Trainer's generator.

*Ray.* ``ray.init(address="local", num_cpus=..., include_dashboard=False,
object_store_memory=...)`` unless Ray is already running in this process,
or ``address`` / ``RAY_ADDRESS`` names a cluster to join (``ray start
--head`` on the first machine, ``ray start --address=HEAD:6379`` on the
others, then ``address="HEAD:6379"`` or ``"auto"`` on the head). A Ray that
``OnRay`` started is shut down, and the actors are killed, when the fit ends,
however it ends (``Strategy.end_fit``: success, an error anywhere in the fit —
a callback's included — or Ctrl-C), or on ``close()``. Inside
``reuse_actors()`` (``actor_pool``), on a Ray it did not start, the actors of
a fit that ended are kept for the next fit of the same kind instead (a Ray
actor is a process: ~1 CPU-second to start); servers and synchronous replicas
are set up for a run by ``setup``, asynchronous workers by the setup every
call carries — the same path a worker Ray restarted takes.

*Faults.* Asynchronous workers are restartable actors (``max_restarts``): a
killed worker is restarted by Ray and its call retried; a restarted
Downpour worker pulls θ, an EASGD worker starts from the current centre; the
epoch logs count ``worker_restarts``. A dead synchronous worker
(SyncDataParallel, synchronous EASGD) stops the fit with an error naming it
(resume from the last checkpoint). Checkpoints hold the servers' counters
(and, with shards, their optimizer states); the workers restart from the
server's θ or centre on resume, and for each ``fit``.

Not on Ray (refused before anything starts): ``delay``. It simulates
staleness in one process; on Ray the staleness is real (measured by the
server), and a simulated delay on top of it would be neither.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections import deque
from typing import Any

import numpy

from ermlab.distributed.actor_pool import POOL, kill_actors
from ermlab.distributed.base import Strategy, algorithm_name, check_algorithm, check_int
from ermlab.distributed.downpour import Downpour
from ermlab.distributed.easgd import EASGD
from ermlab.distributed.inprocess import clone_optimizer, split_balanced
from ermlab.distributed.ray_workers import (
    AsyncWorker,
    Objective,
    ServerActor,
    SyncWorker,
    worker_seeds,
)
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




# -- the strategy ---------------------------------------------------------------------------

CALL_SECONDS = 0.02  # the automatic steps_per_call makes a call compute at least this long
MAX_STEPS_PER_CALL = 256


class _Call:
    """Calls in flight for one dispatch: ``refs`` [(worker, ObjectRef)], the mini-batches
    of each worker's call, and the results fetched so far."""

    def __init__(self, refs: list, batches: dict) -> None:
        self.refs, self.batches, self.results = refs, batches, {}

    @property
    def done(self) -> bool:
        return len(self.results) == len(self.refs)


class OnRay(Strategy):
    """Run ``strategy`` (Downpour, EASGD, SyncDataParallel) on Ray actors (module docstring).

    Args:
        strategy: the in-process strategy whose options to run (``delay`` must be 0).
        address: a Ray cluster to join (``"auto"``, ``"HEAD:6379"``); default
            ``RAY_ADDRESS``, else a local Ray. Checked here (``address.check_address``):
            a cluster that does not answer is a one-line ``ValueError`` at once.
        num_cpus: CPUs of a local Ray (default: all of the machine's).
        object_store_memory: bytes of a local Ray's object store (default 256 MiB).
        max_restarts: restarts of a killed asynchronous worker (Ray actor restarts).
        steps_per_call: mini-batches per actor call; default None: sized from the
            measured time per step so that a call computes ≥ 20 ms.

    Example:
        >>> Trainer(model, loss, optim.Adagrad(model.parameters(), lr=0.05),
        ...         strategy=OnRay(Downpour(workers=4, n_push=4), address="auto"))
    """

    runs_epochs = True

    def __init__(self, strategy: Any, *, address: str | None = None,
                 num_cpus: int | None = None, object_store_memory: int = 256 * 2**20,
                 max_restarts: int = 3, steps_per_call: int | None = None) -> None:
        import_ray()
        if not isinstance(strategy, (Downpour, EASGD, SyncDataParallel)):
            raise ValueError(f"OnRay runs Downpour, EASGD or SyncDataParallel; got "
                             f"{type(strategy).__name__}")
        if getattr(strategy, "delay", 0):
            raise ValueError("delay simulates staleness in process; on Ray staleness is real — "
                             "use delay=0")
        from ermlab.distributed.address import check_address

        check_address(address, option="OnRay's address")  # not minutes of ray.init retries
        self.strategy = strategy
        self.workers = strategy.workers
        self.shards = getattr(strategy, "shards", 1)
        self.address = address
        self.num_cpus = None if num_cpus is None else check_int("OnRay", "num_cpus", num_cpus, 1)
        self.object_store_memory = check_int("OnRay", "object_store_memory",
                                             object_store_memory, 2**20)
        self.max_restarts = check_int("OnRay", "max_restarts", max_restarts, 0)
        self.steps_per_call = (None if steps_per_call is None else
                               check_int("OnRay", "steps_per_call", steps_per_call, 1))
        if isinstance(strategy, EASGD):
            self.kind = "easgd" if strategy.asynchronous else "easgd_sync"
        else:
            self.kind = "downpour" if isinstance(strategy, Downpour) else "sync"
        self.servers: list | None = None
        self._actors: list | None = None
        self._kinds: list[tuple[type, dict, list]] = []  # (class, Ray options, actors)
        self._setups: list = []  # per asynchronous worker: what its calls carry (AsyncWorker;
        #                          it holds the run's object-store reference while the fit runs)
        self._restarted: set[int] = set()  # workers Ray restarted in this fit: not kept
        self._fit_pids: dict[int, int] = {}
        self._data: Any = None
        self._data_key: Any = None
        self._owns_ray = False
        self._temp_dir: str | None = None
        self._clock = 0
        self._saved: dict[str, Any] = {}
        self._state: dict[str, Any] = {}
        self._epoch_counts: dict[int, int] = {}
        self._per_step: float | None = None
        self._reset_epoch()

    @property
    def server(self) -> Any:
        """The first server actor (None when no run is on)."""
        return self.servers[0] if self.servers else None

    def bind(self, trainer: Any) -> None:
        self.strategy.bind(trainer)
        if self.shards > 1 and self.kind != "sync":
            for part in split_balanced(dict(trainer.model.named_parameters()), self.shards):
                if self.kind == "downpour":  # refused now, not in the actors
                    clone_optimizer(trainer.optimizer, list(part.values()))
        if trainer.augment is not None:
            try:
                import_ray().cloudpickle.dumps(trainer.augment)
            except Exception as error:  # noqa: BLE001 - any failure to pickle
                raise ValueError(f"OnRay sends the Trainer's augment to its workers, so it must "
                                 f"be picklable; {trainer.augment!r} is not "
                                 f"({type(error).__name__}) — use an "
                                 "ermlab.data.transforms object or a module-level function"
                                 ) from None

    # -- start and stop -------------------------------------------------------------

    def _start(self, trainer: Any) -> None:
        ray = import_ray()
        self._owns_ray, self._temp_dir = start_ray(self.address, self.num_cpus,
                                                   self.object_store_memory)
        try:
            cpus = ray.cluster_resources().get("CPU", 1.0)
            per_worker = min(1.0, cpus / self.workers)
            objective = Objective(trainer.loss, trainer.regularizer)
            seeds = worker_seeds(self.strategy.seed, self.workers)
            augment = trainer.augment
            if self.kind == "sync":
                payload = ray.put((trainer.model, trainer.optimizer))
                self._actors = self._actors_of(ray, SyncWorker, self.workers, {
                    "num_cpus": per_worker, "max_restarts": 0,
                    "concurrency_groups": {"mail": 1}})
                ray.get([a.setup.remote(payload, objective, s, rank, self.workers, augment,
                                        self._actors)
                         for rank, (a, s) in enumerate(zip(self._actors, seeds))])
            else:
                self._start_servers(ray, trainer)
                owner = {name: i for i, part in enumerate(self._parts(trainer)) for name in part}
                s = self.strategy
                options = {"kind": self.kind, "n_fetch": getattr(s, "n_fetch", 1),
                           "n_push": getattr(s, "n_push", 1),
                           "local_lr": getattr(s, "local_lr", 0.0), "tau": getattr(s, "tau", 1),
                           "alpha": getattr(s, "alpha", 0.0),
                           "momentum": getattr(s, "momentum", 0.0)}
                restarts = 0 if self.kind == "easgd_sync" else self.max_restarts
                # every call carries its worker's setup: a restarted worker (or one kept
                # by reuse_actors from another run) sets itself up from it (AsyncWorker)
                shared = ray.put((options, trainer.model, objective, self.servers, owner,
                                  augment))
                self._setups = [[shared, seed, rank] for rank, seed in enumerate(seeds)]
                self._actors = self._actors_of(ray, AsyncWorker, self.workers, {
                    "num_cpus": per_worker, "max_restarts": restarts,
                    "max_task_retries": restarts})
            self._clock = int(self._saved.get("clock", 0))
            self._epoch_counts = _staleness(self._saved.get("server"))
        except BaseException:
            self.close()
            raise

    def _parts(self, trainer: Any) -> list[list[str]]:
        named = dict(trainer.model.named_parameters())
        return [list(part) for part in split_balanced(named, self.shards)]

    def _start_servers(self, ray: Any, trainer: Any) -> None:
        """One ``ServerActor`` per shard, loaded with the saved counters (and optimizers)."""
        optimizer = trainer.optimizer if self.kind == "downpour" else None
        payload = ray.put((trainer.model, optimizer, trainer.regularizer))
        options: dict[str, Any] = {"num_cpus": 0}
        if self.kind == "easgd_sync":  # elastic_round waits for the other workers' moves
            options["max_concurrency"] = self.workers + 2
        self.servers = self._actors_of(ray, ServerActor, self.shards, options)
        ray.get([server.setup.remote(payload, names, self.shards > 1, self.workers, state)
                 for server, names, state in zip(self.servers, self._parts(trainer),
                                                 self._server_states())])

    def _server_states(self) -> list:
        """Per server: the saved counters (with shards: and optimizer state), or None."""
        saved = self._saved.get("server")
        if not saved:
            return [None] * self.shards
        return saved if isinstance(saved, list) else [{"server": saved}]

    def _load_servers(self, ray: Any) -> None:
        """The saved counters (with shards: and optimizer states) into the server actors."""
        ray.get([server.load.remote(state) for server, state
                 in zip(self.servers, self._server_states()) if state is not None])

    def _actors_of(self, ray: Any, cls: type, count: int, options: dict[str, Any]) -> list:
        """``count`` actors of ``cls`` with these Ray options: kept ones first (inside
        ``reuse_actors``; none on a Ray this strategy just started), the rest started now."""
        kept = POOL.take(ray, cls, options, count)
        remote = ray.remote(**options)(cls)
        actors = kept + [remote.remote() for _ in range(count - len(kept))]
        self._kinds.append((cls, options, actors))
        return actors

    def end_fit(self, trainer: Any) -> None:
        self.close(keep=True)

    def close(self, keep: bool = False) -> None:
        """Kill the actors — or, with ``keep`` inside ``reuse_actors``, keep those not
        restarted for the next fit —; shut Ray down if this strategy started it."""
        if self._actors is None and self.servers is None and not self._owns_ray:
            return
        ray = import_ray()
        restarted = {id(self._actors[rank]) for rank in self._restarted} if self._actors else set()
        for cls, options, actors in self._kinds:
            rest = [a for a in actors if id(a) in restarted]
            healthy = [a for a in actors if id(a) not in restarted]
            if keep and not self._owns_ray:
                healthy = POOL.give_back(ray, cls, options, healthy)
            kill_actors(ray, rest + healthy)
        self._kinds, self._restarted, self._fit_pids = [], set(), {}
        self._actors, self.servers, self._setups = None, None, []
        self._data = self._data_key = None
        self._calls = deque()
        if self._owns_ray:
            stop_ray(self._temp_dir)
            self._owns_ray, self._temp_dir = False, None

    # -- one epoch --------------------------------------------------------------------

    def run_epoch(self, trainer: Any, x: Any, y: Any, batch_size: int | None,
                  sample_weight: Any, epoch: int) -> tuple[float, float, float]:
        """The Trainer's shuffled mini-batches (same generator, same order), as index arrays
        to the workers; returns (Σ loss·size, Σ size, Σ hits). Callbacks see
        ``on_batch_end`` per mini-batch, in batch order."""
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
        self._epoch_info = (epoch, math.ceil(n / (n if batch_size is None
                                                  else min(batch_size, n))), y, w)
        waiting: list = []
        for batch, index in enumerate(batches(n, batch_size, shuffle=True, rng=trainer.rng), 1):
            if w is not None and float(w[index].sum()) == 0:
                continue
            waiting.append((batch, index))
            if len(waiting) >= self._call_size():
                self._dispatch(trainer, waiting)
                waiting = []
            if trainer.stop_training:
                waiting = []
                break
        if waiting:
            self._dispatch(trainer, waiting)
        while self._calls:
            self._collect(trainer)
        self._sync_trainer(trainer)
        return tuple(self._sums)

    def _call_size(self) -> int:
        """Mini-batches to gather before a dispatch: steps_per_call per worker for the
        synchronous EASGD rounds, steps_per_call otherwise."""
        per_call = self.steps_per_call
        if per_call is None:
            per_call = 1 if self._per_step is None else min(
                MAX_STEPS_PER_CALL, max(1, math.ceil(CALL_SECONDS / max(self._per_step, 1e-9))))
        return per_call * self.workers if self.kind == "easgd_sync" else per_call

    def _dispatch(self, trainer: Any, waiting: list) -> None:
        """Send the gathered mini-batches as actor calls; wait while too many are in flight."""
        while len(self._calls) >= 2 * (1 if self.kind in ("sync", "easgd_sync")
                                       else self.workers):
            self._collect(trainer)
        groups = trainer.optimizer.param_groups
        data = [self._data]
        if self.kind == "sync":
            lrs = [g.get("lr") for g in groups]
            steps = [self._shards(index) for _, index in waiting]
            refs = [(rank, actor.run.remote(data, [s[rank] for s in steps], lrs))
                    for rank, actor in enumerate(self._actors)]
            call = _Call(refs, {rank: waiting for rank in range(self.workers)})
        elif self.kind == "easgd_sync":
            lr = self.strategy.lr if self.strategy.lr is not None else groups[0]["lr"]
            mine: dict[int, list] = {}
            for offset, item in enumerate(waiting):
                mine.setdefault((self._clock + offset) % self.workers, []).append(item)
            refs = [(rank, self._actors[rank].run.remote(self._setups[rank], data,
                                                         [i for _, i in items], [lr]))
                    for rank, items in mine.items()]
            call = _Call(refs, mine)
        else:
            if self.kind == "easgd":
                lrs = [self.strategy.lr if self.strategy.lr is not None else groups[0]["lr"]]
            else:
                lrs = [g.get("lr") for g in groups]
            rank = self._calls_made % self.workers
            ref = self._actors[rank].run.remote(self._setups[rank], data,
                                                [i for _, i in waiting], lrs)
            call = _Call([(rank, ref)], {rank: waiting})
        self._calls_made += 1
        self._clock += len(waiting)
        trainer.step += len(waiting)
        self._order.extend(batch for batch, _ in waiting)
        self._calls.append(call)

    def _shards(self, index: Any) -> list[tuple[Any, float]]:
        """SyncDataParallel's cut of one mini-batch: per worker (indices, weight share)."""
        w = self._epoch_info[3]
        shards = numpy.array_split(index, self.workers)
        weights = [float(len(s)) if w is None else float(w[s].sum()) for s in shards]
        total = sum(weights)
        return [(s, weight / total) for s, weight in zip(shards, weights)]

    def _collect(self, trainer: Any) -> None:
        """Wait for the oldest dispatch (watching all calls in flight, so that a dead worker
        is met at once); count the mini-batches whose turn has come."""
        ray = import_ray()
        oldest = self._calls[0]
        while not oldest.done:
            pending = [(call, worker, ref) for call in self._calls
                       for worker, ref in call.refs if worker not in call.results]
            ready, _ = ray.wait([ref for _, _, ref in pending], num_returns=1)
            for call, worker, ref in pending:
                if ref in ready:
                    call.results[worker] = self._fetch(ray, worker, ref)
        self._calls.popleft()
        self._file(oldest)
        epoch, steps, y, w = self._epoch_info
        while self._order and self._order[0] in self._done:
            batch = self._order.popleft()
            value, scores, index = self._done.pop(batch)
            trainer.last_scores = scores
            self._count(trainer, epoch, batch, steps, value, scores, y, w, index)

    def _fetch(self, ray: Any, worker: int, ref: Any) -> Any:
        try:
            results, pid, seconds = ray.get(ref)
        except ray.exceptions.RayActorError as error:
            if self.kind in ("sync", "easgd_sync"):
                how = "the synchronous step cannot go on"
            else:
                how = "and could not be restarted"
            raise RuntimeError(f"{type(self.strategy).__name__} on Ray: worker {worker} died "
                               f"({type(error).__name__}); {how} — resume the run from its "
                               "last checkpoint") from None
        if self._pids[worker] not in (None, pid):
            self.restarts += 1
        self._pids[worker] = pid
        if self._fit_pids.setdefault(worker, pid) != pid:
            self._restarted.add(worker)
        if results:
            per_step = seconds / len(results)
            self._per_step = per_step if self._per_step is None else min(self._per_step,
                                                                           per_step)
        return results

    def _file(self, call: _Call) -> None:
        """The finished dispatch's results by mini-batch: (loss, scores, indices)."""
        if self.kind != "sync":
            for worker, items in call.batches.items():
                for (batch, index), (value, scores) in zip(items, call.results[worker]):
                    self._done[batch] = (value, scores, index)
            return
        penalty_of = call.results[0]
        for step, (batch, index) in enumerate(call.batches[0]):
            value, parts = 0.0, []
            for rank in range(self.workers):
                shard_value, scores, _ = call.results[rank][step]
                if scores is not None:
                    parts.append(scores)
                if not math.isfinite(shard_value) and math.isfinite(value):
                    value = shard_value
                elif math.isfinite(value):
                    value += shard_value
            if math.isfinite(value):
                value += penalty_of[step][2]
            self._done[batch] = (value, numpy.concatenate(parts), index)

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

    # -- epoch end: copy the actors' state into the Trainer ----------------------------

    def _reset_epoch(self) -> None:
        self._calls: deque = deque()
        self._order: deque = deque()
        self._done: dict = {}
        self._calls_made = 0
        self._sums = [0.0, 0.0, 0.0]
        self._pids: list = [None] * self.workers
        self.restarts = 0

    def _sync_trainer(self, trainer: Any) -> None:
        """θ (the servers', EASGD's centre, or replica 0's), the optimizer state and
        worker 0's buffers into the Trainer's model and optimizer."""
        ray = import_ray()
        if self.kind == "sync":
            state = ray.get(self._actors[0].state.remote())
            arrays, optimizer, buffers = state["arrays"], state["optimizer"], state["buffers"]
            self._state = {}
        else:
            states = ray.get([s.state.remote() for s in self.servers])
            arrays = {k: a for state in states for k, a in state["arrays"].items()}
            optimizer = states[0]["optimizer"] if self.shards == 1 else None
            buffers = ray.get(self._actors[0].buffers.remote(self._setups[0]))
            self._state = {"servers": states}
        for name, param in trainer.model.named_parameters():
            numpy.copyto(param.data, arrays[name])
        if optimizer is not None:
            trainer.optimizer.load_state_dict(optimizer)
        for (_, mine), theirs in zip(trainer.model.named_buffers(), buffers):
            numpy.copyto(mine, theirs)
        self._saved = {"clock": self._clock}
        if self.kind != "sync":
            counters = [s["server"] for s in states]
            self._saved["server"] = counters[0] if self.shards == 1 else [
                {"server": c, "optimizer": s["optimizer"]} for c, s in zip(counters, states)]

    def epoch_logs(self, trainer: Any) -> dict[str, Any]:
        """Downpour: ``staleness_mean`` / ``staleness_max`` / ``server_updates`` of the
        epoch; EASGD: ``elastic_distance``; asynchronous workers: ``worker_restarts``."""
        if self._actors is None or self.kind == "sync":
            return {}
        try:
            return self._logs(trainer)
        except BaseException:
            self.close()
            raise

    def _logs(self, trainer: Any) -> dict[str, Any]:
        logs: dict[str, Any] = {"worker_restarts": self.restarts}
        if self.kind == "downpour":
            now = _staleness(self._saved["server"])
            new = {t: n - self._epoch_counts.get(t, 0) for t, n in now.items()}
            new = {t: n for t, n in new.items() if n}
            self._epoch_counts = now
            applied = sum(new.values())
            logs.update({"staleness_mean": sum(t * n for t, n in new.items()) / applied
                         if applied else float("nan"),
                         "staleness_max": max(new) if new else 0,
                         "server_updates": self._state["servers"][0]["server"]["version"]})
        else:
            ray = import_ray()
            centre = {k: p.data for k, p in trainer.model.named_parameters()}
            logs["elastic_distance"] = float(numpy.mean([
                numpy.sqrt(sum(float(((a - centre[k]) ** 2).sum()) for k, a in arrays.items()))
                for arrays in ray.get([w.arrays.remote(setup) for w, setup
                                       in zip(self._actors, self._setups)])]))
        return logs

    def staleness(self) -> dict[int, int]:
        """``{τ: count}`` over the run (the servers' counts at the last epoch end)."""
        return _staleness(self._saved.get("server"))

    # -- checkpoints: the servers' counters (θ and its optimizer state are the Trainer's) --

    def state_dict(self) -> dict[str, Any]:
        return {"algorithm": algorithm_name(self.strategy), **self._saved}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The saved counters, refused before any actor starts when they are of another
        algorithm or their shard count differs from this run's."""
        check_algorithm(state, self.strategy, wrap="OnRay({})")
        state = {k: v for k, v in state.items() if k != "algorithm"}
        saved = state.get("server")
        count = len(saved) if isinstance(saved, list) else 1
        if saved and count != self.shards:
            raise ValueError(f"the saved server state has {count} shard(s); this run has "
                             f"shards={self.shards} — resume with shards={count}")
        self._saved = dict(state)
        if self.servers is not None:
            self._load_servers(import_ray())

    def __repr__(self) -> str:
        return f"OnRay({self.strategy!r}, address={self.address!r})"


def _staleness(saved: Any) -> dict[int, int]:
    """``{τ: count}`` of saved server counters (one server, or the shards' sum)."""
    if not saved:
        return {}
    counts: dict[int, int] = {}
    for state in (saved if isinstance(saved, list) else [{"server": saved}]):
        for tau, n in state["server"]["staleness_counts"].items():
            counts[int(tau)] = counts.get(int(tau), 0) + int(n)
    return counts
