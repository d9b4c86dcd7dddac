"""Parameter: one array of θ together with its gradient ∂L/∂θ."""

from __future__ import annotations

import numbers
from typing import Any

import numpy

from ermlab.backend import array_module


class Parameter:
    """A trainable array and the gradient accumulated into it by ``backward``.

    Attributes:
        data: the values θ (updated in place by optimizers).
        grad: ∂L/∂θ, same shape and dtype as ``data``; modules *add* into it
            during ``backward`` and ``zero_grad`` resets it (lazily: see
            ``zero_grad``). Whatever the caller
            does to it — ``p.grad += g``, ``p.grad[...] = g``, ``p.grad = g`` —
            is kept: the next ``backward`` adds to it (gradient accumulation).
            (A reference to ``grad`` kept from *before* ``zero_grad`` and written
            through after it is not seen; take ``p.grad`` again after ``zero_grad``.)
        name: a readable name (``"weight"``, ``"bias"``); containers prefix it.
        regularize: whether weight penalties Ω(θ) apply. True for weights,
            False for biases (regularizing biases constrains the model's offset,
            not its complexity).
        grad_is_zero: read-only; True from ``zero_grad`` until ``grad`` is first
            handed out, assigned or accumulated into. Only then may ``accumulate``
            write a result straight into ``grad`` instead of adding it.
    """

    __slots__ = ("data", "_grad", "name", "regularize", "_grad_is_zero", "_grad_stale")

    def __init__(self, data: Any, name: str = "", regularize: bool = True) -> None:
        """``data``: a floating-point array (NumPy or CuPy), updated in place. A NumPy
        scalar, Python number or nested list becomes an array of its own (an optimizer
        could not update a scalar in place); integer, boolean and complex values are
        refused."""
        data = _floating_array(data, name)
        xp = array_module(data)
        self.data = data
        self._grad = xp.zeros_like(data)
        self.name = name
        self.regularize = regularize
        self._grad_is_zero = True
        self._grad_stale = False  # zero by zero_grad, but the array not cleared yet

    @property
    def grad(self) -> Any:
        """∂L/∂θ. The array handed out may be changed in place by the caller, so the
        gradient is no longer known to be zero."""
        self._clear_stale()
        self._grad_is_zero = False
        return self._grad

    @grad.setter
    def grad(self, value: Any) -> None:
        if value is None:
            raise TypeError(
                f"Parameter {self.name!r}: grad cannot be None; ermlab keeps one gradient array "
                "per parameter (zero_grad() clears it; to freeze a parameter, leave it out of "
                "the optimizer)")
        if (getattr(value, "shape", None) != self.data.shape
                or getattr(value, "dtype", None) != self.data.dtype):
            raise ValueError(
                f"Parameter {self.name!r}: grad must be an array of the parameter's shape "
                f"{tuple(self.data.shape)} and dtype {self.data.dtype}; got "
                f"{type(value).__name__} of shape {getattr(value, 'shape', None)} and dtype "
                f"{getattr(value, 'dtype', None)}")
        self._grad = value
        self._grad_is_zero = self._grad_stale = False

    @property
    def grad_is_zero(self) -> bool:
        return self._grad_is_zero

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def size(self) -> int:
        return self.data.size

    @property
    def dtype(self):
        return self.data.dtype

    def zero_grad(self) -> None:
        """Set ``grad`` to zero, in place (the same array), and lazily: the array is cleared
        when ``grad`` is next read or added into. A backward pass writes its first
        gradient straight into it (``accumulate``), so a training step never clears it:
        one pass over θ's size saved per step (torch's ``zero_grad(set_to_none=True)``
        saves it by dropping the array). A view of ``grad`` taken before ``zero_grad``
        shows the old values until then; take ``p.grad`` again after ``zero_grad``."""
        self._grad_is_zero = self._grad_stale = True

    def _clear_stale(self) -> None:
        if self._grad_stale:
            self._grad.fill(0)
            self._grad_stale = False

    def accumulate(self, op, *args, **kwargs) -> None:
        """``grad += op(*args, **kwargs)``, without a temporary when possible.

        ``op`` is a function with an ``out=`` argument (``xp.matmul``,
        ``xp.sum``...). While ``grad`` is known to be zero (see ``grad_is_zero``)
        the result is written straight into it; otherwise it is computed and added.
        """
        if self._grad_is_zero:
            op(*args, out=self._grad, **kwargs)
            self._grad_is_zero = self._grad_stale = False
        else:
            self._grad += op(*args, **kwargs)

    def add_grad(self, value: Any) -> None:
        """``grad += value``."""
        self._clear_stale()
        self._grad += value
        self._grad_is_zero = False

    def __repr__(self) -> str:
        return (
            f"Parameter(name={self.name!r}, shape={tuple(self.data.shape)}, "
            f"dtype={self.data.dtype}, regularize={self.regularize})"
        )


def _floating_array(data: Any, name: str) -> Any:
    """``data`` as a floating-point array (see ``Parameter.__init__``)."""
    xp = array_module(data)
    if not isinstance(data, xp.ndarray):
        if not isinstance(data, (numbers.Number, numpy.generic, list, tuple)):
            raise TypeError(f"Parameter {name!r} takes an array of floating-point values; "
                            f"got {type(data).__name__}")
        data = xp.asarray(data)
    if data.dtype.kind != "f":
        raise TypeError(
            f"Parameter {name!r}: values of dtype {data.dtype} cannot be trained (updates "
            "would be rounded away or refused); pass floating-point values, e.g. "
            "data.astype(numpy.float32)")
    return data
