"""ReLU's fprop and bprop in one pass each (Numba), bit for bit ``activations.ReLU``'s NumPy path.

    fprop   y = max(x, 0):  x where x > 0 or x is NaN (NaN propagates, as torch's relu
            and ``numpy.maximum``), else +0 (never −0)
    bprop   ∂L/∂x = G·1_{y > 0}:  G where y > 0, else G·0 (±0, or NaN for G = ±∞, NaN)

The NumPy path reads an array of zeros beside x (``numpy.maximum(x, zeros)``) and, in
bprop, writes a boolean mask before multiplying; each kernel here reads its inputs once
and writes its output once. Kernels take flat C-contiguous arrays and a range
[lo, hi) of elements (``activations.ReLU`` shares the elements out over lanes of
``ermlab.threads``); they release the GIL.
"""

from __future__ import annotations

from numba import njit

_JIT = dict(nogil=True, cache=True, fastmath=False, error_model="numpy")


@njit(**_JIT)
def forward(x, y, lo, hi):
    """y[i] = max(x[i], 0) for i in [lo, hi); ``y`` may be ``x``."""
    for i in range(lo, hi):
        v = x[i]
        y[i] = v if (v > 0 or v != v) else 0


@njit(**_JIT)
def backward(grad, y, out, lo, hi):
    """out[i] = grad[i]·1_{y[i] > 0} for i in [lo, hi); ``out`` may be ``grad``."""
    for i in range(lo, hi):
        g = grad[i]
        out[i] = g if y[i] > 0 else g * 0
