"""Regularizers: the λ Ω(θ) term of the regularized empirical risk, and the max-norm constraint.

    argmin_θ  (1/T) Σ_t l(f(x_t; θ), y_t) + λ Ω(θ)

Every regularizer has the same three-method face, so a trainer wires them
without knowing which is which:

* ``penalty(params) -> float``: λ Ω(θ), added to the loss value;
* ``add_gradient(params)``: adds λ ∇Ω(θ) into each ``param.grad`` (after
  ``model.backward``, before ``optimizer.step``);
* ``apply(params)``: a projection run *after* each optimizer step (only
  constraints such as ``MaxNorm`` do anything here).

They act only on Parameters whose ``regularize`` flag is True — weights, never
biases: a penalty on the bias constrains the model's offset, not its
complexity. ``params`` is an iterable of Parameters (``model.parameters()``)
or a Module, whose ``parameters()`` are used.

Example:
    >>> reg = L2(1e-4) + MaxNorm(3.0)
    >>> value = loss.forward(model.forward(x), y) + reg.penalty(model)
    >>> model.zero_grad(); model.backward(loss.backward()); reg.add_gradient(model)
    >>> optimizer.step(); reg.apply(model)
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Iterator
from typing import Any

from ermlab.backend import array_module
from ermlab.nn.module import Module
from ermlab.nn.parameter import Parameter

Params = Iterable[Parameter] | Module


def _check_hyperparameter(owner: str, name: str, value: Any, positive: bool = False) -> float:
    """``value`` as a float; ``ValueError`` unless it is finite and ≥ 0 (> 0 if ``positive``)."""
    number = float(value) if isinstance(value, numbers.Real) else math.nan
    valid = math.isfinite(number) and (number > 0 if positive else number >= 0)
    if isinstance(value, bool) or not valid:
        bound = "> 0" if positive else "≥ 0"
        raise ValueError(f"{owner} needs {name} to be a finite number {bound}; got {value!r}")
    return number


def _weights(params: Params) -> Iterator[Parameter]:
    """The Parameters with ``regularize=True`` among ``params`` (or a Module's), each once."""
    if isinstance(params, Module):
        params = params.parameters()
    seen: set[int] = set()
    for param in params:
        if not isinstance(param, Parameter):
            raise TypeError(
                f"regularizers take ermlab Parameters; got {type(param).__name__} "
                "(pass model.parameters())"
            )
        if param.regularize and id(param) not in seen:
            seen.add(id(param))
            yield param


class Regularizer:
    """Base class: λ Ω(θ) summed over the weights, its gradient, and a post-step projection.

    A penalty subclass writes ``_penalty(w)`` (Ω of one array, times λ) and
    ``_gradient(w, out)`` (λ ∇Ω written into ``out``).
    """

    def penalty(self, params: Params) -> float:
        """λ Ω(θ) = Σ over weights W of λ Ω(W), as a Python float."""
        return float(sum(self._penalty(p.data) for p in _weights(params)))

    def add_gradient(self, params: Params) -> None:
        """``param.grad += λ ∇Ω(param.data)`` for every weight (biases untouched).

        While ``grad`` is known to be zero (``Parameter.grad_is_zero``) the
        gradient is written straight into it; otherwise into one scratch array
        that is then added.
        """
        for param in _weights(params):
            param.accumulate(self._gradient_or_scratch, param.data)

    def _gradient_or_scratch(self, w: Any, out: Any = None) -> Any:
        return self._gradient(w, out=array_module(w).empty_like(w) if out is None else out)

    def apply(self, params: Params) -> None:
        """Projection after an optimizer step; penalties have none."""

    def _penalty(self, w: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not implement _penalty")

    def _gradient(self, w: Any, out: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not implement _gradient")

    def __add__(self, other: Regularizer) -> Compose:
        if not isinstance(other, Regularizer):
            return NotImplemented
        return Compose(self, other)


class L2(Regularizer):
    """L2 penalty (weight decay, Tikhonov / ridge): Ω = λ Σ_W ‖W‖²_F,  ∇Ω = 2λ W.

    Args:
        lam: λ ≥ 0.

    Frameworks differ: Keras's ``l2(l)`` is l Σ W² (the same as ours), while
    torch's ``weight_decay=wd`` adds wd·W to the gradient, i.e. the gradient
    of (wd/2) ‖W‖² — our ``L2(wd / 2)`` — and decays biases too unless they
    are put in a separate parameter group.
    """

    def __init__(self, lam: float) -> None:
        self.lam = _check_hyperparameter("L2", "lam", lam)

    def _penalty(self, w: Any) -> Any:
        flat = w.reshape(-1)
        return self.lam * array_module(w).dot(flat, flat)

    def _gradient(self, w: Any, out: Any) -> Any:
        return array_module(w).multiply(w, 2 * self.lam, out=out)

    def __repr__(self) -> str:
        return f"L2(lam={self.lam})"


class L1(Regularizer):
    """L1 penalty (lasso; Tibshirani 1996): Ω = λ Σ_W Σ_i |W_i|,  ∇Ω = λ sign(W).

    At W_i = 0 the subgradient 0 is used (sign(0) = 0, as torch's ``sign``).

    Args:
        lam: λ ≥ 0.
    """

    def __init__(self, lam: float) -> None:
        self.lam = _check_hyperparameter("L1", "lam", lam)

    def _penalty(self, w: Any) -> Any:
        return self.lam * array_module(w).abs(w).sum()

    def _gradient(self, w: Any, out: Any) -> Any:
        array_module(w).sign(w, out=out)
        out *= self.lam
        return out

    def __repr__(self) -> str:
        return f"L1(lam={self.lam})"


class ElasticNet(Regularizer):
    """Elastic net (Zou & Hastie 2005): Ω = λ Σ_W Σ_i (β W_i² + |W_i|),  ∇Ω = λ (2β W + sign W).

    Args:
        lam: λ ≥ 0, the overall strength.
        beta: β ≥ 0, the weight of the squared term relative to the absolute one.

    Frameworks differ: scikit-learn writes α (ρ |w| + ½ (1 − ρ) w²) with
    ``l1_ratio`` ρ, i.e. λ = αρ and β = (1 − ρ) / (2ρ); Keras's
    ``l1_l2(l1, l2)`` is l1 |w| + l2 w², i.e. λ = l1 and β = l2 / l1.
    """

    def __init__(self, lam: float, beta: float) -> None:
        self.lam = _check_hyperparameter("ElasticNet", "lam", lam)
        self.beta = _check_hyperparameter("ElasticNet", "beta", beta)

    def _penalty(self, w: Any) -> Any:
        flat = w.reshape(-1)
        xp = array_module(w)
        return self.lam * (self.beta * xp.dot(flat, flat) + xp.abs(w).sum())

    def _gradient(self, w: Any, out: Any) -> Any:
        array_module(w).sign(w, out=out)
        out += (2 * self.beta) * w
        out *= self.lam
        return out

    def __repr__(self) -> str:
        return f"ElasticNet(lam={self.lam}, beta={self.beta})"


class MaxNorm(Regularizer):
    """Max-norm constraint (Srebro & Shraibman 2005; Hinton et al. 2012, with dropout).

    Each unit's incoming weight vector w_j is kept inside the ball ‖w_j‖₂ ≤ c
    by projecting after every optimizer step:

        w_j ← w_j · c / max(‖w_j‖₂, c)

    Rows with ‖w_j‖ ≤ c are left exactly as they are; longer rows are rescaled
    to norm c, keeping their direction.

    This is a constraint, not a penalty: ``penalty`` is 0 and ``add_gradient``
    does nothing; only ``apply`` acts. Call ``reg.apply(model)`` right after
    ``optimizer.step()``.

    Args:
        c: the largest allowed norm, > 0 (Hinton et al. use values around 3–4).
        axis: the axes the norm is taken over. ``None`` (default) means every
            axis but 0 — in torch's layout that is the incoming vector of a
            unit: a row of a Linear weight (out, in), and an (in, k_h, k_w)
            block of a convolution kernel (out, in, k_h, k_w). A rank-1
            weight is treated as one vector.

    Frameworks differ: Keras's ``MaxNorm(max_value, axis=0)`` uses axis 0
    because Keras kernels are (in, out); it also divides by ‖w‖ + ε, so it
    shrinks rows below the bound slightly, which this projection does not.
    """

    def __init__(self, c: float, axis: int | tuple[int, ...] | None = None) -> None:
        self.c = _check_hyperparameter("MaxNorm", "c", c, positive=True)
        self.axis = axis

    def penalty(self, params: Params) -> float:
        """0: max-norm is enforced by ``apply``, not by a term of the loss."""
        return 0.0

    def add_gradient(self, params: Params) -> None:
        """Nothing to add: max-norm is enforced by ``apply``."""

    def apply(self, params: Params) -> None:
        """Project every weight in place: w_j ← w_j · c / max(‖w_j‖₂, c)."""
        for param in _weights(params):
            w = param.data
            xp = array_module(w)
            norms = xp.sqrt(xp.square(w).sum(axis=self._axes(w.ndim), keepdims=True))
            xp.maximum(norms, self.c, out=norms)
            xp.divide(self.c, norms, out=norms)
            w *= norms

    def _axes(self, ndim: int) -> tuple[int, ...]:
        if self.axis is None:
            return tuple(range(1, ndim)) if ndim > 1 else (0,)
        axes = (self.axis,) if isinstance(self.axis, int) else tuple(self.axis)
        for axis in axes:
            if not -ndim <= axis < ndim:
                raise ValueError(
                    f"MaxNorm axis {axis} is out of range for a weight of rank {ndim}; "
                    "pass axis=None for every axis but the unit axis 0"
                )
        return axes

    def __repr__(self) -> str:
        return f"MaxNorm(c={self.c}, axis={self.axis})"


class Compose(Regularizer):
    """Several regularizers at once: Ω = Σ_k Ω_k; gradients add; projections run in order.

    ``L2(1e-4) + MaxNorm(3.0)`` builds one.
    """

    def __init__(self, *regularizers: Regularizer) -> None:
        flat: list[Regularizer] = []
        for reg in regularizers:
            if not isinstance(reg, Regularizer):
                raise TypeError(f"Compose takes Regularizers; got {type(reg).__name__}")
            flat.extend(reg.regularizers if isinstance(reg, Compose) else [reg])
        self.regularizers = flat

    def penalty(self, params: Params) -> float:
        params = _materialize(params)
        return float(sum(reg.penalty(params) for reg in self.regularizers))

    def add_gradient(self, params: Params) -> None:
        params = _materialize(params)
        for reg in self.regularizers:
            reg.add_gradient(params)

    def apply(self, params: Params) -> None:
        params = _materialize(params)
        for reg in self.regularizers:
            reg.apply(params)

    def __repr__(self) -> str:
        return " + ".join(map(repr, self.regularizers)) if self.regularizers else "Compose()"


def _materialize(params: Params) -> Any:
    """A Module as it is, any other iterable as a list (so it can be walked several times)."""
    return params if isinstance(params, Module) else list(params)


REGULARIZERS: dict[str, type[Regularizer]] = {
    "l1": L1,
    "l2": L2,
    "elastic_net": ElasticNet,
    "max_norm": MaxNorm,
}


def get(name: str | Regularizer, **hyperparameters: Any) -> Regularizer:
    """A regularizer by name with its hyperparameters, e.g. ``get("l2", lam=1e-4)``."""
    if isinstance(name, Regularizer):
        return name
    try:
        cls = REGULARIZERS[name]
    except KeyError:
        raise ValueError(
            f"unknown regularizer {name!r}; choose one of {sorted(REGULARIZERS)}"
        ) from None
    return cls(**hyperparameters)
