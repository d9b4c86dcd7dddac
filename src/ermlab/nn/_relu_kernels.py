"""ReLU's fprop and bprop in one pass each (Numba), bit for bit ``activations.ReLU``'s NumPy path.

    fprop   y = max(x, 0):  x where x > 0 or x is NaN (NaN propagates, as torch's relu
            and ``numpy.maximum``), else +0 (never −0)
    bprop   ∂L/∂x = G·1_{y > 0}:  G where y > 0, else G·0 (±0, or NaN for G = ±∞, NaN)

The NumPy path reads an array of zeros beside x (``numpy.maximum(x, zeros)``) and, in
bprop, writes a boolean mask before multiplying; each kernel here reads its inputs once
and writes its output once. Kernels take flat C-contiguous arrays and a range
[lo, hi) of elements (``activations.ReLU`` shares the elements out over lanes of
``ermlab.threads``); they release the GIL. Each loops over slices from index 0: Numba
does not vectorize ``for i in range(lo, hi): x[i]`` (i might be negative and wrap around),
which ran 2.5× slower.
"""

from __future__ import annotations

from numba import njit

_JIT = dict(nogil=True, cache=True, fastmath=False, error_model="numpy")


@njit(inline="always", **_JIT)
def rectify(v, zero):
    """max(v, 0) as the ReLU takes it: v where v > 0 or v is NaN (NaN propagates), else
    ``zero`` (+0 in the array's dtype). Inlined into every kernel that applies a ReLU:
    this one, ``add_forward``, and the batch norm's, direct and Winograd kernels that run
    one (``Module.forward_relu``)."""
    return v if (v > 0 or v != v) else zero


@njit(**_JIT)
def forward(x, y, lo, hi):
    """y[i] = max(x[i], 0) for i in [lo, hi); ``y`` may be ``x``."""
    xs, ys = x[lo:hi], y[lo:hi]
    zero = y.dtype.type(0)
    for i in range(xs.size):
        ys[i] = rectify(xs[i], zero)


@njit(**_JIT)
def backward(grad, y, out, lo, hi):
    """out[i] = grad[i]·1_{y[i] > 0} for i in [lo, hi); ``out`` may be ``grad``."""
    gs, ys, outs = grad[lo:hi], y[lo:hi], out[lo:hi]
    for i in range(gs.size):
        g = gs[i]
        outs[i] = g if ys[i] > 0 else g * 0


@njit(**_JIT)
def add_forward(x1, x2, y, lo, hi):
    """y[i] = max(x1[i] + x2[i], 0) for i in [lo, hi), as ``forward`` takes the sum: a sum
    and the ReLU after it (``merge.Add.forward_relu``) in one pass."""
    as_, bs, ys = x1[lo:hi], x2[lo:hi], y[lo:hi]
    zero = y.dtype.type(0)
    for i in range(ys.size):
        ys[i] = rectify(as_[i] + bs[i], zero)
