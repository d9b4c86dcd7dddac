"""Max pooling's scan and its bprop in compiled passes (Numba), bit for bit the NumPy path
of ``pooling.MaxPool2d`` (outputs, winners and, for finite ∂L/∂y, ∂L/∂x).

The NumPy path takes K_h·K_w strided passes over the padded batch (a running maximum and
a running winner), then fixes windows with a NaN or only −∞. Each window here is scanned
as torch's kernels scan it: over its entries inside the input in row-major (i, j) order,
from best = −∞ and the first entry inside as winner, keeping an entry that is greater than
the best so far or is NaN. The winner is stored as the offset k = i·K_w + j, as the NumPy
path stores it. bprop adds each ∂L/∂y to its winner's input, in K passes over the
outputs (k = 0, 1, …), so every input receives its additions in the NumPy path's order.

The scan runs a plane at a time, tap by tap over every output at once: the plane is
copied, padded with −∞, into S_h·S_w phase planes (rows ≡ a mod S_h, columns ≡ b mod S_w),
where tap (i, j) of output t = p·W_h + q lies at t plus a fixed offset, so each tap is one
loop over the plane's full-width rows with a select per output instead of a branch, which
the compiler vectorizes (``max_forward``; bprop the same way, ``max_backward``, or for
strides and small planes one scalar pass over the outputs in reverse order,
``max_backward_scatter``: ``pooling.PLANES_MIN_OUTPUTS``; planes of few outputs are
scanned a window at a time, ``max_forward_windows``). Measured
(AMD EPYC Zen 4, 1 thread, kernels alone, ms, forward/backward, the window-at-a-time scan
with its branches → these): 3×3 stride 1 padding 1 on 32×96×32×32 (an inception module's
pooling branch) 92.6/47.8 → 8.0/8.1, on 32×480×8×8 20.8/13.7 → 3.9/4.9; 3×3 stride 2
padding 1 on 128×64×32×32 50.4/30.0 → 14.5/15.7, on 128×64×56×56 (ResNet-18's stem)
185/107 → 53/59, on 32×240×16×16 14.1/9.1 → 7.0/7.3.

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


@njit(inline="always", **_JIT)
def _planes(height, width, kernel_w, stride_h, stride_w, pad_h, pad_w):
    """(H_h, W_h, size): the padded plane (H + 2p_h) × (W + 2p_w) as S_h·S_w phase planes of
    H_h × W_h (rows ≡ a mod S_h and columns ≡ b mod S_w, one after the other), and the
    values a work array for them takes, with slack after the last for the taps of the
    last full-width row."""
    hh = -(-(height + 2 * pad_h) // stride_h)
    wh = -(-(width + 2 * pad_w) // stride_w)
    return hh, wh, stride_h * stride_w * hh * wh + (kernel_w - 1) // stride_w + wh


@njit(inline="always", **_JIT)
def _tap_offset(i, j, stride_h, stride_w, hh, wh):
    """Where tap (i, j) of output t = p·W_h + q reads in the phase planes: t + this."""
    return ((i % stride_h) * stride_w + j % stride_w) * hh * wh + (i // stride_h) * wh \
        + j // stride_w


@njit(inline="always", **_JIT)
def _copy_planes(plane, pad_h, pad_w, stride_h, stride_w, hh, wh, planes, into):
    """The plane (H, W) into the interior of ``planes`` (phase planes, ``_planes``) where
    ``into``, else that interior back into the plane: row r of x̃ lies in row phase
    r mod S_h, input columns ≡ b − p_w (mod S_w) in column phase b, each a run of
    contiguous values there (constant steps, which the compiler vectorizes, for S_w ≤ 2)."""
    width = plane.shape[1]
    for r_in in range(plane.shape[0]):
        r = r_in + pad_h
        base = ((r % stride_h) * stride_w) * hh * wh + (r // stride_h) * wh
        row = plane[r_in]
        for b in range(stride_w):
            first = (b - pad_w) % stride_w  # the first input column in column phase b
            at = planes[base + b * hh * wh + (pad_w + first) // stride_w:]
            values = row[first:]
            count = (width - first + stride_w - 1) // stride_w
            if stride_w == 1:
                if into:
                    for m in range(count):
                        at[m] = values[m]
                else:
                    for m in range(count):
                        values[m] = at[m]
            elif stride_w == 2:
                if into:
                    for m in range(count):
                        at[m] = values[2 * m]
                else:
                    for m in range(count):
                        values[2 * m] = at[m]
            elif into:
                for m in range(count):
                    at[m] = values[m * stride_w]
            else:
                for m in range(count):
                    values[m * stride_w] = at[m]


@njit(inline="always", **_JIT)
def _first_inside(p, q, kernel_w, stride_h, stride_w, pad_h, pad_w):
    """k = i₀·K_w + j₀ of window (p, q)'s first entry inside the input."""
    return max(0, pad_h - stride_h * p) * kernel_w + max(0, pad_w - stride_w * q)


