"""Batch normalization of (N, C, L) arrays in sequential passes (Numba), sums in float64.

``normalization._BatchNorm``'s NumPy path makes whole-array passes (a GEMV for
the sums, blocked passes for the centred sums, x·a and + b, …). The kernels here
take a range [c0, c1) of channels and walk x (and G = ∂L/∂y) in memory order,
sample by sample, each (n, c) row of L values at a time, keeping per-channel
accumulators. Per channel c, with m = N·L values:

    forward   μ, σ² = Σ (x − μ)² / m    in ONE pass: each row's sum s, mean r = s/L and
              centred sum q = Σ (x − r)² (the row is in L1 cache for its second look),
              merged into the channel's (n values so far, their sum S, M2) by Chan, Golub
              & LeVeque's pairwise update (Updating formulae and a pairwise algorithm for
              computing sample variances, 1979):
                  δ = r − S/n,  M2 ← M2 + q + δ²·n·L/(n + L),  S ← S + s
              μ = S/m, σ² = M2/m; then 1/√(σ² + ε), a = γ/√(σ² + ε), b = β − μ a, y = x·a + b
              (float64 arrays: M2 = Σ (x − μ)² in a second pass, as the NumPy path: the
              merges' δ = r − S/n, a difference of two means, cost float64 variances
              20–70 ulps at μ/σ ≈ 300, where float32 data loses nothing in float64 sums)
    backward  Σ G and Σ G (x − μ) in one pass over x and G, then
              ∂L/∂x = G·a + ((x − μ)·b' + c')   (b', c' as ``_grad_input``)

so forward reads x twice (float64: three times) and writes y, backward reads x and G
twice and writes ∂L/∂x.

A ReLU after the batch norm (``relu``, ``BatchNorm2d.forward_relu``) runs inside these
passes: forward writes max(x·a + b, 0), and backward, given G = ∂L/∂h of h = max(y, 0),
takes G·1_{y > 0} in place of G, y = x·a + b recomputed from x with forward's (a, b) —
the same IEEE operations, so the same mask — instead of reading a y that was never kept.
The ReLU's own passes (read y, write h; read G and h, write G·1_{h > 0}) are saved.
Measured (``benchmarks/norm_relu.py``, 128×16×32×32 float32, forward + bprop, best of 15,
ms): 1 lane 7.43 against 10.07 for the batch norm (6.73) and the ReLU (1.40 + 1.94)
apart; 2 lanes 4.19 against 6.10.
Walking channel by channel instead (one channel's rows, 256 B–4 KiB each, at a stride
of C·L values) ran 1.4–1.8× slower on ResNet-20's 16×16 and 8×8 layers: the hardware
prefetcher does not follow rows that short.

Rounding: the sums are accumulated in float64 (the NumPy path sums in the array's
dtype), each row in vector lanes (``_SUMS``: ``fastmath={"reassoc"}`` only, so
LLVM may reorder those additions and nothing else), then rounded once to the
dtype — float32 statistics are the exact values rounded once, or within an ulp;
every per-channel coefficient and every element of y and ∂L/∂x is then the NumPy
path's own sequence of IEEE operations in the dtype (``fastmath`` off: no FMA
contraction). Given the same μ, σ² and sums, y and ∂L/∂x are bit for bit the NumPy
path's (``tests/nn/test_norm_kernels.py``). A channel's sums run over the samples in
order whatever the range of channels, so lanes do not change any result.

Channels are independent: ``normalization`` gives each lane of ``ermlab.threads``
a range [c0, c1) of channels; the kernels release the GIL.

Optional: ``pip install "ermlab[fast]"`` (Numba); without it, for CuPy or
non-contiguous arrays, rows shorter than ``normalization.KERNEL_MIN_ROW`` and with
``ERMLAB_FUSED=0``, the NumPy path runs.
"""

from __future__ import annotations

import numpy
from numba import njit

