"""Matrix products whose inner dimension is 1: outer products, kept away from NumPy's matmul.

For (…, m × 1) @ (…, 1 × n) NumPy's ``matmul`` does not call BLAS: it runs an unvectorized
loop of its own (measured, AMD EPYC Zen 5: 512 × 784 in 365 µs, 512 × 4096 in 1.9 ms).
The layers meet that shape in ``Linear``'s ∂L/∂W = Gᵀ H of one example and in a depthwise
convolution's ∂L/∂x = Wᵀ G_n (one output channel per group). ``matmul`` here takes it to
``_outer_kernels.outer`` for two NumPy matrices (14 µs; Numba installed, see ``nn._fused``)
and to a broadcast ``multiply`` otherwise (84 µs): each value is one product, rounded once,
so the result is the same bit for bit. Other shapes, and CuPy arrays, go to ``matmul``.
"""

from __future__ import annotations

from typing import Any

import numpy

from ermlab.backend import array_module
from ermlab.nn import _fused


def matmul(a: Any, b: Any, out: Any = None) -> Any:
    """``a @ b`` (into ``out`` if given), outer products as the module docstring says."""
    xp = array_module(a)
    if a.shape[-1] != 1 or xp is not numpy:
        return xp.matmul(a, b, out=out)
    if a.ndim == 2 and b.ndim == 2:
        g, h = numpy.ascontiguousarray(a[:, 0]), numpy.ascontiguousarray(b[0])
        if out is None:
            out = numpy.empty((g.size, h.size), dtype=numpy.result_type(g, h))
        kernels = _fused.kernels("_outer_kernels", g, h, out)
        if kernels is not None:
            kernels.outer(g, h, out)
            return out
    return numpy.multiply(a, b, out=out)