@njit(**_JIT)
def max_forward(x, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, y, winner, lo,
                hi):  # pragma: no cover
    """y[n] and (unless ``winner`` is None) winner[n] for samples n in [lo, hi).

    One plane at a time, padded with −∞ and laid out as phase planes (``_planes``), so that
    tap (i, j) of every output reads at a fixed offset from t = p·W_h + q: each tap, in
    row-major (i, j) order, is one loop over all full-width positions t of the plane,
    without branches (a select per position), which the compiler vectorizes; the W_h − OW
    positions past each row's last output are computed and dropped. Per output that is the
    scan of the module docstring: a −∞ of the padding is never greater than the best so far
    nor NaN, so it changes nothing, and a winner still −1 at the end (a window of −∞ only)
    becomes the window's first entry inside."""
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    out_h, out_w = y.shape[2], y.shape[3]
    lowest = -x.dtype.type(1) / x.dtype.type(0)
    hh, wh, size = _planes(height, width, kernel_w, stride_h, stride_w, pad_h, pad_w)
    planes = np.full(size, lowest, dtype=x.dtype)
    length = out_h * wh
    best = np.empty(length, dtype=x.dtype)
    arg = np.empty(length, dtype=np.int32)
    for n in range(lo, hi):
        for c in range(channels):
            _copy_planes(x[n, c], pad_h, pad_w, stride_h, stride_w, hh, wh, planes, True)
            for t in range(length):
                best[t] = lowest
            if winner is not None:
                for t in range(length):
                    arg[t] = -1
            for i in range(kernel_h):
                for j in range(kernel_w):
                    k = i * kernel_w + j
                    source = planes[_tap_offset(i, j, stride_h, stride_w, hh, wh):]
                    if winner is None:
                        for t in range(length):
                            value, b = source[t], best[t]
                            best[t] = value if (value > b) | (value != value) else b
                    else:
                        for t in range(length):
                            value, b, a = source[t], best[t], arg[t]
                            take = (value > b) | (value != value)
                            best[t] = value if take else b
                            arg[t] = k if take else a
            out = y[n, c]
            for p in range(out_h):
                row, at = out[p], best[p * wh:]
                for q in range(out_w):
                    row[q] = at[q]
                if winner is not None:
                    won, at_arg = winner[n, c, p], arg[p * wh:]
                    for q in range(out_w):
                        a = at_arg[q]
                        won[q] = a if a >= 0 else _first_inside(
                            p, q, kernel_w, stride_h, stride_w, pad_h, pad_w)


