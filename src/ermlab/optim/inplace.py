"""In-place first-order optimizers: scratch buffers, the subnormal flush, range checks.

Every first-order rule here updates ``param.data`` and its state arrays in
place, with ``out=`` arguments into preallocated buffers, so one step makes no
large temporaries (``scratch(param, k)`` hands out the k-th buffer shaped like
the parameter; it is not saved in ``state_dict``).

The subnormal trap (see PERFORMANCE.md): state that decays geometrically —
momentum buffers, Adam's m and v, RMSprop/Adadelta averages — shrinks by β
every step wherever the gradient is zero (dead ReLU units) until it becomes
subnormal (|x| < τ, the dtype's smallest normal number ``finfo(dtype).tiny``:
1.2e-38 in float32, 2.2e-308 in float64), and arithmetic on subnormals is
~17× slower. Every ``flush_every`` steps of a parameter (its ``state["step"]``,
so a resumed run flushes at the same steps) the arrays that ``flush_keys``
names have their subnormal entries set to zero. The flush must never change a
result that matters, and a fixed threshold such as 1e-30 does: with gradients
of ~1e-16, v ~ g² ~ 1e-35 is a legitimate value, and zeroing it changes Adam's
next step by O(1) when ε is small. So the threshold is τ of the array's dtype,
and what may be flushed depends on the state's role in the update:

* Numerators and momenta (``decaying_state``: Adam's m, SGD's and RMSprop's
  momentum buffers, RMSprop's ḡ) are always flushed. Zeroing |m| < τ moves an
  Adam step by at most γ/(1 − β₁) · τ / max(ε, √v̂), and √v̂ ≥ √v is at least
  the root of the smallest subnormal unless v = 0 (where ε = 0 makes torch's
  step infinite anyway): for β₁ = 0.9 that is ≤ 3e-15 γ in float32 and
  ≤ 1e-146 γ in float64. An SGD step moves by at most γτ. ḡ enters centered
  RMSprop only through ḡ², and a subnormal squared is exactly 0.
* Denominators (``denominator_state``: v, v_max, Adadelta's and RMSprop's
  averages) are flushed only where ε hides them: zeroing x < τ moves
  √(s·x) (s: a bias-correction factor, ≤ 1/(1 − β₂)) by at most √(s·τ), which
  is invisible next to ε when √(s·τ) ≤ ε · 2^−(p+2) (p: mantissa bits), and
  likewise s·τ ≤ ε · 2^−(p+2) where ε is added inside the root
  (``hidden_by_eps``; ε = 1e-8 hides them with a margin of ~90 in float32). With
  ε = 0 or a tiny ε they are never flushed: there a subnormal v still sets
  the step (torch keeps it too); v ~ 1e-3 g² is subnormal only for g ≲ 1e-17
  in float32, where torch's arithmetic loses precision as well. Adamax's
  u = max(β₂u, |g| + ε) ≥ ε is never flushed.

A value τ ≤ |x| < τ/β^k turns subnormal between two flushes (at most
``flush_every`` − 1 steps of a dying unit); all later steps see a zero.
``flush_below`` replaces τ by a fixed threshold (at your own risk: it is not
covered by the argument above); ``flush_every=0`` turns the flush off.

Threaded, blocked execution. A step is ~2–17 elementwise passes per
parameter, each a NumPy ufunc on one thread. ``step`` lays the parameters end
to end and cuts them into ``threads`` lanes of about equal size (large
parameters are cut at lane ends; small ones, biases, stay whole and go to the
calling thread); the calling thread runs the first lane and a persistent,
process-wide pool of worker threads the others (``ermlab.threads``, shared with
``Conv2d``'s lanes of samples; ufuncs release the GIL while they loop over more
than a few hundred elements). Blocks are also capped at
``block_bytes`` (1 MiB) per array, and a single-threaded step cuts parameters
over twice that size, so that all passes of a block run while it is in the L3
cache: a 10M-parameter Adam step goes from 34 to 22 ms. Smaller L2-sized
blocks were measured and lose: at the sizes of a typical MLP the arrays are
already in L3, and each extra block costs ~13 more ufunc calls (~1–2 µs each,
more when two threads contend for the GIL). A step whose blocks all take fused
kernels (one pass each: nothing to keep in cache between passes) caps them at
``fused_block_bytes`` (4 MiB) instead, so that a lane makes fewer calls, each of which
needs the GIL: the 784-512-256-10 MLP's second lane is one block instead of two (AMD EPYC
Zen 5 VM, two lanes, paired: momentum 0.82×, Adam 0.90×, SGD 0.97× the time with 1 MiB
blocks). Every element sees the same
operations in the same order as on the whole array, so results are bitwise the
same for any ``threads`` and ``block_bytes``. ``threads`` defaults to the
environment variable ``ERMLAB_NUM_THREADS``, else the number of CPUs this
process may use; ``threads=1`` (or ``opt.threads = 1``) runs everything in the
calling thread. How many lanes a step takes depends on its element-passes
(elements × ``passes(group)``: 10 unless a rule says less, 1 where a fused kernel
below runs). From ``lane_work`` (1.5M) up, lanes surely pay: one per ``lane_work``.
Below it, from two ``TUNED_LANE_WORK`` (65536) up, a ``threads.LaneTuner`` times the
step on one lane and on several and keeps the faster (after 8 steps that are not
timed, again 32 steps later, then every 256 steps; steps that flush are not timed):
whether the hand-off to a worker pays depends on the machine and on what runs around
the step. Measured over the 784-512-256-10 MLP's
0.5M parameters at 2 threads: on an AMD Zen 5 with 130 GB/s of cache bandwidth a
core, two lanes gained little or lost (steps in a row, two lanes' time over one's:
SGD 1.19, momentum 1.08, Adam 0.96, NAdam 0.88; plain SGD takes ~50 µs a step and the
hand-off 0.07–0.25 ms in whole steps, see ``ermlab.threads``); on an Intel Xeon
VM whose core moves ~25 GB/s, steps in a row took two lanes against one SGD 0.125
against 0.21 ms, momentum 0.25 against 0.33, Adam 0.29 against 0.42, yet in a
training epoch of that MLP, where OpenBLAS's threads spin on after every GEMM on the
core a worker would take, Adam's two lanes took 0.60–0.70 ms against one lane's
0.47–0.53, and the tuner kept one (epochs 1.845 against 1.844 s with one lane
fixed). The calling lane's first kernel posts the first worker's lane
(``threads.Handoff``: the kernels take the worker's counter as ``signal``), so that a
worker waiting awake takes the GIL once the caller has let go of it instead of sleeping
on it: on that Zen 5 VM the worker started 3 µs after the caller's lane, where it had
started 30–40 µs after, and two lanes' steps took SGD 0.86×, momentum 0.71×, Adam 0.68×
the time (paired). Parameters under ``min_parallel`` (65536) elements are never cut. On a
machine whose cores are busy with other work, extra threads only add contention:
set ``ERMLAB_NUM_THREADS=1`` there.

The last pass of most rules, θ ← θ + a·d, is ``axpy_``: BLAS ``?axpy`` from
SciPy on C-contiguous float32/float64 arrays (one pass instead of a multiply
and an add, no temporary, rounded once as torch's ``add_(d, alpha=a)``); the
BLAS libraries run on one thread while a step runs (restored after), since
the lanes above are the step's threads.

Fused kernels. Where Numba is installed (``pip install "ermlab[fast]"``), SGD
(both momentum forms), Adam/AdamW/AMSGrad, Adamax, NAdam, Adagrad, Adadelta,
RMSprop, HeavyBall and NAG-C/NAG-SC update a block in one pass through a
compiled kernel (``optim._kernels``) instead of their 2–12 ufunc passes: θ, g
and each state array are read once and written once, which is the step's
memory-bandwidth bound. Each element sees the NumPy path's operations in the
same order, rounded the same way (the ``?axpy`` ends as one fused multiply-add),
so the results are bitwise those of the NumPy path (``tests/optim/test_kernels.py``)
and torch-equality holds as before. The kernels release the GIL and run in the
lanes above, on this module's threads: Numba starts no thread pool of its own.
CuPy arrays, non-contiguous arrays, dtypes other than float32/float64 (``kernels``
says which arrays the kernels take), ``opt.fused = False`` or ``ERMLAB_FUSED=0``
take the NumPy path, which stays the reference. At a due step a fused block's state
arrays are flushed by a kernel too (``_kernels.flush``, one pass while the block is in
cache, bit for bit ``flush_tiny_``), not by the NumPy flush's three passes through a
scratch buffer and a mask: the Fashion-MNIST MLP's Adam steps that flush took
726–776 µs, now 349–371 (the others 270–360, AMD Zen 5, 2 threads, in the epoch).

A subclass writes the rule in two parts: ``scalars(param, group, state)``,
called once per parameter per step after ``state["step"]`` has been
incremented by the base (bias corrections, schedules, lazily created state
arrays), and ``update_block(block, group, scalars)``, the array rule on a
``Block`` (``block.data``, ``block.grad``, ``block.state[name]`` and
``block.scratch(k)`` are the block's parts of the parameter, its gradient, its
state arrays and its k-th scratch buffer). A rule with a fused kernel
(``fused_rule``) also writes ``fused_kernel(kernels, group, scalars, dtype)``,
the kernel and its scalar arguments cast to the dtype, and ``fused_arrays(arrays,
group)``, its array arguments from a block's flat views by name. The step asks the
first once per parameter (once per group where the parameters' scalars are equal)
and keeps each block's flat views as long as the layout, so the Python around a
block's kernel is one call: over the 784-512-256-10 MLP's six tensors (AMD Zen 5,
1 thread, paired runs of the old and new step) SGD went from 73 to 61 µs a step
(its kernels alone: 44), Adam from 133 to 118, NAdam from 162 to 128. Where nothing
those calls were made from has changed since the last step (the same arrays, state and
hyperparameters, no flush due, the same lanes), ``step`` makes the last step's calls again
without laying anything out (``optim.prepared``): on an AMD EPYC VM (1 thread, paired
runs) SGD's step took 0.76× the time, Adam's 0.72×, NAdam's 0.85×.
"""

