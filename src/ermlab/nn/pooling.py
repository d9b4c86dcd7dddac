"""Spatial pooling over NCHW inputs: max, average and global average.

With kernel (K_h, K_w), stride s and padding p, window (p', q') of channel c covers the
padded input rows s_h p' + i and columns s_w q' + j for 0 ≤ i < K_h, 0 ≤ j < K_w, and

    max pooling:      y = max_{i,j} x̃[s_h p' + i, s_w q' + j]      (x̃ padded with −∞)
    average pooling:  y = (1 / K_h K_w) Σ_{i,j} x̃[s_h p' + i, s_w q' + j]   (x̃ padded with 0)

with OH = ⌊(H + 2 p_h − K_h) / s_h⌋ + 1 (torch's ``ceil_mode=False``). Both are computed
by a loop over the K_h·K_w kernel offsets, each a vectorized operation on a strided slice
of the whole batch (no loop over pixels, no window copy). 2×2 max pooling with stride 2 on
even sizes (LeNet's, VGG's) is two pairwise maxima instead — along rows, then between
rows — keeping two boolean choices for bprop (``MaxPool2d._forward_pairs``; measured at
batch 128, 1 thread, on a loaded 2-core Xeon: 128×32×32×32 forward 21 → 13 ms, backward
16 → 14 ms). With Numba installed, max pooling runs compiled passes instead
(``nn._pool_kernels``, bit for bit the NumPy path; measured 2 threads, forward/backward
ms, against torch 2.13's: 3×3 stride 2 padding 1 on 128×64×32×32 13.5/9.6 against
35.4/9.9, stride 1 on 32×96×32×32 4.2/6.5 against 43.7/2.9; the machine's noise moves
single runs by up to 2×), 2×2 stride 2 by a kernel of its own (idle, paired rounds,
forward/backward ms, pairwise maxima → kernel: 128×32×32×32 11.7/11.4 → 5.9/5.9,
128×6×28×28 1.7/1.3 → 0.7/0.8).

bprop. Max pooling routes each output gradient to the one input that won its window,
chosen exactly as torch does (its CPU and CUDA kernels scan the window's entries inside
the input in row-major (i, j) order, keeping an entry that is greater than the best so
far or is NaN, starting from the first entry inside the input with best = −∞):

* ties: the *first* maximum, so an all-equal window sends its whole gradient to its
  top-left entry;
* NaN: the output is NaN and the *last* NaN of the window gets the gradient;
* a window whose entries are all −∞: its first entry inside the input (never the
  padding) gets the gradient.

Average pooling spreads g / (K_h K_w) over the window; padded zeros count in the divisor
(torch's ``count_include_pad=True`` default). Where windows overlap (stride < kernel) the
contributions add up. Like torch, padding may be at most half the kernel.
"""

from __future__ import annotations

from typing import Any

import numpy

from ermlab.backend import array_module
from ermlab.nn import _fused
from ermlab.nn.conv import check_spatial_input, kernel_offset_slice, output_size, pair, zero_pad
from ermlab.nn.module import Module
from ermlab.threads import run_ranges

# 2×2 max pooling shares a batch out over lanes of samples only while each lane gets at
# least this many bytes of input. Measured (Xeon VM, 2 vCPUs, load 1.3–1.6, forward +
# backward, paired rounds, two lanes against one): 128×32×32×32 0.58×, 128×64×16×16 0.63×,
# 128×6×28×28 (2.3 MiB) 0.62×, 128×16×10×10 (0.8 MiB) 0.94×; whole training steps: LeNet-5
# 0.96×, small VGG 0.98×. At load 3.3 (no free core) two lanes gained nothing (1.01–1.10×).
LANE_MIN_BYTES = 2**20
# Max pooling's compiled bprop takes its K_h·K_w vector passes over a plane
# (``_pool_kernels.max_backward``) for stride 1 and at least this many outputs per plane,
# else one scalar pass over the outputs (``max_backward_scatter``), the same sums.
# Measured (AMD EPYC Zen 4, 1 thread, 3×3 padding 1, ms, passes → scatter): stride 1 on
# 32×96×32×32 5.2 → 12.3, on 32×480×8×8 4.4 → 4.5, on 32×256×4×4 1.9 → 0.9; stride 2 on
# 32×240×16×16 5.6 → 2.2, on 128×64×32×32 16.4 → 12.0, on 128×64×56×56 54 → 45.
PLANES_MIN_OUTPUTS = 64
# ... and its forward scan the passes over phase planes (``max_forward``) from this many
# outputs per plane, a window at a time below (``max_forward_windows``). Measured (same
# machine, 1 thread, batch 128, 3×3, ms, passes against windows): stride 1 padding 1 on
# 512×2×2 7.1 against 3.3, 256×3×3 6.7 / 4.6, 256×4×4 4.1 / 8.6, 64×8×8 1.7 / 11.5;
# stride 2 padding 1 on 64×5×5 2.0 / 1.1, 64×7×7 (16 outputs) 2.5 / 2.2, 64×12×12 4.0 /
# 6.2, 64×16×16 6.5 / 12.1; 3×3 stride 3 on 16×10×10 1.0 / 0.5.
FORWARD_PLANES_MIN_OUTPUTS = 16


