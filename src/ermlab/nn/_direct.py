"""3×3 stride-1 convolution by direct summation, one compiled pass per sample (Numba).

    y[n, o, p, q] = b[o] + Σ_c Σ_{i,j} W[o, c, i, j] x̃[n, c, p + i, q + j]

with x̃ the sample zero-padded by (p_h, p_w). No columns are made: each sample is copied once
into a padded buffer, and the sum is taken there, four output channels at a time, each
input row read once for the three taps j of a kernel row i.

Full-width rows (as ``Conv2d``'s full-width columns): the padded planes are read as one
flat array, and output position t = p·W_p + q takes x̃ at t + i·W_p + j, so one loop over t
runs over whole rows of W_p values, vectorized, instead of OH loops of OW. The W_p − OW
positions per row past the output's edge are computed (from the next row's values) and
dropped when the outputs are copied out; two values of slack after the last plane keep
the last row's reads inside the buffer.

Where it pays: 3×3 layers with few channels, where Winograd's transforms and im2col's copies
cost as much as their GEMMs (``Conv2d``'s ``algorithm="auto"`` rule). Measured (Xeon VM,
1 thread, batch 128, 32×32 maps, forward, paired rounds): 16→16 19.4 → 13.6 ms, 3→16
7.5 → 3.5 ms, 16→32 42.7 → 31.4 ms against im2col. It runs in the lanes of samples of
``Conv2d`` (``nogil``): one call per lane, so the lanes do not take turns at the GIL
between many small NumPy calls. Its input gradient is the forward pass of the transposed
convolution (``Conv2d._transposed``), so it runs here too; ∂L/∂W stays on the GEMMs.

Numerics: each output is b + Σ_c Σ_i (w_i0 x_0 + w_i1 x_1 + w_i2 x_2) in that order, with
multiply-adds fused (Numba's ``contract``), so results differ from im2col's GEMMs by
rounding only, and are the same for any number of lanes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

_JIT = dict(nogil=True, cache=True, fastmath={"contract"}, error_model="numpy")

# The outputs of one chunk of positions take at most this many bytes (O × chunk values),
# so they stay in cache while every channel adds into them. Measured (16→16 on 32×32):
# one chunk per 32×32 plane (1088 positions, 70 KiB) is faster than chunks of 256 or 544.
ACC_BYTES = 2**18


@njit(**_JIT)
def correlate(x, weight, bias, y, pad_h, pad_w, lo, hi, padded, acc):  # pragma: no cover
    """y[n] for samples n in [lo, hi) of x (N, C, H, W), with ``weight`` W laid out as
    (C, 3, 3, O) (W[o, c, i, j] at [c, i, j, o]) and b ``bias``.

    ``padded`` is a zero array of at least C·H_p·W_p + 2 values whose borders stay zero (the
    interior is written per sample), ``acc`` (O, chunk) scratch for the outputs of one
    chunk of full-width positions."""
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    outputs, out_h, out_w = y.shape[1], y.shape[2], y.shape[3]
    wp = width + 2 * pad_w
    plane = (height + 2 * pad_h) * wp
    length = out_h * wp
    chunk = acc.shape[1]
    for n in range(lo, hi):
        for c in range(channels):
            for i in range(height):
                inside = x[n, c, i]
                row = padded[c * plane + (pad_h + i) * wp + pad_w:]
                for j in range(width):
                    row[j] = inside[j]
        for t0 in range(0, length, chunk):
            size = min(chunk, length - t0)
            for o in range(outputs):
                a = acc[o]
                beta = bias[o]
                for t in range(size):
                    a[t] = beta
            for c in range(channels):
                for i in range(3):
                    r0 = padded[c * plane + i * wp + t0:]
                    r1 = r0[1:]
                    r2 = r0[2:]
                    w = weight[c, i]
                    # (range(0, O − 3, 4), not range(0, O − O % 4, 4): LLVM vectorizes the loop
                    # below 7× slower with the latter, measured)
                    for o in range(0, outputs - 3, 4):
                        a0 = acc[o]
                        a1 = acc[o + 1]
                        a2 = acc[o + 2]
                        a3 = acc[o + 3]
                        u0 = w[0, o]; u1 = w[1, o]; u2 = w[2, o]  # noqa: E702
                        v0 = w[0, o + 1]; v1 = w[1, o + 1]; v2 = w[2, o + 1]  # noqa: E702
                        s0 = w[0, o + 2]; s1 = w[1, o + 2]; s2 = w[2, o + 2]  # noqa: E702
                        z0 = w[0, o + 3]; z1 = w[1, o + 3]; z2 = w[2, o + 3]  # noqa: E702
                        for t in range(size):
                            x0 = r0[t]
                            x1 = r1[t]
                            x2 = r2[t]
                            a0[t] += u0 * x0 + u1 * x1 + u2 * x2
                            a1[t] += v0 * x0 + v1 * x1 + v2 * x2
                            a2[t] += s0 * x0 + s1 * x1 + s2 * x2
                            a3[t] += z0 * x0 + z1 * x1 + z2 * x2
                    for o in range(outputs - outputs % 4, outputs):
                        a = acc[o]
                        u0 = w[0, o]; u1 = w[1, o]; u2 = w[2, o]  # noqa: E702
                        for t in range(size):
                            a[t] += u0 * r0[t] + u1 * r1[t] + u2 * r2[t]
            first = t0 // wp
            last = min(out_h, (t0 + size + wp - 1) // wp)
            for o in range(outputs):
                a = acc[o]
                for p in range(first, last):
                    begin = p * wp - t0
                    row = y[n, o, p]
                    for q in range(out_w):
                        k = begin + q
                        if k >= 0 and k < size:
                            row[q] = a[k]


@njit(**dict(_JIT, fastmath={"contract", "reassoc"}))
def weight_gradient(x, grad_y, pad_h, pad_w, lo, hi, padded, grad, total):  # pragma: no cover
    """total[c, i, j, o] += Σ_n Σ_{p,q} ∂L/∂y[n, o, p, q] x̃[n, c, p + i, q + j] for samples n in
    [lo, hi), each sample's sum added on its own.

    ``padded`` as in ``correlate``; ``grad`` (O, OH·W_p) scratch for one sample's ∂L/∂y in
    full-width rows, zero in the W_p − OW columns past each row (never written). The sums
    over positions are reductions: ``reassoc`` lets them run in vector registers, so their
    order of addition is the compiler's (fixed for a given build and machine)."""
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    outputs, out_h, out_w = grad_y.shape[1], grad_y.shape[2], grad_y.shape[3]
    wp = width + 2 * pad_w
    plane = (height + 2 * pad_h) * wp
    length = out_h * wp
    for n in range(lo, hi):
        for c in range(channels):
            for i in range(height):
                inside = x[n, c, i]
                row = padded[c * plane + (pad_h + i) * wp + pad_w:]
                for j in range(width):
                    row[j] = inside[j]
        for o in range(outputs):
            for p in range(out_h):
                inside = grad_y[n, o, p]
                row = grad[o, p * wp:]
                for q in range(out_w):
                    row[q] = inside[q]
        for c in range(channels):
            for i in range(3):
                r0 = padded[c * plane + i * wp:]
                r1 = r0[1:]
                r2 = r0[2:]
                for o in range(0, outputs - 3, 4):  # (see correlate)
                    g0 = grad[o]
                    g1 = grad[o + 1]
                    g2 = grad[o + 2]
                    g3 = grad[o + 3]
                    s00 = s01 = s02 = s10 = s11 = s12 = x.dtype.type(0)
                    s20 = s21 = s22 = s30 = s31 = s32 = x.dtype.type(0)
                    for t in range(length):
                        x0 = r0[t]
                        x1 = r1[t]
                        x2 = r2[t]
                        s00 += g0[t] * x0
                        s01 += g0[t] * x1
                        s02 += g0[t] * x2
                        s10 += g1[t] * x0
                        s11 += g1[t] * x1
                        s12 += g1[t] * x2
                        s20 += g2[t] * x0
                        s21 += g2[t] * x1
                        s22 += g2[t] * x2
                        s30 += g3[t] * x0
                        s31 += g3[t] * x1
                        s32 += g3[t] * x2
                    out = total[c, i]
                    out[0, o] += s00
                    out[1, o] += s01
                    out[2, o] += s02
                    out[0, o + 1] += s10
                    out[1, o + 1] += s11
                    out[2, o + 1] += s12
                    out[0, o + 2] += s20
                    out[1, o + 2] += s21
                    out[2, o + 2] += s22
                    out[0, o + 3] += s30
                    out[1, o + 3] += s31
                    out[2, o + 3] += s32
                for o in range(outputs - outputs % 4, outputs):
                    g0 = grad[o]
                    s00 = s01 = s02 = x.dtype.type(0)
                    for t in range(length):
                        s00 += g0[t] * r0[t]
                        s01 += g0[t] * r1[t]
                        s02 += g0[t] * r2[t]
                    out = total[c, i]
                    out[0, o] += s00
                    out[1, o] += s01
                    out[2, o] += s02


