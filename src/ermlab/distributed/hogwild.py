"""Hogwild!: lock-free parallel SGD on one machine (Niu, Recht, Ré & Wright, NIPS 2011).

N worker processes run SGD at the same time on *one* parameter vector x held in
shared memory, without any lock. Each worker repeats the paper's Algorithm 1:

    loop
        sample an example e                      (here: its share of a seeded permutation)
        read x_e, the coordinates e touches, and evaluate the gradient G_e(x)
        for v ∈ e:  x_v ← x_v − γ b_vᵀ G_e(x)     (only the coordinates of e are written)

Workers read coordinates that others may be writing, and a write may overwrite
a concurrent one; on sparse problems, where two examples rarely share a
coordinate, these collisions are rare and the iterates converge at nearly the
sequential rate, so N workers give nearly N× the throughput (the paper's
Theorem 4.1 and experiments).

The sparse linear problems (``Hogwild.fit``). For examples z_α (rows of a
CSR matrix) with labels y_α ∈ {−1, +1} and e_α the nonzero coordinates of z_α,
the paper writes the L2-regularized objective in its sparse form, eq. (2.6)
(sparse SVM; the logistic loss takes the place of the hinge):

    minimize_x  Σ_α [ ℓ(y_α xᵀz_α) + λ Σ_{u∈e_α} x_u² / d_u ]

with d_u the number of examples whose coordinate u is nonzero, so that the
penalties of all examples add up to λ‖x‖² (over the coordinates any example
uses), and each example's term depends on x_e only. The per-example step is

    m = y_α x_eᵀ z_α,    g = ℓ'(m) y_α,    x_u ← x_u − γ (g z_αu + 2λ x_u / d_u)   for u ∈ e_α

with ℓ(m) = log(1 + e^{−m}) (``loss="log"``, ℓ'(m) = −1/(1 + e^{m})) or
ℓ(m) = max(0, 1 − m) (``loss="hinge"``, ℓ'(m) = −1 if m < 1 else 0). γ is
multiplied by ``decay`` (the paper's β) after every epoch. A step touches
only the nonzero coordinates of its example: its cost is O(nnz), not O(features).

The dense model (``Hogwild.fit_model``). Each worker holds its own copy of an
ermlab model whose ``Parameter.data`` arrays are views into the shared vector;
it runs forward/backward on its mini-batches and steps an ermlab ``SGD``
(θ ← θ − γ ∇θ, in place on the shared views). Gradients and forward caches stay
private to the worker. Models with buffers (batch-norm statistics) are refused:
only parameters are shared.

Engineering:

* Processes start with ``spawn``: a clean interpreter that sees only what is
  handed over (the segment names, the options, for ``fit_model`` the pickled
  model and loss), and whose parent is the process that called ``fit``. Not
  ``fork``: a forked child inherits the parent's BLAS and optimizer thread
  pools in an undefined state (locks held by threads that do not exist in the
  child) and copy-on-write pages of everything the parent holds. Not
  ``forkserver``: its server process outlives the fit (a process left behind)
  and becomes the workers' parent, so a worker could not tell that the process
  that started it has died. Spawning costs ~0.3 CPU-s per worker (a fresh
  interpreter imports NumPy and the modules it runs: ``ermlab.distributed``
  imports each strategy only when used); the workers then start together, and
  leave with ``os._exit`` once their report is sent and their segments
  detached, without the interpreter's ~0.3 s teardown the parent would wait for.
* Every worker runs one BLAS thread and one optimizer thread: the environment
  variables (``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``, ``MKL_NUM_THREADS``,
  ``ERMLAB_NUM_THREADS``...) are set for the spawned process before its
  interpreter imports NumPy, and ``threadpoolctl`` limits the pools again.
* The parent alone creates and unlinks the shared-memory segments (the
  parameters and the training data: CSR arrays or the dense inputs, labels),
  also when a worker fails, dies (killed) or the parent is interrupted; the
  workers only attach to them. Training data are therefore shared, not copied
  per worker. Workers ignore SIGINT: Ctrl-C reaches the parent, which stops them.
  A worker whose parent was killed outright (SIGKILL) notices within ~1000
  examples and exits; the parent's resource tracker then unlinks the segments.
* A coordinate write is ``x[e] -= step`` (NumPy gather, subtract, scatter), not an
  atomic add: a concurrent write of the same coordinate between the gather and
  the scatter is lost. ``count_conflicts=True`` measures how often another
  worker wrote a coordinate between a worker's read of it and its own write
  (``stats_["conflict_rate"]``), with a per-coordinate write counter (extra work:
  use it to measure, not to train fast).

As a Trainer strategy (``Trainer(model, loss, SGD(params, lr), strategy=Hogwild(2))``)
the dense-model path runs one epoch at a time in place of the Trainer's batch
loop (``ermlab.distributed.hogwild_pool``): the worker processes and the
shared segments (parameters, training data) are created at the first epoch of
a fit and live until it ends — an epoch costs a message per worker, not a
process start nor a copy of the data — and are stopped and unlinked in
``end_fit``, which the Trainer calls however the fit ends. Before each epoch
the parent copies the model's parameters into the shared vector; the workers
run that epoch's share of the data (worker k: positions k, k+N, ... of
``epoch_order(n, seed, epoch)``, mini-batches of the Trainer's
``batch_size``), update t of the epoch stepping with the rates α_t of the
Trainer's schedule (per-update schedulers included: the t-th update to take
the shared counter uses α_t; see ``hogwild_pool`` for the approximation), and
the model then holds the shared parameters for validation, callbacks and
checkpoints. The parent replays ``on_batch_end`` for the epoch's batches in
counter order (schedulers advance, progress bars move); ``trainer.step`` and
the optimizer's per-parameter ``step`` grow by the number of updates made.
The Trainer's optimizer must be plain ``SGD`` (no momentum, no weight decay:
the workers keep no optimizer state; param groups with their own rates are
kept), without regularizer, augmentation or sample weights. The epoch's
``loss`` and ``accuracy`` are the workers' running values (each batch's
forward pass before its update, as the Trainer reports them); the logs add
``examples_per_second``. With one worker an epoch is sequential SGD, so a
resumed run repeats an uninterrupted one exactly; with more, the lock-free
races make every run different.

Example:
    >>> hw = Hogwild(workers=2, lr=0.5, epochs=5, loss="log", l2=1e-4)
    >>> hw.fit(x_csr, y).score(x_csr, y)
    >>> Hogwild(workers=2, lr=0.05, epochs=3, batch_size=16).fit_model(model, loss, x, y)

Reference: F. Niu, B. Recht, C. Ré, S. J. Wright. "Hogwild!: A Lock-Free
Approach to Parallelizing Stochastic Gradient Descent." NIPS 2011
(arXiv:1106.5730).
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import secrets
import signal
import sys
import time
import traceback
import warnings
from collections.abc import Iterator
from multiprocessing import connection, shared_memory
from typing import Any

import numpy

from ermlab.distributed.base import Strategy

LOSSES = ("log", "hinge")
SEGMENT_PREFIX = "ermlab_hogwild_"
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                     "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS",
                     "ERMLAB_NUM_THREADS")


class Hogwild(Strategy):
    """Lock-free parallel SGD with ``workers`` processes on one shared parameter vector.

    See the module docstring for the update rules (sparse linear: eq. (2.6) of
    Niu et al. 2011; dense model: plain SGD on shared views).

    Args:
        workers: number of worker processes N ≥ 1 (a warning when N exceeds the CPUs
            this process may use: the workers then take turns on the cores).
        lr: step size γ > 0.
        epochs: passes over the data, ≥ 1; each worker takes every N-th example of a
            fresh seeded permutation per epoch (worker k: positions k, k+N, ...).
        decay: β ∈ (0, 1]; γ is multiplied by β after each epoch (1: constant).
        loss: ``"log"`` (logistic regression) or ``"hinge"`` (linear SVM), for ``fit``.
        l2: λ ≥ 0 of the sparse L2 penalty λ Σ_{u∈e} x_u²/d_u, for ``fit``.
        batch_size: mini-batch size of each worker in ``fit_model`` (``fit`` is
            per-example, as in the paper).
        seed: seed of the example order (and nothing else: the initial weights are
            zero for ``fit`` and the model's own for ``fit_model``).
        count_conflicts: measure the rate of conflicting writes (slower; see above).

    As a Trainer strategy only ``workers``, ``seed`` and ``count_conflicts`` apply
    (γ, epochs and the batch size are the Trainer's; see the module docstring).

    Attributes (after ``fit``): ``coef_`` (n_features,), ``stats_`` (per-worker
    examples and seconds, ``examples_per_second``, conflicts when counted).
    """

    runs_epochs = True

    def __init__(
        self,
        workers: int = 2,
        *,
        lr: float = 0.1,
        epochs: int = 5,
        decay: float = 1.0,
        loss: str = "log",
        l2: float = 0.0,
        batch_size: int = 1,
        seed: int = 0,
        count_conflicts: bool = False,
    ) -> None:
        self.workers, self.lr, self.epochs, self.decay = workers, lr, epochs, decay
        self.loss, self.l2, self.batch_size, self.seed = loss, l2, batch_size, seed
        self.count_conflicts = count_conflicts
        self._validate()
        cpus = available_cpus()
        if self.workers > cpus:
            warnings.warn(f"Hogwild: {self.workers} workers but only {cpus} CPUs available to "
                          f"this process; the workers will share cores and run no faster "
                          f"(use workers ≤ {cpus})", RuntimeWarning, stacklevel=2)

    def _validate(self) -> None:
        if not _is_int(self.workers) or self.workers < 1:
            raise ValueError(f"Hogwild workers must be an integer ≥ 1; got {self.workers!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"Hogwild lr must be a finite number > 0; got {self.lr!r}")
        if not _is_int(self.epochs) or self.epochs < 1:
            raise ValueError(f"Hogwild epochs must be an integer ≥ 1; got {self.epochs!r}")
        if not (isinstance(self.decay, (int, float)) and 0 < self.decay <= 1):
            raise ValueError(f"Hogwild decay (β) must be in (0, 1]; got {self.decay!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"Hogwild loss must be one of {LOSSES}; got {self.loss!r}")
        if not (isinstance(self.l2, (int, float)) and math.isfinite(self.l2) and self.l2 >= 0):
            raise ValueError(f"Hogwild l2 must be a finite number ≥ 0; got {self.l2!r}")
        if not _is_int(self.batch_size) or self.batch_size < 1:
            raise ValueError(f"Hogwild batch_size must be an integer ≥ 1; got {self.batch_size!r}")
        if not _is_int(self.seed) or self.seed < 0:
            raise ValueError(f"Hogwild seed must be an integer ≥ 0; got {self.seed!r}")

    # -- sparse linear models -------------------------------------------------------

    def fit(self, x: Any, y: Any) -> Hogwild:
        """Fit a sparse linear classifier (``loss``, ``l2``) on ``x`` (scipy.sparse or
        dense, n × d) and labels ``y`` (two classes: {0, 1}, {−1, +1} or booleans).

        Weights start at zero; no intercept (append a constant feature for one —
        it is then touched by every example, a point of contention).
        """
        self._validate()
        csr, targets = _check_sparse_problem(x, y)
        dtype = csr.dtype
        counts = numpy.bincount(csr.indices, minlength=csr.shape[1])
        with numpy.errstate(divide="ignore", invalid="ignore"):  # unused features: 0/0
            reg = numpy.where(counts > 0, 2.0 * self.l2 / counts, 0.0).astype(dtype)
        arrays = {"w": numpy.zeros(csr.shape[1], dtype), "data": csr.data,
                  "indices": csr.indices, "indptr": csr.indptr, "y": targets, "reg": reg}
        if self.count_conflicts:
            arrays["version"] = numpy.zeros(csr.shape[1], numpy.int64)
        config = dict(kind="linear", loss=self.loss, **self._schedule(csr.shape[0]))
        out = _run(self, arrays, config, keep=("w",))
        self.coef_ = out["w"]
        self.n_features_in_ = csr.shape[1]
        return self

    def decision_function(self, x: Any) -> numpy.ndarray:
        """xᵀw for every row of ``x``."""
        return numpy.asarray(x @ self.coef_).reshape(-1)

    def predict(self, x: Any) -> numpy.ndarray:
        """Labels in {0, 1}: 1 where xᵀw > 0."""
        return (self.decision_function(x) > 0).astype(numpy.int64)

    def score(self, x: Any, y: Any) -> float:
        """Accuracy on (x, y), labels as in ``fit``."""
        return float((self.predict(x) == (_signs(numpy.asarray(y)) > 0)).mean())

    # -- ermlab models ----------------------------------------------------------------

    def fit_model(self, model: Any, loss: Any, x: Any, y: Any) -> Any:
        """Train an ermlab ``model`` with ``loss`` on dense (x, y) by Hogwild! SGD.

        Every worker runs forward/backward on mini-batches of ``batch_size`` and an
        in-place ``SGD(lr)`` step on parameters that are views into the shared vector.
        The model's parameters are updated in place and the model is returned.
        """
        self._validate()
        params = self._check_model(model)
        x, y = numpy.ascontiguousarray(x), numpy.ascontiguousarray(y)
        if len(x) != len(y) or len(x) == 0:
            raise ValueError(f"x and y must be non-empty and of one length; got {len(x)} "
                             f"and {len(y)}")
        _dry_run(model, loss, x, y)
        flat = numpy.concatenate([p.data.reshape(-1) for p in params])
        arrays = {"w": flat, "x": x, "y": y}
        if self.count_conflicts:
            arrays["version"] = numpy.zeros(flat.size, numpy.int64)
        config = dict(kind="model", model=model, loss_fn=loss, batch_size=int(self.batch_size),
                      **self._schedule(len(x)))
        out = _run(self, arrays, config, keep=("w",))
        _unflatten(out["w"], params)
        return model

    def _schedule(self, n: int) -> dict[str, Any]:
        return dict(n=n, parent=os.getpid(), lr=float(self.lr), epochs=int(self.epochs),
                    decay=float(self.decay), seed=int(self.seed), workers=int(self.workers))

    # -- the Trainer strategy ---------------------------------------------------------------

    def bind(self, trainer: Any) -> None:
        """Refuse what the workers cannot do: an optimizer other than plain SGD, a
        regularizer, augmentation, buffers, non-NumPy parameters."""
        from ermlab.optim import SGD

        optimizer = trainer.optimizer
        groups = getattr(optimizer, "param_groups", [{}])
        if type(optimizer) is not SGD or any(g.get("momentum") or g.get("weight_decay")
                                             for g in groups):
            raise ValueError(f"Hogwild's workers run plain SGD (θ ← θ − γ∇θ, no state); the "
                             f"Trainer has {optimizer!r}: use SGD(params, lr) without momentum "
                             "or weight decay (--optimizer sgd)")
        if trainer.regularizer is not None:
            raise ValueError("Hogwild's workers apply no regularizer; leave out l1, l2 and "
                             "max_norm (or use another strategy)")
        if trainer.augment is not None:
            raise ValueError("Hogwild's workers do not augment; leave out augment")
        self._check_model(trainer.model)

    def run_epoch(self, trainer: Any, x: Any, y: Any, batch_size: int | None,
                  sample_weight: Any, epoch: int) -> tuple[float, float, float]:
        """Epoch ``epoch`` (1-based) by the fit's workers on the shared parameters."""
        from ermlab.distributed import hogwild_pool

        self._validate()
        if sample_weight is not None:
            raise ValueError("Hogwild's workers take no sample weights; leave out sample_weight")
        batch = len(x) if batch_size is None else int(batch_size)
        key = (id(x), id(y), batch)  # one fit: the same data and batch size every epoch
        pool = getattr(self, "_pool", None)
        if pool is None or getattr(self, "_pool_key", None) != key:
            self.end_fit(trainer)
            x, y = numpy.ascontiguousarray(x), numpy.ascontiguousarray(y)
            _dry_run(trainer.model, trainer.loss, x, y)  # the plain error, before any process
            pool = self._pool = hogwild_pool.WorkerPool(self, trainer, x, y, batch)
            self._pool_key = key
        started = time.perf_counter()
        rates = hogwild_pool.schedule_table(trainer, pool.updates)
        reports = pool.run(trainer.model.parameters(), epoch - 1, rates)
        self.stats_ = _summarize(reports, time.perf_counter() - started)
        self._count_updates(trainer, pool.updates)
        batches = hogwild_pool.merge(reports)
        for t, (value, size) in enumerate(zip(batches["loss"], batches["size"]), 1):
            trainer._notify("on_batch_end", {"epoch": epoch, "batch": t, "loss": float(value),
                                             "size": int(size), "steps_per_epoch": pool.updates})
            if trainer.stop_training:
                break
        return (self.stats_["loss_sum"], float(sum(self.stats_["worker_examples"])),
                self.stats_["hits"])

    @staticmethod
    def _count_updates(trainer: Any, updates: int) -> None:
        """``trainer.step`` and the optimizer's per-parameter ``step`` grow by ``updates``."""
        trainer.step += updates
        optimizer = trainer.optimizer
        for group in optimizer.param_groups:
            for param in group["params"]:
                state = optimizer.state.get(param)
                if state is None:
                    state = optimizer.state[param] = optimizer.init_state(param, group)
                state["step"] = int(state.get("step", 0)) + updates

    def steps_per_epoch(self, n: int, batch_size: int | None) -> int:
        """The epoch's updates (``epoch_updates``): the count ``on_batch_end`` is replayed."""
        return epoch_updates(n, int(self.workers), n if batch_size is None else int(batch_size))

    def end_fit(self, trainer: Any) -> None:
        """Stop the fit's workers and unlink its segments (however the fit ended)."""
        pool, self._pool = getattr(self, "_pool", None), None
        if pool is not None:
            pool.close()

    def worker_pids(self) -> list[int]:
        """The process ids of the running fit's workers (empty between fits)."""
        pool = getattr(self, "_pool", None)
        return [] if pool is None else pool.pids()

    def epoch_logs(self, trainer: Any) -> dict[str, Any]:
        """``examples_per_second`` of the epoch (and ``conflict_rate`` when counted)."""
        stats = getattr(self, "stats_", {})
        logs = {key: stats[key] for key in ("examples_per_second", "conflict_rate")
                if key in stats}
        return logs

    def _check_model(self, model: Any) -> list[Any]:
        params = model.parameters()
        if not params:
            raise ValueError("Hogwild: the model has no parameters to train")
        buffers = [name for name, _ in model.named_buffers()]
        if buffers:
            raise ValueError(f"Hogwild shares parameters only; the model has buffers "
                             f"{buffers[:3]} (e.g. batch-norm statistics) that each worker "
                             "would keep apart; use a model without batch norm")
        dtypes = {numpy.dtype(p.data.dtype) for p in params}
        if len(dtypes) != 1 or not all(isinstance(p.data, numpy.ndarray) for p in params):
            raise ValueError(f"Hogwild needs NumPy parameters of one float dtype; got {dtypes}")
        return params

    def __repr__(self) -> str:
        return f"Hogwild(workers={self.workers}, seed={self.seed})"


def _unflatten(flat: numpy.ndarray, params: list[Any]) -> None:
    """Copy the flat vector back into the parameters (in place: views stay valid)."""
    offset = 0
    for p in params:
        p.data[...] = flat[offset:offset + p.size].reshape(p.shape)
        offset += p.size


# -- the example order (shared by the workers and the tests' sequential reference) --------

def epoch_order(n: int, seed: int, epoch: int) -> numpy.ndarray:
    """The permutation of range(n) that epoch ``epoch`` (0-based) visits; worker k of N
    takes positions k, k + N, k + 2N, ... of it."""
    return numpy.random.default_rng([seed, epoch]).permutation(n)


def epoch_updates(n: int, workers: int, batch_size: int) -> int:
    """Updates an epoch makes: each worker batches its own share (positions k, k + N, ...),
    so Σ_k ⌈n_k / b⌉ — up to N − 1 more than the ⌈n / b⌉ batches of one process."""
    return sum(-(-len(range(k, n, workers)) // batch_size) for k in range(workers))


def available_cpus() -> int:
    """The number of CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


# -- the parent: segments, processes, cleanup ----------------------------------------------

class _Segments:
    """Shared-memory copies of named arrays; created and unlinked by the parent only."""

    def __init__(self) -> None:
        self.handles: list[shared_memory.SharedMemory] = []
        self.specs: dict[str, tuple[str, tuple[int, ...], str]] = {}
        self.views: dict[str, numpy.ndarray] = {}
        self.tag = f"{SEGMENT_PREFIX}{os.getpid()}_{secrets.token_hex(4)}_"

    def add(self, key: str, array: numpy.ndarray) -> None:
        array = numpy.ascontiguousarray(array)
        handle = shared_memory.SharedMemory(name=f"{self.tag}{len(self.handles)}", create=True,
                                            size=max(array.nbytes, 1))
        self.handles.append(handle)
        view = numpy.ndarray(array.shape, array.dtype, buffer=handle.buf)
        view[...] = array
        self.views[key] = view
        self.specs[key] = (handle.name, array.shape, array.dtype.str)

    def release(self) -> None:
        """Drop the views, close and unlink every segment (errors of one do not stop the rest)."""
        self.views.clear()
        for handle in self.handles:
            with contextlib.suppress(Exception):
                handle.close()
            with contextlib.suppress(FileNotFoundError):
                handle.unlink()
        self.handles.clear()


def _run(owner: Hogwild, arrays: dict[str, numpy.ndarray], config: dict[str, Any],
         keep: tuple[str, ...]) -> dict[str, numpy.ndarray]:
    """Start the workers on shared copies of ``arrays``; return copies of the ``keep`` arrays.

    The segments are unlinked and no worker is left running on every way out
    (success, a worker's error, a worker's death, KeyboardInterrupt).
    """
    context = multiprocessing.get_context("spawn")
    config = dict(config, start=context.Barrier(config["workers"]))
    segments, processes, pipes = _Segments(), [], []
    started = time.perf_counter()
    try:
        for key, array in arrays.items():
            segments.add(key, array)
        with _single_threaded_environment():
            for rank in range(config["workers"]):
                receive, send = context.Pipe(duplex=False)
                process = context.Process(target=_worker_main, name=f"ermlab-hogwild-{rank}",
                                          args=(rank, segments.specs, config, send), daemon=True)
                process.start()
                send.close()
                processes.append(process)
                pipes.append(receive)
        reports = _collect(processes, pipes)
        out = {key: segments.views[key].copy() for key in keep}
    finally:
        _stop(processes)
        for pipe in pipes:
            pipe.close()
        segments.release()
    owner.stats_ = _summarize(reports, time.perf_counter() - started)
    return out


@contextlib.contextmanager
def _single_threaded_environment() -> Iterator[None]:
    """One BLAS/OpenMP/optimizer thread in the processes started inside (spawned children
    read the environment before they import NumPy); the parent's is restored after."""
    saved = {name: os.environ.get(name) for name in _THREAD_VARIABLES}
    os.environ.update({name: "1" for name in _THREAD_VARIABLES})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _collect(processes: list, pipes: list) -> list[dict[str, Any]]:
    """Wait for every worker's report; raise at the first worker that fails or dies."""
    reports: list[dict[str, Any] | None] = [None] * len(processes)
    pending = set(range(len(processes)))
    while pending:
        waitables = [pipes[r] for r in pending] + [processes[r].sentinel for r in pending]
        connection.wait(waitables, timeout=1.0)
        for rank in sorted(pending):
            message = None
            if pipes[rank].poll():
                with contextlib.suppress(EOFError):
                    message = pipes[rank].recv()
            if message is None and processes[rank].is_alive():
                continue
            if message is None:
                raise RuntimeError(_death(rank, processes[rank]))
            status, payload = message
            if status == "error":
                error = RuntimeError(f"Hogwild worker {rank} failed: {payload[0]}; the other "
                                     "workers were stopped and the shared memory released")
                error.add_note(payload[1])
                raise error
            reports[rank] = payload
            pending.discard(rank)
    return reports  # type: ignore[return-value]


def _death(rank: int, process: Any) -> str:
    process.join(1.0)
    code = process.exitcode
    how = f"exit code {code}"
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            how = f"killed by {signal.Signals(-code).name}"
    return (f"Hogwild worker {rank} (pid {process.pid}) died ({how}) before finishing; the "
            "other workers were stopped and the shared memory released; nothing was trained "
            "into the model — run fit again (with fewer workers if memory ran out)")


def _stop(processes: list) -> None:
    """Terminate (SIGTERM, then SIGKILL) and reap every worker still running."""
    for process in processes:
        if process.is_alive():
            process.terminate()
    deadline = time.monotonic() + 5.0
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join()
        process.close()


def _summarize(reports: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    examples = sum(r["examples"] for r in reports)
    stats: dict[str, Any] = {
        "workers": len(reports), "seconds": seconds,
        "worker_seconds": [r["seconds"] for r in reports],
        "worker_examples": [r["examples"] for r in reports],
        "worker_cpu_seconds": [r["cpu_seconds"] for r in reports],
        "examples_per_second": examples / max(max(r["seconds"] for r in reports), 1e-12),
    }
    if "loss_sum" in reports[0]:
        stats["worker_batches"] = [r["batches"] for r in reports]
        stats["loss_sum"] = sum(r["loss_sum"] for r in reports)
        stats["hits"] = sum(r["hits"] for r in reports)
    if "conflicts" in reports[0]:
        writes = sum(r["writes"] for r in reports)
        stats["conflicts"] = sum(r["conflicts"] for r in reports)
        stats["writes"] = writes
        stats["conflict_rate"] = stats["conflicts"] / writes if writes else 0.0
    return stats


# -- the workers (run in the spawned processes) ----------------------------------------------

def _worker_main(rank: int, specs: dict[str, tuple], config: dict[str, Any], pipe: Any) -> None:
    """Entry point of a worker process: attach, train its share, report, detach."""
    with worker_process(specs, pipe) as arrays:
        train = _train_linear if config["kind"] == "linear" else _train_model
        report = train(rank, arrays, config)
        pipe.send(("ok", report))
    exit_now()


def exit_now() -> None:
    """End a worker whose work is reported and whose segments are detached without the
    interpreter's teardown (finalizing NumPy's and ermlab's modules: ~0.2–0.3 s that the
    parent would wait for at every fit's end): stdio flushed, then ``os._exit(0)``."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(0)


@contextlib.contextmanager
def worker_process(specs: dict[str, tuple], pipe: Any) -> Iterator[dict[str, numpy.ndarray]]:
    """A worker's life around its work: Ctrl-C ignored (the parent stops the workers), BLAS on
    one thread, the shared segments ``specs`` attached as arrays; an error is sent to the
    parent through ``pipe`` (which raises it) instead of propagating; the segments are
    detached and the pipe closed however the work ends. The body must drop its own views
    into the arrays before it ends, so that the segments can be closed."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    handles: list[shared_memory.SharedMemory] = []
    arrays: dict[str, numpy.ndarray] = {}
    try:
        with _blas_limited():
            for key, (name, shape, dtype) in specs.items():
                handle = shared_memory.SharedMemory(name=name)
                handles.append(handle)
                arrays[key] = numpy.ndarray(shape, numpy.dtype(dtype), buffer=handle.buf)
            yield arrays
    except BaseException as error:  # reported to the parent, which raises it
        with contextlib.suppress(OSError):
            pipe.send(("error", (f"{type(error).__name__}: {error}", traceback.format_exc())))
    finally:
        arrays.clear()
        for handle in handles:
            with contextlib.suppress(BufferError):
                handle.close()
        pipe.close()


@contextlib.contextmanager
def _blas_limited() -> Iterator[None]:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # the environment variables already hold the pools at one thread
        yield
        return
    with threadpool_limits(limits=1):
        yield


def _exit_if_orphaned(parent: int) -> None:
    """A worker whose parent died (SIGKILL: no chance to stop it) stops on its own; the
    parent's resource tracker then unlinks the segments."""
    if os.getppid() != parent:
        raise SystemExit(f"Hogwild worker: parent {parent} is gone")


def _train_linear(rank: int, a: dict[str, numpy.ndarray], c: dict[str, Any]) -> dict[str, Any]:
    """Algorithm 1 of Niu et al. on this worker's share, eq. (2.6)'s per-example step."""
    w, data, indices, indptr = a["w"], a["data"], a["indices"], a["indptr"]
    y, reg = a["y"], a["reg"]
    version = a.get("version")
    hinge = c["loss"] == "hinge"
    conflicts = writes = examples = 0
    c["start"].wait(timeout=600)  # all workers attached: they train at the same time
    start, cpu_start = time.perf_counter(), time.process_time()
    for epoch in range(c["epochs"]):
        lr = c["lr"] * c["decay"] ** epoch
        for i in epoch_order(c["n"], c["seed"], epoch)[rank::c["workers"]].tolist():
            lo, hi = indptr[i], indptr[i + 1]
            e, z = indices[lo:hi], data[lo:hi]
            if version is not None:
                seen = version[e]
            w_e = w[e]
            y_i = float(y[i])
            m = y_i * float(w_e @ z)
            if hinge:
                g = -y_i if m < 1.0 else 0.0
            else:
                g = -y_i / (1.0 + math.exp(m)) if m < 30.0 else -y_i * math.exp(-m)
            step = reg[e]
            step *= w_e
            if g != 0.0:
                step += g * z
            step *= lr
            w[e] -= step
            if version is not None:
                now = version[e]
                conflicts += int(numpy.count_nonzero(now != seen))
                writes += len(e)
                version[e] = now + 1
            examples += 1
            if not examples & 1023:
                _exit_if_orphaned(c["parent"])
    report = {"examples": examples, "seconds": time.perf_counter() - start,
              "cpu_seconds": time.process_time() - cpu_start}
    if version is not None:
        report.update(conflicts=conflicts, writes=writes)
    return report


def _train_model(rank: int, a: dict[str, numpy.ndarray], c: dict[str, Any]) -> dict[str, Any]:
    """Mini-batch SGD on an ermlab model whose parameters are views of the shared vector."""
    from ermlab.optim import SGD
    from ermlab.training.trainer import _hits

    model, loss, flat, x, y = c["model"], c["loss_fn"], a["w"], a["x"], a["y"]
    version = a.get("version")
    offset = 0
    for param in model.parameters():
        param.data = flat[offset:offset + param.size].reshape(param.shape)
        param.zero_grad()
        offset += param.size
    optimizer = SGD(model.parameters(), lr=c["lr"], threads=1)
    model.train()
    conflicts = writes = examples = batches = 0
    loss_sum = hits = 0.0
    first, classify = c.get("first_epoch", 0), c.get("classify", False)
    c["start"].wait(timeout=600)  # all workers attached: they train at the same time
    start, cpu_start = time.perf_counter(), time.process_time()
    for epoch in range(first, first + c["epochs"]):
        optimizer.param_groups[0]["lr"] = c["lr"] * c["decay"] ** (epoch - first)
        mine = epoch_order(c["n"], c["seed"], epoch)[rank::c["workers"]]
        for b in range(0, len(mine), c["batch_size"]):
            index = mine[b:b + c["batch_size"]]
            if version is not None:
                seen = version.copy()
            scores = model.forward(x[index])
            loss_sum += loss.forward(scores, y[index]) * len(index)
            if classify:
                hits += _hits(scores, y[index], None)
            optimizer.zero_grad()
            model.backward(loss.backward(), input_grad=False)
            optimizer.step()
            if version is not None:
                conflicts += int(numpy.count_nonzero(version != seen))
                writes += version.size
                version += 1
            examples += len(index)
            batches += 1
            _exit_if_orphaned(c["parent"])
    report = {"examples": examples, "seconds": time.perf_counter() - start,
              "cpu_seconds": time.process_time() - cpu_start, "batches": batches,
              "loss_sum": float(loss_sum), "hits": hits}
    if version is not None:
        report.update(conflicts=conflicts, writes=writes)
    return report


# -- input checks -----------------------------------------------------------------------------

def _check_sparse_problem(x: Any, y: Any) -> tuple[Any, numpy.ndarray]:
    import scipy.sparse

    if scipy.sparse.issparse(x):
        csr = scipy.sparse.csr_matrix(x)
    else:
        dense = numpy.asarray(x)
        if dense.ndim != 2:
            raise ValueError(f"Hogwild.fit needs a 2-D x (n examples × d features); got shape "
                             f"{dense.shape}")
        csr = scipy.sparse.csr_matrix(dense)
    if csr.dtype not in (numpy.float32, numpy.float64):
        csr = csr.astype(numpy.float32)
    if not csr.has_canonical_format:  # a feature twice in a row: one entry, their sum
        csr = csr.copy()  # (the caller's matrix left as it is)
        csr.sum_duplicates()
    if not numpy.isfinite(csr.data).all():
        raise ValueError("x has NaN or infinite entries; clean the data before fitting")
    y = numpy.asarray(y).reshape(-1)
    if len(y) != csr.shape[0] or len(y) == 0:
        raise ValueError(f"x has {csr.shape[0]} rows and y {len(y)} labels; give one label "
                         "per row (at least one)")
    return csr, _signs(y).astype(csr.dtype)


def _dry_run(model: Any, loss: Any, x: numpy.ndarray, y: numpy.ndarray) -> None:
    """Forward two examples and their loss in the parent: shape and label mistakes show up
    here, before any process starts."""
    was_training = model.training
    model.eval()
    try:
        loss.forward(model.forward(x[:2]), y[:2])
    finally:
        model.train(was_training)


def _signs(y: numpy.ndarray) -> numpy.ndarray:
    values = set(numpy.unique(y).tolist())
    if not values <= {0, 1} and not values <= {-1, 1}:
        raise ValueError(f"Hogwild.fit needs two classes labelled {{0, 1}} or {{-1, +1}}; got "
                         f"labels {sorted(values)[:5]}")
    return numpy.where(y > 0, 1.0, -1.0)


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, numpy.integer)) and not isinstance(value, bool)