@njit(**_JIT)
def max_forward_windows(x, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, y, winner,
                        lo, hi):  # pragma: no cover
    """``max_forward`` a window at a time, scanned entry by entry with its branches: for
    planes of few outputs, where a pass per tap over a plane's phase planes costs more than
    it saves (``pooling.FORWARD_PLANES_MIN_OUTPUTS``)."""
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    out_h, out_w = y.shape[2], y.shape[3]
    lowest = -x.dtype.type(1) / x.dtype.type(0)
    for n in range(lo, hi):
        for c in range(channels):
            plane, out = x[n, c], y[n, c]
            for p in range(out_h):
                top = p * stride_h - pad_h
                for q in range(out_w):
                    left = q * stride_w - pad_w
                    best, arg = lowest, -1
                    for i in range(kernel_h):
                        r = top + i
                        if r < 0 or r >= height:
                            continue
                        row = plane[r]
                        for j in range(kernel_w):
                            s = left + j
                            if s < 0 or s >= width:
                                continue
                            value = row[s]
                            if arg < 0:
                                arg = i * kernel_w + j
                            if value > best or value != value:
                                best, arg = value, i * kernel_w + j
                    out[p, q] = best
                    if winner is not None:
                        winner[n, c, p, q] = arg


@njit(**_JIT)
def max_backward(grad_out, winner, kernel_w, stride_h, stride_w, pad_h, pad_w, offsets, grad,
                 lo, hi):  # pragma: no cover
    """grad[n] = ∂L/∂y routed to the winners, samples [lo, hi) (every value written); the
    offsets k = 0 … ``offsets`` − 1 in turn, each one loop over the plane's
    full-width positions t = p·W_h + q into ∂L/∂x̃ laid out as ``max_forward``'s phase
    planes: every position's entry k gets g where k won and +0 where it did not (and at
    the positions past each row's outputs, whose g is 0 and winner −1), a select instead
    of a branch, so the loop vectorizes; then the interior is copied out. Every input gets
    its additions in the order of the module docstring; the +0 change no value, since
    ∂L/∂x̃ starts at +0 and a sum of floats from +0 is never −0, the one value +0 would
    change."""
    channels, out_h, out_w = grad_out.shape[1], grad_out.shape[2], grad_out.shape[3]
    height, width = grad.shape[2], grad.shape[3]
    zero = grad.dtype.type(0)
    hh, wh, size = _planes(height, width, kernel_w, stride_h, stride_w, pad_h, pad_w)
    planes = np.empty(size, dtype=grad.dtype)
    length = out_h * wh
    flat_g = np.zeros(length, dtype=grad.dtype)  # past each row's outputs: 0, winner −1
    flat_won = np.full(length, -1, dtype=np.int32)
    for n in range(lo, hi):
        for c in range(channels):
            for p in range(out_h):
                g, won = grad_out[n, c, p], winner[n, c, p]
                to_g, to_won = flat_g[p * wh:], flat_won[p * wh:]
                for q in range(out_w):
                    to_g[q] = g[q]
                    to_won[q] = won[q]
            for t in range(size):
                planes[t] = zero
            for k in range(offsets):
                target = planes[_tap_offset(k // kernel_w, k % kernel_w, stride_h, stride_w,
                                            hh, wh):]
                for t in range(length):
                    target[t] += flat_g[t] if flat_won[t] == k else zero
            _copy_planes(grad[n, c], pad_h, pad_w, stride_h, stride_w, hh, wh, planes, False)


@njit(**_JIT)
def max_backward_scatter(grad_out, winner, kernel_w, stride_h, stride_w, pad_h, pad_w,
                         grad, lo, hi):  # pragma: no cover
    """grad[n] (zeroed here) += each ∂L/∂y at its winner, samples [lo, hi): one pass over
    the outputs in reverse row-major order. An input's windows (p, q) hold it at offset
    k = (r + p_h − S_h p)·K_w + (s + p_w − S_w q), which grows as p, then q, falls: so
    every input receives its additions in the order of k, as in ``max_backward``."""
    zero = grad.dtype.type(0)
    out_h, out_w = grad_out.shape[2], grad_out.shape[3]
    for n in range(lo, hi):
        for c in range(grad_out.shape[1]):
            plane, g, won = grad[n, c], grad_out[n, c], winner[n, c]
            for r in range(plane.shape[0]):
                row = plane[r]
                for s in range(plane.shape[1]):
                    row[s] = zero
            for p in range(out_h - 1, -1, -1):
                top, gp, wp = p * stride_h - pad_h, g[p], won[p]
                for q in range(out_w - 1, -1, -1):
                    k = wp[q]
                    i = k // kernel_w
                    plane[top + i, q * stride_w - pad_w + k - i * kernel_w] += gp[q]


