"""Optimizer base: parameter groups, per-parameter state, ``step``, ``state_dict``.

The shape is torch.optim's, so that code and habits carry over:

* ``params`` is an iterable of Parameters or of dicts ``{"params": [...], **options}``
  (param groups, each with its own hyperparameters);
* ``step(closure=None)`` applies one update to every parameter, with its gradient as
  it stands (zero where nothing was accumulated since ``zero_grad``); ``closure``
  re-evaluates the loss (needed by L-BFGS and line searches) and its value is returned.
  Where torch differs: its ``zero_grad()`` sets gradients to None and its step skips
  those parameters, so a parameter that no backward reached is left alone there, while
  here a rule with state (momentum, Adam's moments, weight decay) still moves it, as torch
  does after ``zero_grad(set_to_none=False)``. A parameter is frozen by leaving it out of
  the optimizer (``Parameter.grad`` cannot be None);
* ``state_dict()`` / ``load_state_dict()`` save and restore hyperparameters and
  per-parameter state, parameters referred to by their position.

A subclass sets ``defaults`` and writes ``update(param, group, state)``, the
rule for one parameter (Chainer's per-parameter update rule). Optimizers see
Parameters only, never modules.
"""

from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from ermlab.backend import array_module, to_numpy
from ermlab.nn.parameter import Parameter
from ermlab.optim.traits import Traits


def check_integer(name: str, key: str, value: Any, low: int) -> None:
    """A ValueError unless ``value`` is an integer (any ``numbers.Integral``, not a bool)
    ≥ ``low``: the counts of optimizers and schedules (iterations, history, step sizes)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} {key} must be an integer ≥ {low}; got {value!r}")


class Optimizer:
    """Base class: θ ← update(θ, ∇θ, state) for every parameter, group by group.

    Every concrete optimizer declares ``traits`` (``optim.traits.Traits``): which
    moments it keeps and its update formula, for ``ermlab.lab.table``.
    """

    traits: ClassVar[Traits | None] = None

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]) -> None:
        self.defaults = dict(defaults)
        self.param_groups: list[dict[str, Any]] = []
        self.state: dict[Parameter, dict[str, Any]] = {}
        params = list(params)
        if not params:
            raise ValueError(f"{type(self).__name__} got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, group: dict[str, Any]) -> None:
        """Add a group ``{"params": [...], **options}``; missing options take the defaults."""
        group = dict(group)
        params = group["params"]
        params = [params] if isinstance(params, Parameter) else list(params)
        for param in params:
            if not isinstance(param, Parameter):
                raise TypeError(
                    f"{type(self).__name__} optimizes ermlab Parameters; got "
                    f"{type(param).__name__} (pass model.parameters())"
                )
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in params):
            raise ValueError("a parameter appears in more than one parameter group")
        if len({id(p) for p in params}) != len(params):
            raise ValueError(f"{type(self).__name__}: a parameter appears twice in one "
                             "parameter group (it would be updated twice a step); pass each "
                             "once, e.g. model.parameters(), which lists a shared one once")
        unknown = set(group) - set(self.defaults) - {"params"}
        if unknown:
            raise ValueError(
                f"{type(self).__name__} has no option(s) {sorted(unknown)}; it takes "
                f"{sorted(self.defaults)}"
            )
        for key, value in self.defaults.items():
            group.setdefault(key, value)
        group["params"] = params
        self.validate(group)
        self.param_groups.append(group)

    def validate(self, group: dict[str, Any]) -> None:
        """Raise ``ValueError`` for hyperparameters out of range (subclasses extend)."""
        lr = group.get("lr")
        if lr is None or not 0 <= lr < math.inf:
            raise ValueError(f"{type(self).__name__} needs a finite learning rate lr ≥ 0; "
                             f"got {lr}")

    def zero_grad(self) -> None:
        for group in self.param_groups:
            for param in group["params"]:
                param.zero_grad()

    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One update of every parameter; returns ``closure()`` when a closure is given."""
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for param in group["params"]:
                state = self.state.get(param)
                if state is None:
                    state = self.state[param] = self.init_state(param, group)
                self.update(param, group, state)
        return loss

    def init_state(self, param: Parameter, group: dict[str, Any]) -> dict[str, Any]:
        """The state of a parameter before its first update."""
        return {}

    def update(self, param: Parameter, group: dict[str, Any], state: dict[str, Any]) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not implement update")

    # -- saving and restoring --------------------------------------------------

    def _indexed_params(self) -> list[Parameter]:
        return [p for group in self.param_groups for p in group["params"]]

    def state_dict(self) -> dict[str, Any]:
        """``{"state": {index: {name: value}}, "param_groups": [{..., "params": [index]}]}``.

        Arrays are NumPy copies; other values are plain Python scalars.
        """
        index = {id(p): i for i, p in enumerate(self._indexed_params())}
        groups = []
        for group in self.param_groups:
            saved = {k: copy.deepcopy(v) for k, v in group.items() if k != "params"}
            saved["params"] = [index[id(p)] for p in group["params"]]
            groups.append(saved)
        state = {
            index[id(p)]: {k: _saved(v) for k, v in s.items()}
            for p, s in self.state.items()
            if id(p) in index
        }
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore hyperparameters and state saved by ``state_dict`` into this optimizer."""
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups) or any(
            len(saved["params"]) != len(group["params"])
            for saved, group in zip(groups, self.param_groups)
        ):
            raise ValueError(
                "optimizer state_dict does not match: it has param groups of sizes "
                f"{[len(g['params']) for g in groups]}, this optimizer "
                f"{[len(g['params']) for g in self.param_groups]}"
            )
        params = self._indexed_params()
        for saved, group in zip(groups, self.param_groups):
            group.update({k: copy.deepcopy(v) for k, v in saved.items() if k != "params"})
        self.state = {}
        for key, values in state_dict["state"].items():
            param = params[int(key)]
            xp = array_module(param.data)
            self.state[param] = {k: _restored(v, param, xp) for k, v in values.items()}

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v}" for k, v in self.defaults.items())
        return f"{type(self).__name__}({options})"


def _restored(value: Any, param: Parameter, xp: Any) -> Any:
    """A saved state entry on the parameter's device; arrays shaped like it take its dtype."""
    if not hasattr(value, "shape") or value.ndim == 0:
        return copy.deepcopy(value)
    dtype = param.dtype if tuple(value.shape) == tuple(param.shape) else value.dtype
    return xp.array(value, dtype=dtype)


def _saved(value: Any) -> Any:
    return to_numpy(value).copy() if hasattr(value, "shape") else copy.deepcopy(value)
