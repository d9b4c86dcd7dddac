"""ReLU's fprop and bprop in one pass each (Numba), bit for bit ``activations.ReLU``'s NumPy path.

    fprop   y = max(x, 0):  x where x > 0 or x is NaN (NaN propagates, as torch's relu
            and ``numpy.maximum``), else +0 (never −0)
    bprop   ∂L/∂x = G·1_{y > 0}:  G where y > 0, else G·0 (±0, or NaN for G = ±∞, NaN);
            where y is NaN, G (torch's threshold_backward: 0 where y ≤ 0, else G)

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

from ermlab import _numba_target  # noqa: F401 - the vector width, before a kernel compiles

_JIT = dict(nogil=True, cache=True, fastmath=False, error_model="numpy")


@njit(inline="always", **_JIT)
def rectify(v, zero):
    """max(v, 0) as the ReLU takes it: v where v > 0 or v is NaN (NaN propagates), else
    ``zero`` (+0 in the array's dtype). Inlined into every kernel that applies a ReLU:
    this one, ``add_forward``, and the batch norm's, direct and Winograd kernels that run
    one (``Module.forward_relu``)."""
    return v if (v > 0 or v != v) else zero


@njit(inline="always", **_JIT)
def masked(g, y, zero):
    """G·1_{y > 0} as the ReLU's bprop takes it: g·``zero`` where y ≤ 0 (±0, or NaN for
    g = ±∞, NaN; ``zero`` the array's 0, so that the value keeps its dtype), else g — a NaN
    y passes g, as torch's ``threshold_backward`` does. Inlined into ``backward``,
    ``backward_in_place``, ``bias_backward``, and the batch norm's, Winograd's, direct's
    and the bias sums' kernels that take the ReLU's bprop as they read G
    (``BatchNorm2d``, ``Conv2d``)."""
    return g * zero if y <= 0 else g


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
    zero = grad.dtype.type(0)
    for i in range(gs.size):
        outs[i] = masked(gs[i], ys[i], zero)


@njit(**_JIT)
def add_forward(x1, x2, y, lo, hi):
    """y[i] = max(x1[i] + x2[i], 0) for i in [lo, hi), as ``forward`` takes the sum: a sum
    and the ReLU after it (``merge.Add.forward_relu``) in one pass."""
    as_, bs, ys = x1[lo:hi], x2[lo:hi], y[lo:hi]
    zero = y.dtype.type(0)
    for i in range(ys.size):
        ys[i] = rectify(as_[i] + bs[i], zero)


@njit(**_JIT)
def forward_in_place(x, lo, hi):
    """x[i] ← max(x[i], 0) for i in [lo, hi): ``forward`` with y = x (``ReLU(inplace)``).
    One array, so that LLVM vectorizes the loop: given x twice, ``forward``'s vector loop
    finds its two arrays overlapping and runs its scalar one (128 × 512 float32: 13–14 µs
    against 2)."""
    xs = x[lo:hi]
    zero = x.dtype.type(0)
    for i in range(xs.size):
        xs[i] = rectify(xs[i], zero)


@njit(**_JIT)
def bias_forward(a, b, lo, hi):
    """a[n, j] ← max(a[n, j] + b[j], 0) in place for rows n in [lo, hi), as ``a += b`` and
    then ``forward`` take them: a ``Linear``'s bias and the ReLU after it
    (``Linear.forward_relu``) in one pass over its product a = x Wᵀ. (Rows taken by
    index: ``for row in a`` left the loop unvectorized, 17 µs against 3 on 128 × 512.)"""
    zero = a.dtype.type(0)
    rows = a[lo:hi]
    for n in range(rows.shape[0]):
        row = rows[n]
        for j in range(row.size):
            row[j] = rectify(row[j] + b[j], zero)


@njit(**_JIT)
def bias_backward(grad, y, out, sums, lo, hi):
    """out = grad·1_{y > 0} (as ``backward``) and, where ``sums`` is not None,
    sums[j] = Σ_n out[n, j] summed as ``numpy.sum(out, axis=0)`` sums a C-contiguous array
    (+0, then each row added in order: a column of −0 sums to +0), for columns j in
    [lo, hi): the ReLU's bprop and a ``Linear``'s bias gradient in one pass
    (``Linear.backward`` after ``forward_relu``)."""
    if sums is not None:
        ss = sums[lo:hi]
        zero = ss.dtype.type(0)
        for j in range(ss.size):
            ss[j] = zero
    zero = grad.dtype.type(0)
    for n in range(grad.shape[0]):
        gs, ys, outs = grad[n][lo:hi], y[n][lo:hi], out[n][lo:hi]
        for j in range(gs.size):
            outs[j] = masked(gs[j], ys[j], zero)
        if sums is not None:
            for j in range(ss.size):
                ss[j] += outs[j]


@njit(**_JIT)
def backward_in_place(grad, y, lo, hi):
    """grad[i] ← grad[i]·1_{y[i] > 0} for i in [lo, hi): ``backward`` with out = grad
    (``ReLU(inplace)``), vectorized where ``backward`` given grad twice is not (128 × 512
    float32: 16 µs against 5)."""
    gs, ys = grad[lo:hi], y[lo:hi]
    zero = grad.dtype.type(0)
    for i in range(gs.size):
        gs[i] = masked(gs[i], ys[i], zero)