class _Pool2d(Module):
    """Shared argument checking, output sizes and offsets of MaxPool2d and AvgPool2d."""

    def __init__(
        self,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] | None = None,
        padding: int | tuple[int, int] = 0,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        self.kernel_size = pair(kernel_size, "kernel_size", name, 1)
        self.stride = self.kernel_size if stride is None else pair(stride, "stride", name, 1)
        self.padding = pair(padding, "padding", name, 0)
        if any(2 * p > k for p, k in zip(self.padding, self.kernel_size)):
            raise ValueError(
                f"{name}: padding {self.padding} must be at most half the kernel size "
                f"{self.kernel_size}, or some windows would hold only padding"
            )

    # ``threads`` (None: ``ERMLAB_NUM_THREADS`` or the CPU count): the compiled passes of a
    # NumPy batch of at least ``LANE_MIN_BYTES`` per lane run in that many lanes of samples
    threads: int | None = None

    def _lanes(self, x: Any) -> list[tuple[int, int]]:
        """Contiguous ranges of samples, one per lane (``threads``, ``LANE_MIN_BYTES``)."""
        if array_module(x).__name__ != "numpy":
            return [(0, x.shape[0])]
        return _fused.lanes(x.shape[0], x.nbytes, self.threads, LANE_MIN_BYTES)

    def _geometry(self, x: Any) -> tuple[tuple[int, int], list[tuple[slice, ...]]]:
        check_spatial_input(self, x, None, self.kernel_size, self.padding)
        kh, kw = self.kernel_size
        out_hw = (
            output_size(x.shape[2], kh, self.stride[0], self.padding[0]),
            output_size(x.shape[3], kw, self.stride[1], self.padding[1]),
        )
        offsets = [kernel_offset_slice(i, j, out_hw, self.stride)
                   for i in range(kh) for j in range(kw)]
        return out_hw, offsets

    def _tiles(self, x_shape: tuple[int, ...]) -> bool:
        """Whether the windows tile the input exactly (stride = kernel, no padding,
        divisible sizes): then every input pixel is in exactly one window."""
        return (
            self.stride == self.kernel_size
            and self.padding == (0, 0)
            and x_shape[2] % self.kernel_size[0] == 0
            and x_shape[3] % self.kernel_size[1] == 0
        )

    def _scatter(self, xp: Any, x_shape, dtype, pieces) -> Any:
        """Assemble ∂L/∂x from (offset slice, function giving its gradient piece) pairs, on
        the padded grid."""
        (ph, pw), (n, c, h, w) = self.padding, x_shape
        disjoint = all(s >= k for s, k in zip(self.stride, self.kernel_size))
        padded_shape = (n, c, h + 2 * ph, w + 2 * pw)
        grad = xp.empty(padded_shape, dtype) if self._tiles(x_shape) else xp.zeros(
            padded_shape, dtype
        )
        for offset, piece in pieces:
            if disjoint:
                grad[offset] = piece()
            else:
                grad[offset] += piece()
        if (ph, pw) == (0, 0):
            return grad
        return xp.ascontiguousarray(grad[:, :, ph:ph + h, pw:pw + w])

    def extra_repr(self) -> str:
        text = f"kernel_size={self.kernel_size}, stride={self.stride}"
        return text + (f", padding={self.padding}" if self.padding != (0, 0) else "")


