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

and Y_{o,b} = Aᵀ M_{·,o,b} A. The 16 GEMMs (NumPy's BLAS) do the arithmetic; the input
transform V, the output transform and bias, and their adjoints are single passes compiled
with Numba (``nogil``, so lanes run them at once). bprop with ∂L/∂Y (Lavin & Gray §4.1;
every step is linear, so each adjoint is the transposed map):

    ∂L/∂M_{·,o,b} = A (∂L/∂Y_{o,b}) Aᵀ,    ∂L/∂U_ξ = Σ_blocks ∂L/∂M_ξ V_ξᵀ,
    ∂L/∂V_ξ = U_ξᵀ ∂L/∂M_ξ,               ∂L/∂d_{c,b} = B (∂L/∂V_{·,c,b}) Bᵀ (tiles overlap
    by 2 rows and columns: their input gradients add),      ∂L/∂w = Gᵀ (∂L/∂U) G.

V is made again in bprop from the cached input (as ``Conv2d`` makes its columns again),
a block of samples at a time, so nothing of batch size is kept between fprop and bprop.

Numerics: the transforms add and subtract (and G halves), so results differ from direct
summation by rounding only; Lavin & Gray measure F(2×2, 3×3) in float32 as accurate as
direct convolution (their Table 5), and the tests hold it to torch's convolution within
float32 tolerances and to finite differences in float64.

Used by ``Conv2d`` for 3×3 kernels with stride 1, dilation 1 and no groups, on NumPy
arrays, where Numba is installed (``pip install "ermlab[fast]"``) and not turned off
(``ERMLAB_FUSED=0``); ``Conv2d(algorithm="im2col")`` keeps the GEMM-on-columns path.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

_JIT = dict(nogil=True, cache=True, fastmath=False, error_model="numpy")


def tiles(out_h: int, out_w: int) -> tuple[int, int]:
    """Tiles of 2×2 outputs per plane: (⌈OH/2⌉, ⌈OW/2⌉)."""
    return (out_h + 1) // 2, (out_w + 1) // 2


def filter_transform(weight: Any) -> Any:
    """U = G w Gᵀ for every (o, c): (16, O, C), position ξ = 4 i + j, C-contiguous."""
    g = _g_matrix(weight.dtype)
    u = np.einsum("ik,ockl,jl->ijoc", g, weight, g, optimize=True)
    return np.ascontiguousarray(u.reshape(16, weight.shape[0], weight.shape[1]))


def filter_transform_adjoint(grad_u: Any, shape: tuple[int, ...]) -> Any:
    """∂L/∂w = Gᵀ (∂L/∂U) G, from ∂L/∂U (16, O, C) to ``shape`` (O, C, 3, 3)."""
    g = _g_matrix(grad_u.dtype)
    grad_u = grad_u.reshape(4, 4, shape[0], shape[1])
    return np.einsum("ik,ijoc,jl->ockl", g, grad_u, g, optimize=True)


def _g_matrix(dtype: Any) -> Any:
    return np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]],
                    dtype=dtype)