from ermlab import _numba_target  # noqa: F401 - the vector width, before a kernel compiles
from ermlab._numba_cache import drop_stale
from ermlab.nn import _relu_kernels
from ermlab.nn._relu_kernels import masked, rectify

drop_stale(__file__, _relu_kernels.__file__)  # kernels below inline its functions

_JIT = dict(nogil=True, cache=True, fastmath=False, error_model="numpy")
_SUMS = dict(nogil=True, cache=True, fastmath={"reassoc"}, error_model="numpy")


@njit(**_SUMS)
def _sum(row):
    """Σ row in float64."""
    total = 0.0
    for i in range(row.size):
        total += row[i]
    return total


@njit(**_SUMS)
def _centred_squares(row, mu):
    """Σ (row − μ)² in float64 (μ a float64)."""
    total = 0.0
    for i in range(row.size):
        d = row[i] - mu
        total += d * d
    return total


@njit(**_SUMS)
def _centred_dot(row, grad, mu):
    """(Σ grad·(row − μ), Σ grad) in float64."""
    dot = 0.0
    total = 0.0
    for i in range(row.size):
        g = grad[i]
        dot += g * (row[i] - mu)
        total += g
    return dot, total


@njit(**_JIT)
def forward(x, y, mean, var, inv_std, weight, bias, eps, one, batch, two_pass, relu, affine,
            c0, c1):
    """y = x·a + b for channels [c0, c1) of (N, C, L) arrays, or with ``relu`` y = max(x·a + b,
    0) as ``_relu_kernels.forward`` takes it (NaN propagates, else +0). ``batch``: first
    mean[c] ← μ, var[c] ← σ² (biased) from x (``two_pass``: M2 as Σ (x − μ)² in a second
    pass, else merged row by row); else mean and var are read as given.
    Writes inv_std[c] = 1/√(var + ε) and affine[:, c] = (a, b) (2, C); ``weight``/``bias``
    None without affine."""
    n, _, length = x.shape
    width = c1 - c0
    if batch:
        sums = numpy.zeros(width)
        m2 = numpy.zeros(width)
        for k in range(n):
            count = k * length
            weight_cross = count * length / (count + length)
            for j in range(width):
                row = x[k, c0 + j]
                row_sum = _sum(row)
                if not two_pass:
                    row_mean = row_sum / length
                    m2[j] += _centred_squares(row, row_mean)
                    if k > 0:
                        delta = row_mean - sums[j] / count
                        m2[j] += delta * delta * weight_cross
                sums[j] += row_sum
        if two_pass:
            for k in range(n):
                for j in range(width):
                    m2[j] += _centred_squares(x[k, c0 + j], sums[j] / (n * length))
        for j in range(width):
            mean[c0 + j] = sums[j] / (n * length)
            var[c0 + j] = m2[j] / (n * length)
    scale = numpy.empty(width, x.dtype)
    shift = numpy.empty(width, x.dtype)
    for j in range(width):
        c = c0 + j
        istd = one / numpy.sqrt(var[c] + eps)
        inv_std[c] = istd
        a = istd
        if weight is not None:
            a = weight[c] * istd
        b = -mean[c] * a
        if bias is not None:
            b = b + bias[c]
        scale[j] = a
        shift[j] = b
        affine[0, c] = a
        affine[1, c] = b
    for k in range(n):
        for j in range(width):
            a = scale[j]
            b = shift[j]
            xr = x[k, c0 + j]
            yr = y[k, c0 + j]
            if relu:
                zero = x.dtype.type(0)
                for i in range(length):
                    yr[i] = rectify(xr[i] * a + b, zero)
            else:
                for i in range(length):
                    yr[i] = xr[i] * a + b


@njit(**_SUMS)
def _centred_dot_rectified(row, grad, mu, a, b):
    """``_centred_dot`` of G·1_{y > 0} in place of G, y = x·a + b recomputed as ``forward``
    made it (the same IEEE operations on the same values, so the same mask), as
    ``_relu_kernels.backward`` takes it: in the same loop, no row of it written."""
    zero = row.dtype.type(0)  # (a literal 0 would make g·0 a float64)
    dot = 0.0
    total = 0.0
    for i in range(row.size):
        x = row[i]
        g = masked(grad[i], x * a + b, zero)
        dot += g * (x - mu)
        total += g
    return dot, total


