"""The small interface every distributed strategy is written against, and the server logic.

A *parameter server* holds the shared parameters θ (or, in EASGD, the centre
variable x̃). Workers talk to it through four calls, all taking and returning
NumPy arrays (dicts ``{name: array}``), so the same class serves in this
process (``ermlab.distributed.inprocess``) and behind a remote actor:

    pull()                          → Pulled(version, arrays, read_state)
    push(grads, version, read_state) θ ← optimizer step with g; returns the staleness
    push_delta(deltas)              θ ← θ + δ
    elastic(arrays, alpha)          δ = α (x − x̃);  x̃ ← x̃ + δ;  returns δ

``version`` counts the updates applied so far. A pull is stamped with it and
the push of a gradient computed from that pull carries it back, so the server
measures the gradient's *staleness* τ = (updates applied now) − (version it
was computed on) and records it (``staleness_counts``). An optimizer that
corrects for stale gradients (``DelayTolerantAdagrad``) exposes
``read_state()``: what it must remember of the moment of a read (its running
sum of gradients ḡ); the server hands it out with the pull and the worker
returns it with the push — McMahan & Streeter (2014) suggest exactly this, so
that the server keeps no per-worker memory.

A *strategy* (``Strategy``) takes the place of the Trainer's single-process
update: ``Trainer(..., strategy=Downpour(...))`` calls
``strategy.train_step(trainer, x, y, w)`` for every mini-batch instead of its
own five-line step; batches, callbacks, history, validation and checkpoints
stay the Trainer's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy

from ermlab.nn.parameter import Parameter

Arrays = dict[str, numpy.ndarray]


@dataclass
class Pulled:
    """What a pull returns: the version read, the arrays, and the optimizer's read state."""

    version: Any
    arrays: Arrays
    read_state: Any = None


class Server(Protocol):
    """The pull / push / elastic interface (see the module docstring)."""

    def pull(self) -> Pulled: ...

    def push(self, grads: Arrays, version: Any, read_state: Any = None) -> Any: ...

    def push_delta(self, deltas: Arrays) -> None: ...

    def elastic(self, arrays: Arrays, alpha: float) -> Arrays: ...