def forward(x: Any, weight: Any, bias: Any, y: Any, padding: tuple[int, int], lo: int,
            hi: int, work: Any) -> None:
    """y[lo:hi] of the 3×3 stride-1 correlation of x (N, C, H, W), zero-padded by
    ``padding``, with ``weight`` in ``weight_layout`` and ``bias`` (O,), all C-contiguous.

    ``work(name, size, key)`` returns a reused flat work array of ``size`` values (zero
    when first made, and made again when ``key`` changes)."""
    c, o = x.shape[1], y.shape[1]
    wp = x.shape[3] + 2 * padding[1]
    size = c * (x.shape[2] + 2 * padding[0]) * wp + 2
    padded = work("direct_padded", size, (x.shape[1:], padding))
    length = y.shape[2] * wp
    chunk = max(1, min(length, max(wp, ACC_BYTES // (o * x.dtype.itemsize))))
    acc = work("direct_acc", o * chunk, ()).reshape(o, chunk)
    correlate(x, weight, bias, y, padding[0], padding[1], lo, hi, padded, acc)


def backward_weights(x: Any, grad_y: Any, padding: tuple[int, int], lo: int, hi: int,
                     work: Any) -> Any:
    """Σ_n ∂L/∂W over samples [lo, hi) in ``weight_layout`` (C, 3, 3, O), a new array."""
    c, o = x.shape[1], grad_y.shape[1]
    wp = x.shape[3] + 2 * padding[1]
    padded = work("direct_padded", c * (x.shape[2] + 2 * padding[0]) * wp + 2,
                  (x.shape[1:], padding))
    grad = work("direct_grad", o * grad_y.shape[2] * wp, (grad_y.shape[1:], wp))
    total = np.zeros((c, 3, 3, o), dtype=x.dtype)
    weight_gradient(x, grad_y, padding[0], padding[1], lo, hi, padded,
                    grad.reshape(o, grad_y.shape[2] * wp), total)
    return total


def weight_layout(weight: Any) -> Any:
    """W (O, C, 3, 3) as ``correlate`` reads it: (C, 3, 3, O), C-contiguous."""
    return np.ascontiguousarray(weight.transpose(1, 2, 3, 0))
