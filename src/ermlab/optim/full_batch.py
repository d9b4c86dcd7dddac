"""Base for full-batch optimizers that see all parameters as one flat vector θ ∈ ℝⁿ.

Quasi-Newton and Newton methods (LBFGS, BFGS, Newton) couple every
coordinate: their direction is −H ∇f with H a matrix over all parameters.
This base gathers the Parameters of the single param group into flat vectors
(``flat_grad``, ``flat_data``), moves along a flat direction (``add_step``) and
evaluates the objective through the closure, which must

    zero the gradients, compute the loss, run backward, return the loss

(torch's ``closure`` contract). Vectors use the parameters' array module and
dtype, so the same code runs on NumPy and CuPy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ermlab.backend import array_module, to_numpy
from ermlab.optim.base import Optimizer


class FullBatchOptimizer(Optimizer):
    """An optimizer over the flat vector of all parameters of a single param group."""

    traits = None  # a base class, not an optimizer of its own (see optim.traits)

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]) -> None:
        super().__init__(params, defaults)
        if len(self.param_groups) != 1:
            raise ValueError(
                f"{type(self).__name__} does not support per-parameter options (param "
                f"groups): it treats all parameters as one vector; got "
                f"{len(self.param_groups)} groups — pass a single list of parameters"
            )
        self._params = self.param_groups[0]["params"]
        self.xp = array_module(self._params[0].data)

    def add_param_group(self, group: dict[str, Any]) -> None:
        if getattr(self, "_params", None) is not None:
            raise ValueError(f"{type(self).__name__} takes a single param group; cannot add one")
        super().add_param_group(group)

    def numel(self) -> int:
        """n, the number of scalars in all parameters."""
        return sum(p.size for p in self._params)

    def flat_grad(self) -> Any:
        """∇f as one flat vector (a copy)."""
        return self.xp.concatenate([p.grad.reshape(-1) for p in self._params])

    def flat_data(self) -> Any:
        """θ as one flat vector (a copy)."""
        return self.xp.concatenate([p.data.reshape(-1) for p in self._params])

    def set_flat_data(self, flat: Any) -> None:
        """θ ← ``flat`` (in place, parameter by parameter)."""
        offset = 0
        for p in self._params:
            p.data[...] = flat[offset:offset + p.size].reshape(p.shape)
            offset += p.size

    def add_step(self, t: float, d: Any) -> None:
        """θ ← θ + t d."""
        offset = 0
        for p in self._params:
            p.data += t * d[offset:offset + p.size].reshape(p.shape)
            offset += p.size

    def evaluate(self, closure: Callable[[], Any]) -> tuple[float, Any]:
        """``(f(θ), ∇f(θ))`` by one call of the closure."""
        return float(closure()), self.flat_grad()

    def directional_evaluate(self, closure: Callable[[], Any], x: Any, t: float,
                             d: Any) -> tuple[float, Any]:
        """``(f(x + t d), ∇f(x + t d))``, leaving θ = x afterwards."""
        self.add_step(t, d)
        loss, grad = self.evaluate(closure)
        self.set_flat_data(x)
        return loss, grad

    def check_closure(self, closure: Callable[[], Any] | None) -> Callable[[], Any]:
        if closure is None:
            raise ValueError(
                f"{type(self).__name__}.step needs a closure that zeroes the gradients, "
                "computes the loss, runs backward and returns the loss: step(closure)"
            )
        return closure

    def global_state(self) -> dict[str, Any]:
        """The optimizer's state, kept (as torch does) under the first parameter."""
        return self.state.setdefault(self._params[0], {})

    # -- saving and restoring: flat vectors go out as NumPy, come back as xp ----

    def state_dict(self) -> dict[str, Any]:
        saved = super().state_dict()
        saved["state"] = {i: {k: _to_numpy_tree(v) for k, v in s.items()}
                          for i, s in saved["state"].items()}
        return saved

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        # the flat vectors' dtype: that of the concatenated parameters (float64 where
        # float32 and float64 ones are mixed), not the first parameter's
        dtype = self.xp.result_type(*(p.dtype for p in self._params))
        for state in self.state.values():
            for key, value in state.items():
                state[key] = _to_xp_tree(value, self.xp, dtype)


def _to_numpy_tree(value: Any) -> Any:
    if isinstance(value, list):
        return [_to_numpy_tree(v) for v in value]
    return to_numpy(value).copy() if hasattr(value, "shape") else value


def _to_xp_tree(value: Any, xp: Any, dtype: Any) -> Any:
    if isinstance(value, list):
        return [_to_xp_tree(v, xp, dtype) for v in value]
    return xp.array(value, dtype=dtype) if hasattr(value, "shape") else value
