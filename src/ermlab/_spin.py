"""Waiting awake: a compiled loop that watches a counter without the GIL (Numba, x86-64).

``wait(counter, value, ticks)`` returns True as soon as ``counter[0] == value``, or False
once ``ticks`` time-stamp-counter ticks have gone by or ``counter[1]`` is set (a request
to stop spinning). Each turn of the loop runs the
processor's ``pause`` hint (it eases the pipeline and a sibling hyperthread while
spinning, and tells the compiler memory may have changed, so the counter is read again
each turn). ``ticks_per_second()`` measures the time-stamp counter's rate against
``time.perf_counter`` once per process.

``signal_then_wait`` sets another counter first, once the GIL is released (a worker
ending its lane), then waits the same way.

Every ``ticks / YIELDS`` ticks of waiting (20 µs of the default 2 ms) the loop calls
``sched_yield``, so that a thread the waiter is waiting for, should it be on the waiter's
own CPU (see ``ermlab.threads._cpu``), runs then instead of after the waiter gives up:
measured (Intel Xeon VM, 2 cores; two-lane steps of plain SGD over 0.5M parameters after
pauses, both threads on one CPU) 2.2 ms a step without it, 0.23 ms with it. Where the two
are on different CPUs, the call returns at once.

Used by ``ermlab.threads``: a thread that posts work to a worker which is awake sees it
start within a microsecond or so, where waking a sleeping thread through the kernel took
0.1–0.35 ms on the 2-vCPU VMs measured (see ``ermlab.threads.SPIN_SECONDS``).
"""

from __future__ import annotations

import os
import time

from llvmlite import ir
from numba import njit
from numba.core import cgutils, types
from numba.extending import intrinsic

from ermlab import _numba_target  # noqa: F401 - the vector width, before a kernel compiles

# The waiting loop gives way (``sched_yield``) this many times over its ``ticks``; POSIX
# only (Windows has no ``sched_yield``: there it waits as before).
YIELDS = 100
_CAN_YIELD = os.name == "posix"


@intrinsic
def _pause(typingctx):  # pragma: no cover - compiled
    def codegen(context, builder, signature, args):
        hint = ir.FunctionType(ir.VoidType(), [])
        builder.call(cgutils.get_or_insert_function(builder.module, hint,
                                                    "llvm.x86.sse2.pause"), [])
        return context.get_dummy_value()
    return types.void(), codegen


@intrinsic
def _ticks(typingctx):  # pragma: no cover - compiled
    def codegen(context, builder, signature, args):
        counter = ir.FunctionType(ir.IntType(64), [])
        return builder.call(cgutils.get_or_insert_function(builder.module, counter,
                                                           "llvm.readcyclecounter"), [])
    return types.int64(), codegen


@intrinsic
def _yield(typingctx):  # pragma: no cover - compiled
    def codegen(context, builder, signature, args):
        give_way = ir.FunctionType(ir.IntType(32), [])
        builder.call(cgutils.get_or_insert_function(builder.module, give_way, "sched_yield"),
                     [])
        return context.get_dummy_value()
    return types.void(), codegen


@njit(nogil=True, cache=True)
def wait(counter, value, ticks):  # pragma: no cover - compiled
    """True once counter[0] == value; False after ``ticks`` time-stamp ticks, or as soon
    as counter[1] is not 0 (asked to stop waiting awake); ``sched_yield`` every
    ``ticks / YIELDS`` ticks."""
    start = _ticks()
    turn = start
    every = ticks // YIELDS + 1
    while counter[0] != value:
        _pause()
        tick = _ticks()
        if counter[1] != 0 or tick - start > ticks:
            return counter[0] == value
        if _CAN_YIELD:
            if tick - turn > every:
                _yield()
                turn = tick
    return True


@intrinsic
def _fence(typingctx):  # pragma: no cover - compiled
    def codegen(context, builder, signature, args):
        builder.fence("seq_cst")
        return context.get_dummy_value()
    return types.void(), codegen


@njit(inline="always", nogil=True, cache=True)
def publish(signal, value):  # pragma: no cover - compiled
    """signal[0] = value, then a full fence, where ``signal`` is not None: a compiled kernel
    that starts with this hands a worker that waits awake (``wait``) its lane once the
    kernel's caller has let go of the GIL (``ermlab.threads.Handoff``), so the worker takes
    the GIL at once instead of sleeping on it. The fence keeps the store ahead of the
    kernel's own loads and stores (and of the caller's later read of signal[2])."""
    if signal is not None:
        signal[0] = value
        _fence()


@njit(nogil=True, cache=True)
def signal_then_wait(done, done_value, counter, value, ticks):  # pragma: no cover - compiled
    """Set done[0] = done_value, then ``wait(counter, value, ticks)``: 1 if the wait saw the
    value, 0 if it gave up, and 2 at once, without waiting, if the thread waiting for
    ``done`` sleeps (done[2] set), so that the caller wakes it.

    The call releases the GIL before it sets ``done``: the thread that waits awake for
    ``done`` then finds the GIL free when it goes on, instead of blocking on it while this
    thread finishes its Python and being woken through the kernel (measured on the 2-vCPU
    VM: the caller went on ~25 µs after a worker's lane ended, ~5 µs with this). A full
    fence orders the write of done[0] before the read of done[2] (x86 may let a load pass
    an earlier store); the sleeping side writes done[2] before taking a lock (itself a
    full fence) and reading done[0], so one of the two sees the other."""
    done[0] = done_value
    _fence()
    if done[2] != 0:
        return 2
    return 1 if wait(counter, value, ticks) else 0


@njit(nogil=True, cache=True)
def now():  # pragma: no cover - compiled
    """The time-stamp counter."""
    return _ticks()


_rate: float | None = None


def ticks_per_second() -> float:
    """The time-stamp counter's rate, measured over ~2 ms the first time."""
    global _rate
    if _rate is None:
        now()  # compiled (or loaded) before timing
        t0, c0 = time.perf_counter(), now()
        while time.perf_counter() - t0 < 0.002:
            pass
        t1, c1 = time.perf_counter(), now()
        _rate = max(1.0, (c1 - c0) / (t1 - t0))
    return _rate