@njit(**_JIT)
def input_transform(x, lo, hi, pad_h, pad_w, tiles_h, tiles_w, v, size, plane):  # pragma: no cover
    """V[ξ, c, (n − lo)·T + t] = (Bᵀ d B)_ξ for samples n in [lo, hi) of x (N, C, H, W),
    every channel c and tile t = t_h·T_w + t_w (T = T_h·T_w tiles per plane).

    ``plane`` is a zero array of at least (2 T_h + 2, 2 T_w + 2): each input plane is
    copied into it at (pad_h, pad_w), so its borders are the zero padding (and the
    extra row and column an odd output size reads)."""
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    count = tiles_h * tiles_w
    for n in range(lo, hi):
        base = (n - lo) * count
        for c in range(channels):
            for i in range(height):
                for j in range(width):
                    plane[pad_h + i, pad_w + j] = x[n, c, i, j]
            for th in range(tiles_h):
                r = 2 * th
                for tw in range(tiles_w):
                    s = 2 * tw
                    t = base + th * tiles_w + tw
                    # rows: Bᵀ d
                    a0 = plane[r, s] - plane[r + 2, s]
                    a1 = plane[r, s + 1] - plane[r + 2, s + 1]
                    a2 = plane[r, s + 2] - plane[r + 2, s + 2]
                    a3 = plane[r, s + 3] - plane[r + 2, s + 3]
                    b0 = plane[r + 1, s] + plane[r + 2, s]
                    b1 = plane[r + 1, s + 1] + plane[r + 2, s + 1]
                    b2 = plane[r + 1, s + 2] + plane[r + 2, s + 2]
                    b3 = plane[r + 1, s + 3] + plane[r + 2, s + 3]
                    e0 = plane[r + 2, s] - plane[r + 1, s]
                    e1 = plane[r + 2, s + 1] - plane[r + 1, s + 1]
                    e2 = plane[r + 2, s + 2] - plane[r + 1, s + 2]
                    e3 = plane[r + 2, s + 3] - plane[r + 1, s + 3]
                    f0 = plane[r + 1, s] - plane[r + 3, s]
                    f1 = plane[r + 1, s + 1] - plane[r + 3, s + 1]
                    f2 = plane[r + 1, s + 2] - plane[r + 3, s + 2]
                    f3 = plane[r + 1, s + 3] - plane[r + 3, s + 3]
                    # columns: (Bᵀ d) B
                    v[0, c * size + t] = a0 - a2
                    v[1, c * size + t] = a1 + a2
                    v[2, c * size + t] = a2 - a1
                    v[3, c * size + t] = a1 - a3
                    v[4, c * size + t] = b0 - b2
                    v[5, c * size + t] = b1 + b2
                    v[6, c * size + t] = b2 - b1
                    v[7, c * size + t] = b1 - b3
                    v[8, c * size + t] = e0 - e2
                    v[9, c * size + t] = e1 + e2
                    v[10, c * size + t] = e2 - e1
                    v[11, c * size + t] = e1 - e3
                    v[12, c * size + t] = f0 - f2
                    v[13, c * size + t] = f1 + f2
                    v[14, c * size + t] = f2 - f1
                    v[15, c * size + t] = f1 - f3


@njit(**_JIT)
def output_transform(m, size, lo, hi, tiles_w, bias, y):  # pragma: no cover
    """y[n, o] (samples n in [lo, hi)) = Aᵀ M A tile by tile, plus ``bias[o]``; the
    outputs of a last tile past an odd OH or OW are not written."""
    outputs, out_h, out_w = y.shape[1], y.shape[2], y.shape[3]
    tiles_h = (out_h + 1) // 2
    count = tiles_h * tiles_w
    even = out_h % 2 == 0 and out_w % 2 == 0
    for n in range(lo, hi):
        base = (n - lo) * count
        for o in range(outputs):
            beta = bias[o]
            for th in range(tiles_h):
                r = 2 * th
                for tw in range(tiles_w):
                    s = 2 * tw
                    t = base + th * tiles_w + tw
                    # rows: Aᵀ M
                    p0 = m[0, o * size + t] + m[4, o * size + t] + m[8, o * size + t]
                    p1 = m[1, o * size + t] + m[5, o * size + t] + m[9, o * size + t]
                    p2 = m[2, o * size + t] + m[6, o * size + t] + m[10, o * size + t]
                    p3 = m[3, o * size + t] + m[7, o * size + t] + m[11, o * size + t]
                    q0 = m[4, o * size + t] - m[8, o * size + t] - m[12, o * size + t]
                    q1 = m[5, o * size + t] - m[9, o * size + t] - m[13, o * size + t]
                    q2 = m[6, o * size + t] - m[10, o * size + t] - m[14, o * size + t]
                    q3 = m[7, o * size + t] - m[11, o * size + t] - m[15, o * size + t]
                    # columns: (Aᵀ M) A
                    if even or (r + 1 < out_h and s + 1 < out_w):
                        y[n, o, r, s] = p0 + p1 + p2 + beta
                        y[n, o, r, s + 1] = p1 - p2 - p3 + beta
                        y[n, o, r + 1, s] = q0 + q1 + q2 + beta
                        y[n, o, r + 1, s + 1] = q1 - q2 - q3 + beta
                    else:
                        y[n, o, r, s] = p0 + p1 + p2 + beta
                        if s + 1 < out_w:
                            y[n, o, r, s + 1] = p1 - p2 - p3 + beta
                        if r + 1 < out_h:
                            y[n, o, r + 1, s] = q0 + q1 + q2 + beta
                            if s + 1 < out_w:
                                y[n, o, r + 1, s + 1] = q1 - q2 - q3 + beta


