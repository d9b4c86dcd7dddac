"""Batch normalization of NCHW arrays channel by channel in one kernel (Numba).

``normalization._BatchNorm``'s NumPy path makes whole-array passes (a GEMV for
the sums, blocked passes for the centred sums, x·a and + b, …). The kernels here
take one channel at a time, the (N, L) values of x (and G = ∂L/∂y) it owns:
one (N, C, L) channel slab is 0.06–1 MiB in ResNet-20 at batch 128, so after
the first pass reads it from memory the later passes find it in the core's L2
cache. Per channel c, with m = N·L values:

    forward   μ = Σ x / m,  σ² = Σ (x − μ)² / m   (two passes, the second centred)
              1/√(σ² + ε),  a = γ/√(σ² + ε),  b = β − μ a,  y = x·a + b
    backward  Σ G,  Σ G (x − μ)                     (one pass over x and G)
              ∂L/∂x = G·a + ((x − μ)·b' + c')         (b', c' as ``_grad_input``)

Rounding: the sums are accumulated in float64 (the NumPy path sums in the array's
dtype), each row in vector lanes (``_SUMS``: ``fastmath={"reassoc"}`` only, so
LLVM may reorder those additions and nothing else), then rounded once to the
dtype; every per-channel coefficient and every element of y and ∂L/∂x is then
the NumPy path's own sequence of IEEE operations in the dtype (``fastmath`` off:
no FMA contraction). Given the same μ, σ² and sums, y and ∂L/∂x are bit for bit
the NumPy path's; the statistics themselves agree with it to a few ulps
(``tests/nn/test_norm_kernels.py``).

Channels are independent: ``normalization`` gives each lane of ``ermlab.threads``
a range [c0, c1) of channels; the kernels release the GIL.

Optional: ``pip install "ermlab[fast]"`` (Numba); without it, for CuPy or
non-contiguous arrays, and with ``ERMLAB_FUSED=0``, the NumPy path runs.
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
def forward(x, y, mean, var, inv_std, weight, bias, eps, one, batch, c0, c1):
    """y = x·a + b for channels [c0, c1) of (N, C, L) arrays. ``batch``: first
    mean[c] ← μ, var[c] ← σ² (biased) from x; else mean and var are read as given.
    Writes inv_std[c] = 1/√(var + ε); ``weight``/``bias`` None without affine."""
    n, _, length = x.shape
    m = n * length
    for c in range(c0, c1):
        if batch:
            s = 0.0
            for k in range(n):
                s += _sum(x[k, c])
            mu = s / m
            q = 0.0
            for k in range(n):
                q += _centred_squares(x[k, c], mu)
            mean[c] = mu
            var[c] = q / m
        istd = one / numpy.sqrt(var[c] + eps)
        inv_std[c] = istd
        scale = istd
        if weight is not None:
            scale = weight[c] * istd
        shift = -mean[c] * scale
        if bias is not None:
            shift = shift + bias[c]
        for k in range(n):
            xr = x[k, c]
            yr = y[k, c]
            for i in range(length):
                yr[i] = xr[i] * scale + shift


@njit(**_JIT)
def _channel_sums(x, grad, mean, dot, total, c):
    """dot[c] ← Σ G (x − μ), total[c] ← Σ G over channel c."""
    mu = numpy.float64(mean[c])
    d = 0.0
    t = 0.0
    for k in range(x.shape[0]):
        dk, tk = _centred_dot(x[k, c], grad[k, c], mu)
        d += dk
        t += tk
    dot[c] = d
    total[c] = t


@njit(**_JIT)
def grad_sums(x, grad, mean, dot, total, c0, c1):
    """dot[c] ← Σ G (x − μ) and total[c] ← Σ G for channels [c0, c1)."""
    for c in range(c0, c1):
        _channel_sums(x, grad, mean, dot, total, c)


@njit(**_JIT)
def backward(x, grad, mean, inv_std, weight, dot, total, m, out, c0, c1):
    """For channels [c0, c1): the sums as ``grad_sums``, then ∂L/∂x = G·a + ((x − μ)·b + o)
    with a = γ/√(σ² + ε), b = −a/(σ² + ε) · dot/m, o = −a · total/m (``m`` in the dtype),
    each rounded as ``normalization._BatchNorm._grad_input`` rounds it."""
    n, _, length = x.shape
    for c in range(c0, c1):
        _channel_sums(x, grad, mean, dot, total, c)
        istd = inv_std[c]
        a = istd
        if weight is not None:
            a = weight[c] * istd
        b = -a * istd * istd * dot[c] / m
        o = -a * total[c] / m
        mu = mean[c]
        for k in range(n):
            xr = x[k, c]
            gr = grad[k, c]
            outr = out[k, c]
            for i in range(length):
                outr[i] = gr[i] * a + ((xr[i] - mu) * b + o)
