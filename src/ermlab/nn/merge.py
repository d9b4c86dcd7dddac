"""Boxes that merge several values: sums (residual connections) and concatenation (inception)."""

from __future__ import annotations

from typing import Any

import numpy

from ermlab.backend import array_module
from ermlab.nn import _fused
from ermlab.nn.activations import in_element_lanes, rectified_gradient
from ermlab.nn.module import Module


class Add(Module):
    """y = x₁ + x₂ + … ; each input receives the output gradient unchanged.

    C-contiguous NumPy inputs of one dtype are added in lanes of elements on
    ``ermlab.threads`` (``threads`` attribute; default None: ``ERMLAB_NUM_THREADS`` or the
    CPU count; NumPy's additions release the GIL), each of at least ``LANE_MIN_BYTES`` of
    the output, the same values as one lane (element by element, in the same order).
    """

    forward_cache = ("_count", "_y")
    threads: int | None = None

    def forward(self, *inputs: Any) -> Any:
        self._check(inputs)
        total = sum_of(inputs, self.threads)
        if self.training:
            self._count, self._y = len(inputs), False
        return total

    def forward_relu(self, *inputs: Any) -> Any:
        """max(x₁ + x₂, 0) — the sum and a ``ReLU`` after it — in one pass
        (``_relu_kernels.add_forward``, lanes of elements), bit for bit the two boxes' values;
        None for other than two C-contiguous NumPy float inputs of one dtype or without the
        kernels (the caller then runs the ``ReLU``). ``Graph`` calls it where the ReLU is the
        sum's only reader (a residual block's output): the ReLU's pass over the sum is
        saved. bprop then masks the gradient, G·1_{y > 0} (``_relu_kernels.backward``), with
        y this output, kept as the ReLU would keep it."""
        self._check(inputs)
        # (_fused.kernels: NumPy float arrays of one dtype, C-contiguous)
        kernels = _fused.kernels("_relu_kernels", *inputs) if len(inputs) == 2 else None
        if kernels is None:
            return None
        y = numpy.empty_like(inputs[0])
        flat = [x.reshape(-1) for x in (*inputs, y)]
        in_element_lanes(kernels.add_forward, self.threads, *flat)
        if self.training:
            self._count, self._y = 2, y
        return y

    def backward(self, grad_out: Any, input_grad: bool = True) -> Any:
        count, y = self._cached("_count"), self._cached("_y")
        if not input_grad:
            return None
        if y is not False:  # the ReLU's bprop (forward_relu)
            grad_out = rectified_gradient(grad_out, y, self.threads)
        return (grad_out,) * count

    @staticmethod
    def _check(inputs: tuple) -> None:
        if len(inputs) < 2:
            raise ValueError(f"Add needs at least two inputs; got {len(inputs)}")
        shapes = {tuple(x.shape) for x in inputs}
        if len(shapes) != 1:
            raise ValueError(f"Add needs inputs of one shape; got shapes {sorted(shapes)}")


def sum_of(inputs: Any, threads: int | None = None) -> Any:
    """x₁ + x₂ + …, a new array: C-contiguous NumPy arrays of one shape and dtype are added
    in lanes of elements (``threads``; None: ``ERMLAB_NUM_THREADS`` or the CPU count), each
    of at least ``LANE_MIN_BYTES``, the same values as one lane (element by element, in
    the same order); other arrays by NumPy's ``+``. ``Add``'s forward pass, and
    ``Graph``'s sum of the gradients that reach a value from several boxes."""
    first = inputs[0]
    if all(type(x) is numpy.ndarray and x.dtype == first.dtype and x.shape == first.shape
           and x.flags.c_contiguous for x in inputs):
        total = numpy.empty_like(first)
        in_element_lanes(_add, threads, total.reshape(-1), [x.reshape(-1) for x in inputs])
        return total
    total = inputs[0] + inputs[1]
    for x in inputs[2:]:
        total += x
    return total


def _add(total: Any, flat: list[Any], lo: int, hi: int) -> None:
    """total[lo:hi] = x₁[lo:hi] + x₂[lo:hi] + … (one lane)."""
    numpy.add(flat[0][lo:hi], flat[1][lo:hi], out=total[lo:hi])
    for x in flat[2:]:
        total[lo:hi] += x[lo:hi]


class Concatenate(Module):
    """y = [x₁, x₂, …] joined along ``axis`` (1: features, or channels in NCHW)."""

    forward_cache = ("_sizes",)

    def __init__(self, axis: int = 1) -> None:
        super().__init__()
        self.axis = axis

    def forward(self, *inputs: Any) -> Any:
        xp = array_module(*inputs)
        if self.training:
            self._sizes = [x.shape[self.axis] for x in inputs]
        return xp.concatenate(inputs, axis=self.axis)

    def backward(self, grad_out: Any, input_grad: bool = True) -> Any:
        sizes = self._cached("_sizes")
        if not input_grad:
            return None
        xp = array_module(grad_out)
        cuts = list(_running_sum(sizes[:-1]))
        return tuple(xp.split(grad_out, cuts, axis=self.axis))

    def extra_repr(self) -> str:
        return f"axis={self.axis}"


def _running_sum(values: list[int]):
    total = 0
    for value in values:
        total += value
        yield total
