"""3×3 convolution by Winograd's minimal filtering algorithm F(2×2, 3×3) (Lavin & Gray 2016).

Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks" (CVPR 2016), after
Winograd (1980): a 2×2 tile of outputs of a 3×3 correlation with kernel w reads a 4×4 tile
d of the (padded) input, and

    Y = Aᵀ [ (G w Gᵀ) ⊙ (Bᵀ d B) ] A

with

    Bᵀ = [1  0 −1  0]     G = [1    0    0 ]     Aᵀ = [1  1  1  0]
         [0  1  1  0]         [1/2  1/2  1/2]          [0  1 −1 −1]
         [0 −1  1  0]         [1/2 −1/2  1/2]
         [0  1  0 −1]         [0    0    1 ]

takes 16 multiplications instead of 36 (2.25× fewer). Over channels the product is a
sum, so for each of the 16 positions ξ of the 4×4 transformed tile it is one matrix
product over all tiles b of a block of samples:

    U_ξ = (G w Gᵀ)_ξ  (O × C),   V_ξ[c, b] = (Bᵀ d_{c,b} B)_ξ,   M_ξ = U_ξ V_ξ  (O × tiles),

and Y_{o,b} = Aᵀ M_{·,o,b} A. With G groups, U holds each output channel's C/G filters,
(16, O, C/G), and each M_ξ is G products, group g's rows of U_ξ times its rows of V_ξ: the
transforms are unchanged, as they are per channel. The 16 GEMMs do the arithmetic; the
input transform V, the output transform and bias, and their adjoints are single passes
compiled with Numba. A lane's whole loop over its blocks, GEMMs included (``np.dot`` in
Numba: SciPy's BLAS, held to one thread), is one ``nogil`` call, so lanes run at once
without taking turns at the GIL. bprop with ∂L/∂Y (Lavin & Gray §4.1; every step is
linear, so each adjoint is the transposed map):

    ∂L/∂M_{·,o,b} = A (∂L/∂Y_{o,b}) Aᵀ,    ∂L/∂U_ξ = Σ_blocks ∂L/∂M_ξ V_ξᵀ,
    ∂L/∂V_ξ = U_ξᵀ ∂L/∂M_ξ,               ∂L/∂d_{c,b} = B (∂L/∂V_{·,c,b}) Bᵀ (tiles overlap
    by 2 rows and columns: their input gradients add),      ∂L/∂w = Gᵀ (∂L/∂U) G.

V is made again in bprop from the cached input (as ``Conv2d`` makes its columns again),
a block of samples at a time, so nothing of batch size is kept between fprop and bprop.

Numerics: the transforms add and subtract (and G halves), so results differ from direct
summation by rounding only. Measured against float64 (He-initialized 3×3 convolution of
unit normal inputs, largest error over the largest output): float32 Winograd 2.6e-7 and
3.7e-7 (32→32 on 16×16, 64→64 on 8×8), im2col 2.8e-7 and 5.6e-7, torch's float32
convolution 3.3e-7 and 3.3e-7; the tests hold it to torch within float32 tolerances and
to finite differences in float64.

Used by ``Conv2d`` for 3×3 kernels with stride 1, dilation 1 and no groups, on NumPy
arrays, where Numba is installed (``pip install "ermlab[fast]"``) and not turned off
(``ERMLAB_FUSED=0``); ``Conv2d(algorithm="im2col")`` keeps the GEMM-on-columns path.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from numba import njit

from ermlab import _numba_target  # noqa: F401 - the vector width, before a kernel compiles
from ermlab._numba_cache import drop_stale
from ermlab.nn import _relu_kernels
from ermlab.nn._relu_kernels import masked, rectify
from ermlab.threads import BlasOneThread, run_ranges

drop_stale(__file__, _relu_kernels.__file__)  # kernels below inline its functions

_JIT = dict(nogil=True, cache=True, fastmath=False, error_model="numpy")


def tiles(out_h: int, out_w: int) -> tuple[int, int]:
    """Tiles of 2×2 outputs per plane: (⌈OH/2⌉, ⌈OW/2⌉)."""
    return (out_h + 1) // 2, (out_w + 1) // 2


def filter_transform(weight: Any, lanes: Any = None) -> Any:
    """U = G w Gᵀ for every (o, c): (16, O, C), position ξ = 4 i + j, C-contiguous
    (``_filter_transform``), the output channels in ``lanes`` (ranges [lo, hi) of them,
    one per thread; None: one)."""
    u = np.empty((16, weight.shape[0], weight.shape[1]), dtype=weight.dtype)
    run_ranges(lanes or [(0, weight.shape[0])], _filter_transform,
               np.ascontiguousarray(weight), u)
    return u


def filter_transform_adjoint(grad_u: Any, shape: tuple[int, ...], lanes: Any = None) -> Any:
    """∂L/∂w = Gᵀ (∂L/∂U) G, from ∂L/∂U (16, O, C) to ``shape`` (O, C, 3, 3)
    (``_filter_transform_adjoint``), the output channels in ``lanes`` as above."""
    grad_w = np.empty(shape, dtype=grad_u.dtype)
    run_ranges(lanes or [(0, shape[0])], _filter_transform_adjoint,
               np.ascontiguousarray(grad_u), grad_w)
    return grad_w


@njit(**_JIT)
def _filter_transform(weight, u, lo, hi):  # pragma: no cover
    """u[4 i + j, o, c] = (G w[o, c] Gᵀ)[i, j] for output channels o in [lo, hi), G's rows
    written out: a row (a, b, c) of three values becomes (a, (a + b + c)/2, (a − b + c)/2,
    c), first down the columns of w (G w, 4 × 3), then along the rows of that (· Gᵀ,
    4 × 4). One output channel at a time, each step a pass over all C input channels
    (vector registers; w's taps read 9 values apart), the last writing u's rows. The same
    operations on each value as one (o, c) at a time, which this replaced (a scalar loop;
    measured, AMD EPYC Zen 4, 1 thread, 512 → 512: 6.3 → 3.2 ms a transform; w laid out
    as 9 rows of C values first took 4.1). ``np.einsum`` took 0.25–0.67 ms per layer here
    (its contraction path chosen again at every call)."""
    half = weight.dtype.type(0.5)
    channels = weight.shape[1]
    flat = weight.reshape(weight.shape[0], channels * 9)  # flat[o, 9 c + 3 r + k] = w[o, c, r, k]
    t = np.empty((12, channels), dtype=weight.dtype)  # t[3 i + k] = (G w)[i, k]
    for o in range(lo, hi):
        w = flat[o]
        for k in range(3):  # G w
            t0, t1, t2, t3 = t[k], t[3 + k], t[6 + k], t[9 + k]
            for c in range(channels):
                a, b, d = w[9 * c + k], w[9 * c + 3 + k], w[9 * c + 6 + k]
                t0[c] = a
                t1[c] = (a + b + d) * half
                t2[c] = (a - b + d) * half
                t3[c] = d
        for i in range(4):  # (G w) Gᵀ
            a, b, d = t[3 * i], t[3 * i + 1], t[3 * i + 2]
            u0, u1, u2, u3 = u[4 * i, o], u[4 * i + 1, o], u[4 * i + 2, o], u[4 * i + 3, o]
            for c in range(channels):
                u0[c] = a[c]
                u1[c] = (a[c] + b[c] + d[c]) * half
                u2[c] = (a[c] - b[c] + d[c]) * half
                u3[c] = d[c]


@njit(**_JIT)
def _filter_transform_adjoint(grad_u, grad_w, lo, hi):  # pragma: no cover
    """grad_w[o, c] = Gᵀ M G with M[i, j] = grad_u[4 i + j, o, c] for output channels o in
    [lo, hi): a row (m₀, m₁, m₂, m₃) becomes (m₀ + (m₁ + m₂)/2, (m₁ − m₂)/2,
    (m₁ + m₂)/2 + m₃), down the columns of M (Gᵀ M, 3 × 4), then along the rows of that
    (· G, 3 × 3). As ``_filter_transform``, one output channel at a time over rows of C
    values, ∂L/∂w[o] made as 9 rows of C values (``taps``) and laid out (C, 3, 3) last
    (512 → 512, 1 thread: 5.3 → 2.8 ms; written 9 values apart instead, 4.2)."""
    half = grad_u.dtype.type(0.5)
    channels = grad_w.shape[1]
    t = np.empty((12, channels), dtype=grad_u.dtype)  # t[4 k + j] = (Gᵀ M)[k, j]
    taps = np.empty((9, channels), dtype=grad_u.dtype)  # taps[3 k + l, c] = ∂L/∂w[o, c, k, l]
    for o in range(lo, hi):
        for j in range(4):  # Gᵀ M
            m0, m1 = grad_u[j, o], grad_u[4 + j, o]
            m2, m3 = grad_u[8 + j, o], grad_u[12 + j, o]
            t0, t1, t2 = t[j], t[4 + j], t[8 + j]
            for c in range(channels):
                t0[c] = m0[c] + (m1[c] + m2[c]) * half
                t1[c] = (m1[c] - m2[c]) * half
                t2[c] = (m1[c] + m2[c]) * half + m3[c]
        for k in range(3):  # (Gᵀ M) G
            m0, m1, m2, m3 = t[4 * k], t[4 * k + 1], t[4 * k + 2], t[4 * k + 3]
            w0, w1, w2 = taps[3 * k], taps[3 * k + 1], taps[3 * k + 2]
            for c in range(channels):
                w0[c] = m0[c] + (m1[c] + m2[c]) * half
                w1[c] = (m1[c] - m2[c]) * half
                w2[c] = (m1[c] + m2[c]) * half + m3[c]
        for c in range(channels):
            out = grad_w[o, c]
            for k in range(3):
                for l in range(3):
                    out[k, l] = taps[3 * k + l, c]


@njit(inline="always", **_JIT)
def _rows(stack, start):  # pragma: no cover
    """The 16 rows ``stack[ξ, start:]`` (one tile row's values at each position ξ)."""
    return (stack[0, start:], stack[1, start:], stack[2, start:], stack[3, start:],
            stack[4, start:], stack[5, start:], stack[6, start:], stack[7, start:],
            stack[8, start:], stack[9, start:], stack[10, start:], stack[11, start:],
            stack[12, start:], stack[13, start:], stack[14, start:], stack[15, start:])


@njit(inline="always", **_JIT)
def _combos(p0, p1, p2, p3, s):  # pragma: no cover
    """Bᵀ d for column ``s`` of the four rows p0..p3: (p0 − p2, p1 + p2, p2 − p1, p1 − p3)."""
    return p0[s] - p2[s], p1[s] + p2[s], p2[s] - p1[s], p1[s] - p3[s]


@njit(inline="always", **_JIT)
def _columns(r0, r1, r2, r3):  # pragma: no cover
    """(Bᵀ d) B for one row of Bᵀ d over a tile's four columns: (r0 − r2, r1 + r2, r2 − r1,
    r1 − r3)."""
    return r0 - r2, r1 + r2, r2 - r1, r1 - r3


@njit(**_JIT)
def input_transform(x, lo, hi, pad_h, pad_w, tiles_h, tiles_w, v, size,
                    plane):  # pragma: no cover
    """V[ξ, c·size + (n − lo)·T + t] = (Bᵀ d B)_ξ for samples n in [lo, hi) of x (N, C, H, W),
    every channel c and tile t = t_h·T_w + t_w (T = T_h·T_w tiles per plane); ``v`` is
    (16, ≥ C·size), ``size`` the tiles of the block.

    ``plane`` is a zero array of at least (2 T_h + 2, 2 T_w + 2): each input plane is
    copied into it at (pad_h, pad_w), so its borders are the zero padding (and the
    extra row and column an odd output size reads). Rows are taken as slices and walked
    from index 0 (Numba then needs no negative-index wraparound; ~20 % faster).

    Four tiles a step: the row sums Bᵀ d of their ten columns first (each column's once:
    a tile's last two columns are the next one's first two), then V's 16 rows four
    consecutive values at a time. The loop stays scalar (its stores go to 16 rows of V,
    and LLVM does not vectorize it), but loads ahead of their stores, and stores in runs
    along a row, run faster than one tile a step: the same sums in the same order, bit
    for bit. Measured (AMD EPYC Zen 5, 1 thread, 64 samples in the blocks ``forward``
    takes, paired, ms; one tile a step with its column sums carried → four): 32 channels
    on 16×16 0.68–0.76 → 0.52–0.56, 16 on 32×32 1.28–1.60 → 1.04–1.30, 64 on 8×8
    0.34–0.42 → 0.30; two tiles a step about as fast, eight slower on 8×8 (0.37), and the
    four tiles' values stored tile by tile no faster than before (0.68). Slower, all bit
    for bit the same: the input in four planes by the parity of row and column (every
    load unit-stride) with one loop per tile row (1.0 ms for the 16×16 case: not
    vectorized) or four (vectorized, 1.4–1.7: rows of 4–16 tiles are too short for
    vectors), or one loop per position ξ over a whole plane with a spare tile column
    (1.4). ``output_transform`` four tiles a step was slower (0.47 → 0.50–0.81 ms on
    16×16), and without its odd-size branches LLVM vectorized it 3× slower."""
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    count = tiles_h * tiles_w
    fours = tiles_w - tiles_w % 4
    for n in range(lo, hi):
        base = (n - lo) * count
        for c in range(channels):
            source = x[n, c]
            for i in range(height):
                row, inside = plane[pad_h + i, pad_w:pad_w + width], source[i]
                for j in range(width):
                    row[j] = inside[j]
            for th in range(tiles_h):
                p0, p1, p2, p3 = plane[2 * th], plane[2 * th + 1], plane[2 * th + 2], \
                    plane[2 * th + 3]
                o = c * size + base + th * tiles_w
                for t in range(0, fours, 4):
                    s = 2 * t
                    # rows: Bᵀ d for columns s … s + 9 (a, b, e, f: its four rows)
                    a0, b0, e0, f0 = _combos(p0, p1, p2, p3, s)
                    a1, b1, e1, f1 = _combos(p0, p1, p2, p3, s + 1)
                    a2, b2, e2, f2 = _combos(p0, p1, p2, p3, s + 2)
                    a3, b3, e3, f3 = _combos(p0, p1, p2, p3, s + 3)
                    a4, b4, e4, f4 = _combos(p0, p1, p2, p3, s + 4)
                    a5, b5, e5, f5 = _combos(p0, p1, p2, p3, s + 5)
                    a6, b6, e6, f6 = _combos(p0, p1, p2, p3, s + 6)
                    a7, b7, e7, f7 = _combos(p0, p1, p2, p3, s + 7)
                    a8, b8, e8, f8 = _combos(p0, p1, p2, p3, s + 8)
                    a9, b9, e9, f9 = _combos(p0, p1, p2, p3, s + 9)
                    # columns: (Bᵀ d) B, row by row of Bᵀ d, tile t + q from its columns
                    # 2q … 2q + 3
                    k, k1, k2, k3 = o + t, o + t + 1, o + t + 2, o + t + 3
                    v[0, k], v[1, k], v[2, k], v[3, k] = _columns(a0, a1, a2, a3)
                    v[0, k1], v[1, k1], v[2, k1], v[3, k1] = _columns(a2, a3, a4, a5)
                    v[0, k2], v[1, k2], v[2, k2], v[3, k2] = _columns(a4, a5, a6, a7)
                    v[0, k3], v[1, k3], v[2, k3], v[3, k3] = _columns(a6, a7, a8, a9)
                    v[4, k], v[5, k], v[6, k], v[7, k] = _columns(b0, b1, b2, b3)
                    v[4, k1], v[5, k1], v[6, k1], v[7, k1] = _columns(b2, b3, b4, b5)
                    v[4, k2], v[5, k2], v[6, k2], v[7, k2] = _columns(b4, b5, b6, b7)
                    v[4, k3], v[5, k3], v[6, k3], v[7, k3] = _columns(b6, b7, b8, b9)
                    v[8, k], v[9, k], v[10, k], v[11, k] = _columns(e0, e1, e2, e3)
                    v[8, k1], v[9, k1], v[10, k1], v[11, k1] = _columns(e2, e3, e4, e5)
                    v[8, k2], v[9, k2], v[10, k2], v[11, k2] = _columns(e4, e5, e6, e7)
                    v[8, k3], v[9, k3], v[10, k3], v[11, k3] = _columns(e6, e7, e8, e9)
                    v[12, k], v[13, k], v[14, k], v[15, k] = _columns(f0, f1, f2, f3)
                    v[12, k1], v[13, k1], v[14, k1], v[15, k1] = _columns(f2, f3, f4, f5)
                    v[12, k2], v[13, k2], v[14, k2], v[15, k2] = _columns(f4, f5, f6, f7)
                    v[12, k3], v[13, k3], v[14, k3], v[15, k3] = _columns(f6, f7, f8, f9)
                for t in range(fours, tiles_w):  # the last tiles of a row, one at a time
                    s, k = 2 * t, o + t
                    a0, b0, e0, f0 = _combos(p0, p1, p2, p3, s)
                    a1, b1, e1, f1 = _combos(p0, p1, p2, p3, s + 1)
                    a2, b2, e2, f2 = _combos(p0, p1, p2, p3, s + 2)
                    a3, b3, e3, f3 = _combos(p0, p1, p2, p3, s + 3)
                    v[0, k], v[1, k], v[2, k], v[3, k] = _columns(a0, a1, a2, a3)
                    v[4, k], v[5, k], v[6, k], v[7, k] = _columns(b0, b1, b2, b3)
                    v[8, k], v[9, k], v[10, k], v[11, k] = _columns(e0, e1, e2, e3)
                    v[12, k], v[13, k], v[14, k], v[15, k] = _columns(f0, f1, f2, f3)


@njit(**_JIT)
def output_transform(m, size, lo, hi, tiles_w, bias, y):  # pragma: no cover
    """y[n, o] (samples n in [lo, hi)) = Aᵀ M A tile by tile, plus ``bias[o]``, from ``m``
    (16, ≥ O·size); the outputs of a last tile past an odd OH or OW are not written."""
    outputs, out_h, out_w = y.shape[1], y.shape[2], y.shape[3]
    tiles_h = (out_h + 1) // 2
    count = tiles_h * tiles_w
    for n in range(lo, hi):
        base = (n - lo) * count
        for o in range(outputs):
            beta = bias[o]
            for th in range(tiles_h):
                r = 2 * th
                (m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14,
                 m15) = _rows(m, o * size + base + th * tiles_w)
                top = y[n, o, r]
                full = r + 1 < out_h
                bottom = y[n, o, r + 1] if full else top
                for t in range(tiles_w):
                    s = 2 * t
                    # rows: Aᵀ M
                    p0 = m0[t] + m4[t] + m8[t]
                    p1 = m1[t] + m5[t] + m9[t]
                    p2 = m2[t] + m6[t] + m10[t]
                    p3 = m3[t] + m7[t] + m11[t]
                    q0 = m4[t] - m8[t] - m12[t]
                    q1 = m5[t] - m9[t] - m13[t]
                    q2 = m6[t] - m10[t] - m14[t]
                    q3 = m7[t] - m11[t] - m15[t]
                    # columns: (Aᵀ M) A
                    top[s] = p0 + p1 + p2 + beta
                    if s + 1 < out_w:
                        top[s + 1] = p1 - p2 - p3 + beta
                    if full:
                        bottom[s] = q0 + q1 + q2 + beta
                        if s + 1 < out_w:
                            bottom[s + 1] = q1 - q2 - q3 + beta


@njit(**_JIT)
def output_transform_adjoint(grad_y, lo, hi, tiles_w, grad_m, size, y,
                             relu):  # pragma: no cover
    """∂L/∂M[·, o·size + (n − lo)·T + t] = A (∂L/∂Y tile) Aᵀ for samples n in [lo, hi),
    outputs past an odd OH or OW counting as 0. With ``relu``, ∂L/∂Y is G·1_{y > 0} (the
    bprop of the ReLU that ``forward`` applied, y its output), taken as each value is read
    (``_relu_kernels.masked``) instead of from an array of it."""
    outputs, out_h, out_w = grad_y.shape[1], grad_y.shape[2], grad_y.shape[3]
    tiles_h = (out_h + 1) // 2
    count = tiles_h * tiles_w
    zero = grad_y.dtype.type(0)
    for n in range(lo, hi):
        base = (n - lo) * count
        for o in range(outputs):
            for th in range(tiles_h):
                r = 2 * th
                (d0, d1, d2, d3, d4, d5, d6, d7, d8, d9, d10, d11, d12, d13, d14,
                 d15) = _rows(grad_m, o * size + base + th * tiles_w)
                top = grad_y[n, o, r]
                full = r + 1 < out_h
                bottom = grad_y[n, o, r + 1] if full else top
                y_top = y[n, o, r] if relu else top
                y_bottom = y[n, o, r + 1] if relu and full else y_top
                for t in range(tiles_w):
                    s = 2 * t
                    wide = s + 1 < out_w
                    g00 = top[s]
                    g01 = top[s + 1] if wide else zero
                    g10 = bottom[s] if full else zero
                    g11 = bottom[s + 1] if (full and wide) else zero
                    if relu:
                        g00 = masked(g00, y_top[s], zero)
                        if wide:
                            g01 = masked(g01, y_top[s + 1], zero)
                        if full:
                            g10 = masked(g10, y_bottom[s], zero)
                        if full and wide:
                            g11 = masked(g11, y_bottom[s + 1], zero)
                    # rows: A g → (g0, g0 + g1, g0 − g1, −g1) per column
                    a0, a1 = g00, g01
                    b0, b1 = g00 + g10, g01 + g11
                    e0, e1 = g00 - g10, g01 - g11
                    f0, f1 = -g10, -g11
                    # columns: (A g) Aᵀ
                    d0[t], d1[t], d2[t], d3[t] = a0, a0 + a1, a0 - a1, -a1
                    d4[t], d5[t], d6[t], d7[t] = b0, b0 + b1, b0 - b1, -b1
                    d8[t], d9[t], d10[t], d11[t] = e0, e0 + e1, e0 - e1, -e1
                    d12[t], d13[t], d14[t], d15[t] = f0, f0 + f1, f0 - f1, -f1


@njit(**_JIT)
def input_transform_adjoint(grad_v, size, lo, hi, pad_h, pad_w, tiles_h, tiles_w, grad_x,
                            plane):  # pragma: no cover
    """∂L/∂x[n, c] for samples n in [lo, hi): B (∂L/∂V tile) Bᵀ added onto the padded
    plane at each tile's place (tiles overlap), then the plane without its padding.
    ``plane`` is scratch of at least (2 T_h + 2, 2 T_w + 2)."""
    channels, height, width = grad_x.shape[1], grad_x.shape[2], grad_x.shape[3]
    count = tiles_h * tiles_w
    zero = grad_x.dtype.type(0)
    for n in range(lo, hi):
        base = (n - lo) * count
        for c in range(channels):
            for i in range(2 * tiles_h + 2):
                row = plane[i]
                for j in range(2 * tiles_w + 2):
                    row[j] = zero
            for th in range(tiles_h):
                q0, q1, q2, q3 = plane[2 * th], plane[2 * th + 1], plane[2 * th + 2], \
                    plane[2 * th + 3]
                (g0, g1, g2, g3, g4, g5, g6, g7, g8, g9, g10, g11, g12, g13, g14,
                 g15) = _rows(grad_v, c * size + base + th * tiles_w)
                for t in range(tiles_w):
                    s = 2 * t
                    # columns: ∂V Bᵀ → row k: (v0, v1 − v2 + v3, −v0 + v1 + v2, −v3)
                    k0, k1, k2, k3 = g0[t], g1[t], g2[t], g3[t]
                    a0, a1, a2, a3 = k0, k1 - k2 + k3, k1 + k2 - k0, -k3
                    k0, k1, k2, k3 = g4[t], g5[t], g6[t], g7[t]
                    b0, b1, b2, b3 = k0, k1 - k2 + k3, k1 + k2 - k0, -k3
                    k0, k1, k2, k3 = g8[t], g9[t], g10[t], g11[t]
                    e0, e1, e2, e3 = k0, k1 - k2 + k3, k1 + k2 - k0, -k3
                    k0, k1, k2, k3 = g12[t], g13[t], g14[t], g15[t]
                    f0, f1, f2, f3 = k0, k1 - k2 + k3, k1 + k2 - k0, -k3
                    # rows: B (∂V Bᵀ) → (a, b − e + f, b + e − a, −f)
                    q0[s] += a0
                    q0[s + 1] += a1
                    q0[s + 2] += a2
                    q0[s + 3] += a3
                    q1[s] += b0 - e0 + f0
                    q1[s + 1] += b1 - e1 + f1
                    q1[s + 2] += b2 - e2 + f2
                    q1[s + 3] += b3 - e3 + f3
                    q2[s] += b0 + e0 - a0
                    q2[s + 1] += b1 + e1 - a1
                    q2[s + 2] += b2 + e2 - a2
                    q2[s + 3] += b3 + e3 - a3
                    q3[s] -= f0
                    q3[s + 1] -= f1
                    q3[s + 2] -= f2
                    q3[s + 3] -= f3
            for i in range(height):
                row, inside = grad_x[n, c, i], plane[pad_h + i, pad_w:pad_w + width]
                for j in range(width):
                    row[j] = inside[j]


# -- the layer's passes, a block of samples at a time ---------------------------------

# Samples per block: their V (16·C·T values, or 16·O·T for M) takes at most this many
# bytes, so the GEMMs read V, and the output transform M, from cache right after they are
# made. Measured (Xeon, 1.25 MiB of L2 per core, 1 thread, batch 128, forward/backward ms):
# 64→64 on 8×8 10.1/22.5 with 1 MiB, 8.2/21.3 with 128 KiB; 32→32 on 16×16 15.3/34.7 with
# 1 MiB, 10.7/24.7 with 256 KiB; 16→16 on 32×32 within noise from 128 KiB to 2 MiB.
BLOCK_BYTES = 2**18


def _level2_bytes(root: str = "/sys/devices/system/cpu/cpu0/cache") -> int:
    """The size of this CPU's level-2 cache in bytes, as Linux describes cpu0's caches
    (``index*/level`` and ``size``, e.g. "2048K"); 0 where it cannot be read."""
    try:
        for entry in sorted(e for e in os.listdir(root) if e.startswith("index")):
            with open(os.path.join(root, entry, "level")) as level:
                if level.read().strip() != "2":
                    continue
            with open(os.path.join(root, entry, "size")) as size:
                text = size.read().strip().upper()
            scale = {"K": 2**10, "M": 2**20}.get(text[-1:], 1)
            return int(text.rstrip("KM")) * scale
    except (OSError, ValueError):
        pass
    return 0


# bprop's blocks may take a quarter of the level-2 cache (never less than BLOCK_BYTES): each
# block's V and ∂L/∂M are both read by its GEMMs. Measured (Intel Xeon VM, 2 MiB of L2 a
# core, 2 threads, batch 128, bprop ms, 256 KiB → 512 KiB, paired in one process): 32→32 on
# 16×16 7.94 → 7.12, 64→64 on 8×8 6.25 → 5.79, 64→64 on 16×16 25.8 → 22.7, 32→32 on 32×32
# 38.0 → 38.1; fprop within ±4 % (so it keeps BLOCK_BYTES).
BACKWARD_BLOCK_BYTES = max(BLOCK_BYTES, _level2_bytes() // 4)
# ... but a block holds at least this many tiles per channel (of the larger count): with
# many channels on small planes, blocks of ``BLOCK_BYTES`` hold a few tiles, and each
# block's GEMMs, O × C outputs over so few tiles, write more than they read: bprop's
# Σ ∂L/∂U writes all 16·O·C of them per block. Measured (AMD EPYC Zen 5, 2 threads, batch
# 128, forward/backward ms, none → these): 512→512 on 4×4 36.5/146.1 → 17.2/31.9, 256→256
# on 8×8 17.8/63.4 → 14.5/33.3, 512→512 on 2×2 12.5/40.2 → 8.1/13.9 (PyTorch 18.5/39.4 on
# 4×4); 128→128 on 8×8 even in bprop, its fprop slower with 0.5 (3.9 → 4.9: V no longer
# fits in L2), so fprop asks for fewer; 64 and 32 channels (ResNet-20): unchanged.
FORWARD_TILES_PER_CHANNEL = 0.25
BACKWARD_TILES_PER_CHANNEL = 0.5
# Values between the end of one position's matrix in V (or M) and the start of the next.
# Without it the 16 matrices lie a multiple of 4 KiB apart for many shapes, so the
# transforms' 16 streams (one per position) fall into the same L1 cache sets and evict one
# another: measured (Xeon, 16 channels on 32×32) the input transform 39 ms → 9 ms per batch.
SKEW = 16


def _block(lo: int, hi: int, channels: int, count: int, itemsize: int,
           tiles_per_channel: float, budget: int | None = None) -> int:
    """Samples per block of [lo, hi): at most ``budget`` (default ``BLOCK_BYTES``) of V
    (or M), 16·``channels`` (the larger count) × ``count`` tiles per sample, but enough
    samples for ``tiles_per_channel`` · ``channels`` tiles (one sample at least)."""
    budget = BLOCK_BYTES if budget is None else budget
    by_bytes = budget // max(1, 16 * channels * count * itemsize)
    by_tiles = -(-int(tiles_per_channel * channels) // count)
    return max(1, min(hi - lo, max(by_bytes, by_tiles)))


@njit(inline="always", **_JIT)
def _stack(flat, rows, size):  # pragma: no cover
    """16 matrices (rows × size), C-contiguous each, ``SKEW`` values apart, in ``flat``, as
    (16, rows · size + SKEW) for the transforms (matrix ξ's row r starts at [ξ, r · size])."""
    stride = rows * size + SKEW
    return flat[: 16 * stride].reshape(16, stride)


@njit(inline="always", **_JIT)
def _matrix(flat, k, rows, size):  # pragma: no cover
    """Matrix ξ = k of ``_stack``'s 16, as (rows, size), for the GEMMs."""
    stride = rows * size + SKEW
    return flat[k * stride:k * stride + rows * size].reshape(rows, size)


def forward(x: Any, u: Any, bias: Any, y: Any, padding: tuple[int, int], lo: int, hi: int,
            work: Any, relu: bool = False) -> None:
    """y[lo:hi] of the 3×3 stride-1 correlation of x (N, C, H, W), zero-padded by
    ``padding``, with U = G w Gᵀ (16, O, C/G) and ``bias`` (O,): per block of samples
    V (input transform), M_ξ = U_ξ V_ξ (16 GEMMs) and y = Aᵀ M A + b, all in one compiled
    call (``_forward_blocks``). ``relu``: max(y, 0) instead (``Conv2d.forward_relu``), as
    ``_relu_kernels.forward`` takes it, over each block's outputs right after they are made.

    ``work(name, size, key)`` returns a reused flat work array of ``size`` values
    (zero when first made, and made again when ``key`` changes)."""
    c, o = x.shape[1], y.shape[1]
    tiles_h, tiles_w = tiles(y.shape[2], y.shape[3])
    count = tiles_h * tiles_w
    plane = _plane(work, x.shape, padding, tiles_h, tiles_w)
    block = _block(lo, hi, max(c, o), count, x.dtype.itemsize, FORWARD_TILES_PER_CHANNEL)
    v_all = work("winograd_v", 16 * (c * block * count + SKEW), ())
    m_all = work("winograd_m", 16 * (o * block * count + SKEW), ())
    with BlasOneThread():
        _forward_blocks(x, u, bias, y, padding[0], padding[1], lo, hi, tiles_h, tiles_w, block,
                        plane, v_all, m_all, relu)


def backward(x: Any, grad_y: Any, u: Any, padding: tuple[int, int], lo: int, hi: int,
             work: Any, grad_x: Any = None, weights: bool = True, y: Any = None) -> Any:
    """bprop of ``forward`` for samples [lo, hi): writes ∂L/∂x of those samples into
    ``grad_x`` (None: not wanted) and returns their Σ ∂L/∂U (16, O, C/G) (None if not
    ``weights``), per block of samples, in one compiled call (``_backward_blocks``); given
    ``y``, the output of a ``forward`` with ``relu``, ``grad_y`` is ∂L/∂max(y, 0) and the
    ReLU's bprop is taken as it is read (``output_transform_adjoint``):

        ∂L/∂M = A ∂L/∂Y Aᵀ,  ∂L/∂U_ξ += ∂L/∂M_ξ V_ξᵀ,  ∂L/∂V_ξ = U_ξᵀ ∂L/∂M_ξ,
        ∂L/∂d = B ∂L/∂V Bᵀ  (overlapping tiles added).
    """
    c, o = x.shape[1], grad_y.shape[1]
    tiles_h, tiles_w = tiles(grad_y.shape[2], grad_y.shape[3])
    count = tiles_h * tiles_w
    plane = _plane(work, x.shape, padding, tiles_h, tiles_w)
    grad_plane = work("winograd_grad_plane", plane.size, ()).reshape(plane.shape)
    block = _block(lo, hi, max(c, o), count, x.dtype.itemsize,
                   BACKWARD_TILES_PER_CHANNEL, BACKWARD_BLOCK_BYTES)
    v_all = work("winograd_v", 16 * (c * block * count + SKEW), ())
    m_all = work("winograd_m", 16 * (o * block * count + SKEW), ())
    none = np.zeros((0, 0, 0), dtype=u.dtype)
    cg = u.shape[2]  # input channels a group
    total = np.zeros((16, o, cg), dtype=u.dtype) if weights else none
    part = work("winograd_u", 16 * o * cg, ()).reshape(16, o, cg) if weights else none
    inputs = grad_x is not None
    nothing = np.zeros((0, 0, 0, 0), dtype=u.dtype)
    with BlasOneThread():
        _backward_blocks(x, grad_y, u, padding[0], padding[1], lo, hi, tiles_h, tiles_w, block,
                         plane, grad_plane, v_all, m_all, weights, total, part, inputs,
                         grad_x if inputs else nothing, nothing if y is None else y,
                         y is not None)
    return total if weights else None


def _plane(work: Any, x_shape: tuple[int, ...], padding: tuple[int, int], tiles_h: int,
           tiles_w: int) -> Any:
    """The lane's zero-bordered plane for ``input_transform`` (2 T_h + 2, 2 T_w + 2)."""
    shape = (2 * tiles_h + 2, 2 * tiles_w + 2)
    return work("winograd_plane", shape[0] * shape[1], (x_shape[2:], padding, shape)).reshape(
        shape)


# One call per lane runs every block, its 16 GEMMs each included (``np.dot`` in Numba
# calls SciPy's BLAS, held to one thread by ``BlasOneThread``), so a lane takes the GIL
# once, not three times per block. Measured (2 vCPUs, batch 128, 32→32 on 16×16, forward,
# paired): one lane 11.4 → 9.3 ms, two lanes 8.0 → 4.9 ms (blocks of one to four samples:
# the lanes took turns at the GIL between the NumPy GEMMs and the transforms).
@njit(**_JIT)
def _forward_blocks(x, u, bias, y, pad_h, pad_w, lo, hi, tiles_h, tiles_w, block, plane,
                    v_all, m_all, relu):  # pragma: no cover
    c, o = x.shape[1], y.shape[1]
    cg = u.shape[2]  # input channels a group: C with no groups
    groups = c // cg
    og = o // groups
    count = tiles_h * tiles_w
    for start in range(lo, hi, block):
        stop = min(hi, start + block)
        size = (stop - start) * count
        v, m = _stack(v_all, c, size), _stack(m_all, o, size)
        input_transform(x, start, stop, pad_h, pad_w, tiles_h, tiles_w, v, size, plane)
        for k in range(16):
            uk, vk, mk = u[k], _matrix(v_all, k, c, size), _matrix(m_all, k, o, size)
            for g in range(groups):  # M_ξ = U_ξ V_ξ, group by group
                np.dot(uk[g * og:(g + 1) * og], vk[g * cg:(g + 1) * cg], mk[g * og:(g + 1) * og])
        output_transform(m, size, start, stop, tiles_w, bias, y)
        if relu:  # the block's outputs, still in cache
            _rectify(y, start, stop)


@njit(inline="always", **_JIT)
def _rectify(y, start, stop):  # pragma: no cover
    """y[start:stop] = max(y, 0) (``_relu_kernels.rectify``), a sample's values at a time."""
    zero = y.dtype.type(0)
    for n in range(start, stop):
        values = y[n].reshape(y[n].size)
        for i in range(values.size):
            values[i] = rectify(values[i], zero)


@njit(inline="always", **_JIT)
def _add_into(total, part):  # pragma: no cover
    """total += part over the flat arrays: Numba's in-place add of two 3-D arrays ran as a
    scalar loop (a survey of the compiled loops found it; (16, O, C) with O = C = 16 … 128,
    AMD EPYC Zen 4, 1 thread: 2.1–99.5 → 0.6–25.2 µs; whole bprops 16→16 on 32×32 to
    256→256 on 4×4 1.02–1.08× faster), the same sums."""
    flat_total, flat_part = total.reshape(total.size), part.reshape(part.size)
    for i in range(flat_total.size):
        flat_total[i] += flat_part[i]


@njit(**_JIT)
def _backward_blocks(x, grad_y, u, pad_h, pad_w, lo, hi, tiles_h, tiles_w, block, plane,
                     grad_plane, v_all, m_all, weights, total, part, inputs,
                     grad_x, y, relu):  # pragma: no cover
    c, o = x.shape[1], grad_y.shape[1]
    cg = u.shape[2]  # input channels a group: C with no groups
    groups = c // cg
    og = o // groups
    count = tiles_h * tiles_w
    for start in range(lo, hi, block):
        stop = min(hi, start + block)
        size = (stop - start) * count
        v, grad_m = _stack(v_all, c, size), _stack(m_all, o, size)
        output_transform_adjoint(grad_y, start, stop, tiles_w, grad_m, size, y, relu)
        if weights:
            input_transform(x, start, stop, pad_h, pad_w, tiles_h, tiles_w, v, size, plane)
            for k in range(16):
                vk, mk, pk = _matrix(v_all, k, c, size), _matrix(m_all, k, o, size), part[k]
                for g in range(groups):  # ∂L/∂U_ξ = ∂L/∂M_ξ V_ξᵀ, group by group
                    np.dot(mk[g * og:(g + 1) * og], vk[g * cg:(g + 1) * cg].T,
                           pk[g * og:(g + 1) * og])
            _add_into(total, part)
        if inputs:
            for k in range(16):
                uk, vk, mk = u[k], _matrix(v_all, k, c, size), _matrix(m_all, k, o, size)
                for g in range(groups):  # ∂L/∂V_ξ = U_ξᵀ ∂L/∂M_ξ, group by group
                    np.dot(uk[g * og:(g + 1) * og].T, mk[g * og:(g + 1) * og],
                           vk[g * cg:(g + 1) * cg])
            input_transform_adjoint(v, size, start, stop, pad_h, pad_w, tiles_h, tiles_w,
                                    grad_x, grad_plane)