from __future__ import annotations

import bisect
import contextlib
import math
import numbers
import sys
import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

import numpy

from ermlab.backend import array_module
from ermlab.nn._fused import turned_off
from ermlab.nn.parameter import Parameter
from ermlab.optim.base import Optimizer
from ermlab.optim.prepared import PreparedStep
from ermlab.threads import BlasOneThread as _BlasOneThread
from ermlab.threads import Handoff, LaneTuner, default_threads, run_lanes

FLUSH_BELOW: float | None = None  # None: the dtype's smallest normal number
BLOCK_BYTES = 1 << 20
FUSED_BLOCK_BYTES = 4 << 20
MIN_PARALLEL = 65536
LANE_WORK = 1_500_000
TUNED_LANE_WORK = 65536
ALIGN = 64
BLOCK_COST = 8192
LEAD = 16384
AXPY_RUN = 32  # OpenBLAS ?axpy's vector run (see ``axpy_``)

def _splittable(param: Parameter, state: dict[str, Any]) -> bool:
    """Whether the parameter, its gradient and state arrays are C-contiguous NumPy arrays
    of one shape."""
    return _contiguous_alike(
        [param.data, param.grad] + [v for v in state.values() if _shaped_like(v, param)])


def _contiguous_alike(arrays: Any) -> bool:
    """Whether ``arrays`` are C-contiguous NumPy arrays (not CuPy) of the first's shape."""
    shape = arrays[0].shape
    return all(isinstance(a, numpy.ndarray) and a.shape == shape and a.flags.c_contiguous
               for a in arrays)


