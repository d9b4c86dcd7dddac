"""The process's worker threads ("lanes") and BLAS held to one thread while they run.

ermlab shares work out over the cores with Python threads, not with a second
BLAS or OpenMP pool: NumPy releases the GIL inside GEMMs, copies and ufunc
loops over more than a few hundred elements, and the Numba kernels are compiled
``nogil``, so two threads each running such calls keep two cores busy. These
places do it, on this one pool:

* the in-place optimizers cut a step's parameters into lanes
  (``ermlab.optim.inplace``);
* ``Conv2d`` cuts a batch into lanes of samples, each lane making its own
  im2col columns and running its own GEMMs, or running its own direct or
  Winograd kernels (``ermlab.nn.conv``; a Winograd lane is one compiled call,
  its GEMMs included, through SciPy's BLAS held to one thread);
* ``ReLU``, ``BatchNorm2d``, the pooling layers and ``Add`` cut their arrays into
  lanes of elements or channels;
* the data preparation's statistics (``ermlab.data.preprocessing.Moments``) read and
  summarize blocks of rows in lanes, which wait for each other asleep
  (``run_lanes(..., awake=False)``).

While lanes run, the BLAS libraries run on one thread (``BlasOneThread``,
restored after): the lanes are the threads, and OpenBLAS would otherwise share
out every GEMM or ``?axpy`` among its own threads, which compete with the lanes
(measured: an 8 ms ``?axpy`` of 0.4M floats instead of 0.12 ms on a busy 2-core
machine). The limit is process-wide, so it is set once around a parallel
region, never per call inside it.

``default_threads()`` is ``ERMLAB_NUM_THREADS`` if set, else the number of CPUs
this process may run on; ``ERMLAB_NUM_THREADS=1`` runs everything in the
calling thread.

The pool is one worker thread per extra lane, each handed its call through a
counter (``_Signal``), not a queue: after its lane a worker waits awake for
``SPIN_SECONDS`` (a compiled loop that holds no GIL, ``ermlab._spin``) and only
then sleeps on a condition; the calling thread waits for the workers' lanes the
same way. A worker whose last wait outlasted the spin sleeps at once the next
time, so lanes that come far apart (an MLP's optimizer step) leave no thread
spinning against BLAS's own. One caller has the pool at a time; a second thread
asking for lanes meanwhile, or a worker asking for lanes of its own, runs them
one after another itself.

The GIL sets what a hand-off costs. A thread that wants the GIL while another holds it
sleeps in the kernel until it is let go, and on the 2-vCPU VMs measured waking it takes
tens of µs. So a worker reports the end of its lane from the compiled wait that follows
it, after it has let go of the GIL (``ermlab._spin.signal_then_wait``): the caller,
waiting awake, then finds the GIL free. Measured there, per region with two lanes of
~35 µs each: the caller went on 13–16 µs after the worker's lane ended, where it had
taken 34–46 µs (six runs each, alternating); regions 103–137 µs against 122–162; paired
ResNet-20 steps at 2 threads 0.975 (median of 12 rounds), LeNet-5 0.982. The start of a
region still waits on the GIL: the worker wakes at once but needs the GIL for its own
Python, which the caller holds until its lane enters compiled code, so lanes should reach
their kernels with little Python (``nn._direct.geometry`` is cached for that; the
optimizers' calling lane starts with its largest block). ``run_lanes(..., blas=False)``
for lanes that run no BLAS skips setting and restoring BLAS's thread count (~5–10 µs).
Where the calling lane starts with a compiled kernel that can post (the optimizers'
fused kernels), ``run_lanes(..., handoff=True)`` has that kernel post the first worker's
lane once the GIL is free (``Handoff``), so that a worker waiting awake does not sleep on
the GIL at the start of a region either.

Where the lanes run sets what they cost too. Linux wakes a sleeping worker on the CPU of
the thread that wakes it where it can, and a worker and the calling thread on one CPU
then take turns: each waits awake for the other, up to ``SPIN_SECONDS``. So a worker
notes the CPU it starts each lane on, and ``run_lanes`` moves one that started its last
lane on the calling thread's CPU onto the others (``_cpu``, ``_Worker.steer``: the worker's
affinity, never the calling thread's), and the waiting loop gives way to other threads
every 20 µs (``ermlab._spin``).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import platform
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy

POOL_PREFIX = "ermlab-lane"


def _seconds(name: str, default: float) -> float:
    """The environment variable ``name`` as seconds ≥ 0, ``default`` where it is unset."""
    value = os.environ.get(name)
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise ValueError(f"{name} must be a number of seconds ≥ 0 (0: never spin); "
                         f"got {value!r}")
    return seconds


# How long a waiting side stays awake (spinning, without the GIL) before it sleeps: a worker
# after its lane, waiting for the next; the calling thread after its own lane, waiting for
# the workers'. Waking a sleeping thread goes through the kernel. Measured on the 2-vCPU
# Xeon VM (LeNet-5 steps at 2 threads, 6–7 parallel regions per step, per region, median):
# the worker started its lane 0.25 ms after the region began when it slept and 0.16 ms when
# awake (the rest, we take it, is the GIL: the caller holds it until its own lane enters
# compiled code), and the caller went on 0.12 ms after the last lane ended when it slept,
# 0.04 ms awake; ``benchmarks/pool.py`` in another run: 0.21/0.18 and 0.10/0.07 ms, whole
# steps asleep → awake LeNet-5 0.98, small VGG 0.98, ResNet-20 0.95. Paired whole steps at
# 2 threads, the previous pool (concurrent.futures) → this one, five runs of LeNet-5: 0.89,
# 0.98, 0.94, 1.12, 0.92 (median 0.94); small VGG 0.92, 0.97; ResNet-20 0.94, 0.90 (the
# host's steal time reached 10–23 % during the later runs; 10 ms of spin measured the same
# as 2). 0 (or ERMLAB_SPIN_SECONDS=0) turns spinning off; it is off anyway without Numba
# or off x86-64.
SPIN_SECONDS = _seconds("ERMLAB_SPIN_SECONDS", 0.002)
# After ``rest()`` (a GEMM on BLAS's own threads) no thread of the pool spins for this long.
QUIET_SECONDS = 0.1
_quiet_until = 0.0

_pool: _Pool | None = None
_pool_lock = threading.Lock()
_blas_libraries: list[Any] | None = None


def default_threads() -> int:
    """``ERMLAB_NUM_THREADS`` if set, else the number of CPUs this process may run on."""
    value = os.environ.get("ERMLAB_NUM_THREADS")
    if value:
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"ERMLAB_NUM_THREADS must be an integer ≥ 1; got {value!r}")
        return int(value)
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def check_threads(threads: Any, owner: str) -> int | None:
    """``threads`` as an int ≥ 1, or None (``default_threads()`` at each call)."""
    if threads is None:
        return None
    if isinstance(threads, bool) or int(threads) != threads or threads < 1:
        raise ValueError(
            f"{owner}: threads must be an integer ≥ 1 (1: no worker threads) or None "
            f"(ERMLAB_NUM_THREADS or the CPU count); got {threads!r}"
        )
    return int(threads)


def in_worker() -> bool:
    """Whether the calling thread is one of the pool's workers (which must not wait on
    the pool: it runs its work itself)."""
    return threading.current_thread().name.startswith(POOL_PREFIX)


def _forget_pool() -> None:
    """In a forked child the pool's threads do not exist: start a new pool when needed."""
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def sample_lanes(n: int, threads: int, worth: float) -> list[tuple[int, int]]:
    """Contiguous ranges [lo, hi) of ``n`` samples, one per lane: ``min(threads, n, worth)``
    lanes, at least one (``worth``: how many lanes the work is big enough for)."""
    lanes = int(max(1, min(threads, n, worth)))
    return [(n * k // lanes, n * (k + 1) // lanes) for k in range(lanes)]


def run_lanes(calls: Sequence[Callable[..., Any]], blas: bool = True,
              awake: bool = True, handoff: bool = False) -> list[Any]:
    """Run ``calls[0]`` in the calling thread and the others on the pool's workers, with
    BLAS on one thread (one call too: a lane's GEMMs never wake BLAS's own threads, which
    spin on a core after each GEMM, in the way of the next regions' lanes; a caller that
    wants BLAS's threads, a layer of one sample, calls its work itself); return their
    results in order (the first exception raised is re-raised once all have finished). A
    worker's call, or one made while another thread has the pool, runs its lanes one
    after another in the calling thread.
    ``blas=False``: the calls run no BLAS (compiled kernels, elementwise NumPy), so BLAS's
    thread count is left alone (setting it and restoring it costs ~5–10 µs a region).
    ``awake=False``: the lanes are long (milliseconds each), so neither side waits awake
    for the other: no spinning, and Numba's spin loop is not loaded for them (a fresh
    process's data preparation, ``Moments.of``, would pay ~0.35 s for its import).
    ``handoff=True``: ``calls[0]`` takes one argument, a ``Handoff`` or None; given a
    ``Handoff``, its first compiled kernel posts the first worker's lane (see ``Handoff``).
    The other calls take none."""
    first_call = partial(calls[0], None) if handoff else calls[0]
    if len(calls) == 1:
        with BlasOneThread() if blas else contextlib.nullcontext():
            return [first_call()]
    if in_worker():
        return [first_call()] + [call() for call in calls[1:]]
    pool = _workers(len(calls) - 1)
    if not pool.lock.acquire(blocking=False):
        return [first_call()] + [call() for call in calls[1:]]
    used, staged = pool.workers[:len(calls) - 1], None
    try:
        with BlasOneThread() if blas else contextlib.nullcontext():
            try:
                here = _cpu()
                for worker in used:
                    if here is not None and worker.cpu == here:
                        worker.steer(here)
                if handoff and awake and not used[0].posted.sleeping and _spinner() is not None:
                    staged = used[0].stage(calls[1])
                for worker, call in zip(used, calls[1:], strict=True):
                    if staged is None or worker is not used[0]:
                        worker.post(call, awake)
                first = calls[0](staged) if staged is not None else first_call()
            finally:
                outcomes = _end_region(used, staged, awake)
    finally:
        pool.lock.release()
    for _, error in outcomes:
        if error is not None:
            raise error
    return [first] + [result for result, _ in outcomes]


def _end_region(used: Sequence[_Worker], staged: Handoff | None,
                awake: bool) -> list[tuple[Any, BaseException | None]]:
    """The workers' outcomes, once every one of them is back from this region's post.

    A KeyboardInterrupt (Ctrl-C: Python raises it in the calling thread, between two
    bytecodes, anywhere in the region) is held until then and raised after: the workers
    wait for their posts by number, so a region left with a post unmade, or unawaited,
    would leave a worker waiting for a number the next region has gone past — every later
    region would hang. Posts that an interrupt cut short are made here (``complete_post``).
    """
    outcomes, deferred, pending = [], None, list(used)
    while True:
        try:
            if staged is not None:
                staged.settle()
                staged = None
            while pending:
                pending[0].complete_post()
                outcomes.append(pending[0].finish(awake))
                pending.pop(0)
            break
        except BaseException as error:  # noqa: BLE001 - raised once the workers are back
            deferred = error if deferred is None else deferred
    if deferred is not None:
        raise deferred
    return outcomes


def _nothing() -> None:
    """The call of a post that an interrupt cut short before its call was set."""


def run_ranges(ranges: Sequence[tuple[int, int]], work: Callable[..., Any], *args: Any,
               blas: bool = False, awake: bool = True) -> list:
    """``work(*args, lo, hi)`` for each range [lo, hi), one lane each (``run_lanes``); by
    default ``work`` runs no BLAS (the layers' compiled kernels): ``blas=True`` if it does.
    One range without BLAS is one call, in the calling thread."""
    if len(ranges) == 1 and not blas:
        return [work(*args, *ranges[0])]
    return run_lanes([lambda lo=lo, hi=hi: work(*args, lo, hi) for lo, hi in ranges], blas,
                     awake)


class BlasOneThread:
    """Run the BLAS libraries (NumPy's and SciPy's, through threadpoolctl) on one thread
    inside the ``with`` block, restoring their thread counts after. A GEMM another
    thread of the process runs meanwhile runs on one thread too."""

    def __enter__(self) -> list[tuple[Any, int]]:
        self.saved = []
        for lib in _blas():
            n = lib.get_num_threads()
            if n != 1:
                lib.set_num_threads(1)
                self.saved.append((lib, n))
        return self.saved

    def __exit__(self, *exc: Any) -> None:
        for lib, n in self.saved:
            lib.set_num_threads(n)


def _blas() -> list[Any]:
    """threadpoolctl's controllers of the BLAS libraries loaded (SciPy's loaded first)."""
    global _blas_libraries
    if _blas_libraries is None:
        try:
            from scipy.linalg import blas  # noqa: F401 - load SciPy's BLAS so it is seen
            from threadpoolctl import ThreadpoolController

            _blas_libraries = ThreadpoolController().select(user_api="blas").lib_controllers
        except Exception:  # pragma: no cover - threadpoolctl comes with scikit-learn
            _blas_libraries = []
    return _blas_libraries


class Handoff:
    """A worker's lane that the calling thread's first compiled kernel posts, where the
    caller would post it in Python before its own lane (``run_lanes(..., handoff=True)``).

    A worker waiting awake sees a post at once, but then needs the GIL for the Python that
    leads into its own kernel, and the caller holds the GIL until its lane enters compiled
    code: a thread that asks for a held GIL sleeps in the kernel until it is let go, and
    waking it took tens of µs on the VMs measured. A kernel that takes ``signal`` and
    ``value`` and starts with ``ermlab._spin.publish(signal, value)`` posts the lane once
    the GIL is free, so the worker takes it without sleeping. Only for a worker that waits
    awake; one asleep is posted, and woken, in Python as before.

    ``signal`` and ``value``: the arguments for the kernel (the worker's posted counter and
    the value it waits for). ``post()``: post in Python now, where the lane's first block
    has no kernel. ``settle()`` (``run_lanes`` calls it after the caller's lane): posts the
    lane if no kernel did (an error before it), and wakes the worker if it went to sleep
    meanwhile (it sets signal[2] before it reads signal[0] for the last time, and the
    kernel's fence orders its store before this read of signal[2]: one of the two sees the
    other)."""

    __slots__ = ("worker", "signal", "value")

    def __init__(self, worker: _Worker, value: int) -> None:
        self.worker, self.signal, self.value = worker, worker.posted.counter, value

    def post(self) -> None:
        if self.signal[0] != self.value:
            self.worker.posted.set(self.value)  # wakes the worker if it sleeps

    def settle(self) -> None:
        if self.signal[0] == self.value and self.signal[2]:
            self.worker.posted.wake()
        else:
            self.post()


class _Signal:
    """A counter that one thread sets and another waits for: awake (``ermlab._spin``, no
    GIL held) for ``SPIN_SECONDS``, then asleep on a condition until it is set."""

    def __init__(self) -> None:
        # [0] the counter, [1] set by ``rest``, [2] set while the waiting side sleeps; a
        # cache line of their own
        self.counter = numpy.zeros(8, dtype=numpy.int64)
        self.condition = threading.Condition(threading.Lock())

    @property
    def sleeping(self) -> bool:
        return bool(self.counter[2])

    def set(self, value: int) -> None:
        self.counter[1] = 0
        self.counter[0] = value
        if self.counter[2]:  # read after the write: see ``wait``
            self.wake()

    def wake(self) -> None:
        with self.condition:
            self.condition.notify_all()

    def wait(self, value: int, awake: bool = True, first: tuple | None = None) -> None:
        """Wait until the counter is ``value``. ``first``: (signal, v) to set to v before
        waiting, in the compiled wait once the GIL is released where it waits awake
        (``ermlab._spin.signal_then_wait``): a worker ending its lane lets the caller,
        which waits for it awake, go on without blocking on the GIL."""
        spin = _spinner() if awake else None
        if first is not None and spin is None:
            first[0].set(first[1])
        elif first is not None:
            outcome = spin[2](first[0].counter, first[1], self.counter, value, spin[1])
            if outcome == 1:
                return
            if outcome == 2:  # the other side sleeps: wake it, then wait awake as usual
                first[0].wake()
            else:  # it waited awake for as long as it may: sleep
                spin = None
        if spin is not None and spin[0](self.counter, value, spin[1]):
            return
        # counter[2] is written, then the lock taken (a full fence), then the counter read
        # again; the setting side writes the counter, then reads counter[2] (under the
        # GIL in ``set``, after a fence in ``signal_then_wait``): either this read sees
        # the value or the setting side sees counter[2] and wakes this one.
        self.counter[2] = 1
        try:
            with self.condition:
                while self.counter[0] != value:
                    self.condition.wait()
        finally:
            self.counter[2] = 0


def rest() -> None:
    """Called before BLAS runs a GEMM on its own threads (``Linear`` without lanes,
    ``Conv2d`` on one sample or asked for one thread): the pool's workers that wait awake
    go to sleep now, and no thread of the pool waits awake for ``QUIET_SECONDS``.
    OpenBLAS's threads spin on after a GEMM (for ~2²⁸ cycles, its ``THREAD_TIMEOUT``), so
    spinning against them only takes cores from both. Measured (LeNet-5 with its Linear
    layers on BLAS's threads, 2 threads, paired steps, sleeping → spinning pool): 1.31×
    and 1.42× slower without this call."""
    global _quiet_until
    pool = _pool
    if pool is None:
        return
    _quiet_until = time.perf_counter() + QUIET_SECONDS
    for worker in pool.workers:
        worker.posted.counter[1] = 1


class _Worker:
    """One worker thread: ``post`` hands it a call, ``finish`` waits for its outcome."""

    def __init__(self, index: int) -> None:
        self.posted, self.done = _Signal(), _Signal()
        self.generation = 0
        self.call: Callable[[], Any] | None = None
        self.awake = True  # whether the call posted may be waited for awake (``run_lanes``)
        self.outcome: tuple[Any, BaseException | None] = (None, None)
        self.cpu: int | None = None  # the CPU it started its last lane on (``_cpu``)
        self.thread = threading.Thread(target=self._loop, name=f"{POOL_PREFIX}-{index}",
                                       daemon=True)
        self.thread.start()

    def steer(self, cpu: int) -> None:
        """Keep this worker off ``cpu`` (the calling thread's), on the others the calling
        thread may use (see ``_cpu``); nothing where it may use no other or the system
        refuses."""
        others = os.sched_getaffinity(0) - {cpu}
        if others:
            try:
                os.sched_setaffinity(self.thread.native_id, others)
            except OSError:  # pragma: no cover - a sandbox that forbids it
                pass
        self.cpu = None

    def post(self, call: Callable[[], Any] | None, awake: bool = True) -> None:
        self.generation += 1
        self.call, self.awake = call, awake
        self.posted.set(self.generation)

    def stage(self, call: Callable[[], Any]) -> Handoff:
        """Hand the worker ``call`` (to be waited for awake) without posting it: the
        ``Handoff`` returned posts it."""
        self.generation += 1
        self.call, self.awake = call, True
        self.posted.counter[1] = 0  # a stop asked by ``rest`` is over: spin for this post
        return Handoff(self, self.generation)

    def complete_post(self) -> None:
        """Make the post of this worker's current number if it was not made (an interrupt
        between ``post``'s counting and its setting, or before a ``Handoff`` posted)."""
        if self.posted.counter[0] != self.generation:
            if self.call is None:  # None would stop the worker
                self.call = _nothing
            self.posted.set(self.generation)

    def finish(self, awake: bool = True) -> tuple[Any, BaseException | None]:
        self.done.wait(self.generation, awake)
        outcome, self.outcome = self.outcome, (None, None)
        return outcome

    def _loop(self) -> None:
        # The first wait sleeps: a new worker has not been posted to yet, and the lanes that
        # started the pool may be long ones that wait asleep (``run_lanes(awake=False)``).
        generation, awake, finished = 0, False, None
        while True:
            generation += 1
            idle = time.perf_counter()
            # The last lane's end is signalled by this wait (``_Signal.wait``'s ``first``),
            # once this thread has let go of the GIL.
            self.posted.wait(generation, awake, finished)
            # Wait awake next time only if this wait was short enough for it to pay: where
            # lanes come far apart (an MLP's optimizer step, once per step), a spinning
            # worker would only take a core from BLAS's own threads.
            awake = time.perf_counter() - idle < SPIN_SECONDS and self.awake
            self.cpu = _cpu()
            call, self.call = self.call, None
            if call is None:  # stop (at exit)
                self.done.set(generation)
                return
            try:
                self.outcome = (call(), None)
            except BaseException as error:  # noqa: BLE001 - handed to the caller
                self.outcome = (None, error)
            # not kept while waiting for the next post: the call's closure holds its
            # region's arrays (the last bprop's ∂L/∂y and caches, kept into the next step)
            call = None
            finished = (self.done, generation)


def _load_getcpu() -> Callable[[], int] | None:
    """libc's ``sched_getcpu`` (Linux, ~0.1 µs a call through ctypes), or None."""
    if not (hasattr(os, "sched_setaffinity") and hasattr(os, "sched_getaffinity")):
        return None
    try:
        import ctypes

        getcpu = ctypes.CDLL(None).sched_getcpu
    except (OSError, AttributeError):  # pragma: no cover - not glibc or musl
        return None
    getcpu.restype, getcpu.argtypes = ctypes.c_int, []
    return getcpu


_getcpu = _load_getcpu()


def _cpu() -> int | None:
    """The CPU the calling thread runs on now; None where it cannot be told.

    Why the pool asks: Linux wakes a thread on the CPU of the thread that wakes it where
    it can (its wake-affine rule), so a worker woken after a pause may land on the calling
    thread's CPU, and the two then stay together, each waiting awake for the other in
    turn: measured (Intel Xeon VM, 2 cores; plain SGD over the 784-512-256-10 MLP's 0.5M
    parameters on two lanes, 30 steps after each 0.3 s pause) 2.2 ms a step in 10 of 16
    rounds, 75 µs in the others, and 72–102 µs in all 16 with the two threads pinned
    apart. So ``run_lanes`` moves a worker that started its last lane on the calling
    thread's CPU onto the others (``_Worker.steer``); the calling thread, the user's, is
    never pinned."""
    if _getcpu is None:
        return None
    cpu = _getcpu()
    return cpu if cpu >= 0 else None


class _Pool:
    def __init__(self) -> None:
        self.workers: list[_Worker] = []
        self.lock = threading.Lock()  # held by the thread whose lanes run


def _workers(n: int) -> _Pool:
    """The process-wide pool, grown to at least ``n`` worker threads."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = _Pool()
        while len(_pool.workers) < n:
            _pool.workers.append(_Worker(len(_pool.workers)))
        return _pool


@atexit.register
def _stop_workers() -> None:
    """Let the workers end before the interpreter does."""
    global _pool
    pool = _pool
    if pool is None or not pool.lock.acquire(timeout=1.0):
        return
    _pool = None  # a later call starts a new pool; this one's lock stays held
    for worker in pool.workers:
        worker.post(None)
    for worker in pool.workers:
        worker.thread.join(timeout=1.0)


# (``ermlab._spin.wait``, time-stamp ticks per second, ``ermlab._spin.signal_then_wait``);
# None: no spinning here; False: not looked for yet
_spin: tuple[Callable[..., bool], float, Callable[..., int]] | None | bool = False


def _spinner() -> tuple[Callable[..., bool], int, Callable[..., int]] | None:
    """(``ermlab._spin.wait``, ticks in ``SPIN_SECONDS``, ``ermlab._spin.signal_then_wait``),
    or None: no spinning (0 seconds, no Numba, or not x86-64)."""
    global _spin
    if _spin is False:
        _spin = None
        if platform.machine().lower() in ("x86_64", "amd64"):
            try:
                from ermlab import _spin as spin_module
                counter = numpy.ones(8, dtype=numpy.int64)
                spin_module.wait(counter, 1, 1)  # compiled here
                spin_module.signal_then_wait(counter, 1, counter, 1, 1)  # (returns at once)
                _spin = (spin_module.wait, spin_module.ticks_per_second(),
                         spin_module.signal_then_wait)
            except Exception:  # no Numba, or it cannot compile the loop: sleep instead
                _spin = None
    if _spin is None or SPIN_SECONDS <= 0 or time.perf_counter() < _quiet_until:
        return None
    return _spin[0], int(_spin[1] * SPIN_SECONDS), _spin[2]


# Runs at n lanes a probe does not time before it times them. Measured (Intel Xeon VM, 2
# vCPUs, optimizer steps back to back over 0.5M parameters, after eight one-lane steps):
# with two such runs the first timed runs at two lanes took 2.5–6.7 ms, then 0.2–1.5 ms,
# where they settle at 0.11–0.30 ms: the worker's vCPU, idle while one lane ran, is run
# again by the host only some milliseconds after it is woken.
WAKE_RUNS = 4


def _low_median(times: list[float]) -> float:
    """The median of sorted ``times``, the lower of the middle two for an even count: noise
    (another process, a page fault, a worker's first run) only ever adds time."""
    return times[(len(times) - 1) // 2]


class LaneTuner:
    """Chooses by timing between one lane and ``n`` for a region that recurs with the same
    work (an optimizer's step over the same parameters): whether a second lane pays depends
    on the machine and on what runs around the region, which no fixed threshold knows.

    Measured (``benchmarks/optim_step.py`` and ``mlp_epoch.py``, 2 threads, the MLP
    784-512-256-10's 0.5M parameters): on an AMD Zen 5 whose caches move 130 GB/s a core,
    plain SGD's step takes ~50 µs on one lane and two lanes gained nothing; on an Intel Xeon
    VM whose core moves ~25 GB/s the same step took 0.21 ms on one lane and 0.125 on two
    (momentum 0.33/0.25, Adam 0.42/0.29) back to back, yet inside a training epoch, where
    OpenBLAS's threads spin on after each GEMM (for ~0.1 s, on the core a worker would
    take), the same two lanes made the epoch slower.

    A probe times ``probes`` runs at ``n`` lanes in a row, then ``probes`` at one, each
    stretch after runs that are not counted (``WAKE_RUNS`` at ``n``, one at one: they wake
    the workers and bring each lane's arrays into its core's cache; alternating the counts
    run by run would time neither as it runs), and keeps ``n`` lanes only where their
    median (the lower middle one of an even count) is below ``margin`` × one lane's (one
    lane leaves the other cores to other work). The choice holds for ``every`` timed runs,
    then the
    next probe starts: what runs around the region may have changed. A new ``key`` (other
    work, another lane count) starts a probe after ``warmup`` runs on one lane that are not
    counted: a region's first runs are slow (an optimizer's first steps fault its new state
    arrays in and bring them into cache; measured on an Intel Xeon VM, 2 cores, momentum
    SGD over 0.5M parameters: 4.4 ms, then 0.37, then 0.15–0.18 on two lanes), and a probe
    that timed them chose one lane where two were faster (plain SGD, two lanes' runs of
    0.21, 0.16, 0.11, 0.10 ms against one lane's 0.19, 0.16, 0.14, 0.14: equal medians;
    steps in a row took 0.12 ms on two lanes, 0.20 on one). The first probe of a key holds
    for ``recheck`` timed runs only: a process's first runs at n lanes also start the pool's
    threads and compile or load the kernels' variants for them (measured there: 9.4 and
    4.0 ms among a first probe's runs of 0.2 ms; in ``benchmarks/optim_step.py`` a first
    probe of momentum SGD timed two lanes at 6.4, 0.27, 0.25, 0.22 ms and one lane at
    0.25–0.27, and kept one, where its steps in a row took 0.19 ms on two lanes, 0.28 on
    one). ``record`` is told the region's
    seconds after each run that should count (a run with extra work, an optimizer's flush,
    is not recorded and does not move the probe on). Any choice gives the same results:
    only regions whose results do not depend on their lanes may be tuned.

    While the pool rests (``rest``: a GEMM ran on BLAS's own threads in the last
    ``QUIET_SECONDS``, an MLP's ``Linear`` layers), the answer is one lane, and the run is
    neither timed nor counted. There a second lane wakes a sleeping worker at every step,
    and the worker, to report its lane's end and go back to sleep, needs the GIL while the
    calling thread runs on in Python: CPython makes the calling thread hand it over (within
    its 5 ms switch interval), and the calling thread then sleeps until it gets it back.
    Those costs land after the region, where no timing of the region sees them. Measured
    (AMD EPYC Zen 5 VM, 2 threads, Fashion-MNIST MLP 784-512-256-10 with Adam, six
    alternating epochs): two lanes, which the tuner had chosen, 0.70–0.91 s an epoch after
    the first, one lane 0.66–0.78, faster in every round; a profile of the two-lane epoch
    put ~53 µs a step in the calling thread's first builtin call after the step and ~40 µs
    in its waits on the sleeping worker.
    ``benchmarks/mlp_epoch.py --only ermlab --epochs 4``, three alternating runs, the
    median epoch before → after: 1.02 → 0.96, 0.77 → 0.66, 0.69 → 0.62 s (Adam 0.205 →
    0.128, 0.135 → 0.092, 0.086 → 0.073 s of the instrumented epoch)."""

    def __init__(self, probes: int = 4, every: int = 256, margin: float = 0.95,
                 warmup: int = 8, recheck: int = 32) -> None:
        self.probes, self.every, self.margin, self.warmup = probes, every, margin, warmup
        self.recheck = recheck
        self.probed = False  # whether this key's first probe is done
        self.key: Any = None
        self.plan: list[tuple[int, bool]] = []  # the probe's runs to come: (lanes, counted)
        self.times: dict[int, list[float]] = {}
        self.choice = 1
        self.left = 0  # timed runs before the next probe
        self.resting = False  # the last answer was one lane because the pool rests

    def choose(self, key: Any, n: int) -> int:
        """The lane count for the next run of the region known by ``key``: ``n`` or 1."""
        self.resting = n > 1 and time.perf_counter() < _quiet_until
        if n <= 1 or self.resting:
            return 1
        if key != self.key:  # a new region: its first runs are not timed (see above)
            self.key, self.left, self.times, self.probed = key, 0, {}, False
            self.plan = [(1, False)] * self.warmup
        if not self.plan and self.left <= 0:
            # (lanes, counted): the first runs of each stretch set up the caches and wake
            # the workers for the rest (a worker that slept long sleeps again after its
            # first lane: ``_Worker._loop``; on a VM the first runs after a sleep wait for
            # the host to run the idle vCPU again: see WAKE_RUNS)
            self.plan = ([(n, False)] * WAKE_RUNS + [(n, True)] * self.probes
                         + [(1, False)] + [(1, True)] * self.probes)
            self.times = {1: [], n: []}
        return self.plan[0][0] if self.plan else self.choice

    def record(self, seconds: float) -> None:
        """The seconds the run that ``choose`` was last asked for took."""
        if self.resting:  # one lane while the pool rests: not part of any probe
            return
        if not self.plan:
            self.left -= 1
            return
        lanes, counted = self.plan.pop(0)
        if counted:
            self.times[lanes].append(seconds)
        if not self.plan and self.times:  # the probe's last run (not a warm-up's)
            n = max(self.times)
            one, several = sorted(self.times[1]), sorted(self.times[n])
            self.choice = n if _low_median(several) < self.margin * _low_median(one) else 1
            self.left = self.every if self.probed else min(self.every, self.recheck)
            self.probed = True
