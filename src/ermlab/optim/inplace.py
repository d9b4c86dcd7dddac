"""In-place first-order optimizers: scratch buffers, the subnormal flush, range checks.

Every first-order rule here updates ``param.data`` and its state arrays in
place, with ``out=`` arguments into preallocated buffers, so one step makes no
large temporaries (``scratch(param, k)`` hands out the k-th buffer shaped like
the parameter; it is not saved in ``state_dict``).

The subnormal trap (see PERFORMANCE.md): state that decays geometrically —
momentum buffers, Adam's m and v, RMSprop/Adadelta averages — shrinks by β
every step wherever the gradient is zero (dead ReLU units) until it becomes
subnormal, and arithmetic on subnormals is ~17× slower. Every ``flush_every``
steps of a parameter (its ``state["step"]``, so a resumed run flushes at the
same steps) the arrays named in ``decaying_state`` have entries with
|x| < ``flush_below`` (1e-30) set to zero. The change is below 1e-30 in
absolute value, far under float32/float64 resolution of any update that
matters; ``flush_every=0`` turns it off.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ermlab.backend import array_module
from ermlab.nn.parameter import Parameter
from ermlab.optim.base import Optimizer

FLUSH_BELOW = 1e-30


def flush_tiny_(x: Any, below: float = FLUSH_BELOW) -> Any:
    """Set entries of ``x`` with |x| < ``below`` to zero, in place; return ``x``."""
    xp = array_module(x)
    xp.copyto(x, 0, where=xp.abs(x) < below)
    return x


class InPlaceOptimizer(Optimizer):
    """Optimizer base with preallocated scratch buffers and a periodic subnormal flush.

    Subclasses list the names of their geometrically decaying state arrays in
    ``decaying_state`` and count ``state["step"]``.

    Args (keyword-only in every subclass):
        flush_every: flush tiny state values every this many steps of a
            parameter; 0 disables the flush. Default 16.
        flush_below: the threshold, default 1e-30.
    """

    decaying_state: tuple[str, ...] = ()

    def __init__(
        self,
        params: Iterable[Any],
        defaults: dict[str, Any],
        flush_every: int = 16,
        flush_below: float = FLUSH_BELOW,
    ) -> None:
        if int(flush_every) != flush_every or flush_every < 0:
            raise ValueError(
                f"flush_every must be an integer ≥ 0 (0 turns the subnormal flush off); "
                f"got {flush_every}"
            )
        if not flush_below >= 0:
            raise ValueError(f"flush_below must be ≥ 0; got {flush_below}")
        self.flush_every = int(flush_every)
        self.flush_below = float(flush_below)
        self._scratch: dict[Parameter, list[Any]] = {}
        super().__init__(params, defaults)

    def scratch(self, param: Parameter, k: int = 0) -> Any:
        """The k-th reusable buffer shaped like ``param`` (contents undefined)."""
        buffers = self._scratch.setdefault(param, [])
        while len(buffers) <= k:
            buffers.append(array_module(param.data).empty_like(param.data))
        return buffers[k]

    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = super().step(closure)
        if self.flush_every:
            self.flush_state()
        return loss

    def flush_state(self, force: bool = False) -> None:
        """Flush tiny values from the decaying state of parameters due for it (all if ``force``)."""
        for state in self.state.values():
            if force or state.get("step", 0) % self.flush_every == 0:
                for key in self.decaying_state:
                    value = state.get(key)
                    if value is not None and hasattr(value, "shape"):
                        flush_tiny_(value, self.flush_below)

    # -- hyperparameter checks shared by the subclasses --------------------------

    def require_nonnegative(self, group: dict[str, Any], *keys: str) -> None:
        for key in keys:
            if not group[key] >= 0:
                raise ValueError(f"{type(self).__name__} {key} must be ≥ 0; got {group[key]}")

    def require_unit_interval(self, group: dict[str, Any], *keys: str) -> None:
        """Each ``group[key]`` in [0, 1) (a decay rate or momentum)."""
        for key in keys:
            if not 0 <= group[key] < 1:
                raise ValueError(
                    f"{type(self).__name__} {key} must be in [0, 1); got {group[key]}"
                )

    def require_betas(self, group: dict[str, Any]) -> None:
        betas = group["betas"]
        if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise ValueError(
                f"{type(self).__name__} betas must be two numbers in [0, 1), e.g. (0.9, 0.999); "
                f"got {betas}"
            )


def lerp_(start: Any, end: Any, weight: float, tmp: Any) -> Any:
    """``start ← start + weight (end − start)`` in place, rounded as torch's ``lerp_``.

    torch evaluates ``start + w (end − start)`` for |w| < 0.5 and
    ``end − (end − start)(1 − w)`` otherwise; ``tmp`` is a buffer shaped like ``start``.
    """
    xp = array_module(start)
    xp.subtract(end, start, out=tmp)
    if abs(weight) < 0.5:
        tmp *= weight
        start += tmp
    else:
        tmp *= 1 - weight
        xp.subtract(end, tmp, out=start)
    return start


def add_scaled_square_(acc: Any, g: Any, value: float, tmp: Any) -> Any:
    """``acc ← acc + value·g·g`` in place (torch's ``addcmul_(g, g, value=value)``)."""
    xp = array_module(acc)
    xp.multiply(g, value, out=tmp)
    tmp *= g
    acc += tmp
    return acc