@njit(**_JIT)
def output_transform_adjoint(grad_y, lo, hi, tiles_w, grad_m, size):  # pragma: no cover
    """∂L/∂M[·, o, (n − lo)·T + t] = A (∂L/∂Y tile) Aᵀ for samples n in [lo, hi), outputs
    past an odd OH or OW counting as 0."""
    outputs, out_h, out_w = grad_y.shape[1], grad_y.shape[2], grad_y.shape[3]
    tiles_h = (out_h + 1) // 2
    count = tiles_h * tiles_w
    zero = grad_y.dtype.type(0)
    for n in range(lo, hi):
        base = (n - lo) * count
        for o in range(outputs):
            for th in range(tiles_h):
                r = 2 * th
                for tw in range(tiles_w):
                    s = 2 * tw
                    t = base + th * tiles_w + tw
                    g00 = grad_y[n, o, r, s]
                    g01 = grad_y[n, o, r, s + 1] if s + 1 < out_w else zero
                    g10 = grad_y[n, o, r + 1, s] if r + 1 < out_h else zero
                    g11 = grad_y[n, o, r + 1, s + 1] if (r + 1 < out_h and s + 1 < out_w) \
                        else zero
                    # rows: A g  → (g0, g0 + g1, g0 − g1, −g1) per column
                    a0, a1 = g00, g01
                    b0, b1 = g00 + g10, g01 + g11
                    e0, e1 = g00 - g10, g01 - g11
                    f0, f1 = -g10, -g11
                    # columns: (A g) Aᵀ
                    grad_m[0, o * size + t] = a0
                    grad_m[1, o * size + t] = a0 + a1
                    grad_m[2, o * size + t] = a0 - a1
                    grad_m[3, o * size + t] = -a1
                    grad_m[4, o * size + t] = b0
                    grad_m[5, o * size + t] = b0 + b1
                    grad_m[6, o * size + t] = b0 - b1
                    grad_m[7, o * size + t] = -b1
                    grad_m[8, o * size + t] = e0
                    grad_m[9, o * size + t] = e0 + e1
                    grad_m[10, o * size + t] = e0 - e1
                    grad_m[11, o * size + t] = -e1
                    grad_m[12, o * size + t] = f0
                    grad_m[13, o * size + t] = f0 + f1
                    grad_m[14, o * size + t] = f0 - f1
                    grad_m[15, o * size + t] = -f1


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
                for j in range(2 * tiles_w + 2):
                    plane[i, j] = zero
            for th in range(tiles_h):
                r = 2 * th
                for tw in range(tiles_w):
                    s = 2 * tw
                    t = base + th * tiles_w + tw
                    # columns: ∂V Bᵀ → row k: (v0, v1 − v2 + v3, −v0 + v1 + v2, −v3)
                    k0 = grad_v[0, c * size + t]
                    k1 = grad_v[1, c * size + t]
                    k2 = grad_v[2, c * size + t]
                    k3 = grad_v[3, c * size + t]
                    a0, a1, a2, a3 = k0, k1 - k2 + k3, k1 + k2 - k0, -k3
                    k0 = grad_v[4, c * size + t]
                    k1 = grad_v[5, c * size + t]
                    k2 = grad_v[6, c * size + t]
                    k3 = grad_v[7, c * size + t]
                    b0, b1, b2, b3 = k0, k1 - k2 + k3, k1 + k2 - k0, -k3
                    k0 = grad_v[8, c * size + t]
                    k1 = grad_v[9, c * size + t]
                    k2 = grad_v[10, c * size + t]
                    k3 = grad_v[11, c * size + t]
                    e0, e1, e2, e3 = k0, k1 - k2 + k3, k1 + k2 - k0, -k3
                    k0 = grad_v[12, c * size + t]
                    k1 = grad_v[13, c * size + t]
                    k2 = grad_v[14, c * size + t]
                    k3 = grad_v[15, c * size + t]
                    f0, f1, f2, f3 = k0, k1 - k2 + k3, k1 + k2 - k0, -k3
                    # rows: B (∂V Bᵀ) → (a, b − e + f, b + e − a, −f)
                    plane[r, s] += a0
                    plane[r, s + 1] += a1
                    plane[r, s + 2] += a2
                    plane[r, s + 3] += a3
                    plane[r + 1, s] += b0 - e0 + f0
                    plane[r + 1, s + 1] += b1 - e1 + f1
                    plane[r + 1, s + 2] += b2 - e2 + f2
                    plane[r + 1, s + 3] += b3 - e3 + f3
                    plane[r + 2, s] += b0 + e0 - a0
                    plane[r + 2, s + 1] += b1 + e1 - a1
                    plane[r + 2, s + 2] += b2 + e2 - a2
                    plane[r + 2, s + 3] += b3 + e3 - a3
                    plane[r + 3, s] -= f0
                    plane[r + 3, s + 1] -= f1
                    plane[r + 3, s + 2] -= f2
                    plane[r + 3, s + 3] -= f3
            for i in range(height):
                for j in range(width):
                    grad_x[n, c, i, j] = plane[pad_h + i, pad_w + j]