def subnormal_threshold(dtype: Any, below: float | None = None) -> float:
    """``below`` if given, else the smallest normal number of ``dtype`` (``finfo.tiny``)."""
    return float(numpy.finfo(dtype).tiny) if below is None else float(below)


def flush_tiny_(x: Any, below: float | None = None) -> Any:
    """Set entries of ``x`` with |x| < ``below`` (default: its dtype's smallest normal
    number, i.e. the subnormals) to zero, in place; return ``x``."""
    xp = array_module(x)
    xp.copyto(x, 0, where=xp.abs(x) < subnormal_threshold(x.dtype, below))
    return x


def hidden_by_eps(eps: float, dtype: Any, scale: float = 1.0, root: bool = True,
                  below: float | None = None) -> bool:
    """Whether zeroing state x < τ (``below`` or the dtype's smallest normal) leaves
    ``√(scale·x) + ε`` (``root``) or ``scale·x + ε`` unchanged to within a quarter ulp of ε.

    Zeroing moves √(s·x) by at most √(s·τ) (√ is subadditive), s·x by at most s·τ;
    both must stay below ε · 2^−(p+2), p the mantissa bits of ``dtype``.
    """
    info = numpy.finfo(dtype)
    change = scale * subnormal_threshold(dtype, below)
    change = change**0.5 if root else change
    return change <= eps * 2.0 ** -(info.nmant + 2)


class Block:
    """One parameter's arrays, or one contiguous slice of them, handed to ``update_block``.

    ``data``, ``grad`` and the arrays in ``state`` (the parameter's state arrays
    by name) are views of the same elements; ``scratch(k)`` is the same part of
    the parameter's k-th scratch buffer; ``view(array)`` is the block's part of
    any array shaped like the parameter.
    """

    __slots__ = ("owner", "param", "index", "data", "grad", "state", "scratches", "flats")

    def __init__(self, owner: InPlaceOptimizer, param: Parameter, state: dict[str, Any],
                 index: slice | None = None) -> None:
        self.owner, self.param, self.index = owner, param, index
        self.scratches: list[Any] = []
        self.flats: Any = _UNKNOWN  # ``kernel_arrays``'s answer, once asked
        if index is None:
            self.data, self.grad, self.state = param.data, param.grad, state
        else:
            self.data, self.grad = self.view(param.data), self.view(param.grad)
            self.state = {k: self.view(v) for k, v in state.items() if _shaped_like(v, param)}

    def view(self, array: Any) -> Any:
        return array if self.index is None else array.reshape(-1)[self.index]

    def scratch(self, k: int = 0) -> Any:
        while len(self.scratches) <= k:
            self.scratches.append(self.view(self.owner.scratch(self.param, len(self.scratches))))
        return self.scratches[k]

    def kernel_arrays(self) -> dict[str, Any] | None:
        """Flat views of the block's arrays by name (``"data"``, ``"grad"`` and its state
        arrays' names) where the fused kernels can run on all of them (``_kernel_arrays``),
        else None. Made once: a block lives as long as the step's layout (``_layout``), whose
        key holds every one of these arrays."""
        if self.flats is _UNKNOWN:
            arrays = {"data": self.data, "grad": self.grad,
                      **{k: v for k, v in self.state.items() if _shaped_like(v, self.data)}}
            self.flats = ({k: flat(v) for k, v in arrays.items()}
                          if _kernel_arrays(tuple(arrays.values())) else None)
        return self.flats


_UNKNOWN = object()


def _identity(tasks: list[tuple]) -> tuple[int, ...]:
    """The ids of the tasks' parameters, their arrays, state dicts and state arrays: what the
    step's cached layout and kernel checks were made for. (One loop of appends: the two
    comprehensions it replaces took 5.9 µs a step over an MLP's 6 parameters with Adam,
    this 3.2.)"""
    ids: list[int] = []
    add = ids.append
    for p, _, s, _, _ in tasks:
        add(id(p))
        add(id(p.data))
        add(id(p.grad))
        add(id(s))
        for v in s.values():
            if type(v) is numpy.ndarray:
                add(id(v))
    return tuple(ids)


def _held(tasks: list[tuple]) -> list[tuple]:
    """The objects ``_identity`` names, for a cache to hold so that their ids are not reused."""
    return [(p, p.data, p.grad, s, *s.values()) for p, _, s, _, _ in tasks]


