"""Convolution by direct summation, one compiled pass per sample (Numba).

    y[n, o, p, q] = b[o] + Σ_c Σ_{i,j} W[o, c, i, j] x̃[n, c, S p + d_h i, S q + d_w j]

with x̃ the sample zero-padded by (p_h, p_w), S the stride (the same both ways) and d the
dilation. No columns are made: each sample is copied once into a padded buffer, and the sum
is taken there, four output channels at a time (the outputs are padded to a multiple of
four with zero weights), the taps of every channel and kernel position in one flat list,
nine in one pass over the positions (``_flat_taps``).

Full-width rows (as ``Conv2d``'s full-width columns): for stride 1 the padded planes are
read as one flat array, and output position t = p·W_p + q takes x̃ at t + d_h i·W_p + d_w j,
so one loop over t runs over whole rows of W_p values, vectorized, instead of OH loops of
OW. The W_p − OW positions per row past the output's edge are computed (from the next row's
values) and dropped when the outputs are copied out; slack after the last plane keeps the
last row's reads inside the buffer. A stride S is brought back to this: each padded plane
is copied as S² phase planes (rows and columns ≡ a, b mod S), in which every tap reads at
a fixed offset from t = p·W_h + q (``geometry``).

    ∂L/∂W[o, c, i, j] = Σ_n Σ_t ∂L/∂y[n, o, t] x̃[n, c, t + taps[i, j]]

is summed the same way (``weight_gradient``), with ∂L/∂y laid out in full-width rows whose
extra positions are zero; on short planes several samples' planes follow one another in
one run (``GROUP_BELOW``), in the forward pass as in this sum. ∂L/∂x of a stride-1 layer
is the forward pass of the transposed convolution (``Conv2d._transposed``), so it runs
here too; that of a layer with stride S > 1 (no dilation) is S² stride-1 correlations of
∂L/∂y, one per phase of x, each with the kernel's taps of its phase
(``strided_input_gradient``).

Where it pays: layers with few channels, where Winograd's transforms and im2col's copies
cost as much as their GEMMs (``Conv2d``'s ``algorithm="auto"`` rule, with the figures).
It runs in the lanes of samples of ``Conv2d`` (``nogil``): one call per lane, so the
lanes do not take turns at the GIL between many small NumPy calls.

Numerics: each output is b followed by one fused multiply-add per tap (Numba's
``contract``), channel by channel, each channel's taps in the order w₀₀x₀₀, w₀₁x₀₁, …,
so results differ from im2col's GEMMs by rounding only, and are the same for any number
of lanes or chunks. ∂L/∂W's sums over positions are reductions in an order of the
compiler's (see ``weight_gradient``).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
from numba import njit

from ermlab import _numba_target  # noqa: F401 - the vector width, before a kernel compiles
from ermlab._numba_cache import drop_stale
from ermlab.nn import _relu_kernels
from ermlab.nn._relu_kernels import masked, rectify

drop_stale(__file__, _relu_kernels.__file__)  # kernels below inline its functions

_JIT = dict(nogil=True, cache=True, fastmath={"contract"}, error_model="numpy")

# The outputs of one chunk of positions take at most this many bytes (O × chunk values),
# so they stay in cache while every channel adds into them (four rows at a time, see
# ``_flat_taps``). Measured (16→16 on 32×32): one chunk per 32×32 plane (1088 positions,
# 70 KiB) is faster than chunks of 256 or 544; again with four rows at a time: 256 slower
# (95–111 against 115–120 GFLOP/s), 1024 even.
ACC_BYTES = 2**18
# Runs of positions are rounded up to a multiple of this many (the extra positions read
# the buffer's slack or the next row, and are never copied out), so that LLVM's vector
# loop, 8 float32 wide, leaves no scalar remainder. Measured (1 thread, batch 128, forward
# ms, paired): LeNet-5's C3 (140 positions per sample) 1.98 → 1.76, its transposed
# convolution for ∂L/∂x (252) 3.81 → 3.46; weight_gradient's sums gained nothing (C3 2.85 →
# 2.81 ms) and keep their length.
VECTOR = 8
# Accumulator rows (``chunk`` values) are a multiple of this many values long, 64 bytes
# in float32, so that in a 64-byte aligned work array (``Conv2d._work``) every row starts
# on a cache line (see ``conv._aligned_zeros`` for the measured gain).
ROW_ALIGN = 16
# ∂L/∂W of short planes sums G samples in one run (``weight_gradient``), and the forward
# pass computes them in one run (``correlate``, so the transposed convolution of ∂L/∂x
# too): stride 1, fewer than GROUP_BELOW full-width positions a sample, G =
# ⌊GROUP_POSITIONS / (H_p·W_p)⌋ (at least 1), the samples' padded planes one after the
# other in each channel. A run of one
# sample's 140 positions (LeNet-5's C3, 10 rows of 14) is 9 vector iterations, and its
# twelve sums' horizontal additions and remainder cost as much again; the rows between
# the samples' outputs (4 of every 14 in C3) are summed against zeros. Measured (AMD EPYC
# Zen 4, 1 thread, batch 128, process CPU time, medians of 60 calls alternating with one
# sample a run, ms): C3 1.99–2.84 → 1.58–2.31 with G = 4 (800 positions; G = 3 gained as
# much, G = 7 less, 2.01 → 1.67, and G = 10 nothing: the four rows of ∂L/∂y leave L1), a
# 3×3 16→16 on 8×8 padded 0.94–1.96 → 0.72–1.38 (G = 8); with 16×16 outputs, 3→16 (G = 2)
# and C1 (896 positions a sample, G = 1) as before. Samples side by side value by value
# (no wasted rows, but scattered copies in and out) gained as much on C3 and lost a third
# on 3→16; for the forward pass neither paid on C3 (~6 %). On 8×8 planes the forward's
# passes are shorter still (80 positions, 5 vector iterations): G samples one after the
# other, paired in one process (1 thread, batch 128, forward/backward ms, one sample a
# run → G): 3×3 16→32 padded 2.03/3.61 → 1.61/3.11, 16→16 1.00/1.74 → 0.85/1.54, 32→32
# 4.98/8.46 → 3.49/7.00; C3 1.66/3.82 → 1.67/3.78, 16×16 planes (3→16, 8→16) even.
GROUP_BELOW = 512
GROUP_POSITIONS = 800


@njit(inline="always", **_JIT)
def _copy_sample(x, n, pad_h, pad_w, stride, hh, wh, padded, channel):  # pragma: no cover
    """Sample n of x into the interior of ``padded`` (its borders stay zero): x̃[c, r, s] at
    phase plane (r mod S, s mod S) of channel c, row ⌊r/S⌋, column ⌊s/S⌋ (S the stride;
    for S = 1 one plane, the padded plane itself), channel c's planes from c · ``channel``
    (S²·H_h·W_h, or G times that for G samples one after the other, ``weight_gradient``)."""
    phase = hh * wh
    if stride == 1:  # rows copied whole: a loop LLVM vectorizes (measured 20 copies per
        for c in range(x.shape[1]):  # ResNet-20 step: ~40 ms slower through the loop below)
            for i in range(x.shape[2]):
                inside = x[n, c, i]
                row = padded[c * channel + (pad_h + i) * wh + pad_w:]
                for j in range(x.shape[3]):
                    row[j] = inside[j]
        return
    for c in range(x.shape[1]):
        for i in range(x.shape[2]):
            r = pad_h + i
            base = c * channel + (r % stride) * stride * phase + (r // stride) * wh
            inside = x[n, c, i]
            if stride == 2:  # constant steps, which LLVM vectorizes (measured, 1 thread,
                for b in range(2):  # batch 128, 16→32 on 32×32: forward and ∂L/∂W ~0.8×)
                    first = (b - pad_w) % 2
                    row = padded[base + b * phase + (pad_w + first) // 2:]
                    every = inside[first:]
                    for m in range((x.shape[3] - first + 1) // 2):
                        row[m] = every[2 * m]
                continue
            for b in range(stride):
                first = (b - pad_w) % stride  # the first input column in column phase b
                row = padded[base + b * phase + (pad_w + first) // stride:]
                for m in range((x.shape[3] - first + stride - 1) // stride):
                    row[m] = inside[first + m * stride]


@njit(inline="always", **_JIT)
def _one_tap(row, w, o, acc, size):  # pragma: no cover
    """acc[o + k, :size] += w[o + k] · row for k < 4: one tap of four outputs (the last taps
    of ``_flat_taps``' lists)."""
    a0 = acc[o]
    a1 = acc[o + 1]
    a2 = acc[o + 2]
    a3 = acc[o + 3]
    u0, v0, s0, z0 = w[o], w[o + 1], w[o + 2], w[o + 3]
    for t in range(size):
        x0 = row[t]
        a0[t] += u0 * x0
        a1[t] += v0 * x0
        a2[t] += s0 * x0
        a3[t] += z0 * x0


@njit(**_JIT)
def correlate(x, weight, bias, y, pad_h, pad_w, stride, hh, wh, offsets, lo, hi, padded,
              acc, vector, relu, group):  # pragma: no cover
    """y[n] for samples n in [lo, hi) of x (N, C, H, W), with ``weight`` and ``bias`` in
    ``layout``'s form: W[o, c, i, j] at [c, i, j, o], outputs padded to a multiple of four
    with zero weights and biases (those outputs are computed and never copied out).

    ``padded`` is a zero array (``geometry``'s size, with room for ``group`` samples) whose
    borders stay zero (the interior is written per sample, in S² phase planes of
    H_h × W_h), G = ``group`` samples' planes one after the other in each channel as in
    ``weight_gradient``, so that one run over t = g·S²·H_h·W_h + p·W_h + q computes them
    all (``GROUP_BELOW``; the positions between samples are computed and dropped);
    ``offsets`` (C K_h K_w,) where channel c's tap (i, j) reads in ``padded``
    (``tap_offsets``), ``acc`` (O₄, chunk) scratch for the outputs of one chunk of
    full-width positions, ``chunk`` a multiple of ``vector``: each run of positions is
    rounded up to one (``VECTOR``). Each output is the same sum for any G."""
    outputs = weight.shape[3]
    out_h, out_w = y.shape[2], y.shape[3]
    block = stride * stride * hh * wh
    chunk = acc.shape[1]
    zero = y.dtype.type(0)
    for n0 in range(lo, hi, group):
        count = min(group, hi - n0)
        for g in range(count):
            _copy_sample(x, n0 + g, pad_h, pad_w, stride, hh, wh, padded[g * block:],
                         group * block)
        length = (count - 1) * block + out_h * wh
        for t0 in range(0, length, chunk):
            size = min(chunk, length - t0)
            run = min(chunk, -(-size // vector) * vector)  # (see VECTOR)
            for o in range(outputs):
                a = acc[o]
                beta = bias[o]
                for t in range(run):
                    a[t] = beta
            # W as (C K_h K_w, O₄): channel c's taps (i, j) in turn
            _flat_taps(offsets.size, offsets, weight.reshape(offsets.size, outputs), t0, run,
                       padded, acc)
            for g in range(count):
                start = g * block - t0  # sample g's first output in acc
                first = max(0, -start // wh)
                last = min(out_h, (size - start + wh - 1) // wh)
                for o in range(y.shape[1]):
                    a = acc[o]
                    for p in range(first, last):
                        begin = start + p * wh
                        row = y[n0 + g, o, p]
                        if relu:
                            for q in range(out_w):
                                k = begin + q
                                if k >= 0 and k < size:
                                    row[q] = rectify(a[k], zero)
                        else:
                            for q in range(out_w):
                                k = begin + q
                                if k >= 0 and k < size:
                                    row[q] = a[k]


@njit(**dict(_JIT, fastmath={"contract", "reassoc"}))
def weight_gradient(x, grad_y, pad_h, pad_w, stride, hh, wh, taps, lo, hi, padded, grad,
                    total, group, y, relu):  # pragma: no cover
    """total[c, i, j, o] += Σ_n Σ_{p,q} ∂L/∂y[n, o, p, q] x̃[n, c, S p + d_h i, S q + d_w j]
    for samples n in [lo, hi), the sums of each group of ``group`` samples added on their
    own; ``total`` (C, K_h, K_w, O₄) as ``layout``'s weights.

    ``padded`` as in ``correlate`` but for G = ``group`` samples one after the other: channel c's
    planes of sample n₀ + g at (c G + g)·S²·H_h·W_h, so that one run over the positions
    t = g·S²·H_h·W_h + p·W_h + q sums them all (``GROUP_BELOW``); ``taps`` (K_h, K_w) where
    tap (i, j) reads in a channel's planes (``geometry``); ``grad`` (O₄, G·S²·H_h·W_h)
    scratch for the group's ∂L/∂y at those positions, zero at every other position (past
    each row's OW values, the rows below OH, the padding outputs: never written); with
    ``relu``, ∂L/∂y is G·1_{y > 0} (the bprop of the ReLU the forward pass applied, ``y`` its
    output), masked as it is copied there (``_relu_kernels.masked``). The sums
    over positions are reductions: ``reassoc`` lets them run in vector registers, so their
    order of addition is the compiler's (fixed for a given build and machine).

    Four outputs at a time over all channels and taps, as ``_flat_taps``: their four rows of
    ∂L/∂y stay in L1 while the channels' planes stream through. Measured (as there, one
    sample's ∂L/∂y 70 KiB): 112–113 → 139–158 GFLOP/s."""
    kh, kw, outputs = total.shape[1], total.shape[2], total.shape[3]
    block = stride * stride * hh * wh
    channel = group * block
    out_h, out_w = grad_y.shape[2], grad_y.shape[3]
    zero = x.dtype.type(0)
    for n0 in range(lo, hi, group):
        count = min(group, hi - n0)
        for g in range(count):
            _copy_sample(x, n0 + g, pad_h, pad_w, stride, hh, wh, padded[g * block:], channel)
            for o in range(grad_y.shape[1]):
                for p in range(out_h):
                    inside = grad_y[n0 + g, o, p]
                    row = grad[o, g * block + p * wh:]
                    if relu:
                        rectified = y[n0 + g, o, p]
                        for q in range(out_w):
                            row[q] = masked(inside[q], rectified[q], zero)
                    else:
                        for q in range(out_w):
                            row[q] = inside[q]
        if count < group:  # the last sample's runs read into the next one's planes: zeros,
            for c in range(x.shape[1]):  # not an earlier group's values (NaN times 0)
                padded[c * channel + count * block:c * channel + (count + 1) * block] = 0
        length = (count - 1) * block + out_h * wh
        for o in range(0, outputs - 3, 4):  # (see _flat_taps)
            g0 = grad[o]
            g1 = grad[o + 1]
            g2 = grad[o + 2]
            g3 = grad[o + 3]
            for c in range(x.shape[1]):
                for i in range(kh):
                    base, out, at = c * channel, total[c, i], taps[i]
                    for j in range(0, kw - 2, 3):
                        r0 = padded[base + at[j]:]
                        r1 = padded[base + at[j + 1]:]
                        r2 = padded[base + at[j + 2]:]
                        s00 = s01 = s02 = s10 = s11 = s12 = zero
                        s20 = s21 = s22 = s30 = s31 = s32 = zero
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
                        out[j, o] += s00
                        out[j + 1, o] += s01
                        out[j + 2, o] += s02
                        out[j, o + 1] += s10
                        out[j + 1, o + 1] += s11
                        out[j + 2, o + 1] += s12
                        out[j, o + 2] += s20
                        out[j + 1, o + 2] += s21
                        out[j + 2, o + 2] += s22
                        out[j, o + 3] += s30
                        out[j + 1, o + 3] += s31
                        out[j + 2, o + 3] += s32
                    for j in range(kw - kw % 3, kw):  # the last one or two taps, one at a time
                        r0 = padded[base + at[j]:]
                        s00 = s10 = s20 = s30 = zero
                        for t in range(length):
                            x0 = r0[t]
                            s00 += g0[t] * x0
                            s10 += g1[t] * x0
                            s20 += g2[t] * x0
                            s30 += g3[t] * x0
                        out[j, o] += s00
                        out[j, o + 1] += s10
                        out[j, o + 2] += s20
                        out[j, o + 3] += s30


@njit(inline="always", **_JIT)
def _flat_taps(count, offsets, weights, t0, size, padded, acc):  # pragma: no cover
    """acc[o, :size] += Σ_{j<count} weights[j, o] · padded[offsets[j] + t0 + t], taps of any
    channels and kernel positions alike (every channel's K_h·K_w taps in turn,
    ``correlate``; the phases of ``strided_input_gradient``): nine at a time, then three at
    a time, then one.

    Nine taps of four outputs in one pass over the positions, so each output is read and
    written once per nine taps, and each of its values takes nine multiply-adds in a row,
    (((a + w₀x₀) + w₁x₁) + …) + w₈x₈: one fused multiply-add per tap in the list's order,
    however the list is cut. Measured, 16→16 on 32×32, forward, against a 3×3 kernel's
    rows of three taps a pass: 15.7 → 11.8 ms; two outputs per pass were no faster, and
    512-bit vectors (LLVM's default for that processor was 256) no faster either. On AMD
    Zen 5 and Zen 4 LLVM's own choice is 512-bit vectors (``zmm`` in the loop's assembly;
    the nine-tap loop: ten loads, 36 multiply-adds, half of them taking their broadcast
    weight from the stack, and four stores per 16 positions).

    Other kernels took their taps kernel row by kernel row (five a pass, then three, the
    last one or two on their own; the threes and twos summed their products before adding
    them, so not one multiply-add per tap) until measured against this list (AMD EPYC Zen
    4, 1 thread, process CPU time, five paired rounds, forward ms, rows → list, the pairs'
    ratios in brackets): LeNet-5's C1 (5×5 1→6 on 28×28, batch 128) 0.93 → 0.80
    (0.85–1.02), C3 (5×5 6→16 on 14×14) 1.98 → 1.97 (0.81–1.22), its transposed
    convolution for ∂L/∂x (5×5 16→6 on 10×10, padding 4) 3.42 → 3.20 (0.89–1.07), 5×5
    16→16 on 32×32 23.3 → 23.1 (0.95–1.05), a 7×7 3→64 on 56×56 (batch 16) 22.6 → 17.1
    (0.73–0.77); an ImageNet stem, 7×7 3→64 with stride 2 on 224×224 (batch 8, three
    alternating processes), 38.2–38.6 → 32.0–34.1. LeNet-5's whole step stayed within the
    machine's noise (0.90–0.94 → 0.89–0.96 of PyTorch's). On small planes the passes are
    short (C3: 9 vector iterations of 16 positions), and its multiply-adds ran at ~58 % of
    the rate of the 16→16 3×3 layer on 32×32 (68 iterations a pass). For six outputs
    (C1; the transposed convolution of C3's ∂L/∂x, 16→6, which ``Conv2d`` leaves for the
    column gradient, ``conv.TRANSPOSED_MAX_WASTE``) a last pass of two outputs, bit for bit
    the same sums without the two padding outputs of a second pass of four, was no faster
    (C1 forward 0.87–1.15 → 0.93–1.09 ms, the 16→6 one 2.98–4.37 → 3.04–3.45; three
    alternating processes): a pass's nine loads of x̃ and its stores, not its multiply-adds
    alone, set its pace. Nor did 256-bit vectors change these loops' times on Zen 4.

    Four outputs at a time, all taps, then the next four: the four accumulator rows
    (4 × chunk values) stay in L1 while every channel adds into them, and the channels'
    planes stream through, one new cache line per run of positions. With channels outer,
    all O₄ rows (70 KiB for 16 outputs of a 32×32 plane) were read and written from L2 once
    per channel. Measured (AMD Zen 5, whose LLVM target uses 512-bit vectors here; 1
    thread, batch 128, 16→16 on 32×32, paired runs): 100–111 → 106–123 GFLOP/s."""
    outputs = acc.shape[0]
    nines = count - count % 9
    threes = nines + (count - nines) // 3 * 3
    # (range(0, O₄ − 3, 4): with range(0, O₄, 4) LLVM vectorized the loops over positions
    # 7× slower, measured)
    for o in range(0, outputs - 3, 4):
        a0 = acc[o]
        a1 = acc[o + 1]
        a2 = acc[o + 2]
        a3 = acc[o + 3]
        for j in range(0, nines, 9):
            r0 = padded[offsets[j] + t0:]; r1 = padded[offsets[j + 1] + t0:]  # noqa: E702
            r2 = padded[offsets[j + 2] + t0:]; r3 = padded[offsets[j + 3] + t0:]  # noqa: E702
            r4 = padded[offsets[j + 4] + t0:]; r5 = padded[offsets[j + 5] + t0:]  # noqa: E702
            r6 = padded[offsets[j + 6] + t0:]; r7 = padded[offsets[j + 7] + t0:]  # noqa: E702
            r8 = padded[offsets[j + 8] + t0:]
            w = weights[j:j + 9]
            u0 = w[0, o]; u1 = w[1, o]; u2 = w[2, o]; u3 = w[3, o]; u4 = w[4, o]  # noqa: E702
            u5 = w[5, o]; u6 = w[6, o]; u7 = w[7, o]; u8 = w[8, o]  # noqa: E702
            v0 = w[0, o + 1]; v1 = w[1, o + 1]; v2 = w[2, o + 1]; v3 = w[3, o + 1]  # noqa: E702
            v4 = w[4, o + 1]; v5 = w[5, o + 1]; v6 = w[6, o + 1]; v7 = w[7, o + 1]  # noqa: E702
            v8 = w[8, o + 1]
            s0 = w[0, o + 2]; s1 = w[1, o + 2]; s2 = w[2, o + 2]; s3 = w[3, o + 2]  # noqa: E702
            s4 = w[4, o + 2]; s5 = w[5, o + 2]; s6 = w[6, o + 2]; s7 = w[7, o + 2]  # noqa: E702
            s8 = w[8, o + 2]
            z0 = w[0, o + 3]; z1 = w[1, o + 3]; z2 = w[2, o + 3]; z3 = w[3, o + 3]  # noqa: E702
            z4 = w[4, o + 3]; z5 = w[5, o + 3]; z6 = w[6, o + 3]; z7 = w[7, o + 3]  # noqa: E702
            z8 = w[8, o + 3]
            for t in range(size):
                x0 = r0[t]; x1 = r1[t]; x2 = r2[t]; x3 = r3[t]; x4 = r4[t]  # noqa: E702
                x5 = r5[t]; x6 = r6[t]; x7 = r7[t]; x8 = r8[t]  # noqa: E702
                a0[t] = (a0[t] + u0 * x0 + u1 * x1 + u2 * x2 + u3 * x3 + u4 * x4 + u5 * x5
                         + u6 * x6 + u7 * x7 + u8 * x8)
                a1[t] = (a1[t] + v0 * x0 + v1 * x1 + v2 * x2 + v3 * x3 + v4 * x4 + v5 * x5
                         + v6 * x6 + v7 * x7 + v8 * x8)
                a2[t] = (a2[t] + s0 * x0 + s1 * x1 + s2 * x2 + s3 * x3 + s4 * x4 + s5 * x5
                         + s6 * x6 + s7 * x7 + s8 * x8)
                a3[t] = (a3[t] + z0 * x0 + z1 * x1 + z2 * x2 + z3 * x3 + z4 * x4 + z5 * x5
                         + z6 * x6 + z7 * x7 + z8 * x8)
        for j in range(nines, threes, 3):
            r0 = padded[offsets[j] + t0:]
            r1 = padded[offsets[j + 1] + t0:]
            r2 = padded[offsets[j + 2] + t0:]
            u0 = weights[j, o]; u1 = weights[j + 1, o]; u2 = weights[j + 2, o]  # noqa: E702
            v0 = weights[j, o + 1]; v1 = weights[j + 1, o + 1]  # noqa: E702
            v2 = weights[j + 2, o + 1]
            s0 = weights[j, o + 2]; s1 = weights[j + 1, o + 2]  # noqa: E702
            s2 = weights[j + 2, o + 2]
            z0 = weights[j, o + 3]; z1 = weights[j + 1, o + 3]  # noqa: E702
            z2 = weights[j + 2, o + 3]
            for t in range(size):
                x0 = r0[t]
                x1 = r1[t]
                x2 = r2[t]
                a0[t] = a0[t] + u0 * x0 + u1 * x1 + u2 * x2
                a1[t] = a1[t] + v0 * x0 + v1 * x1 + v2 * x2
                a2[t] = a2[t] + s0 * x0 + s1 * x1 + s2 * x2
                a3[t] = a3[t] + z0 * x0 + z1 * x1 + z2 * x2
        for j in range(threes, count):
            _one_tap(padded[offsets[j] + t0:], weights[j], o, acc, size)


@njit(**_JIT)
def strided_input_gradient(grad_y, weights, offsets, counts, grad_x, pad_h, pad_w, stride,
                           wg, kmax, block, lo, hi, padded, acc, vector):  # pragma: no cover
    """∂L/∂x[n] for samples n in [lo, hi) of a layer with stride S > 1 (dilation 1), by
    phases: x̃'s positions (r, s) with r ≡ a, s ≡ b (mod S) take only the taps i ≡ a,
    j ≡ b, K_a × K_b of them, so phase (a, b) of ∂L/∂x̃ is a stride-1 correlation of ∂L/∂y,
    zero-padded by K_max − 1 = ⌈K/S⌉ − 1, with that sub-kernel flipped (``phases``):

        ∂L/∂x̃[c, S r' + a, S s' + b] = Σ_o Σ_{k<K_a, l<K_b} W[o, c, a + S k, b + S l]
                                                         · ∂L/∂y[o, r' − k, s' − l].

    Each sample's ∂L/∂y is copied once into ``padded`` (O planes of ``block`` values,
    H_g × W_g, their borders zero), each phase's O·K_a·K_b taps summed there in full-width
    rows of W_g, nine at a time (``_flat_taps``: a sub-kernel of 2×2 or fewer taps, taken
    kernel row by kernel row, would read and write each output once for every two taps),
    and the positions inside x copied out; a phase without taps (S > K) gives zeros.
    ``weights`` (S², taps, C₄), ``offsets`` (S², taps) and ``counts`` (S²,) as ``phases``
    gives them; ``acc`` (C₄, chunk) scratch as ``correlate``'s."""
    outputs, channels = grad_y.shape[1], grad_x.shape[1]
    out_h, out_w = grad_y.shape[2], grad_y.shape[3]
    height, width = grad_x.shape[2], grad_x.shape[3]
    hh, wh = -(-(height + 2 * pad_h) // stride), -(-(width + 2 * pad_w) // stride)
    length = hh * wg
    chunk = acc.shape[1]
    for n in range(lo, hi):
        for o in range(outputs):
            for p in range(out_h):
                inside = grad_y[n, o, p]
                row = padded[o * block + (p + kmax - 1) * wg + kmax - 1:]
                for q in range(out_w):
                    row[q] = inside[q]
        for a in range(stride):
            for b in range(stride):
                phase = a * stride + b
                for t0 in range(0, length, chunk):
                    size = min(chunk, length - t0)
                    run = min(chunk, -(-size // vector) * vector)  # (see VECTOR)
                    for c in range(acc.shape[0]):
                        sums = acc[c]
                        for t in range(run):
                            sums[t] = 0
                    _flat_taps(counts[phase], offsets[phase], weights[phase], t0, run,
                               padded, acc)
                    # the phase's columns inside x: S·s' + b − p_w in [0, W)
                    left = max(0, -(-(pad_w - b) // stride))
                    right = min(wh, (width - 1 - b + pad_w) // stride + 1)
                    for rp in range(t0 // wg, min(hh, (t0 + size + wg - 1) // wg)):
                        r = stride * rp + a - pad_h
                        if r < 0 or r >= height:
                            continue
                        begin = rp * wg - t0
                        sp0 = max(left, -begin)
                        sp1 = min(right, size - begin)
                        if sp1 <= sp0:
                            continue
                        col = stride * sp0 + b - pad_w
                        for c in range(channels):
                            out = grad_x[n, c, r, col:]
                            sums = acc[c, begin + sp0:]
                            if stride == 2:  # a constant step (as _copy_sample's)
                                for m in range(sp1 - sp0):
                                    out[2 * m] = sums[m]
                            else:
                                for m in range(sp1 - sp0):
                                    out[stride * m] = sums[m]


def _taps_of_phase(kernel: int, phase: int, stride: int) -> int:
    """K_a = ⌈(K − a)/S⌉: how many taps i < K are ≡ a (mod S) (0 where a ≥ K)."""
    return max(0, -(-(kernel - phase) // stride))


@lru_cache(maxsize=64)
def _phase_offsets(weight_shape: tuple[int, ...], stride: int, x_shape: tuple[int, ...],
                   padding: tuple[int, int]) -> tuple[Any, Any, int, int, int]:
    """(offsets (S², taps), counts (S²,), W_g, K_max, block) of ``phases``; cached by the
    geometry (the arrays are only read)."""
    o, _, kh, kw = weight_shape
    kmax = max(-(-kh // stride), -(-kw // stride))
    hh = -(-(x_shape[2] + 2 * padding[0]) // stride)
    wg = -(-(x_shape[3] + 2 * padding[1]) // stride) + kmax - 1
    block = (hh + kmax - 1) * wg
    most = o * kmax * kmax
    offsets = np.zeros((stride * stride, most), dtype=np.int64)
    counts = np.zeros(stride * stride, dtype=np.int64)
    for a in range(stride):
        for b in range(stride):
            ka, kb = _taps_of_phase(kh, a, stride), _taps_of_phase(kw, b, stride)
            rows = (kmax - ka + np.arange(ka))[:, None] * wg + kmax - kb + np.arange(kb)
            taps = (np.arange(o)[:, None] * block + rows.reshape(1, -1)).reshape(-1)
            offsets[a * stride + b, :taps.size] = taps
            counts[a * stride + b] = taps.size
    return offsets, counts, wg, kmax, block


def phases(weight: Any, stride: int, x_shape: tuple[int, ...],
           padding: tuple[int, int]) -> tuple[Any, Any, Any, int, int, int]:
    """The taps of ``strided_input_gradient`` from W (O, C, K_h, K_w) for inputs of
    ``x_shape`` padded by ``padding``: (weights (S², O·K_max², C₄), offsets, counts, W_g,
    K_max, block). Phase (a, b) = a·S + b holds, tap j = (o·K_a + k)·K_b + l,
    W[o, c, a + S(K_a − 1 − k), b + S(K_b − 1 − l)] at weights[phase, j, c] (the sub-kernel
    flipped), read at offsets[phase, j] = o·block + (K_max − K_a + k)·W_g + K_max − K_b + l
    from an output position: ∂L/∂y of channel o padded by K_max − 1, in planes of
    H_g × W_g = (⌈H_p/S⌉ + K_max − 1) × (⌈W_p/S⌉ + K_max − 1) values."""
    o, c, kh, kw = weight.shape
    offsets, counts, wg, kmax, block = _phase_offsets(weight.shape, stride, tuple(x_shape),
                                                      padding)
    flat = np.zeros((stride * stride, offsets.shape[1], _fours(c)), dtype=weight.dtype)
    for a in range(stride):
        for b in range(stride):
            ka, kb = _taps_of_phase(kh, a, stride), _taps_of_phase(kw, b, stride)
            # W[o, c, a + S(K_a − 1 − k), b + S(K_b − 1 − l)] as [o, k, l, c]
            sub = weight[:, :, a::stride, b::stride][:, :, ::-1, ::-1][:, :, :ka, :kb]
            flat[a * stride + b, :o * ka * kb, :c] = sub.transpose(0, 2, 3, 1).reshape(-1, c)
    return flat, offsets, counts, wg, kmax, block


def backward_inputs(grad_y: Any, weights: tuple, grad_x: Any, padding: tuple[int, int],
                    stride: int, lo: int, hi: int, work: Any) -> None:
    """∂L/∂x[lo:hi] of a layer with stride > 1 and dilation 1 (``strided_input_gradient``),
    ``weights`` = ``phases(W, …)``; ``work`` as ``forward``'s."""
    flat, offsets, counts, wg, kmax, block = weights
    hh = -(-(grad_x.shape[2] + 2 * padding[0]) // stride)
    # the last channel's plane, then its farthest tap, (K_max − 1)·W_g + K_max − 1, and a
    # run's rounding
    size = grad_y.shape[1] * block + (kmax - 1) * (wg + 1) + VECTOR
    padded = work("direct_strided", size, (grad_y.shape[1:], grad_x.shape[1:], padding))
    length = hh * wg
    channels4 = flat.shape[-1]
    chunk = max(1, min(length, max(wg, ACC_BYTES // (channels4 * grad_x.dtype.itemsize))))
    chunk = -(-chunk // ROW_ALIGN) * ROW_ALIGN
    acc = work("direct_acc", channels4 * chunk, ()).reshape(channels4, chunk)
    strided_input_gradient(grad_y, flat, offsets, counts, grad_x, padding[0], padding[1],
                           stride, wg, kmax, block, lo, hi, padded, acc, VECTOR)


def layout(weight: Any, bias: Any) -> tuple[Any, Any]:
    """W (O, C, K_h, K_w) and b (O,; None: zeros) as the kernels read them: W as
    (C, K_h, K_w, O₄), C-contiguous, and b as (O₄,), O₄ = O rounded up to a multiple of
    four, the extra outputs' weights and biases zero."""
    o = weight.shape[0]
    wide = np.zeros(weight.shape[1:] + (_fours(o),), dtype=weight.dtype)
    wide[..., :o] = weight.transpose(1, 2, 3, 0)
    padded_bias = np.zeros(wide.shape[-1], dtype=weight.dtype)
    if bias is not None:
        padded_bias[:o] = bias
    return wide, padded_bias


def _fours(outputs: int) -> int:
    """O₄: ``outputs`` rounded up to a multiple of four (the kernels sum four at a time)."""
    return -(-outputs // 4) * 4


def _padded_sample(x: Any, kernel: tuple[int, int], padding: tuple[int, int],
                   stride: tuple[int, int], dilation: tuple[int, int], out_h: int,
                   work: Any) -> tuple[int, int, int, Any, Any]:
    """(S, H_h, W_h, taps) of ``geometry`` and the lane's zero-bordered buffer of one padded
    sample (``work``'s, so fprop and bprop share it)."""
    s, hh, wh, taps, size = geometry(x.shape, kernel, padding, stride, dilation, out_h)
    return s, hh, wh, taps, work("direct_padded", size, (x.shape[1:], padding, stride, size))


@lru_cache(maxsize=256)
def geometry(x_shape: tuple[int, ...], kernel: tuple[int, int], padding: tuple[int, int],
             stride: tuple[int, int], dilation: tuple[int, int],
             out_h: int) -> tuple[int, int, int, Any, int]:
    """(S, H_h, W_h, taps, size) of the padded buffer for stride S (the same both ways): each
    channel's padded plane x̃ (H_p × W_p) as S² phase planes of H_h = ⌈H_p/S⌉ × W_h = ⌈W_p/S⌉,
    x̃[r, s] in plane (r mod S, s mod S) at (⌊r/S⌋, ⌊s/S⌋), so that output (p, q), which
    reads x̃[S p + d_h i, S q + d_w j], reads every tap (i, j) at a fixed offset

        taps[i, j] = ((d_h i mod S)·S + d_w j mod S)·H_h W_h + ⌊d_h i/S⌋·W_h + ⌊d_w j/S⌋

    from position t = p·W_h + q of one flat stride-1 run (for S = 1, x̃ itself and
    taps[i, j] = d_h i·W_p + d_w j). ``size``: C·S²·H_h·W_h values and the slack the last
    channel's reads past the outputs of its last row need, ``VECTOR`` more.

    Cached by its (hashable) arguments, ``taps`` shared between calls (the kernels only
    read it): every lane of every call asks for it, and computing it takes 20–35 µs of
    Python and NumPy under the GIL, while the other lanes wait for the GIL to start."""
    c, h, w = x_shape[1:]
    s = stride[0]
    hh, wh = -(-(h + 2 * padding[0]) // s), -(-(w + 2 * padding[1]) // s)
    rows = np.arange(kernel[0]) * dilation[0]
    cols = np.arange(kernel[1]) * dilation[1]
    taps = (((rows[:, None] % s) * s + cols[None, :] % s) * hh * wh
            + (rows[:, None] // s) * wh + cols[None, :] // s).astype(np.int64)
    block = s * s * hh * wh
    return s, hh, wh, taps, c * block + max(0, int(taps.max()) + out_h * wh - block) + VECTOR


def forward(x: Any, weight: Any, bias: Any, y: Any, padding: tuple[int, int],
            stride: tuple[int, int], dilation: tuple[int, int], lo: int, hi: int,
            work: Any, relu: bool = False) -> None:
    """y[lo:hi] of the correlation of x (N, C, H, W), zero-padded by ``padding``, with
    ``weight`` and ``bias`` in ``layout``'s form, all C-contiguous; the same stride both ways.
    ``relu``: max(y, 0) instead (``Conv2d.forward_relu``), as ``_relu_kernels.forward`` takes
    it, written as the outputs are copied out of the accumulators.

    ``work(name, size, key)`` returns a reused flat work array of ``size`` values (zero
    when first made, and made again when ``key`` changes)."""
    outputs, kernel, out_h = weight.shape[3], weight.shape[1:3], y.shape[2]
    s, hh, wh, _, size = geometry(x.shape, kernel, padding, stride, dilation, out_h)
    group = _group(s, hh, wh, out_h)
    if group == 1:
        padded = _padded_sample(x, kernel, padding, stride, dilation, out_h, work)[-1]
    else:  # G samples' planes one after the other in each channel (``weight_gradient``'s)
        size += x.shape[1] * (group - 1) * s * s * hh * wh
        padded = work("direct_grouped", size, (x.shape[1:], padding, stride, size))
    length = (group - 1) * s * s * hh * wh + out_h * wh
    chunk = max(1, min(length, max(wh, ACC_BYTES // (outputs * x.dtype.itemsize))))
    chunk = -(-chunk // ROW_ALIGN) * ROW_ALIGN
    acc = work("direct_acc", outputs * chunk, ()).reshape(outputs, chunk)
    offsets = tap_offsets(x.shape, kernel, padding, stride, dilation, out_h, group)
    correlate(x, weight, bias, y, padding[0], padding[1], s, hh, wh, offsets, lo, hi, padded,
              acc, VECTOR, relu, group)


def _group(stride: int, hh: int, wh: int, out_h: int) -> int:
    """G, the samples summed in one run (``GROUP_BELOW``)."""
    if stride > 1 or out_h * wh >= GROUP_BELOW:
        return 1
    return max(1, GROUP_POSITIONS // (stride * stride * hh * wh))


@lru_cache(maxsize=256)
def tap_offsets(x_shape: tuple[int, ...], kernel: tuple[int, int], padding: tuple[int, int],
                stride: tuple[int, int], dilation: tuple[int, int], out_h: int,
                group: int = 1) -> Any:
    """Where channel c's tap (i, j) reads in the padded samples, c·G·S²·H_h·W_h + taps[i, j]
    (G = ``group`` samples' planes in each channel), at (c K_h + i) K_w + j (``geometry``;
    cached as it is)."""
    s, hh, wh, taps, _ = geometry(x_shape, kernel, padding, stride, dilation, out_h)
    channels = np.arange(x_shape[1], dtype=np.int64)[:, None] * (group * s * s * hh * wh)
    return (channels + taps.reshape(1, -1)).reshape(-1)


def backward_weights(x: Any, grad_y: Any, kernel: tuple[int, int], padding: tuple[int, int],
                     stride: tuple[int, int], dilation: tuple[int, int], lo: int, hi: int,
                     work: Any, y: Any = None) -> Any:
    """Σ_n ∂L/∂W over samples [lo, hi), a new array in ``layout``'s form (C, K_h, K_w, O₄);
    given ``y``, the output of a forward pass with its ReLU, ``grad_y`` is ∂L/∂max(y, 0) and
    the ReLU's bprop is taken as it is read (``weight_gradient``)."""
    c, o, out_h = x.shape[1], grad_y.shape[1], grad_y.shape[2]
    wide = _fours(o)
    s, hh, wh, taps, size = geometry(x.shape, kernel, padding, stride, dilation, out_h)
    block = s * s * hh * wh
    group = _group(s, hh, wh, out_h)
    if group == 1:  # the forward pass's buffer
        padded = _padded_sample(x, kernel, padding, stride, dilation, out_h, work)[-1]
    else:  # G samples' planes one after the other in each channel
        size += c * (group - 1) * block
        padded = work("direct_grouped", size, (x.shape[1:], padding, stride, size))
    length = (group - 1) * block + out_h * wh
    grad = work("direct_grad", wide * length, (grad_y.shape[1:], wh, group))
    total = np.zeros((c, *kernel, wide), dtype=x.dtype)
    weight_gradient(x, grad_y, padding[0], padding[1], s, hh, wh, taps, lo, hi, padded,
                    grad.reshape(wide, length), total, group,
                    np.zeros((0, 0, 0, 0), dtype=x.dtype) if y is None else y, y is not None)
    return total