# -- the layer's passes, a block of samples at a time ---------------------------------

# Samples per block: their V (16·C·T values, or 16·O·T for M) takes at most this many
# bytes, so the GEMMs read V, and the output transform M, from cache right after they are
# made. Measured (Xeon, 1.25 MiB of L2 per core, 1 thread, batch 128, forward/backward ms):
# 64→64 on 8×8 10.1/22.5 with 1 MiB, 8.2/21.3 with 128 KiB; 32→32 on 16×16 15.3/34.7 with
# 1 MiB, 10.7/24.7 with 256 KiB; 16→16 on 32×32 within noise from 128 KiB to 2 MiB.
BLOCK_BYTES = 2**18
# Values between the end of one position's matrix in V (or M) and the start of the next.
# Without it the 16 matrices lie a multiple of 4 KiB apart for many shapes, so the
# transforms' 16 streams (one per position) fall into the same L1 cache sets and evict one
# another: measured (Xeon, 16 channels on 32×32) the input transform 39 ms → 9 ms per batch.
SKEW = 16


def _blocks(lo: int, hi: int, per_sample: int, itemsize: int):
    """Ranges [start, stop) covering [lo, hi), each at most ``BLOCK_BYTES`` of
    ``per_sample`` values per sample (one sample at least)."""
    block = max(1, min(hi - lo, BLOCK_BYTES // (per_sample * itemsize)))
    for start in range(lo, hi, block):
        yield start, min(hi, start + block), block


def _stack(flat: Any, rows: int, size: int) -> tuple[Any, Any]:
    """16 matrices (rows × size), C-contiguous each, ``SKEW`` values apart, in ``flat``:
    as (16, rows · size + SKEW), C-contiguous, for the kernels (matrix ξ's row r starts
    at [ξ, r · size]), and as a (16, rows, size) view for the GEMMs."""
    item = flat.dtype.itemsize
    stride = rows * size + SKEW
    return (flat[: 16 * stride].reshape(16, stride),
            np.lib.stride_tricks.as_strided(flat, (16, rows, size),
                                            (stride * item, size * item, item)))


def forward(x: Any, u: Any, bias: Any, y: Any, padding: tuple[int, int], lo: int, hi: int,
            work: Any) -> None:
    """y[lo:hi] of the 3×3 stride-1 correlation of x (N, C, H, W), zero-padded by
    ``padding``, with U = G w Gᵀ (16, O, C) and ``bias`` (O,): per block of samples
    V (input transform), M_ξ = U_ξ V_ξ (16 GEMMs) and y = Aᵀ M A + b.

    ``work(name, size, key)`` returns a reused flat work array of ``size`` values
    (zero when first made, and made again when ``key`` changes)."""
    c, o = x.shape[1], y.shape[1]
    tiles_h, tiles_w = tiles(y.shape[2], y.shape[3])
    count = tiles_h * tiles_w
    plane_shape = (2 * tiles_h + 2, 2 * tiles_w + 2)
    plane = work("winograd_plane", plane_shape[0] * plane_shape[1],
                 (x.shape[2:], padding, plane_shape)).reshape(plane_shape)
    blocks = list(_blocks(lo, hi, 16 * max(c, o) * count, x.dtype.itemsize))
    block = blocks[0][2]
    v_all = work("winograd_v", 16 * (c * block * count + SKEW), ())
    m_all = work("winograd_m", 16 * (o * block * count + SKEW), ())
    for start, stop, _ in blocks:
        size = (stop - start) * count
        (v_flat, v), (m_flat, m) = _stack(v_all, c, size), _stack(m_all, o, size)
        input_transform(x, start, stop, padding[0], padding[1], tiles_h, tiles_w, v_flat, size,
                        plane)
        np.matmul(u, v, out=m)
        output_transform(m_flat, size, start, stop, tiles_w, bias, y)


def backward(x: Any, grad_y: Any, u: Any, padding: tuple[int, int], lo: int, hi: int,
             work: Any, grad_x: Any = None, weights: bool = True) -> Any:
    """bprop of ``forward`` for samples [lo, hi): writes ∂L/∂x of those samples into
    ``grad_x`` (None: not wanted) and returns their Σ ∂L/∂U (16, O, C) (None if not
    ``weights``), per block of samples:

        ∂L/∂M = A ∂L/∂Y Aᵀ,  ∂L/∂U_ξ += ∂L/∂M_ξ V_ξᵀ,  ∂L/∂V_ξ = U_ξᵀ ∂L/∂M_ξ,
        ∂L/∂d = B ∂L/∂V Bᵀ  (overlapping tiles added).
    """
    c, o = x.shape[1], grad_y.shape[1]
    tiles_h, tiles_w = tiles(grad_y.shape[2], grad_y.shape[3])
    count = tiles_h * tiles_w
    plane_shape = (2 * tiles_h + 2, 2 * tiles_w + 2)
    plane = work("winograd_plane", plane_shape[0] * plane_shape[1],
                 (x.shape[2:], padding, plane_shape)).reshape(plane_shape)
    grad_plane = work("winograd_grad_plane", plane_shape[0] * plane_shape[1],
                      ()).reshape(plane_shape)
    blocks = list(_blocks(lo, hi, 16 * max(c, o) * count, x.dtype.itemsize))
    block = blocks[0][2]
    v_all = work("winograd_v", 16 * (c * block * count + SKEW), ())
    m_all = work("winograd_m", 16 * (o * block * count + SKEW), ())
    u_t = u.transpose(0, 2, 1)
    total = np.zeros((16, o, c), dtype=u.dtype) if weights else None
    part = work("winograd_u", 16 * o * c, ()).reshape(16, o, c) if weights else None
    for start, stop, _ in blocks:
        size = (stop - start) * count
        (v_flat, v), (m_flat, grad_m) = _stack(v_all, c, size), _stack(m_all, o, size)
        output_transform_adjoint(grad_y, start, stop, tiles_w, m_flat, size)
        if weights:
            input_transform(x, start, stop, padding[0], padding[1], tiles_h, tiles_w, v_flat,
                            size, plane)
            np.matmul(grad_m, v.transpose(0, 2, 1), out=part)
            total += part
        if grad_x is not None:
            np.matmul(u_t, grad_m, out=v)
            input_transform_adjoint(v_flat, size, start, stop, padding[0], padding[1], tiles_h,
                                    tiles_w, grad_x, grad_plane)
    return total