class ParameterServer:
    """Parameters and the optimizer that updates them; all methods take and return arrays.

    Args:
        params: ``{name: Parameter}`` the server owns (in this process: the
            Trainer's model parameters, so the Trainer evaluates and
            checkpoints the server's θ).
        optimizer: an ``ermlab.optim.Optimizer`` over exactly those parameters.
        constraint: optional ``constraint()`` run after every update
            (a regularizer's projection such as max-norm).

    Attributes:
        version: updates applied (pushes, deltas and elastic moves).
        staleness_counts: ``{τ: number of gradients applied with staleness τ}``.
    """

    def __init__(self, params: dict[str, Parameter], optimizer: Any = None,
                 constraint: Any = None) -> None:
        self.params = params
        self.optimizer = optimizer
        self.constraint = constraint
        self.version = 0
        self.staleness_counts: dict[int, int] = {}

    def arrays(self) -> Arrays:
        """Read-only views of the current values (plain views on CuPy, whose arrays have
        no read-only flag)."""
        views = {}
        for name, param in self.params.items():
            view = param.data.view()
            if isinstance(view, numpy.ndarray):
                view.flags.writeable = False
            views[name] = view
        return views

    def read(self) -> Pulled:
        """The values a pull sees now (``inprocess.InProcessServer`` may return older ones)."""
        read_state = getattr(self.optimizer, "read_state", None)
        return Pulled(self.version, self.arrays(), None if read_state is None else read_state())

    def pull(self) -> Pulled:
        return self.read()

    def push(self, grads: Arrays, version: int, read_state: Any = None) -> int:
        """θ ← one optimizer step with gradient ``grads`` computed on ``version``; returns τ."""
        staleness = self.version - int(version)
        for name, param in self.params.items():
            numpy.copyto(param.grad, grads[name])
        if read_state is not None:
            self.optimizer.step(read_state=read_state)
        else:
            self.optimizer.step()
        self._updated()
        self.staleness_counts[staleness] = self.staleness_counts.get(staleness, 0) + 1
        return staleness

    def push_delta(self, deltas: Arrays) -> None:
        """θ ← θ + δ."""
        for name, param in self.params.items():
            param.data += deltas[name]
        self._updated()

    def elastic(self, arrays: Arrays, alpha: float) -> Arrays:
        """The elastic move of EASGD: δ = α (x − x̃) with x̃ as a pull sees it; x̃ ← x̃ + δ.

        Returns δ; the worker then moves x ← x − δ.
        """
        centre = self.read().arrays
        deltas = {name: numpy.multiply(arrays[name] - centre[name], alpha) for name in self.params}
        self.push_delta(deltas)
        return deltas

    def _updated(self) -> None:
        if self.constraint is not None:
            self.constraint()
        self.version += 1

    def state_dict(self) -> dict[str, Any]:
        """Counters (the parameters and the optimizer state are saved by their owners)."""
        return {"version": self.version, "staleness_counts": dict(self.staleness_counts)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.version = int(state["version"])
        self.staleness_counts = {int(k): int(v) for k, v in state["staleness_counts"].items()}


@dataclass
class ShardedServer:
    """Parameters split over several servers (Dean et al. 2012: each shard its own machine).

    ``pull`` merges the shards' arrays (the version is the tuple of the shards'
    versions); ``push`` sends every shard its part. Each shard runs its own
    optimizer over its parameters, which for a per-parameter rule (every
    first-order ermlab optimizer) is the same update as one optimizer over all.
    ``staleness_counts`` adds the shards' counts: a push counts once per shard.
    """

    shards: list[Any]
    owner: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.owner = {name: i for i, shard in enumerate(self.shards) for name in shard.params}

    @property
    def staleness_counts(self) -> dict[int, int]:
        counts: dict[int, int] = {}
        for shard in self.shards:
            for tau, n in shard.staleness_counts.items():
                counts[tau] = counts.get(tau, 0) + n
        return counts

    def _split(self, arrays: Arrays) -> list[Arrays]:
        parts: list[Arrays] = [{} for _ in self.shards]
        for name, array in arrays.items():
            parts[self.owner[name]][name] = array
        return parts

    def pull(self) -> Pulled:
        reads = [shard.pull() for shard in self.shards]
        arrays = {name: a for read in reads for name, a in read.arrays.items()}
        return Pulled(tuple(r.version for r in reads), arrays, [r.read_state for r in reads])

    def push(self, grads: Arrays, version: Any, read_state: Any = None) -> list[int]:
        states = read_state if read_state is not None else [None] * len(self.shards)
        return [shard.push(part, v, s) for shard, part, v, s
                in zip(self.shards, self._split(grads), version, states)]

    def push_delta(self, deltas: Arrays) -> None:
        for shard, part in zip(self.shards, self._split(deltas)):
            shard.push_delta(part)

    def elastic(self, arrays: Arrays, alpha: float) -> Arrays:
        moved: Arrays = {}
        for shard, part in zip(self.shards, self._split(arrays)):
            moved.update(shard.elastic(part, alpha))
        return moved


class Strategy:
    """Base class of the strategies that replace the Trainer's single-process update.

    A subclass validates its options in ``__init__`` (``ValueError`` before
    anything starts), checks the Trainer's pieces in ``bind`` (called by
    ``Trainer.__init__``) and writes ``train_step``, which must do what
    ``Trainer.train_step`` does for one mini-batch: return the batch's loss,
    set ``trainer.last_scores`` and count ``trainer.step``.

    A strategy whose workers run a whole epoch on their own (Hogwild!: worker
    processes over shared memory) sets ``runs_epochs = True`` and writes
    ``run_epoch`` instead; the Trainer then calls it once per epoch in place of
    its batch loop, and validation, callbacks and checkpoints see the model
    after the epoch.
    """

    runs_epochs = False

    def bind(self, trainer: Any) -> None:
        """Check that the Trainer's model, loss and optimizer fit this strategy."""

    def train_step(self, trainer: Any, x: Any, y: Any, sample_weight: Any = None) -> float:
        raise NotImplementedError(f"{type(self).__name__} does not implement train_step")

    def run_epoch(self, trainer: Any, x: Any, y: Any, batch_size: int | None,
                  sample_weight: Any, epoch: int) -> tuple[float, float, float]:
        """One whole epoch (``runs_epochs`` strategies): returns (Σ loss·size, Σ size,
        Σ hits) over the epoch's batches, as the Trainer's batch loop sums them."""
        raise NotImplementedError(f"{type(self).__name__} does not implement run_epoch")

    def steps_per_epoch(self, n: int, batch_size: int | None) -> int:
        """Updates an epoch of ``n`` examples makes, which callbacks are told in
        ``on_train_begin`` (a progress bar's total): ⌈n / b⌉, as the Trainer's batch loop."""
        return math.ceil(n / (n if batch_size is None else min(batch_size, n)))

    def end_fit(self, trainer: Any) -> None:
        """Called when ``fit`` ends, however it ends (after ``on_train_end``, or on an
        error or Ctrl-C): stop whatever the strategy started (processes, actors)."""

    def epoch_logs(self, trainer: Any) -> dict[str, Any]:
        """Extra entries for the epoch's logs (history), e.g. staleness statistics."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs besides the Trainer's model and optimizer (here:
        the algorithm, so that another strategy refuses the state)."""
        return {"algorithm": algorithm_name(self)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()``'s result (may be called before the first step)."""
        check_algorithm(state, self)


class WorkerPoolStrategy(Strategy):
    """A strategy whose pool of worker replicas (``self._workers``, ``self.workers``
    of them) is built at the first step. A state loaded before then is kept
    (``self._pending``) and applied by ``_load_pending`` once the pool exists;
    a subclass writes ``_load(state)``."""

    workers: int
    _workers: list | None = None
    _pending: dict[str, Any] | None = None

    def load_state_dict(self, state: dict[str, Any]) -> None:
        check_algorithm(state, self)
        if "workers" not in state:  # saved before the pool started: nothing to restore
            state = {}
        if state and len(state["workers"]) != self.workers:
            raise ValueError(f"the saved {type(self).__name__} run has {len(state['workers'])} "
                             f"workers; this one has {self.workers}")
        if self._workers is None:
            self._pending = state or None
        elif state:
            self._load(state)

    def _load_pending(self) -> None:
        if self._pending is not None:
            self._load(self._pending)
            self._pending = None

    def _load(self, state: dict[str, Any]) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not implement _load")


def algorithm_name(strategy: Any) -> str:
    """The algorithm whose state ``strategy.state_dict()`` holds, recorded there as
    ``"algorithm"``: the class name, and "(synchronous)" for synchronous EASGD."""
    name = type(strategy).__name__
    return f"{name} (synchronous)" if getattr(strategy, "asynchronous", True) is False else name


def check_algorithm(state: dict[str, Any], strategy: Any, wrap: str = "{}") -> None:
    """A one-line ``ValueError`` naming both algorithms when ``state`` was saved by another
    algorithm than ``strategy``'s (``wrap``: how the names read, e.g. ``"OnRay({})"``).
    States saved before the algorithm was recorded carry none and are not checked."""
    saved, mine = (state or {}).get("algorithm"), algorithm_name(strategy)
    if saved is not None and saved != mine:
        saved, mine = wrap.format(saved), wrap.format(mine)
        raise ValueError(f"the saved state was written by {saved}; this run is {mine} — "
                         f"resume it with {saved}")


def check_int(owner: str, name: str, value: Any, low: int) -> int:
    """``value`` as an int ≥ ``low``, or a one-line ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, (int, numpy.integer)) or value < low:
        raise ValueError(f"{owner} needs {name} to be an integer ≥ {low}; got {value!r}")
    return int(value)


def check_float(owner: str, name: str, value: Any, low: float, high: float | None = None,
                open_low: bool = False, open_high: bool = True) -> float:
    """``value`` as a float in the given interval, or a one-line ``ValueError``."""
    ok = (isinstance(value, (int, float, numpy.floating)) and not isinstance(value, bool)
          and numpy.isfinite(value)
          and (value > low if open_low else value >= low)
          and (high is None or (value < high if open_high else value <= high)))
    if not ok:
        left = "(" if open_low else "["
        right = ")" if high is None or open_high else "]"
        raise ValueError(f"{owner} needs {name} in {left}{low}, "
                         f"{'∞' if high is None else high}{right}; got {value!r}")
    return float(value)
