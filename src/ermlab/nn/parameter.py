"""Parameter: one array of θ together with its gradient ∂L/∂θ."""

from __future__ import annotations

from typing import Any

from ermlab.backend import array_module


class Parameter:
    """A trainable array and the gradient accumulated into it by ``backward``.

    Attributes:
        data: the values θ (updated in place by optimizers).
        grad: ∂L/∂θ, same shape and dtype as ``data``; modules *add* into it
            during ``backward`` and ``zero_grad`` resets it.
        name: a readable name (``"weight"``, ``"bias"``); containers prefix it.
        regularize: whether weight penalties Ω(θ) apply. True for weights,
            False for biases (regularizing biases constrains the model's offset,
            not its complexity).
    """

    __slots__ = ("data", "grad", "name", "regularize", "grad_is_zero")

    def __init__(self, data: Any, name: str = "", regularize: bool = True) -> None:
        xp = array_module(data)
        self.data = data
        self.grad = xp.zeros_like(data)
        self.name = name
        self.regularize = regularize
        self.grad_is_zero = True

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
        """Set ``grad`` to zero (in place, so views of it stay valid)."""
        self.grad.fill(0)
        self.grad_is_zero = True

    def accumulate(self, op, *args, **kwargs) -> None:
        """Add ``op(*args, **kwargs)`` into ``grad`` without a temporary when possible.

        ``op`` is a function with an ``out=`` argument (``xp.matmul``,
        ``xp.sum``...). Right after ``zero_grad`` the result is written straight
        into ``grad``; otherwise it is computed and added.
        """
        if self.grad_is_zero:
            op(*args, out=self.grad, **kwargs)
            self.grad_is_zero = False
        else:
            self.grad += op(*args, **kwargs)

    def add_grad(self, value: Any) -> None:
        """``grad += value``."""
        self.grad += value
        self.grad_is_zero = False

    def __repr__(self) -> str:
        return (
            f"Parameter(name={self.name!r}, shape={tuple(self.data.shape)}, "
            f"dtype={self.data.dtype}, regularize={self.regularize})"
        )