def _kernel_arrays(arrays: tuple) -> bool:
    """Whether the fused kernels can run on ``arrays``: C-contiguous float32/float64 NumPy
    arrays (not CuPy) of one shape and dtype."""
    dtype = arrays[0].dtype
    return (dtype in _BLAS_AXPY and _contiguous_alike(arrays)
            and all(type(a) is numpy.ndarray and a.dtype == dtype for a in arrays))


def _shaped_like(value: Any, param: Any) -> bool:
    return isinstance(value, numpy.ndarray) and value.shape == param.shape


class InPlaceOptimizer(Optimizer):
    """Optimizer base with preallocated scratch buffers, a periodic subnormal flush and
    blocked, threaded steps (see the module docstring).

    Subclasses list the names of their geometrically decaying state arrays in
    ``decaying_state`` (numerators and momenta, always flushed) and
    ``denominator_state`` (flushed only where ``flush_keys`` finds ε hides them),
    keep ``"step"`` in their ``init_state`` (the base counts it) and write
    ``scalars`` and ``update_block``.

    Args (keyword-only in every subclass):
        flush_every: flush subnormal state values every this many steps of a
            parameter; 0 disables the flush. Default 16.
        flush_below: a fixed threshold instead of the dtype's smallest normal
            number (default None: flush subnormals only).
        threads: threads a step is shared out among (1: the calling thread only);
            default ``ERMLAB_NUM_THREADS`` or the CPU count; ``opt.threads`` may be
            changed later. Results do not depend on it.
    """

    decaying_state: tuple[str, ...] = ()
    denominator_state: tuple[str, ...] = ()
    fused: bool = True
    # whether a step that nothing changed since the last one replays its kernel calls
    # (``optim.prepared``); False: every step takes the full path (same results)
    replay: bool = True
    block_bytes: int = BLOCK_BYTES
    fused_block_bytes: int = FUSED_BLOCK_BYTES
    min_parallel: int = MIN_PARALLEL
    # True for rules with a fused kernel in optim._kernels (one pass per element).
    fused_rule: bool = False
    lane_work: int = LANE_WORK
    traits = None  # a base class, not an optimizer of its own (see optim.traits)

    def __init__(
        self,
        params: Iterable[Any],
        defaults: dict[str, Any],
        flush_every: int = 16,
        flush_below: float | None = FLUSH_BELOW,
        threads: int | None = None,
    ) -> None:
        if int(flush_every) != flush_every or flush_every < 0:
            raise ValueError(
                f"flush_every must be an integer ≥ 0 (0 turns the subnormal flush off); "
                f"got {flush_every}"
            )
        if flush_below is not None and not flush_below >= 0:
            raise ValueError(f"flush_below must be ≥ 0 (None: the subnormals); got {flush_below}")
        threads = default_threads() if threads is None else threads
        if int(threads) != threads or threads < 1:
            raise ValueError(
                f"threads must be an integer ≥ 1 (1: no worker threads); got {threads}"
            )
        self.flush_every = int(flush_every)
        self.flush_below = None if flush_below is None else float(flush_below)
        self.threads = int(threads)
        self._scratch: dict[Parameter, list[Any]] = {}
        self._masks: dict[Parameter, Any] = {}
        self._cached_layout: tuple | None = None  # the last step's (``_layout``)
        self._layouts: dict[int, tuple] = {}  # by lane count: (key, layout, what it holds)
        self._lane_tuner = LaneTuner()
        self._cached_fits: tuple | None = None
        self._step_calls: dict[tuple, tuple] = {}  # ``_fused_call``'s answers in this step
        self._prepared: PreparedStep | None = None  # the last step, to replay
        super().__init__(params, defaults)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """``Optimizer.load_state_dict``, forgetting what was kept for the old state (the
        replayed step, the layouts and their blocks), so that its arrays are freed now, not
        at the next step."""
        self._prepared, self._cached_layout, self._cached_fits = None, None, None
        self._layouts = {}
        super().load_state_dict(state_dict)

    def scratch(self, param: Parameter, k: int = 0) -> Any:
        """The k-th reusable buffer shaped like ``param`` (contents undefined)."""
        buffers = self._scratch.setdefault(param, [])
        while len(buffers) <= k:
            buffers.append(array_module(param.data).empty_like(param.data))
        return buffers[k]

    def mask(self, param: Parameter) -> Any:
        """A reusable boolean buffer shaped like ``param`` (contents undefined)."""
        mask = self._masks.get(param)
        if mask is None:
            mask = self._masks[param] = array_module(param.data).empty(param.shape, dtype=bool)
        return mask

    def kernels(self, *arrays: Any) -> Any:
        """``optim._kernels`` (the fused Numba kernels) where they can update ``arrays``:
        ``self.fused`` is set, Numba is importable, ``ERMLAB_FUSED`` is not ``0`` and
        the arrays are C-contiguous float32/float64 NumPy arrays of one shape and dtype
        (not CuPy); None otherwise (the NumPy path runs)."""
        if not self.fused or not _kernel_arrays(arrays):
            return None
        return _fused_kernels()

    def fused_kernel(self, kernels: Any, group: dict[str, Any], scalars: Any,
                     dtype: Any) -> tuple[Callable[..., None], tuple]:
        """The rule's kernel in ``kernels`` (``optim._kernels``) and its arguments after the
        arrays for this step, rounded to ``dtype`` as the NumPy path rounds them; asked once
        per parameter per step (``scalars`` as ``update_block`` gets them), where
        ``fused_rule`` is set and ``_fused_group`` says yes. A function of its arguments
        alone: a replayed step (``optim.prepared``) keeps the last step's answer where the
        group's values and the scalars are equal."""
        raise NotImplementedError(f"{type(self).__name__} has no fused kernel")

    def fused_arrays(self, arrays: dict[str, Any], group: dict[str, Any]) -> tuple:
        """The kernel's array arguments, in its order, from ``arrays`` (a block's flat
        views by name, ``Block.kernel_arrays``); None for an optional array the group does
        not use. A function of its arguments alone (kept by a replayed step, and asked
        again where the group's values change)."""
        raise NotImplementedError(f"{type(self).__name__} has no fused kernel")

    def scalars(self, param: Parameter, group: dict[str, Any], state: dict[str, Any]) -> Any:
        """This step's per-parameter scalars (``state["step"]`` already counts this step);
        asked at every step, replayed or not."""
        return None

    def update_block(self, block: Block, group: dict[str, Any], scalars: Any) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not implement update_block")

    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One update of every parameter, block by block; returns ``closure()`` if given."""
        loss = closure() if closure is not None else None
        prepared = self._prepared
        if prepared is not None and self.replay and prepared.run(self, _fused_kernels()):
            return loss  # the last step's calls again (``optim.prepared``)
        tasks = []
        for group in self.param_groups:
            for param in group["params"]:
                state = self.state.get(param)
                if state is None:
                    state = self.state[param] = self.init_state(param, group)
                tasks.append(self._task(param, group, state))
        self._run(tasks, self.threads, prepare=True)
        return loss

    def update(self, param: Parameter, group: dict[str, Any], state: dict[str, Any]) -> None:
        """One parameter's whole update, in the calling thread."""
        self._run([self._task(param, group, state)], 1)

    def _task(self, param: Parameter, group: dict[str, Any], state: dict[str, Any]) -> tuple:
        state["step"] += 1
        scalars = self.scalars(param, group, state)
        return param, group, state, scalars, self.flush_now(group, state, param.data.dtype)

    def flush_now(self, group: dict[str, Any], state: dict[str, Any], dtype: Any,
                  step: int | None = None) -> tuple[str, ...]:
        """The state arrays that step ``step`` (default ``state["step"]``, this step,
        counted) flushes: every ``flush_every`` steps those of ``flush_keys`` that the state
        holds, else none. A rule without such arrays (plain SGD) has nothing to flush at
        any step, and its replayed step (``optim.prepared``) goes on through the steps
        due."""
        step = state["step"] if step is None else step
        if not (self.flush_every and step % self.flush_every == 0):
            return ()
        return tuple(key for key in self.flush_keys(group, dtype) if state.get(key) is not None)

    def flush_keys(self, group: dict[str, Any], dtype: Any) -> tuple[str, ...]:
        """The state arrays of this group's parameters that the flush may zero: the
        ``decaying_state`` and, where ``denominators_hidden`` says ε hides them, the
        ``denominator_state`` (see the module docstring)."""
        if self.denominator_state and self.denominators_hidden(group, dtype):
            return self.decaying_state + self.denominator_state
        return self.decaying_state

    def denominators_hidden(self, group: dict[str, Any], dtype: Any) -> bool:
        """Whether zeroing subnormal ``denominator_state`` leaves every update unchanged
        (subclasses with denominators decide, usually with ``hidden_by_eps``)."""
        return False

    def passes(self, group: dict[str, Any]) -> int:
        """About how many elementwise passes one update of this group's parameters makes."""
        return 10

    def _fused_group(self, group: dict[str, Any]) -> bool:
        """Whether this group's parameters take a fused kernel (one pass) where the kernels
        can run on their arrays (``fused_rule``; a rule whose group takes its NumPy path
        says no)."""
        return self.fused_rule

    def _run(self, tasks: list[tuple], threads: int, prepare: bool = False) -> None:
        """Run the step's blocks (laid out by ``_layout``), one lane per thread, with at
        least ``lane_work`` element-passes per lane; ``prepare`` (a whole step's tasks):
        keep its calls for the next step to replay (``optim.prepared``) where every block
        took its kernel and nothing was flushed."""
        arrays = _identity(tasks)
        kernels = _fused_kernels() if self.fused and self.fused_rule else None
        fits = self._fits(tasks, arrays)
        self._step_calls = {}
        calls = [self._fused_call(kernels, task) if kernels is not None and fit else None
                 for task, fit in zip(tasks, fits, strict=True)]
        tuned = None  # the lane tuner's (key, lanes) where it chose
        if threads > 1:
            work = sum(task[0].data.size * (1 if call else self.passes(task[1]))
                       for task, call in zip(tasks, calls, strict=True))
            if work >= self.lane_work:  # lanes surely pay
                threads = min(threads, work // max(1, self.lane_work))
            else:  # they may: timed (``threads.LaneTuner``)
                tuned = ((arrays, threads), min(threads, work // TUNED_LANE_WORK))
                threads = self._lane_tuner.choose(*tuned)
        layout = self._layout(tasks, threads, arrays, all(calls))
        # The calling thread runs its largest block first: its kernel lets go of the GIL at
        # once, so the workers start theirs. Run from the smallest up, the workers waited
        # for the GIL behind the caller's Python for 60–160 µs, at times ms (Adam over the
        # 784-512-256-10 MLP's 0.5M parameters in two lanes, 2-vCPU VM: 1.96 ms a step,
        # 0.53 ms largest first; one lane 0.57–0.63). Then the rest from the smallest up:
        # the small blocks' Python, which holds the GIL, runs while the workers are in
        # their kernels, and the caller ends on a long kernel that holds none, so that a
        # worker ending its lane takes the GIL for its own Python at once instead of
        # sleeping on it. Measured (Zen 5 VM, plain SGD over that MLP in two lanes, 2000
        # replayed steps): the worker's lane took 45–57 µs in most runs with the small
        # blocks last, 26 µs this way; ``benchmarks/optim_step.py --only SGD Adam``,
        # alternating, plain SGD at 2 threads 1.38, 0.69, 1.33 → 1.02, 0.99, 0.93× torch.
        ordered = [layout[0][-1:] + layout[0][:-1]] + [lane for lane in layout[1:] if lane]
        runs = [[(block, tasks[i][1], tasks[i][3], tasks[i][4], calls[i]) for i, block in lane]
                for lane in ordered]
        kernels_only = all(calls)
        start = time.perf_counter()
        if len(runs) == 1 and kernels_only:  # one lane of kernels: no pool, no BLAS to hold
            self._run_lane(runs[0])
        else:
            # BLAS on one thread where the NumPy path runs (its ?axpy; one lane too: see the
            # module docstring); the fused kernels run no BLAS.
            with contextlib.nullcontext() if kernels_only else _BlasOneThread():
                run_lanes([partial(self._run_lane, run) for run in runs], blas=False,
                          handoff=True)
        flushed = any(task[4] for task in tasks)
        if tuned is not None and not flushed:  # a flushing step is not timed
            self._lane_tuner.record(time.perf_counter() - start)
        if prepare:
            self._prepared = None
            if self.replay and kernels_only and not flushed:
                self._prepare(tasks, calls, ordered, tuned)

    def _prepare(self, tasks: list[tuple], calls: list[tuple],
                 runs: list[list[tuple[int, Block]]], tuned: tuple | None) -> None:
        """Keep a step that ran every block's kernel (``runs``: each lane's blocks in the
        order they ran, each with its task's index) for the next step to replay
        (``optim.prepared``)."""
        lanes, flats = [], []
        for run in runs:
            lanes.append([])
            flats.append([])
            for i, block in run:
                arrays = block.kernel_arrays()
                if arrays is None:  # a block on the NumPy path
                    return
                lanes[-1].append((i, self.fused_arrays(arrays, tasks[i][1])))
                flats[-1].append(arrays)
        prepared = PreparedStep(self, tasks, calls, lanes, flats, tuned)
        if prepared.usable():
            self._prepared = prepared

    def _fused_call(self, kernels: Any, task: tuple) -> tuple | None:
        """``fused_kernel``'s answer for a task, or None where its group takes the NumPy path
        (``_fused_group``); parameters of one group with equal ``scalars`` (all of a
        group's, as a rule: their steps are counted together) share one answer in a step.
        (Equal as Python values: 0.0 and −0.0 would share one, but a rule's scalars take
        their signs from the group's hyperparameters, the same for all its parameters.)"""
        param, group, _, scalars, _ = task
        dtype = param.data.dtype
        key = (id(group), dtype, scalars)
        memo = self._step_calls
        try:  # the memo first: ``_fused_group`` is asked once per group and scalars
            call = memo.get(key, _UNKNOWN)
        except TypeError:  # unhashable scalars: asked for this parameter alone
            return (self.fused_kernel(kernels, group, scalars, dtype)
                    if self._fused_group(group) else None)
        if call is _UNKNOWN:
            call = memo[key] = (self.fused_kernel(kernels, group, scalars, dtype)
                                if self._fused_group(group) else None)
        return call

    def _fits(self, tasks: list[tuple], arrays: tuple[int, ...]) -> list[bool]:
        """For each task, whether the fused kernels can run on its parameter's arrays
        (``_kernel_arrays``), asked again only when ``arrays`` (``_identity``) changes: the
        six checks of a 784-512-256-10 MLP took 6.7 µs of a 72 µs SGD step, most of it
        reading ``ERMLAB_FUSED`` once per parameter (now once per step, in ``_run``)."""
        cached = self._cached_fits
        if cached is None or cached[0] != arrays:
            fits = [_kernel_arrays((task[0].data,)) for task in tasks]
            cached = self._cached_fits = (arrays, fits, _held(tasks))
        return cached[1]

    def _layout(self, tasks: list[tuple], threads: int, arrays: tuple[int, ...] | None = None,
                fused: bool = False) -> list[list[tuple[int, Block]]]:
        """Blocks of the tasks' parameters in ``threads`` lanes, reused while the parameters'
        arrays and state arrays stay the same objects (``arrays``, their ``_identity``; the
        cache holds them, so their ids are not reused while it is kept, and each block's
        ``Block.kernel_arrays`` stay its arrays' views). Whether the kernels run
        (``fused``, ``ERMLAB_FUSED``) is asked at each step, not kept here.

        The parameters, laid end to end from the smallest (so that the calling thread
        does the small ones, whose ufuncs hold the GIL), are cut into lanes of about
        equal cost (each block costs ``BLOCK_COST`` elements more than its size, the
        calling thread's lane ``LEAD`` more); large parameters are cut at lane ends
        and every ``block_bytes`` per array; small ones, and those that are not
        C-contiguous NumPy arrays, stay whole.
        """
        block_bytes = self.fused_block_bytes if fused else self.block_bytes
        key = (threads, block_bytes, self.min_parallel,
               _identity(tasks) if arrays is None else arrays)
        cached = self._layouts.get(threads)
        if cached is not None and cached[0] == key:
            self._cached_layout = cached
            return cached[1]
        # layouts of other arrays (a loaded state) go: they would keep those arrays alive
        self._layouts = {t: c for t, c in self._layouts.items() if c[0][3] == key[3]}
        sizes = [task[0].data.size for task in tasks]
        total = sum(sizes) + BLOCK_COST * len(tasks)
        share = max(0, total - LEAD) // threads
        bounds = [LEAD + share * (k + 1) for k in range(threads - 1)] + [sys.maxsize]
        layout: list[list[tuple[int, Block]]] = [[] for _ in range(threads)]
        offset = 0
        for i in sorted(range(len(tasks)), key=sizes.__getitem__):
            param, _, state, _, _ = tasks[i]
            size = sizes[i]
            limit = max(ALIGN, block_bytes // param.data.itemsize)
            if ((threads == 1 and size < 2 * limit) or size < self.min_parallel
                    or not _splittable(param, state)):
                layout[bisect.bisect_right(bounds, offset)].append((i, Block(self, param, state)))
                offset += size + BLOCK_COST
                continue
            offset += BLOCK_COST
            start = 0
            while start < size:
                lane = bisect.bisect_right(bounds, offset + start)
                lane_end = -(-(bounds[lane] - offset) // ALIGN) * ALIGN
                stop = min(size, start + limit, max(start + ALIGN, lane_end))
                if size - stop < ALIGN:
                    stop = size
                layout[lane].append((i, Block(self, param, state, slice(start, stop))))
                start = stop
            offset += size
        self._cached_layout = self._layouts[threads] = (key, layout, _held(tasks))
        return layout

    def _run_lane(self, tasks: list[tuple], handoff: Handoff | None = None) -> None:
        """Each block's update: the fused kernel where its parameter has a ``fused_kernel``
        call this step and the kernels can run on the block's arrays, else ``update_block``
        (the NumPy path). ``handoff`` (the calling thread's lane, ``threads.Handoff``):
        the first block's kernel posts the first worker's lane once it has let go of the
        GIL; posted here first where that block takes the NumPy path."""
        post = () if handoff is None else (handoff.signal, handoff.value)  # first kernel
        for block, group, scalars, flush, call in tasks:
            arrays = None if call is None else block.kernel_arrays()
            if arrays is None:
                if post:
                    handoff.post()
                self.update_block(block, group, scalars)
            else:
                call[0](*self.fused_arrays(arrays, group), *call[1], *post)
            post = ()
            for key in flush:
                value = block.state.get(key)
                if arrays is not None and key in arrays:  # the kernels' flush, in one pass
                    flat = arrays[key]
                    _fused_kernels().flush(flat, flat.dtype.type(
                        subnormal_threshold(flat.dtype, self.flush_below)))
                elif value is not None and hasattr(value, "shape"):
                    self._flush_block(block, value)

    def _flush_block(self, block: Block, value: Any) -> None:
        """Zero |x| < τ in a state array of the block, in place, through the block's
        first scratch buffer (free once the update is done) and the parameter's mask."""
        if value.shape != block.data.shape:
            flush_tiny_(value, self.flush_below)
            return
        xp = array_module(value)
        size = xp.abs(value, out=block.scratch(1))
        tiny = xp.less(size, subnormal_threshold(value.dtype, self.flush_below),
                       out=block.view(self.mask(block.param)))
        xp.copyto(value, 0, where=tiny)

    def flush_state(self, force: bool = False) -> None:
        """Flush tiny values from the decaying state of parameters due for it (all if ``force``).

        ``step`` does this itself, block by block, for the parameters it updates."""
        for group in self.param_groups:
            for param in group["params"]:
                state = self.state.get(param, {})
                if not (force or (self.flush_every
                                  and state.get("step", 0) % self.flush_every == 0)):
                    continue
                for key in self.flush_keys(group, param.data.dtype):
                    value = state.get(key)
                    if value is not None and hasattr(value, "shape"):
                        flush_tiny_(value, self.flush_below)

    # -- hyperparameter checks shared by the subclasses --------------------------

    def require_nonnegative(self, group: dict[str, Any], *keys: str) -> None:
        """Each ``group[key]`` finite and ≥ 0."""
        for key in keys:
            if not 0 <= group[key] < math.inf:
                raise ValueError(
                    f"{type(self).__name__} {key} must be finite and ≥ 0; got {group[key]}")

    def require_unit_interval(self, group: dict[str, Any], *keys: str) -> None:
        """Each ``group[key]`` in [0, 1) (a decay rate or momentum)."""
        for key in keys:
            if not 0 <= group[key] < 1:
                raise ValueError(
                    f"{type(self).__name__} {key} must be in [0, 1); got {group[key]}"
                )

    def require_betas(self, group: dict[str, Any]) -> None:
        betas = group["betas"]
        if (not isinstance(betas, (tuple, list)) or len(betas) != 2
                or not all(isinstance(b, numbers.Real) and 0 <= b < 1 for b in betas)):
            raise ValueError(
                f"{type(self).__name__} betas must be two numbers in [0, 1), e.g. (0.9, 0.999); "
                f"got {betas}"
            )


_BLAS_AXPY = {numpy.dtype(numpy.float32): "saxpy", numpy.dtype(numpy.float64): "daxpy"}
_axpy_kernels: dict[Any, Any] | None = None
_loaded_kernels: Any = None


def _fused_kernels() -> Any:
    """The ``optim._kernels`` module, imported on first use; None without Numba or with
    ``ERMLAB_FUSED=0`` (read at each call, as ``nn._fused`` reads it: the first call's
    answer used to stay for the process, so a test that set it for itself turned the
    kernels off for every later test)."""
    global _loaded_kernels
    if turned_off():
        return None
    if _loaded_kernels is None:
        try:
            from ermlab.optim import _kernels as kernels
        except ImportError:
            _loaded_kernels = False
        else:
            _loaded_kernels = kernels
    return _loaded_kernels or None


def _axpy_kernel(dtype: Any) -> Any:
    """SciPy's BLAS ``?axpy`` for a float32/float64 dtype (None for other dtypes or
    without SciPy)."""
    global _axpy_kernels
    if _axpy_kernels is None:
        try:
            from scipy.linalg import blas
        except ImportError:  # pragma: no cover - SciPy comes with scikit-learn
            _axpy_kernels = {}
        else:
            _axpy_kernels = {dt: getattr(blas, name) for dt, name in _BLAS_AXPY.items()}
    return _axpy_kernels.get(dtype)


def axpy_(y: Any, a: float, x: Any, tmp: Any) -> Any:
    """``y ← y + a·x`` in place, torch's ``y.add_(x, alpha=a)``.

    On C-contiguous float32/float64 NumPy arrays this is BLAS ``?axpy`` (one pass,
    no temporary, each element a fused multiply-add rounded once, as torch's CPU
    kernel rounds it); elsewhere two ufunc passes through ``tmp`` (a buffer shaped
    like ``y``).

    OpenBLAS's vector kernels take runs of ``AXPY_RUN`` (32) elements; the last
    n mod 32 go through a scalar loop which some of its kernels round twice (y + (a·x):
    its Haswell kernel, measured on an AMD Zen 5, in float32 and float64). So the BLAS
    call takes the whole runs, and the last elements are updated as the tail of a run
    of 32 copied out (the last 32 values, or the few there are, zero-padded), every
    element going through the vector kernel: rounded once on any blocking.
    """
    kernel = None
    if (type(y) is numpy.ndarray and type(x) is numpy.ndarray and y.dtype == x.dtype
            and y.shape == x.shape and y.flags.c_contiguous and x.flags.c_contiguous):
        kernel = _axpy_kernel(y.dtype)
    if kernel is None or y.size == 0:
        xp = array_module(y)
        y += xp.multiply(x, a, out=tmp)
        return y
    ys, xs = y.reshape(-1), x.reshape(-1)
    whole = ys.size - ys.size % AXPY_RUN
    if whole:
        _blas_axpy(kernel, xs[:whole], ys[:whole], a)
    if whole < ys.size:
        rest = ys.size - whole
        window = min(AXPY_RUN, ys.size)
        run = numpy.zeros((2, AXPY_RUN), dtype=ys.dtype)
        run[0, :window], run[1, :window] = ys[-window:], xs[-window:]
        _blas_axpy(kernel, run[1], run[0], a)
        ys[whole:] = run[0, window - rest:window]
    return y


def _blas_axpy(kernel: Any, x: Any, y: Any, a: float) -> None:
    out = kernel(x, y, a=a)
    if out is not y:  # pragma: no cover - f2py copied: the update must land in y
        y[...] = out


def flat(array: Any) -> Any:
    """A C-contiguous array as a 1-D view (what the fused kernels take)."""
    return array.reshape(-1)


def lerp_scalars(weight: float, dtype: Any) -> tuple[Any, Any, bool]:
    """``lerp_``'s scalars, as torch's kernel makes them: w rounded to ``dtype``, w − 1
    computed in ``dtype`` from that w (exact for ½ ≤ w ≤ 2), and whether |w| < ½ (the form
    of ``lerp_``), asked of the rounded w."""
    cast = numpy.dtype(dtype).type
    w = cast(weight)
    return w, w - cast(1), bool(abs(w) < 0.5)


def lerp_(start: Any, end: Any, weight: float, tmp: Any) -> Any:
    """``start ← start + weight (end − start)`` in place, rounded as torch's ``lerp_``.

    torch's vector kernel (ATen's ``lerp_vec``) evaluates ``start + w (end − start)`` for
    |w| < ½ and ``end + (w − 1)(end − start)`` otherwise, each as one fused multiply-add;
    here each is ``axpy_`` (BLAS ``?axpy``, one rounding, on C-contiguous NumPy arrays), the
    second after copying ``end`` into ``start``. ``tmp`` is a buffer shaped like ``start``.
    """
    xp = array_module(start)
    w, w_minus_one, small = lerp_scalars(weight, start.dtype)
    xp.subtract(end, start, out=tmp)
    if small:
        axpy_(start, w, tmp, tmp)
    else:
        start[...] = end
        axpy_(start, w_minus_one, tmp, tmp)
    return start


def add_scaled_square_(acc: Any, g: Any, value: float, tmp: Any) -> Any:
    """``acc ← acc + value·g·g`` in place (torch's ``addcmul_(g, g, value=value)``).

    In torch's order, (value·g)·g: g·g first would underflow for |g| ≲ 1e-19 in float32
    (tiny gradients then leave torch's trajectory), so BLAS ``?axpy`` does not fit here."""
    xp = array_module(acc)
    xp.multiply(g, value, out=tmp)
    tmp *= g
    acc += tmp
    return acc