class MaxPool2d(_Pool2d):
    """Max pooling (Ranzato et al. 2007; the subsampling layers of LeNet-5 averaged instead).

    Args: kernel_size, stride (default: the kernel size), padding (with −∞); ints or pairs.

    ``threads`` (an attribute; default None: ``ERMLAB_NUM_THREADS`` or the CPU count):
    2×2 pooling (``_forward_pairs``, ``_grad_pairs``) of a NumPy batch of at least
    ``LANE_MIN_BYTES`` per lane is cut into that many lanes of samples on the threads of
    ``ermlab.threads``; every output is the same elementwise maximum and comparison in
    any lane, so the results do not depend on it.
    """

    forward_cache = ("_winner", "_x_shape")

    def forward(self, x: Any) -> Any:
        _, offsets = self._geometry(x)
        if self._pairs(x.shape) and _fused.kernels("_pool_kernels", x) is None:
            y = self._forward_pairs(x)
            if not self.training or bool(array_module(y).isfinite(y.sum())):
                return y
        return self._forward_scan(x, offsets)

    def _pairs(self, x_shape: tuple[int, ...]) -> bool:
        """Whether the windows are 2×2 with stride 2 and tile the input (even H and W):
        LeNet's and VGG's pooling, computed by ``_forward_pairs``."""
        return self.kernel_size == (2, 2) and self._tiles(x_shape)

    def _forward_pairs(self, x: Any) -> Any:
        """2×2 stride-2 pooling as two pairwise maxima, without index arrays:

            r[n, c, h, q] = max(x[n, c, h, 2q], x[n, c, h, 2q + 1])         (each row's pair)
            y[n, c, p, q] = max(r[n, c, 2p, q], r[n, c, 2p + 1, q])

        The first pass reads x as two stride-2 views that run through whole rows (one
        long strided loop); the second reads contiguous rows. In training mode it keeps
        the two choices as booleans, right[n, c, h, q] = x[.., 2q + 1] > x[.., 2q] and
        bottom[n, c, p, q] = r[.., 2p + 1, q] > r[.., 2p, q]: strict comparisons keep
        the left entry of a tied pair and the top row of tied rows, which is torch's
        first maximum in row-major order. A window with a NaN is left to the scan
        (``forward`` checks the sum), which routes it as torch does."""
        xp = array_module(x)
        n, c, h, w = x.shape
        y = xp.empty((n, c, h // 2, w // 2), dtype=x.dtype)
        right = xp.empty((n, c, h, w // 2), dtype=bool) if self.training else None
        bottom = xp.empty(y.shape, dtype=bool) if self.training else None

        def samples(lo: int, hi: int) -> None:
            left, odd = x[lo:hi, ..., 0::2], x[lo:hi, ..., 1::2]
            rows = xp.maximum(left, odd).reshape(hi - lo, c, h // 2, 2, w // 2)
            top, low = rows[:, :, :, 0], rows[:, :, :, 1]
            xp.maximum(top, low, out=y[lo:hi])
            if self.training:
                xp.greater(odd, left, out=right[lo:hi])
                xp.greater(low, top, out=bottom[lo:hi])

        run_ranges(self._lanes(x), samples)
        if self.training:
            self._winner = (right, bottom)
            self._x_shape = x.shape
        return y

    def _forward_scan(self, x: Any, offsets: list) -> Any:
        """Any window: a running maximum over the K_h·K_w offsets, with the winner's
        offset index kept per output (uint8 up to 256 offsets); with Numba, one compiled
        scan per window (``nn._pool_kernels``, bit for bit the same), in lanes of samples."""
        xp = array_module(x)
        kernels = _fused.kernels("_pool_kernels", x)
        if kernels is not None:
            return self._forward_kernel(kernels, x, len(offsets))
        padded = zero_pad(xp, x, self.padding, value=-xp.inf)
        best = padded[offsets[0]].copy()
        if self.training:
            # winner = the last offset k whose value beat the running maximum strictly,
            # i.e. the first maximum; k grows, so winner = max(winner, k·[x_k > best]).
            index_type = xp.uint8 if len(offsets) <= 256 else xp.int32
            winner = xp.zeros(best.shape, dtype=index_type)
            beats = xp.empty(best.shape, dtype=xp.bool_)
        for k, offset in enumerate(offsets[1:], start=1):
            candidate = padded[offset]
            if self.training:
                xp.greater(candidate, best, out=beats)
                xp.maximum(winner, xp.multiply(beats, k, dtype=index_type), out=winner)
            xp.maximum(best, candidate, out=best)
        if self.training:
            # A NaN or −∞ anywhere makes the sum non-finite (so may a finite overflow,
            # which only costs the exact checks).
            if not xp.isfinite(best.sum()):
                self._non_finite_winners(xp, padded, offsets, best, winner)
            self._winner, self._x_shape = winner, x.shape
        return best

    def _forward_kernel(self, kernels: Any, x: Any, count: int) -> Any:
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        out_h, out_w = (output_size(x.shape[2], kh, sh, ph), output_size(x.shape[3], kw, sw, pw))
        y = numpy.empty(x.shape[:2] + (out_h, out_w), dtype=x.dtype)
        winner = (numpy.empty(y.shape, dtype=numpy.uint8 if count <= 256 else numpy.int32)
                  if self.training else None)
        if self._two_by_two():
            run_ranges(self._lanes(x), kernels.max2x2_forward, x, y, winner)
        else:
            scan = (kernels.max_forward if out_h * out_w >= FORWARD_PLANES_MIN_OUTPUTS
                    else kernels.max_forward_windows)
            run_ranges(self._lanes(x), scan, x, kh, kw, sh, sw, ph, pw, y, winner)
        if self.training:
            self._winner, self._x_shape = winner, x.shape
        return y

    def _two_by_two(self) -> bool:
        """2×2 windows, stride 2, no padding: the compiled kernels' own case."""
        return self.kernel_size == (2, 2) and self.stride == (2, 2) and self.padding == (0, 0)

    def _non_finite_winners(self, xp: Any, padded: Any, offsets: list, best: Any,
                            winner: Any) -> None:
        """torch's winners where the scan above differs: the last NaN of a window with a
        NaN; the first entry inside the input of a window of only −∞ (the scan, starting
        at the window's first offset, may have stopped on the padding)."""
        if self.padding != (0, 0):
            first_inside = self._first_inside(xp, best.shape[2:], winner.dtype)
            xp.copyto(winner, first_inside, where=best == -xp.inf)
        if xp.isnan(best).any():
            for k, offset in enumerate(offsets):
                xp.copyto(winner, k, where=xp.isnan(padded[offset]), casting="unsafe")

    def _first_inside(self, xp: Any, out_hw: tuple[int, int], dtype: Any) -> Any:
        """(OH, OW) offsets k = i₀·K_w + j₀ of each window's first entry inside the input,
        i₀ = max(0, p_h − s_h p'), j₀ = max(0, p_w − s_w q')."""
        (ph, pw), (sh, sw), kw = self.padding, self.stride, self.kernel_size[1]
        i0 = xp.maximum(0, ph - sh * xp.arange(out_hw[0]))
        j0 = xp.maximum(0, pw - sw * xp.arange(out_hw[1]))
        return (i0[:, None] * kw + j0[None, :]).astype(dtype)

    def grad_input(self, grad_out: Any) -> Any:
        xp = array_module(grad_out)
        winner, x_shape = self._cached("_winner"), self._cached("_x_shape")
        if isinstance(winner, tuple):
            grad = xp.empty(x_shape, dtype=grad_out.dtype)
            run_ranges(self._lanes(grad), lambda lo, hi: self._grad_pairs(
                xp, grad_out[lo:hi], winner[0][lo:hi], winner[1][lo:hi], grad[lo:hi]))
            return grad
        kh, kw = self.kernel_size
        kernels = _fused.kernels("_pool_kernels", grad_out)
        if kernels is not None and type(winner) is numpy.ndarray and winner.flags.c_contiguous:
            (sh, sw), (ph, pw) = self.stride, self.padding
            if self._two_by_two():
                grad = numpy.empty(x_shape, dtype=grad_out.dtype)
                run_ranges(self._lanes(grad), kernels.max2x2_backward, grad_out, winner, grad)
                return grad
            grad = numpy.empty(x_shape, dtype=grad_out.dtype)  # every value written
            if (sh, sw) == (1, 1) and grad_out.shape[2] * grad_out.shape[3] >= PLANES_MIN_OUTPUTS:
                run_ranges(self._lanes(grad), kernels.max_backward, grad_out, winner, kw, sh, sw,
                           ph, pw, kh * kw, grad)
            else:
                run_ranges(self._lanes(grad), kernels.max_backward_scatter, grad_out, winner, kw,
                           sh, sw, ph, pw, grad)
            return grad
        out_hw = grad_out.shape[2:]
        pieces = (
            (kernel_offset_slice(k // kw, k % kw, out_hw, self.stride),
             lambda k=k: grad_out * (winner == k))
            for k in range(kh * kw)
        )
        return self._scatter(xp, x_shape, grad_out.dtype, pieces)

    @staticmethod
    def _grad_pairs(xp: Any, grad_out: Any, right: Any, bottom: Any, grad: Any) -> Any:
        """bprop of ``_forward_pairs`` into ``grad`` as two masked broadcasts, the forward
        passes in reverse: g goes to the bottom or top row of its window, then to the right
        or left entry of that row's pair; no gathers, every write a strided view of ∂L/∂x."""
        n, c, oh, ow = grad_out.shape
        rows = xp.empty((n, c, oh, 2, ow), dtype=grad_out.dtype)
        xp.multiply(grad_out, bottom, out=rows[:, :, :, 1])
        xp.multiply(grad_out, ~bottom, out=rows[:, :, :, 0])
        rows = rows.reshape(n, c, 2 * oh, ow)
        xp.multiply(rows, right, out=grad[..., 1::2])
        xp.multiply(rows, ~right, out=grad[..., 0::2])
        return grad


class AvgPool2d(_Pool2d):
    """Average pooling (the subsampling of LeNet-5, without its trainable scale and bias).

    Args: kernel_size, stride (default: the kernel size), padding (with zeros, counted in
    the divisor K_h·K_w as torch's ``count_include_pad=True``); ints or pairs.

    With Numba, windows that do not tile the input (overlapping, padded, or a margin
    left over) are summed in compiled passes (``nn._pool_kernels.avg_forward``,
    ``avg_backward``: the NumPy path's sums and products in its order, bit for bit), in
    lanes of samples (``threads``, as MaxPool2d). Measured (AMD EPYC Zen 4, 2 threads,
    batch 128, forward + backward ms, NumPy → compiled, PyTorch 2.13 in the same runs):
    3×3 stride 2 padding 1 on 64×32×32 86.4 → 21.5 (40.4–41.8). Windows that tile the
    input stay with NumPy's strided sums: LeNet-5's 2×2 on 6×28×28 0.98 → 2.23 compiled
    (PyTorch 2.25–2.29), its planes too small for a pass a plane.
    """

    forward_cache = ("_x_shape",)

    def forward(self, x: Any) -> Any:
        out_hw, offsets = self._geometry(x)
        kernels = None if self._tiles(x.shape) else _fused.kernels("_pool_kernels", x)
        if kernels is not None:  # the same sums and products, compiled
            y = numpy.empty(x.shape[:2] + out_hw, dtype=x.dtype)
            run_ranges(self._lanes(x), kernels.avg_forward, x, *self.kernel_size, *self.stride,
                       *self.padding, x.dtype.type(1.0 / len(offsets)), y)
            if self.training:
                self._x_shape = x.shape
            return y
        xp = array_module(x)
        padded = zero_pad(xp, x, self.padding)
        total = padded[offsets[0]].copy()
        for offset in offsets[1:]:
            total += padded[offset]
        total *= 1.0 / len(offsets)
        if self.training:
            self._x_shape = x.shape
        return total

    def grad_input(self, grad_out: Any) -> Any:
        xp = array_module(grad_out)
        x_shape = self._cached("_x_shape")
        kh, kw = self.kernel_size
        kernels = None if self._tiles(x_shape) else _fused.kernels("_pool_kernels", grad_out)
        if kernels is not None:
            grad = numpy.empty(x_shape, dtype=grad_out.dtype)  # every value written
            run_ranges(self._lanes(grad), kernels.avg_backward, grad_out, kh, kw, *self.stride,
                       *self.padding, grad_out.dtype.type(1.0 / (kh * kw)), grad)
            return grad
        share = grad_out * (1.0 / (kh * kw))
        pieces = (
            (kernel_offset_slice(i, j, grad_out.shape[2:], self.stride), lambda: share)
            for i in range(kh) for j in range(kw)
        )
        return self._scatter(xp, x_shape, grad_out.dtype, pieces)


class GlobalAvgPool2d(Module):
    """Global average pooling (Lin et al. 2014, "Network in Network"): (N, C, H, W) → (N, C),

        y[n, c] = (1 / HW) Σ_{h,w} x[n, c, h, w],    ∂L/∂x[n, c, h, w] = g[n, c] / HW.

    torch spells it ``AdaptiveAvgPool2d(1)`` followed by ``flatten(1)``.
    """

    forward_cache = ("_x_shape",)

    def forward(self, x: Any) -> Any:
        check_spatial_input(self, x, None, (1, 1), (0, 0))
        if self.training:
            self._x_shape = x.shape
        return x.mean(axis=(2, 3))

    def grad_input(self, grad_out: Any) -> Any:
        xp = array_module(grad_out)
        n, c, h, w = self._cached("_x_shape")
        share = grad_out * (1.0 / (h * w))
        return xp.ascontiguousarray(xp.broadcast_to(share[:, :, None, None], (n, c, h, w)))
