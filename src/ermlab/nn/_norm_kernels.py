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
def forward(x, y, mean, var, inv_std, weight, bias, eps, one, batch, two_pass, c0, c1):
    """y = x·a + b for channels [c0, c1) of (N, C, L) arrays. ``batch``: first
    mean[c] ← μ, var[c] ← σ² (biased) from x (``two_pass``: M2 as Σ (x − μ)² in a second
    pass, else merged row by row); else mean and var are read as given.
    Writes inv_std[c] = 1/√(var + ε); ``weight``/``bias`` None without affine."""
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
    for k in range(n):
        for j in range(width):
            a = scale[j]
            b = shift[j]
            xr = x[k, c0 + j]
            yr = y[k, c0 + j]
            for i in range(length):
                yr[i] = xr[i] * a + b


@njit(**_JIT)
def grad_sums(x, grad, mean, dot, total, c0, c1):
    """dot[c] ← Σ G (x − μ) and total[c] ← Σ G for channels [c0, c1)."""
    _grad_sums(x, grad, mean, dot, total, c0, c1)


@njit(**_JIT)
def _grad_sums(x, grad, mean, dot, total, c0, c1):
    """``grad_sums`` (called by ``backward`` too)."""
    width = c1 - c0
    dots = numpy.zeros(width)
    totals = numpy.zeros(width)
    for k in range(x.shape[0]):
        for j in range(width):
            d, t = _centred_dot(x[k, c0 + j], grad[k, c0 + j], numpy.float64(mean[c0 + j]))
            dots[j] += d
            totals[j] += t
    for j in range(width):
        dot[c0 + j] = dots[j]
        total[c0 + j] = totals[j]


@njit(**_JIT)
def backward(x, grad, mean, inv_std, weight, dot, total, m, out, c0, c1):
    """For channels [c0, c1): the sums as ``grad_sums``, then ∂L/∂x = G·a + ((x − μ)·b + o)
    with a = γ/√(σ² + ε), b = −a/(σ² + ε) · dot/m, o = −a · total/m (``m`` in the dtype),
    each rounded as ``normalization._BatchNorm._grad_input`` rounds it."""
    _grad_sums(x, grad, mean, dot, total, c0, c1)
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
            for i in range(x.shape[2]):
                outr[i] = gr[i] * a + ((xr[i] - mu) * b + o)
