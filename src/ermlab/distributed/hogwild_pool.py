"""Hogwild! in the Trainer: worker processes and shared memory that live for a whole ``fit``.

``Trainer(..., strategy=Hogwild(workers=N))`` runs every epoch in N spawned
worker processes that update one shared parameter vector without locks
(``ermlab.distributed.hogwild``). The parent starts the workers and copies
the parameters and the training data (x, y) into shared-memory segments at
the first epoch of a fit, and reuses both for every later epoch: an epoch
costs one message to each worker, not a process start (~0.5–1 s) nor a copy
of the data. Before an epoch the parent copies the model's parameters into
the shared vector (a callback may have changed them); after it, the model
holds the shared values again. ``Hogwild.end_fit`` — called by the Trainer
however the fit ends (success, an error, a worker's death, Ctrl-C) — stops
the workers and unlinks the segments; the workers only attach to them.

Learning rates and step counts. Worker k runs positions k, k+N, ... of
``epoch_order(n, seed, epoch)`` in mini-batches; before each update it takes
the next value t of a shared update counter (under a lock: one integer, not
the update) and steps with the rates α_t of the Trainer's schedule, per
param group:

    θ ← θ − α_t ∇θ L(batch),     t = updates applied in this fit's epoch so far

The parent fills the table α_0 … α_{U−1} of the epoch's U updates before it
starts: it runs the per-update schedulers of the Trainer's callbacks
(``LearningRateScheduler(..., interval="update")``) forward U steps from a
saved state and restores them. After the epoch it replays ``on_batch_end``
for t = 0 … U−1 in counter order (each batch's loss, as the workers measured
it), which advances the real schedulers exactly as far, so a schedule
continues across epochs as in single-process training; the optimizer's
per-parameter ``step`` and ``trainer.step`` grow by U. The approximation:
the t-th update is the t-th to *take the counter*, and with N > 1 workers
another worker's write may land between that and this one's write, so the
rates are applied in the counter's order, not always in the order the
writes reach memory; and a callback that changes the rate from a batch's
loss (rather than from the update count) acts only when the parent replays
that batch, after the epoch. With one worker the epoch is sequential SGD
under the schedule, exactly.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import time
from typing import Any

import numpy

from ermlab.distributed.hogwild import (
    _collect,
    _death,
    _exit_if_orphaned,
    _Segments,
    _single_threaded_environment,
    _stop,
    epoch_order,
    epoch_updates,
    exit_now,
    worker_process,
)


class WorkerPool:
    """The workers and segments of one fit (see the module docstring).

    Args:
        owner: the ``Hogwild`` strategy (workers, seed, count_conflicts).
        trainer: the Trainer (its model, loss and optimizer's param groups).
        x, y: the training data, copied into shared memory here, once.
        batch_size: each worker's mini-batch size.
    """

    def __init__(self, owner: Any, trainer: Any, x: numpy.ndarray, y: numpy.ndarray,
                 batch_size: int) -> None:
        self.workers = int(owner.workers)
        self.processes: list[Any] = []
        self.pipes: list[Any] = []
        self.segments = _Segments()
        n = len(x)
        self.updates = epoch_updates(n, self.workers, batch_size)
        params = trainer.model.parameters()
        index = {id(p): i for i, p in enumerate(params)}
        context = multiprocessing.get_context("spawn")
        setup = dict(n=n, seed=int(owner.seed), workers=self.workers, parent=os.getpid(),
                     batch_size=batch_size, model=trainer.model, loss_fn=trainer.loss,
                     classify=y.dtype.kind in "iub",
                     groups=[[index[id(p)] for p in g["params"]]
                             for g in trainer.optimizer.param_groups],
                     start=context.Barrier(self.workers), lock=context.Lock())
        self._sync = (setup["start"], setup["lock"])  # alive while the workers use them
        try:
            self.segments.add("w", numpy.concatenate([p.data.reshape(-1) for p in params]))
            self.segments.add("x", x)
            self.segments.add("y", y)
            self.segments.add("clock", numpy.zeros(1, numpy.int64))
            if owner.count_conflicts:
                self.segments.add("version", numpy.zeros(self.segments.views["w"].size,
                                                         numpy.int64))
            with _single_threaded_environment():
                for rank in range(self.workers):
                    here, there = context.Pipe(duplex=True)
                    process = context.Process(target=_worker_loop, name=f"ermlab-hogwild-{rank}",
                                              args=(rank, self.segments.specs, setup, there),
                                              daemon=True)
                    process.start()
                    there.close()
                    self.processes.append(process)
                    self.pipes.append(here)
        except BaseException:
            self.close()
            raise

    def pids(self) -> list[int]:
        """The worker processes' ids (the same for every epoch of a fit)."""
        return [process.pid for process in self.processes]

    def run(self, params: list[Any], epoch: int, rates: numpy.ndarray) -> list[dict[str, Any]]:
        """Epoch ``epoch`` (0-based) from the model's ``params`` with the rates table
        ``rates`` (U × groups, or 1 × groups for constant rates); the parameters then
        hold the shared values. Returns the workers' reports."""
        flat = self.segments.views["w"]
        offset = 0
        for p in params:
            flat[offset:offset + p.size] = p.data.reshape(-1)
            offset += p.size
        self.segments.views["clock"][0] = 0
        for rank, pipe in enumerate(self.pipes):
            try:
                pipe.send(("epoch", epoch, rates))
            except OSError:  # the worker died between two epochs
                raise RuntimeError(_death(rank, self.processes[rank])) from None
        reports = _collect(self.processes, self.pipes)
        offset = 0
        for p in params:
            p.data[...] = flat[offset:offset + p.size].reshape(p.shape)
            offset += p.size
        return reports

    def close(self) -> None:
        """Stop every worker (a stop message, then SIGTERM/SIGKILL) and unlink the segments."""
        try:
            for pipe in self.pipes:
                with contextlib.suppress(OSError):
                    pipe.send(("stop",))
            deadline = time.monotonic() + 2.0
            for process in self.processes:
                process.join(max(0.0, deadline - time.monotonic()))
            _stop(self.processes)
        finally:
            for pipe in self.pipes:
                pipe.close()
            self.processes, self.pipes = [], []
            self.segments.release()


def schedule_table(trainer: Any, updates: int) -> numpy.ndarray:
    """α_t of every param group for the epoch's updates t = 0 … ``updates`` − 1.

    The per-update schedulers of the Trainer's callbacks (a ``scheduler`` with
    ``interval == "update"``) are stepped ``updates`` times from a saved state,
    then restored with the group rates. Without one, the rates are constant: one row.
    """
    groups = trainer.optimizer.param_groups
    now = [float(g["lr"]) for g in groups]
    schedulers = [c.scheduler for c in trainer.callbacks
                  if getattr(c, "interval", None) == "update" and hasattr(c, "scheduler")]
    if not schedulers:
        return numpy.array([now])
    saved = [s.state_dict() for s in schedulers]
    table = numpy.empty((updates, len(groups)))
    try:
        for t in range(updates):
            table[t] = [g["lr"] for g in groups]
            for scheduler in schedulers:
                scheduler.step()
    finally:
        for scheduler, state in zip(schedulers, saved):
            scheduler.load_state_dict(state)
        for group, lr in zip(groups, now):
            group["lr"] = lr
    return table


def merge(reports: list[dict[str, Any]]) -> dict[str, numpy.ndarray]:
    """The epoch's batches in update-counter order: ``loss``, ``size``, ``hits``."""
    sort = numpy.argsort(numpy.concatenate([r["batch_t"] for r in reports]), kind="stable")
    return {key: numpy.concatenate([r[f"batch_{key}"] for r in reports])[sort]
            for key in ("loss", "size", "hits")}


# -- the workers (run in the spawned processes) ----------------------------------------------

def _worker_loop(rank: int, specs: dict[str, tuple], setup: dict[str, Any], pipe: Any) -> None:
    """Attach once, then run one epoch per message until told to stop (or the parent is gone)."""
    with worker_process(specs, pipe) as arrays:
        optimizer = _bind(setup, arrays["w"])
        while True:
            try:
                message = pipe.recv()
            except EOFError:  # the parent is gone
                break
            if message[0] == "stop":
                break
            _, epoch, rates = message
            pipe.send(("ok", _epoch(rank, arrays, setup, optimizer, epoch, rates)))
        del optimizer
    exit_now()


def _bind(setup: dict[str, Any], flat: numpy.ndarray) -> Any:
    """Point the worker's model parameters into the shared vector; an SGD over them with the
    Trainer's param groups (one thread)."""
    from ermlab.optim import SGD

    params = setup["model"].parameters()
    offset = 0
    for param in params:
        param.data = flat[offset:offset + param.size].reshape(param.shape)
        param.zero_grad()
        offset += param.size
    groups = [{"params": [params[i] for i in indices]} for indices in setup["groups"]]
    setup["model"].train()
    return SGD(groups, lr=0.0, threads=1)


def _epoch(rank: int, a: dict[str, numpy.ndarray], c: dict[str, Any], optimizer: Any,
           epoch: int, rates: numpy.ndarray) -> dict[str, Any]:
    """This worker's share of epoch ``epoch``: mini-batch SGD on the shared parameters."""
    from ermlab.training.trainer import _hits

    model, loss, x, y, clock = c["model"], c["loss_fn"], a["x"], a["y"], a["clock"]
    version = a.get("version")
    conflicts = writes = examples = 0
    ts, values, sizes, hits = [], [], [], []
    mine = epoch_order(c["n"], c["seed"], epoch)[rank::c["workers"]]
    c["start"].wait(timeout=600)  # all workers begin the epoch together
    start, cpu_start = time.perf_counter(), time.process_time()
    for b in range(0, len(mine), c["batch_size"]):
        index = mine[b:b + c["batch_size"]]
        if version is not None:
            seen = version.copy()
        scores = model.forward(x[index])
        values.append(float(loss.forward(scores, y[index])))
        hits.append(_hits(scores, y[index], None) if c["classify"] else 0.0)
        optimizer.zero_grad()
        model.backward(loss.backward(), input_grad=False)
        with c["lock"]:
            t = int(clock[0])
            clock[0] = t + 1
        for group, lr in zip(optimizer.param_groups, rates[t] if len(rates) > 1 else rates[0]):
            group["lr"] = float(lr)
        optimizer.step()
        if version is not None:
            conflicts += int(numpy.count_nonzero(version != seen))
            writes += version.size
            version += 1
        ts.append(t)
        sizes.append(len(index))
        examples += len(index)
        _exit_if_orphaned(c["parent"])
    report = {"examples": examples, "seconds": time.perf_counter() - start,
              "cpu_seconds": time.process_time() - cpu_start, "batches": len(ts),
              "loss_sum": float(numpy.dot(values, sizes)), "hits": float(sum(hits)),
              "batch_t": numpy.asarray(ts, numpy.int64), "batch_loss": numpy.asarray(values),
              "batch_size": numpy.asarray(sizes, numpy.float64),
              "batch_hits": numpy.asarray(hits, numpy.float64)}
    if version is not None:
        report.update(conflicts=conflicts, writes=writes)
    return report