@njit(**_JIT)
def avg_forward(x, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, scale, y, lo,
                hi):  # pragma: no cover
    """y[n] = (Σ_{i,j} x̃ at tap (i, j)) · ``scale`` (1/(K_h·K_w) in x's dtype) for samples
    n in [lo, hi), x̃ zero-padded: the NumPy path's sum (the first tap's values, then each
    tap's added in row-major order, padding zeros included) and product, one loop over a
    plane's full-width positions per tap as in ``max_forward``."""
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    out_h, out_w = y.shape[2], y.shape[3]
    hh, wh, size = _planes(height, width, kernel_w, stride_h, stride_w, pad_h, pad_w)
    planes = np.zeros(size, dtype=x.dtype)
    length = out_h * wh
    total = np.empty(length, dtype=x.dtype)
    for n in range(lo, hi):
        for c in range(channels):
            _copy_planes(x[n, c], pad_h, pad_w, stride_h, stride_w, hh, wh, planes, True)
            for t in range(length):  # tap (0, 0): offset 0
                total[t] = planes[t]
            for k in range(1, kernel_h * kernel_w):
                source = planes[_tap_offset(k // kernel_w, k % kernel_w, stride_h, stride_w,
                                            hh, wh):]
                for t in range(length):
                    total[t] += source[t]
            out = y[n, c]
            for p in range(out_h):
                row, at = out[p], total[p * wh:]
                for q in range(out_w):
                    row[q] = at[q] * scale


@njit(**_JIT)
def avg_backward(grad_out, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, scale, grad,
                 lo, hi):  # pragma: no cover
    """grad[n] (every value written) for samples n in [lo, hi): the share g·``scale`` of each
    output to every entry of its window, as the NumPy path gives it (its ``_scatter``): tap
    by tap in row-major order, added where windows overlap and written where they do not
    (stride ≥ kernel both ways: each entry in one window at most), over ∂L/∂x̃ laid out as
    ``max_forward``'s phase planes, then the interior copied out."""
    channels, out_h, out_w = grad_out.shape[1], grad_out.shape[2], grad_out.shape[3]
    height, width = grad.shape[2], grad.shape[3]
    zero = grad.dtype.type(0)
    disjoint = stride_h >= kernel_h and stride_w >= kernel_w
    hh, wh, size = _planes(height, width, kernel_w, stride_h, stride_w, pad_h, pad_w)
    planes = np.empty(size, dtype=grad.dtype)
    length = out_h * wh
    share = np.zeros(length, dtype=grad.dtype)  # past each row's outputs: 0
    for n in range(lo, hi):
        for c in range(channels):
            for p in range(out_h):
                g, to = grad_out[n, c, p], share[p * wh:]
                for q in range(out_w):
                    to[q] = g[q] * scale
            for t in range(size):
                planes[t] = zero
            for k in range(kernel_h * kernel_w):
                target = planes[_tap_offset(k // kernel_w, k % kernel_w, stride_h, stride_w,
                                            hh, wh):]
                if disjoint:
                    for t in range(length):
                        target[t] = share[t]
                else:
                    for t in range(length):
                        target[t] += share[t]
            _copy_planes(grad[n, c], pad_h, pad_w, stride_h, stride_w, hh, wh, planes, False)


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
