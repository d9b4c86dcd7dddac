"""Max pooling's scan and its bprop in compiled passes (Numba), bit for bit the NumPy path
of ``pooling.MaxPool2d`` (outputs, winners and, for finite ∂L/∂y, ∂L/∂x).

The NumPy path takes K_h·K_w strided passes over the padded batch (a running maximum and
a running winner), then fixes windows with a NaN or only −∞; each window here is scanned
once, as torch's kernels do: over its entries inside the input in row-major (i, j) order,
from best = −∞ and the first entry inside as winner, keeping an entry that is greater than
the best so far or is NaN. The winner is stored as the offset k = i·K_w + j, as the NumPy
path stores it. bprop adds each ∂L/∂y to its winner's input, in K passes over the
outputs (k = 0, 1, …), so every input receives its additions in the NumPy path's order.
2×2 windows with stride 2 (LeNet's, VGG's) have kernels of their own, the same comparisons
unrolled, and a bprop that writes each input once (windows do not overlap); its inputs
that no window won get +0 where the NumPy path's masked products give g·0 (−0 for a
negative g, NaN for a NaN g, which torch does not spread either).
Used through ``nn._fused``; releases the GIL, so ``MaxPool2d``'s lanes of samples run at
once.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ermlab import _numba_target  # noqa: F401 - the vector width, before a kernel compiles

_JIT = dict(nogil=True, cache=True, fastmath=False, error_model="numpy")


def _inside(offset, stride, size, count):  # pragma: no cover
    """[q₀, q₁): the outputs q < ``count`` whose entry q·stride + offset lies in [0, size)."""
    first = max(0, -(offset // stride))  # ⌈−offset / stride⌉
    last = min(count, (size - 1 - offset) // stride + 1)
    return first, max(first, last)


_inside = njit(inline="always", **_JIT)(_inside)


@njit(**_JIT)
def max_forward(x, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, y, winner, lo,
                hi):  # pragma: no cover
    """y[n] and (unless ``winner`` is None) winner[n] for samples n in [lo, hi).

    A row of outputs at a time, tap by tap in row-major (i, j) order: each tap updates the
    running best and winner of every output whose entry (i, j) lies inside the input, in
    one loop over those outputs without branches (a select per output), which the compiler
    vectorizes; per output that is the scan of the module docstring, entry by entry. The
    winner starts at −1 and takes the first entry inside."""
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    out_h, out_w = y.shape[2], y.shape[3]
    lowest = -x.dtype.type(1) / x.dtype.type(0)
    arg = np.empty(out_w, dtype=np.int32)
    for n in range(lo, hi):
        for c in range(channels):
            plane, out = x[n, c], y[n, c]
            for p in range(out_h):
                best = out[p]
                for q in range(out_w):
                    best[q] = lowest
                    arg[q] = -1
                top = p * stride_h - pad_h
                for i in range(kernel_h):
                    r = top + i
                    if r < 0 or r >= height:
                        continue
                    row = plane[r]
                    for j in range(kernel_w):
                        k = i * kernel_w + j
                        offset = j - pad_w
                        q0, q1 = _inside(offset, stride_w, width, out_w)
                        # views from q₀, indexed from 0 (indices the compiler knows are not
                        # negative: no wraparound test, so the loops vectorize)
                        source, b_row, a_row = row[q0 * stride_w + offset:], best[q0:], arg[q0:]
                        if winner is None:
                            if stride_w == 1:
                                for t in range(q1 - q0):
                                    value, b = source[t], b_row[t]
                                    b_row[t] = value if (value > b) | (value != value) else b
                            else:
                                for t in range(q1 - q0):
                                    value, b = source[2 * t] if stride_w == 2 else source[t * stride_w], b_row[t]
                                    b_row[t] = value if (value > b) | (value != value) else b
                        elif stride_w == 1:
                            for t in range(q1 - q0):
                                value, b, a = source[t], b_row[t], a_row[t]
                                a = k if a < 0 else a
                                take = (value > b) | (value != value)
                                b_row[t] = value if take else b
                                a_row[t] = k if take else a
                        else:
                            for t in range(q1 - q0):
                                value, b, a = source[2 * t] if stride_w == 2 else source[t * stride_w], b_row[t], a_row[t]
                                a = k if a < 0 else a
                                take = (value > b) | (value != value)
                                b_row[t] = value if take else b
                                a_row[t] = k if take else a
                if winner is not None:
                    won = winner[n, c, p]
                    for q in range(out_w):
                        won[q] = arg[q]


@njit(**_JIT)
def max_backward(grad_out, winner, kernel_w, stride_h, stride_w, pad_h, pad_w, offsets, grad,
                 lo, hi):  # pragma: no cover
    """grad[n] (zeroed by the caller) += ∂L/∂y routed to the winners, samples [lo, hi);
    the offsets k = 0 … ``offsets`` − 1 in turn, each over the outputs whose entry k lies
    inside the input, row by row: every such entry gets g where k won and +0 where it did
    not, a select instead of a branch (the loop vectorizes). Adding +0 changes no value
    here: ∂L/∂x starts at +0 and a sum of floats from +0 is never −0, the one value +0
    would change."""
    channels, out_h, out_w = grad_out.shape[1], grad_out.shape[2], grad_out.shape[3]
    height, width = grad.shape[2], grad.shape[3]
    zero = grad.dtype.type(0)
    for n in range(lo, hi):
        for c in range(channels):
            plane, g, won = grad[n, c], grad_out[n, c], winner[n, c]
            for k in range(offsets):
                i, j = k // kernel_w, k % kernel_w
                offset = j - pad_w
                q0, q1 = _inside(offset, stride_w, width, out_w)
                for p in range(out_h):
                    r = p * stride_h - pad_h + i
                    if r < 0 or r >= height:
                        continue
                    target = plane[r, q0 * stride_w + offset:]
                    gp, wp = g[p, q0:], won[p, q0:]
                    if stride_w == 1:
                        for t in range(q1 - q0):
                            target[t] += gp[t] if wp[t] == k else zero
                    else:
                        for t in range(q1 - q0):
                            target[2 * t if stride_w == 2 else t * stride_w] += gp[t] if wp[t] == k else zero


@njit(**_JIT)
def max2x2_forward(x, y, winner, lo, hi):  # pragma: no cover
    """``max_forward`` for 2×2 windows with stride 2 and no padding (LeNet's, VGG's), the
    four entries of each window compared in the same order without the scan's loops."""
    for n in range(lo, hi):
        for c in range(x.shape[1]):
            for p in range(y.shape[2]):
                top, low, out = x[n, c, 2 * p], x[n, c, 2 * p + 1], y[n, c, p]
                for q in range(y.shape[3]):
                    best, arg = top[2 * q], 0
                    value = top[2 * q + 1]
                    if value > best or value != value:
                        best, arg = value, 1
                    value = low[2 * q]
                    if value > best or value != value:
                        best, arg = value, 2
                    value = low[2 * q + 1]
                    if value > best or value != value:
                        best, arg = value, 3
                    out[q] = best
                    if winner is not None:
                        winner[n, c, p, q] = arg


@njit(**_JIT)
def max2x2_backward(grad_out, winner, grad, lo, hi):  # pragma: no cover
    """grad[n] for samples [lo, hi) after ``max2x2_forward``: each ∂L/∂y to its window's
    winner and 0 to the three others (so every input is written once, no zeroing first;
    a last row or column outside every window, of an odd size, gets 0)."""
    zero = grad.dtype.type(0)
    height, width = grad.shape[2], grad.shape[3]
    for n in range(lo, hi):
        for c in range(grad.shape[1]):
            for p in range(grad_out.shape[2]):
                g, won = grad_out[n, c, p], winner[n, c, p]
                top, low = grad[n, c, 2 * p], grad[n, c, 2 * p + 1]
                for s in range(2 * grad_out.shape[3]):  # input columns, contiguous writes
                    k, value, odd = won[s >> 1], g[s >> 1], s & 1
                    top[s] = value if k == odd else zero
                    low[s] = value if k == 2 + odd else zero
                if width % 2:
                    top[width - 1] = zero
                    low[width - 1] = zero
            if height % 2:
                last = grad[n, c, height - 1]
                for s in range(width):
                    last[s] = zero
