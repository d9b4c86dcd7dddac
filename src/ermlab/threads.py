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
  lanes of elements or channels.

While lanes run, the BLAS libraries run on one thread (``BlasOneThread``,
restored after): the lanes are the threads, and OpenBLAS would otherwise share
out every GEMM or ``?axpy`` among its own threads, which compete with the lanes
(measured: an 8 ms ``?axpy`` of 0.4M floats instead of 0.12 ms on a busy 2-core
machine). The limit is process-wide, so it is set once around a parallel
region, never per call inside it.

``default_threads()`` is ``ERMLAB_NUM_THREADS`` if set, else the number of CPUs
this process may run on; ``ERMLAB_NUM_THREADS=1`` runs everything in the
calling thread.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

POOL_PREFIX = "ermlab-lane"

_pool: ThreadPoolExecutor | None = None
_pool_size = 0
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


def workers(n: int) -> ThreadPoolExecutor:
    """The process-wide pool of worker threads, grown to at least ``n`` workers."""
    global _pool, _pool_size
    with _pool_lock:
        if _pool is None or _pool_size < n:
            _pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix=POOL_PREFIX)
            _pool_size = n
        return _pool


def in_worker() -> bool:
    """Whether the calling thread is one of the pool's workers (which must not wait on
    the pool: it runs its work itself)."""
    return threading.current_thread().name.startswith(POOL_PREFIX)


def _forget_pool() -> None:
    """In a forked child the pool's threads do not exist: start a new pool when needed."""
    global _pool, _pool_size, _pool_lock
    _pool, _pool_size, _pool_lock = None, 0, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def sample_lanes(n: int, threads: int, worth: float) -> list[tuple[int, int]]:
    """Contiguous ranges [lo, hi) of ``n`` samples, one per lane: ``min(threads, n, worth)``
    lanes, at least one (``worth``: how many lanes the work is big enough for)."""
    lanes = int(max(1, min(threads, n, worth)))
    return [(n * k // lanes, n * (k + 1) // lanes) for k in range(lanes)]


def run_lanes(calls: Sequence[Callable[[], Any]]) -> list[Any]:
    """Run ``calls[0]`` in the calling thread and the others on the pool, with BLAS on one
    thread; return their results in order (the first exception raised is re-raised
    once all have finished)."""
    if len(calls) == 1 or in_worker():
        return [call() for call in calls]
    with BlasOneThread():
        futures = [workers(len(calls) - 1).submit(call) for call in calls[1:]]
        try:
            first = calls[0]()
        finally:
            rest = [future.exception() for future in futures]
    for error in rest:
        if error is not None:
            raise error
    return [first] + [future.result() for future in futures]


def run_ranges(ranges: Sequence[tuple[int, int]], work: Callable[..., Any], *args: Any) -> list:
    """``work(*args, lo, hi)`` for each range [lo, hi), one lane each (``run_lanes``)."""
    return run_lanes([lambda lo=lo, hi=hi: work(*args, lo, hi) for lo, hi in ranges])


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
