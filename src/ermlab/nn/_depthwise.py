"""Depthwise convolution by direct summation over channels-last planes (Numba).

A depthwise convolution (groups = C: each input channel convolved with M = O/C filters of
its own, MobileNet's and Xception's layer) is, for output channel o = c·M + m,

    y[n, o, p, q] = b[o] + Σ_{i,j} W[o, 0, i, j] x̃[n, c, S_h p + d_h i, S_w q + d_w j]

with x̃ zero-padded by (p_h, p_w). It has no sum over channels, so as a GEMM (im2col, one
group at a time) each product is 1 × K_h·K_w by K_h·K_w × OH·OW: thousands of tiny GEMMs
that cost their calls, not their arithmetic (512 channels on 4×4 planes, batch 128: 15 ms
forward and backward, against 1.3 for PyTorch). Here each sample's planes of a range of
channels [c0, c1) are copied channels-last, x̃[r, s, k], and every tap is one multiply-add
over the contiguous channels, vectorized: no GEMM, no columns.

    ∂L/∂x̃[S_h p + d_h i, S_w q + d_w j, c] += Σ_m W[c·M + m, 0, i, j] G[p, q, c·M + m]
    ∂L/∂W[c·M + m, 0, i, j] = Σ_{n,p,q} G[n, c·M + m, p, q] x̃[n, c, S_h p + d_h i, S_w q + d_w j]

are taken the same way, with G copied channels-last too; ∂L/∂x is the interior of ∂L/∂x̃.
The kernels run on a range of channels for every sample, so ``Conv2d`` shares the channels
out over its lanes: each lane's outputs, and its sums over samples and positions, are its
own, and the results are the same for any number of lanes.

Numerics: y = b + Σ_i Σ_j w_ij x_ij in that order, ∂L/∂x̃ and ∂L/∂W accumulated in the
order of the loops (samples, then positions, then taps), with multiply-adds fused (Numba's
``contract``): the same sums as im2col's up to rounding.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ermlab import _numba_target  # noqa: F401 - the vector width, before a kernel compiles

_JIT = dict(nogil=True, cache=True, fastmath={"contract"}, error_model="numpy")


def filters(weight, multiplier):
    """W (O, 1, K_h, K_w), O = C·M, as (M, K_h, K_w, C): filter m of channel c at
    [m, :, :, c], contiguous over the channels as the kernels read it."""
    o, _, kh, kw = weight.shape
    return np.ascontiguousarray(
        weight.reshape(o // multiplier, multiplier, kh, kw).transpose(1, 2, 3, 0))


@njit(inline="always", **_JIT)
def _channels_last(x, n, c0, c1, pad_h, pad_w, out):  # pragma: no cover
    """out[pad_h + r, pad_w + s, k] = x[n, c0 + k, r, s] (the borders are left alone), read
    across the channels, a column of the sample's (C, H·W) planes at a time, and written
    along them: written across them, the stores 4·(c1 − c0) bytes apart ran 6× slower (256
    channels of 8×8: 4.9 against 0.8 ms for 128 samples); read through x[n, c0 + k, r, s]
    rather than a column view, 4×4 planes took 0.23 against 0.10 ms."""
    w = x.shape[3]
    planes = x[n].reshape(x.shape[1], x.shape[2] * w)[c0:c1]
    for t in range(planes.shape[1]):
        dst, src = out[pad_h + t // w, pad_w + t % w], planes[:, t]
        for k in range(c1 - c0):
            dst[k] = src[k]


@njit(**_JIT)
def forward(x, wt, bias, y, stride, padding, dilation, c0, c1):  # pragma: no cover
    """y[:, c·M + m] for channels c in [c0, c1) of every sample; ``wt`` is ``filters``'s
    layout, ``bias`` (O,) or None."""
    n_samples, _, h, w = x.shape
    multiplier, kh, kw, _ = wt.shape
    oh, ow = y.shape[2], y.shape[3]
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    nc = c1 - c0
    padded = np.zeros((h + 2 * ph, w + 2 * pw, nc), dtype=x.dtype)
    acc = np.empty((oh, ow, nc), dtype=x.dtype)
    start = np.zeros(nc, dtype=x.dtype)  # each output's first term: its bias, or 0
    for n in range(n_samples):
        _channels_last(x, n, c0, c1, ph, pw, padded)
        for m in range(multiplier):
            if bias is not None:
                for k in range(nc):
                    start[k] = bias[(c0 + k) * multiplier + m]
            for p in range(oh):
                for q in range(ow):
                    a = acc[p, q]
                    for k in range(nc):
                        a[k] = start[k]
                    for i in range(kh):
                        for j in range(kw):
                            src = padded[sh * p + dh * i, sw * q + dw * j]
                            tap = wt[m, i, j, c0:c1]  # (indices from 0: vectorized)
                            for k in range(nc):
                                a[k] += tap[k] * src[k]
            for k in range(nc):
                out = y[n, (c0 + k) * multiplier + m]
                for p in range(oh):
                    for q in range(ow):
                        out[p, q] = acc[p, q, k]


@njit(**_JIT)
def backward(x, wt, grad_out, grad_in, grad_w, stride, padding, dilation, c0,
             c1):  # pragma: no cover
    """For channels [c0, c1) of every sample: ∂L/∂x into ``grad_in`` (None: not wanted) and
    ∂L/∂W, in ``filters``'s layout, into ``grad_w`` (None: not wanted; overwritten, not
    added to)."""
    n_samples, _, h, w = x.shape
    multiplier, kh, kw, _ = wt.shape
    oh, ow = grad_out.shape[2], grad_out.shape[3]
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    nc = c1 - c0
    hp, wp = h + 2 * ph, w + 2 * pw
    padded = np.zeros((hp, wp, nc), dtype=x.dtype)
    d_padded = np.zeros((hp, wp, nc), dtype=x.dtype)
    g = np.empty((oh, ow, nc), dtype=x.dtype)
    if grad_w is not None:
        grad_w[:, :, :, c0:c1] = 0
    for n in range(n_samples):
        if grad_w is not None:
            _channels_last(x, n, c0, c1, ph, pw, padded)
        if grad_in is not None:
            d_padded[:] = 0
        for m in range(multiplier):
            for p in range(oh):  # G channels-last, written along the channels
                for q in range(ow):
                    gs = g[p, q]
                    for k in range(nc):
                        gs[k] = grad_out[n, (c0 + k) * multiplier + m, p, q]
            for p in range(oh):
                for q in range(ow):
                    gs = g[p, q]
                    for i in range(kh):
                        for j in range(kw):
                            r, s = sh * p + dh * i, sw * q + dw * j
                            if grad_w is not None:
                                src, dst = padded[r, s], grad_w[m, i, j, c0:c1]
                                for k in range(nc):
                                    dst[k] += gs[k] * src[k]
                            if grad_in is not None:
                                tap, back = wt[m, i, j, c0:c1], d_padded[r, s]
                                for k in range(nc):
                                    back[k] += tap[k] * gs[k]
        if grad_in is not None:
            for k in range(nc):
                plane = grad_in[n, c0 + k]
                for r in range(h):
                    for s in range(w):
                        plane[r, s] = d_padded[ph + r, pw + s, k]
