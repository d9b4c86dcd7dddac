"""col2im in one compiled pass (Numba), bit for bit ``Conv2d._col2im``'s NumPy path.

``Conv2d``'s bprop scatters the column gradient ∂L/∂X_col (n_b, C, K_h, K_w, OH·CW) back
onto the padded input gradient: for every kernel offset (i, j),

    ∂L/∂x̃[n, c, i d_h + s_h p, j d_w + s_w q] += ∂L/∂X_col[n, c, i, j, p·CW + q].

The NumPy path does it with K_h·K_w strided additions over the whole block; with a stride
they run at ~1.5–2 ns per element (NumPy's strided loop). Here each (sample, channel)
plane takes its K_h·K_w·OH rows in turn while it is in cache, the offsets (i, j) in the
same order as the NumPy path, so every element receives the same additions in the same
order: bit for bit the same result. Loops run over slices from index 0, which Numba
vectorizes (see ``_relu_kernels``). Used through ``nn._fused`` (NumPy float32/float64,
C-contiguous, Numba installed, ``ERMLAB_FUSED`` not 0); releases the GIL for the lanes.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ermlab import _numba_target  # noqa: F401 - the vector width, before a kernel compiles
from ermlab._numba_cache import drop_stale
from ermlab.nn import _relu_kernels
from ermlab.nn._relu_kernels import masked

drop_stale(__file__, _relu_kernels.__file__)  # kernels below inline its functions

_JIT = dict(nogil=True, cache=True, fastmath=False, error_model="numpy")


@njit(**_JIT)
def col2im(d_cols, grad, start, height, width, out_h, out_w, stride_h, stride_w, dilation_h,
           dilation_w):  # pragma: no cover
    """Add ``d_cols`` (n_b, C, K_h, K_w, OH·CW) of samples [start, start + n_b) into
    ``grad``, the flat padded (N, C, H_p, W_p) input gradient (``height``, ``width``: H_p,
    W_p; CW ≥ OW: the column row width, whose last CW − OW columns are skipped)."""
    samples, channels, kernel_h, kernel_w, columns = d_cols.shape
    row_width = columns // out_h
    plane_size = height * width
    for n in range(samples):
        for c in range(channels):
            first = ((start + n) * channels + c) * plane_size
            plane = grad[first:first + plane_size]
            for i in range(kernel_h):
                for j in range(kernel_w):
                    source = d_cols[n, c, i, j]
                    for p in range(out_h):
                        offset = (i * dilation_h + p * stride_h) * width + j * dilation_w
                        values = source[p * row_width:p * row_width + out_w]
                        if stride_w == 1:
                            target = plane[offset:offset + out_w]
                            for q in range(out_w):
                                target[q] += values[q]
                        else:
                            target = plane[offset:offset + (out_w - 1) * stride_w + 1:stride_w]
                            for q in range(out_w):
                                target[q] += values[q]


@njit(**dict(_JIT, fastmath={"reassoc"}))
def _row_sum(row):  # pragma: no cover
    """Σ row in float64, its additions in vector lanes (``reassoc``)."""
    partial = 0.0
    for i in range(row.size):
        partial += row[i]
    return partial


@njit(**_JIT)
def channel_sums(grad, out, c0, c1):  # pragma: no cover
    """out[c] = Σ_n Σ_t grad[n, c, t] for channels [c0, c1) of (N, C, L) ``grad``, in float64:
    each (n, c) row summed on its own (``_row_sum``), the rows added in sample order, so a
    channel's sum is the same for any range of channels (``Conv2d``'s ∂L/∂b in lanes of
    channels)."""
    for c in range(c0, c1):
        total = 0.0
        for n in range(grad.shape[0]):
            total += _row_sum(grad[n, c])
        out[c] = total


@njit(**_JIT)
def masked_channel_sums(grad, y, out, c0, c1):  # pragma: no cover
    """``channel_sums`` of G·1_{y > 0} (``y``: the output of a ReLU, as ``grad``), each row
    masked into a scratch row (``_relu_kernels.masked``) that ``_row_sum`` then sums: the
    same values summed by the same function, so the same sums as ``channel_sums`` of the
    masked array, which is never made."""
    row = np.empty(grad.shape[2], grad.dtype)
    zero = grad.dtype.type(0)
    for c in range(c0, c1):
        total = 0.0
        for n in range(grad.shape[0]):
            g, r = grad[n, c], y[n, c]
            for i in range(row.size):
                row[i] = masked(g[i], r[i], zero)
            total += _row_sum(row)
        out[c] = total