@njit(**_JIT)
def grad_sums(x, grad, mean, dot, total, relu, affine, c0, c1):
    """dot[c] ← Σ G (x − μ) and total[c] ← Σ G for channels [c0, c1); with ``relu``, G is
    the gradient after the ReLU that ``forward`` applied, and G·1_{y > 0} is summed instead
    (``affine``: forward's (a, b))."""
    _grad_sums(x, grad, mean, dot, total, relu, affine, c0, c1)


@njit(**_JIT)
def _grad_sums(x, grad, mean, dot, total, relu, affine, c0, c1):
    """``grad_sums`` (called by ``backward`` too). With ``relu`` the mask is taken in the
    sums' loop (``_centred_dot_rectified``). It was a scratch row of G·1_{y > 0} that
    the sums then read, and a G that was either that row or a row of ``grad`` had no one
    layout, so neither loop vectorized (bit for bit the same sums; AMD EPYC Zen 4, one
    ``backward`` call on 128 samples, float32, µs, before → after, without / with the
    ReLU: 64 channels of 4 values 113/258 → 60/78, 64 of 16 134/221 → 78/116, 32 of 64
    113/168 → 102/117, 8 of 1024 348/443 → 349/374)."""
    width = c1 - c0
    dots = numpy.zeros(width)
    totals = numpy.zeros(width)
    for k in range(x.shape[0]):
        for j in range(width):
            c = c0 + j
            mu = numpy.float64(mean[c])
            if relu:
                d, t = _centred_dot_rectified(x[k, c], grad[k, c], mu, affine[0, c],
                                              affine[1, c])
            else:
                d, t = _centred_dot(x[k, c], grad[k, c], mu)
            dots[j] += d
            totals[j] += t
    for j in range(width):
        dot[c0 + j] = dots[j]
        total[c0 + j] = totals[j]


@njit(**_JIT)
def backward(x, grad, mean, inv_std, weight, dot, total, m, out, relu, affine, c0, c1):
    """For channels [c0, c1): the sums as ``grad_sums``, then ∂L/∂x = G·a + ((x − μ)·b + o)
    with a = γ/√(σ² + ε), b = −a/(σ² + ε) · dot/m, o = −a · total/m (``m`` in the dtype),
    each rounded as ``normalization._BatchNorm._grad_input`` rounds it; with ``relu``,
    G·1_{y > 0} in place of G (``grad_sums``), the mask recomputed in each pass."""
    _grad_sums(x, grad, mean, dot, total, relu, affine, c0, c1)
    width = c1 - c0
    coef_a = numpy.empty(width, x.dtype)
    coef_b = numpy.empty(width, x.dtype)
    coef_o = numpy.empty(width, x.dtype)
    for j in range(width):
        c = c0 + j
        istd = inv_std[c]
        a = istd
        if weight is not None:
            a = weight[c] * istd
        coef_a[j] = a
        coef_b[j] = -a * istd * istd * dot[c] / m
        coef_o[j] = -a * total[c] / m
    for k in range(x.shape[0]):
        for j in range(width):
            a = coef_a[j]
            b = coef_b[j]
            o = coef_o[j]
            mu = mean[c0 + j]
            xr = x[k, c0 + j]
            gr = grad[k, c0 + j]
            outr = out[k, c0 + j]
            if relu:
                sa = affine[0, c0 + j]
                sb = affine[1, c0 + j]
                zero = x.dtype.type(0)
                for i in range(x.shape[2]):
                    g = masked(gr[i], xr[i] * sa + sb, zero)
                    outr[i] = g * a + ((xr[i] - mu) * b + o)
            else:
                for i in range(x.shape[2]):
                    outr[i] = gr[i] * a + ((xr[i] - mu) * b + o)
