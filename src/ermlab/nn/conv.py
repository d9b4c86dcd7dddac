"""2-D convolution (cross-correlation, as in every framework) by im2col and GEMMs.

For an input x of shape (N, C, H, W) and a kernel W of shape (O, C/G, K_h, K_w),

    y[n, o, p, q] = b[o] + Σ_{c, i, j} W[o, c, i, j] · x̃[n, g·C/G + c, s_h p + d_h i, s_w q + d_w j]

where x̃ is x zero-padded by (p_h, p_w), s the stride, d the dilation, G the number of
groups and g = o // (O/G) the group of output channel o (LeCun et al. 1998 for the
convolutional layer; Krizhevsky et al. 2012 introduced groups; Xie et al. 2017 call them
ResNeXt's cardinality; Yu & Koltun 2016 for dilation). Output size

    OH = ⌊(H + 2 p_h − d_h (K_h − 1) − 1) / s_h⌋ + 1     (and likewise OW).

How it is computed (Chellapilla et al. 2006, "im2col"), a block of samples at a time: a
strided *view* of x̃ with shape (n_b, C, K_h, K_w, OH, OW) is copied into a reused column
buffer X_col of shape (n_b, C·K_h·K_w, OH·OW); then, per sample n and group,

    Y_n = W_mat X_n                  (O/G × OH·OW),   W_mat = W reshaped (O/G, C/G·K_h·K_w)

written straight into NCHW order with the bias added in the same pass. Blocks hold about
``FORWARD_BLOCK_BYTES`` of columns, so the GEMMs read them from cache right after they
are made, and the columns of the whole batch never exist: fprop caches only x (by
reference) and bprop makes each block's columns again. bprop with G_n = ∂L/∂Y_n:

    (∂L/∂W_mat)ᵀ = Σ_n X_n G_nᵀ,    ∂L/∂b = Σ_{n,p,q} G,    ∂L/∂X_n = W_matᵀ G_n,

and col2im scatters ∂L/∂X_n back onto x̃ with one strided addition per kernel offset
(i, j) — K_h·K_w vectorized additions, no ``add.at``. With stride 1 and no groups (and at
least ``TRANSPOSED_MIN_CHANNELS`` input channels), ∂L/∂x is instead computed as the
forward pass of the transposed convolution (see ``Conv2d._transposed``), which needs no
column gradient and no col2im. A 1×1 convolution without padding or groups skips im2col:
it is a batched GEMM on x itself, in lanes of samples as below. (It ran on BLAS's own
threads before; measured, 2 vCPUs, paired: 1×1 16→32 on 32×32, batch 128, forward/backward
2.64/4.20–4.40 → 1.56–1.66/2.68–2.76 ms, 64→256 on 16×16 7.87–8.10 → 5.40–5.86 ms forward;
a bottleneck ResNet (one block per stage, 64×64 inputs) 115–120 → 87 ms a step at batch 4,
744–758 → 646–654 at batch 32: OpenBLAS's threads, spinning after each GEMM, had taken the
cores from the next layers' lanes.)

Layout detail: for stride 1 the column rows may span whole padded rows ("full width",
CW = W_p instead of OW): every copy and col2im addition is then one contiguous run per
(channel, sample) instead of OH short runs, at the price of W_p − OW discarded outputs
per row (see ``Conv2d._layout``). Full-width columns of a stride-1 convolution without
groups (at least ``ROW_SPLIT_MIN_CHANNELS`` input channels) are not copied K_h·K_w times:
K_w shifted copies of x̃ hold every column row, and K_h GEMMs read them in place
(``Conv2d._shifted_blocks``).

Threads (data parallelism over the batch, inside the layer): the samples of a batch are
independent until ∂L/∂W sums over them, so the batch of a NumPy input is cut into
``threads`` contiguous ranges of samples, "lanes" (default ``ERMLAB_NUM_THREADS`` or the
CPU count; ``Conv2d(threads=1)`` or ``ERMLAB_NUM_THREADS=1``: the calling thread only, the
results bit for bit those of a single thread). The calling thread runs the first lane and
the process-wide pool of ``ermlab.threads`` (the optimizer's) the others, with BLAS held
to one thread around the whole parallel region. Each lane makes its own columns in its
own work arrays and runs its own GEMMs, so im2col copies, col2im additions and bias
additions run on every core, not only the GEMMs (NumPy releases the GIL inside all of
them); OpenBLAS's own threads would split each ~1-sample GEMM and leave the copies around
it on one core. In bprop each lane writes ∂L/∂x of its own samples only, and the lanes
after the first sum Σ_n G_n X_nᵀ apart, added to ∂L/∂W when all are done: with several
lanes ∂L/∂W differs from one lane's only by the order of that floating-point sum.
Measured (Xeon VM with 2 vCPUs, OpenBLAS SkylakeX, batch 128, whole training steps in
paired rounds at load 1.1–1.5; before: one lane, OpenBLAS on 2 threads): small VGG 538 →
481 ms (0.90×), ResNet-20 1252 → 1023 ms (0.82×), LeNet-5 unchanged (its convolutions stay
in one lane, see ``LANE_MIN_FLOPS``); CPU time per step falls as well (VGG 1071 → 785 ms):
OpenBLAS's threads no longer spin between small GEMMs. Two threads cannot give 2× there:
a 1024³ GEMM runs only 1.33× faster on two OpenBLAS threads than on one. Each lane keeps
work arrays of its own, so two lanes hold twice those of one (small VGG 16 → 33 MiB, all
layers; ResNet-20 77 → 152 MiB).

Winograd (``ermlab.nn._winograd``): 3×3 convolutions with stride 1 and no dilation are
computed by F(2×2, 3×3) (Lavin & Gray 2016) where both channel counts are large enough
(``WINOGRAD_MIN_CHANNELS``, or ``WINOGRAD_NARROW_CHANNELS`` on small planes or with twice
as many outputs as inputs; with groups, ``GROUPED_WINOGRAD_MIN_CHANNELS`` a group, and only
on small planes, ``GROUPED_WINOGRAD_MAX_POSITIONS``), on NumPy arrays with Numba:
2.25× fewer multiplications, and ∂L/∂x and ∂L/∂W from the same transformed tiles, with the
same lanes of samples. ``Conv2d(algorithm="im2col")`` keeps the path above;
``algorithm="winograd"`` asks for Winograd whatever the channel counts. Results differ from
im2col's by rounding only (float64: ~1e-15 relative).

Direct (``ermlab.nn._direct``): convolutions without groups and with few channels (where
Winograd does not pay), of any kernel, dilation and stride (the same both ways), are summed
directly, W[o, c, i, j] times the padded input, in one compiled pass per sample with no
columns; ∂L/∂W is computed the same way, and ∂L/∂x, for stride 1 (any number of channels),
as the transposed convolution's forward pass, itself direct; for strides > 1 without
dilation phase by phase (``_direct.strided_input_gradient``: each of the S² phases of ∂L/∂x
a stride-1 correlation of ∂L/∂y with the taps of its phase; measured, Intel Xeon VM,
batch 128, ResNet-20's 16→32 stride-2 layer, paired against im2col's column gradient:
bprop 0.78× at 2 threads, ∂L/∂x alone 0.77×; with dilation, the column gradient).
Each lane is one call that holds no GIL, so two lanes run at once (16→16 on
32×32, forward + backward: 1.6× faster on two lanes, im2col's lanes 1.5×).
``algorithm="direct"`` asks for it whatever the channel counts. Results differ from
im2col's by rounding only.

Depthwise (``ermlab.nn._depthwise``): a convolution with groups = in_channels (each channel
convolved with filters of its own, M = O/C of them) is, on im2col, one 1 × K_h·K_w GEMM per
channel and sample. ``algorithm="direct"`` (and ``auto`` up to ``DEPTHWISE_MAX_POSITIONS``
output positions per sample) sums it directly instead: each sample's planes of a range of
channels copied channels-last, every tap one multiply-add over the contiguous channels, in
lanes of channels, for any kernel, stride, padding and dilation. Results differ from
im2col's by rounding only, and do not depend on the number of lanes.

A ReLU after the layer (``forward_relu``, which ``Sequential`` calls) runs in the Winograd
and direct paths' own kernels and lanes: the kernels write max(y, 0) as they write y (the
direct sums as they copy the outputs out, Winograd over each block's outputs while they are
in cache), and in bprop Winograd's kernels (and direct's ∂L/∂W where ∂L/∂x is not wanted)
take ∂L/∂y·1_{y > 0} as they read ∂L/∂y, elsewhere each lane masks its samples of ∂L/∂y
before reading them (y kept as the ReLU keeps it; bit for bit the two layers). The ReLU's
forward pass, its two parallel regions and its output array are saved. Measured
(``benchmarks/relu_fusion.py``, batch 128, forward + bprop, ratio of the medians of 16
paired rounds, fused / apart, 2 threads and 1): the small VGG's 3→32 (direct) 0.87 and
0.82, its Winograd layers 0.97–1.04 (the ReLU is 2–3 % of such a layer: within noise);
LeNet-5's whole step at 2 threads 0.95 (16 paired rounds).

Where frameworks differ: torch initializes W with kaiming_uniform(a=√5), i.e.
U[−1/√fan_in, 1/√fan_in], and the bias from the same range; here the default is He
uniform, U[−√(6/fan_in), √(6/fan_in)] (He et al. 2015), and a zero bias, as for ``Linear``.
"""

from __future__ import annotations

import importlib.util
import numbers
import threading
from functools import partial
from typing import Any

from ermlab.backend import array_module, as_generator, resolve_dtype
from ermlab.nn import _fused, _products, init
from ermlab.nn.activations import rectified_gradient
from ermlab.nn.linear import check_float_input
from ermlab.nn.module import Module
from ermlab.nn.parameter import Parameter
from ermlab.threads import (
    check_threads,
    default_threads,
    rest,
    run_lanes,
    run_ranges,
    sample_lanes,
)

# bprop computes ∂L/∂x as the forward pass of the transposed convolution (see
# Conv2d._transposed) for stride 1, no groups and at least this many input channels; for
# layers computed by direct summation at any number (the transposed convolution is direct
# too). Measured (1 thread, batch 128, backward ms, column gradient → transposed, paired):
# 3×3 on 32×32 3→8 5.65 → 3.78, 4→16 14.9 → 10.6, 8→16 19.0 → 13.4, 8→8 on 16×16 5.05 → 2.84;
# LeNet-5's C3 (5×5, 6→16 on 14×14) 7.6 → 7.9 and 10.3 → 10.6 (a wash).
TRANSPOSED_MIN_CHANNELS = 16
# ... but not for a direct layer whose transposed convolution would do this many times the
# multiply-adds ∂L/∂x needs: each of the H·W input positions sums all K_h·K_w taps where
# OH·OW·K_h·K_w products touch the outputs (a valid convolution on a small plane), times
# the direct kernels' outputs rounded up to fours, C₄/C. Measured (Intel Xeon VM, batch
# 128, bprop ms, paired, transposed → column gradient): LeNet-5's C3 (5×5, 6→16 on
# 14×14: 1.96 × 8/6 = 2.61) 5.32 → 4.44 at 1 thread, 2.83 → 2.49 and 3.91 → 3.47 at 2;
# below it, 8→16 on 14×14 (1.96) 5.97 → 5.73 and 3.15 → 3.14, 3×3 16→16 on 8×8 (1.78)
# even, 16→8 on 10×10 (1.56) 0.88 → 1.04, 6→16 on 28×28 (1.81) 8.04 → 9.17, 16→16 on
# 32×32 with padding 1 (1.0) 10.6 → 15.6. LeNet-5's whole step at 2 threads: 0.99–1.00×.
# (Those column gradients ran in a parallel region of their own; since they run in the
# lanes of ∂L/∂W, ``Conv2d._backward_direct``, C3's bprop at 2 threads took 0.91× the time.)
TRANSPOSED_MAX_WASTE = 2.5
# Largest O/G·(W_p − OW) for which the full-width column layout is used (see
# Conv2d._layout): the extra GEMM work per column value it saves copying grows with the
# outputs per group. Measured (1 thread, batch 128): full width is faster for LeNet's C3
# (64) and 3×3 convs with 32–64 channels (64–128), slower for 256 channels on 4×4 maps
# (512) and beyond. Grouped (AMD EPYC Zen 5, 2 threads, batch 128, 3×3, forward/backward
# ms, O·(W_p − OW) → O/G·(W_p − OW)): 32 groups of 8 channels on 8×8 6.36/11.61 →
# 5.04/8.85, of 16 on 4×4 6.34/13.52 → 4.99/11.62, depthwise 512 channels on 8×8
# 12.73/25.26 → 7.33/19.69; 32 groups of 4 on 16×16 5.53/10.86 → 5.64/9.78. Later, the
# machine slower, both layouts interleaved in one process: 8 channels on 8×8 8.03/11.52
# → 9.44/9.03 (fprop slower, the step faster), 16 on 4×4 7.81/13.70 → 6.13/12.18, 4 on
# 16×16 9.96/10.30 → 9.68/10.78.
FULL_WIDTH_BUDGET = 256
# fprop, and bprop's weight gradient where no col2im follows, work on blocks of samples
# whose columns take at most this many bytes (one sample at least): columns that fit in
# a core's L2 cache are read by the GEMMs right after they are made. Measured (Xeon, 1
# thread, batch 128, 3×3 convs with 32 and 64 channels): 1 MiB (one sample there) makes
# the GEMMs 15–30 % faster than 6 MiB blocks.
FORWARD_BLOCK_BYTES = 2**20
# Stride-1 convolutions without groups, with full-width columns, at least this many input
# channels and at least ROW_SPLIT_MIN_COLUMNS columns (OH·W_p) per sample, make their
# columns as K_w shifted copies of the input and run K_h GEMMs (see
# Conv2d._shifted_blocks). Measured (Xeon, 1 thread, batch 128, forward + backward,
# against blocked im2col): 3×3 convs 64→64 on 16×16 0.93×, on 8×8 (80 columns) 1.1×;
# per sample, 16 and 32 channels on 32×32: 0.72×.
ROW_SPLIT_MIN_CHANNELS = 16
ROW_SPLIT_MIN_COLUMNS = 256
# bprop with col2im works on blocks of samples whose column gradient takes at most this
# many bytes: larger blocks spend less in col2im's K_h·K_w additions per block.
BLOCK_BYTES = 4 * 2**20
# A batch is shared out over lanes of samples (threads, see Conv2d._lanes) only while each
# lane gets at least this many multiply-adds of forward GEMMs (twice as many in a bprop
# with ∂L/∂x). Handing lanes to the pool and waiting for them costs 0.10–0.13 ms (two empty
# lanes), and a worker that has slept ~1 ms starts its lane 0.3–0.6 ms late on the Xeon VM
# (2 vCPUs). Measured there (batch 128, whole LeNet-5 training steps at 2 threads, paired):
# its convolutions (15M and 31M multiply-adds per batch) in lanes from 4M, 26.5 → 20.7 ms
# against one lane (32M); 2M and 8M the same within noise. Before the zoo's Linear layers
# ran in lanes too (``Linear``'s ``lanes``), OpenBLAS's threads, spinning on after the
# classifier's GEMMs, took the second core and lanes made LeNet-5 slower (33.2 ms from 4M,
# 29.6 in one lane). The small VGG's and ResNet-20's convolutions (113M–302M) gain either way.
LANE_MIN_FLOPS = 4_000_000
# ∂L/∂b of the Winograd and direct paths is summed in lanes of channels only while each lane
# gets at least this many bytes of ∂L/∂y (the sum is a memory-bound pass).
BIAS_LANE_MIN_BYTES = 2**20
# Winograd's filter transform U = G w Gᵀ (every forward) and its adjoint (every bprop) run
# in lanes of output channels only while each lane gets at least this many bytes of w.
TRANSFORM_LANE_MIN_BYTES = 2**20
# The 1×1 path's forward and ∂L/∂x run as one GEMM over all samples (``Conv2d._merged_product``)
# below this many positions per sample, one GEMM per sample from it (∂L/∂W merges below as
# many positions as output channels, ``Conv2d._accumulate_pointwise``). Per sample, a GEMM
# of a few columns reads the whole weight matrix each time. Measured (AMD EPYC Zen 4, 2
# threads, forward/backward ms, per sample → merged): 1024→2048 stride 2 on 4×4 (2×2
# outputs, batch 32, ResNeXt's last shortcut) 9.26/19.77 → 4.25/10.88, 256→2048 on 2×2
# 2.23/4.92 → 1.31/4.36; from 16 positions even or behind: 512→1024 stride 2 on 8×8 (4×4)
# 4.29/11.83 → 5.72/9.60, 1024→2048 on 7×7 stride 2 at batch 8 4.18/10.11 → 4.17/9.44,
# 64→256 on 8×8 at batch 128 2.23/6.23 → 4.60/10.44, 128→256 stride 2 on 16×16 4.94/13.84
# → 10.90/16.94; 7×7 (ResNet-50's last stage, batch 32) even. The sums are the same.
POINTWISE_MERGED_BELOW = 16
# How a convolution is computed: "im2col" (columns and GEMMs, this module), "winograd"
# (F(2×2, 3×3), ``ermlab.nn._winograd``: 3×3 kernels, stride 1, no dilation, NumPy
# arrays, Numba installed and ERMLAB_FUSED not 0; elsewhere im2col), "direct" (direct
# summation, ``ermlab.nn._direct``: no groups, the same conditions on arrays; for a
# depthwise layer ``ermlab.nn._depthwise``), or
# "auto": Winograd where it applies and both channel counts are at least
# WINOGRAD_MIN_CHANNELS (or WINOGRAD_NARROW_CHANNELS, below); else direct where it applies;
# else im2col. Measured (Xeon, 1
# thread, batch 128, 3×3 padding 1, forward/backward ms, im2col → Winograd, load ~1.7):
# 64→64 on 8×8 18.9/38.6 → 10.7/23.7, 32→32 on 16×16 17.4/37.9 → 15.0/29.1, 16→32 on
# 32×32 45.1/99.7 → 42.2/68.0; slower:
# 16→16 on 32×32 24.6/48.1 → 27.0/50.0 and 3→16 9.7/18.2 → 17.2/23.9 (with few channels
# the transforms, 4× the input's size, cost more than the GEMMs save). Direct there (idle,
# paired rounds, im2col → direct): 16→16 on 32×32 24.6/46.4 → 16.4/31.4, on 16×16
# 7.0/15.0 → 5.5/10.7, on 8×8 4.7/11.9 → 5.8/8.7; 3→32 on 32×32 (no ∂L/∂x) 17.1/15.6 →
# 9.8/9.2; LeNet-5's C1, 5×5 1→6 on 28×28 (no ∂L/∂x), 3.9/4.0 → 2.2/1.8, and its C3, 5×5
# 6→16 on 14×14 (10×10 outputs in 14-wide rows; ∂L/∂x from im2col's column gradient),
# 3.5/8.9 → 3.3/7.4 and 4.4/10.6 → 4.8/10.0. With 16 channels on one side direct is as fast
# as Winograd or faster (on 32×32, Winograd → direct: 16→32 33.8/60.1 → 36.3/56.6, 32→16
# 40.3/87.9 → 38.0/67.4) and faster than im2col with stride 2 (16→32: 18.1/37.3 →
# 14.5/29.8); with 32 on both Winograd stays ahead (32→32 on 16×16: 16.5/29.3 against
# 22.8/37.4), and so does im2col with stride 2 (32→64 on 16×16: 15.3/27.7 against
# 22.4/31.0).
ALGORITHMS = ("auto", "im2col", "winograd", "direct")
WINOGRAD_MIN_CHANNELS = 32
# ... and, without groups, at least WINOGRAD_NARROW_CHANNELS on both sides suffice on planes of at
# most WINOGRAD_NARROW_MAX_POSITIONS outputs a sample, where direct summation's rows are short, or
# with at least twice as many outputs as inputs. Measured (AMD EPYC Zen 4, 2 threads, forward +
# backward, Winograd over direct, the median of 15 alternating rounds' ratios; batch 128 unless
# said): 16→32 on 4×4 0.51 (batch 32 0.57), on 7×7 0.78, on 8×8 0.74 (0.80), on 14×14 0.81, on 16×16
# 0.81 (0.85); 32→16 on 8×8 0.89 (0.91), on 16×16 0.83; 16→64 on 8×8 0.65 (0.75); 24→24 on 16×16
# 0.80; 16→16 on 4×4 0.80 (0.78), on 8×8 0.90–0.96 (0.89–0.99), on 14×14 0.95, on 16×16 0.91–1.05
# (0.97–1.05). On larger planes also where the outputs are at least twice the inputs: 16→32 on 28×28
# 0.87–0.91, on 32×32 0.78–0.91 (batch 32 0.89), 16→48 0.84, 16→64 0.75 (0.78), 24→48 0.76 (0.77),
# 20→40 on 24×24 0.80; there direct keeps 16→16 (on 28×28 1.13, on 32×32 1.18) and 32→16 (1.10).
# With 8 channels direct (8→16 on 16×16 1.18; 8→32 on 8×8 0.91–0.93, left).
WINOGRAD_NARROW_CHANNELS = 16
WINOGRAD_NARROW_MAX_POSITIONS = 256
# "auto" takes the direct path only for at least this many output positions per sample
# (OH·OW): on smaller planes its loops over a row of positions are too short, and im2col
# is faster. Measured (AMD EPYC Zen 5, 2 threads, batch 128, forward/backward ms, direct →
# im2col): LeNet-5's C5 as a convolution, 5×5 16→120 on 5×5 (1×1 outputs), 10.2/9.0 →
# 0.22/0.37 (PyTorch 0.3/0.6); 3×3 16→16 on 4×4 (2×2 outputs) 0.36/0.72 → 0.17/0.52,
# padded on 4×4 (4×4 outputs) 0.48/0.53 → 0.31/0.64, 5×5 8→16 on 9×9 (5×5 outputs)
# 0.49/1.15 → 0.38/0.68; direct ahead from 6×6 outputs: 3×3 16→16 padded on 6×6 0.28/0.53
# against 0.30/0.67, on 8×8 0.34/0.59 against 0.43/0.92.
DIRECT_MIN_POSITIONS = 36
# "auto" also leaves Winograd for im2col where the batch has fewer output positions
# (N·OH·OW) than the larger channel count: U = G w Gᵀ and its adjoint, made at every call
# for all O·C filters, then cost more than the GEMMs save. Measured (AMD EPYC Zen 5, 2
# threads, 3×3 padding 1, forward/backward ms, Winograd against im2col): 512 channels on
# 2×2 at batch 16 (64 positions) 5.29/8.89 against 1.36/4.15, on 4×4 at batch 16 (256)
# 6.58/11.42 against 4.03/8.92; 256 on 4×4 at 16 (256) 3.53 against 3.53 in all; Winograd
# ahead from as many positions as channels: 512 on 2×2 at 128 (512) 22.4 against 31.4, on
# 4×4 at 64 (1024) 30.1 against 47.2, 64 on 8×8 at 4 (256) 0.34 against 0.54. VGG-16 on
# 32×32 at batch 16, whose last three layers see 2×2 maps of 512 channels: 140–141 →
# 107–110 ms a step (PyTorch 95–127); at batch 128 even (491 against 499).
# ... and, for dilated convolutions (which Winograd cannot run), with up to this many
# channels on the smaller side even where Winograd would pay by its channel count.
# Measured (AMD EPYC Zen 5, 2 threads, batch 128, 3×3, dilation 2, forward/backward ms,
# im2col → direct): 32→32 on 16×16 3.36/7.61 → 3.03/4.38, 64→64 on 16×16 9.64/21.84 →
# 10.57/16.68, on 32×32 32.73/68.42 → 34.91/53.42, dilation 4 10.74/23.30 → 11.95/18.73;
# 128→128 on 16×16 28.58/65.20 against 41.66/66.72: im2col (PyTorch, 64→64 on 16×16:
# 4.75/21.73).
DILATED_DIRECT_CHANNELS = 64
# Grouped 3×3 convolutions (at least GROUPED_WINOGRAD_MIN_CHANNELS channels a group on both
# sides) run Winograd's F(2×2, 3×3) under "auto" up to this many output positions per
# sample: the transforms are the dense layer's, and each of the 16 products is one GEMM per
# group. On small planes it beats im2col's columns; from 8×8 its small GEMMs lose. Measured
# (AMD EPYC Zen 5, 2 threads, batch 32 unless said, no bias, forward + backward ms,
# Winograd against im2col): 32 channels a group: 1024 channels on 2×2 3.2 against 7.0, on
# 4×4 at batch 8 2.6 against 3.4, at 32 6.5 against 15.1 (PyTorch 2.3), at 128 19.4 against
# 46.7, on 5×5 9.1 against 13.3, on 6×6 9.1 against 15.7, 2048 on 4×4 22.0 against 37.8;
# 16 a group: 512 on 2×2 1.3 against 2.9, on 4×4 2.2 against 4.4, 1024 on 4×4 5.7 against
# 8.5; 8 a group: 256 on 4×4 1.1 against 2.0 (and in 16 groups 1.1 against 2.2), on 6×6 2.0
# against 2.6, at batch 8 0.8 against 0.9; 4 a group: 128 on 4×4 1.1 against 1.6 but on 6×6
# 1.5 against 1.5. Even on 7×7 (32 a group: 21.1 against 20.7), behind on 8×8 (29.6 against
# 21.4; 16 a group 8.9 against 8.3) and 16×16 (89.0 against 69.5).
GROUPED_WINOGRAD_MAX_POSITIONS = 36
GROUPED_WINOGRAD_MIN_CHANNELS = 8
# Depthwise convolutions (groups = in_channels) are summed directly over channels-last
# planes (``ermlab.nn._depthwise``) by "auto" up to this many output positions per sample
# (OH·OW), by "direct" at any size. im2col runs them as one tiny GEMM per channel and
# sample. Measured through Conv2d (AMD EPYC Zen 5, 2 threads, batch 128, 3×3 padding 1,
# forward + backward ms, im2col → depthwise kernels; PyTorch 2.13 2 threads, next run):
# 512 channels on 2×2 18.3 → 1.4 (6.0), on 4×4 15.4 → 3.1 (5.4), on 8×8 29.2 → 16.0
# (23.8); 256 on 16×16 50.9 → 35.9 (76.8), stride 2 25.1 → 16.0 (40.8); 64 on 16×16 11.4 →
# 9.9 (11.8); 32 on 8×8 3.2 → 1.4 (0.4); 128 channels with 2 filters each on 8×8 8.3 → 5.3
# (16.8). Above 256 even or behind: 128 on 32×32 65.0 against 65.7, 32 on 32×32 16.7
# against 17.2 (PyTorch 151 and 24). PyTorch's small planes move from process to process:
# 512 on 4×4 took it 1.3–5.8 ms in four runs (ermlab 2.8–2.9), 1.6 in
# ``benchmarks/conv_layers.py`` (ermlab 6.0 there, im2col 16.9).
DEPTHWISE_MAX_POSITIONS = 256
# Work arrays that every call writes whole before it reads them (Winograd's transformed
# tiles V and M and its block's ∂L/∂U): kept per thread, not per layer (``Conv2d._work``),
# so that a network's layers share one of each per lane instead of holding one each. A
# thread runs one lane at a time, so two models trained in two threads do not share them.
# Measured (CIFAR ResNet-18, batch 128, one training step): the layers' work arrays 314 →
# 108 MiB, peak RSS 1965 → 1765 MiB (PyTorch 2.13: 1285).
THREAD_WORK = frozenset({"winograd_v", "winograd_m", "winograd_u"})
_thread_work = threading.local()


def pair(value: Any, name: str, layer: str, minimum: int) -> tuple[int, int]:
    """``value`` (an int or a pair of ints) as a pair, each at least ``minimum``."""
    pair_value = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(pair_value) != 2 or not all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= minimum
        for v in pair_value
    ):
        raise ValueError(
            f"{layer}: {name} must be an integer ≥ {minimum} or a pair of them; got {value!r}"
        )
    return int(pair_value[0]), int(pair_value[1])


def output_size(size: int, kernel: int, stride: int, padding: int, dilation: int = 1) -> int:
    """⌊(size + 2 padding − dilation (kernel − 1) − 1) / stride⌋ + 1."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def check_spatial_input(layer: Module, x: Any, channels: int | None, kernel, padding,
                        dilation=(1, 1)) -> None:
    """Raise ``ValueError`` naming ``layer`` and the shapes for a wrong rank, channel
    count, or a (dilated) kernel larger than the padded input."""
    shape = tuple(getattr(x, "shape", ()))
    expected = f"(N, {channels}, H, W)" if channels is not None else "(N, C, H, W)"
    if len(shape) != 4:
        raise ValueError(
            f"{layer!r} expects a 4-D input {expected} (NCHW); got shape {shape}"
            + (" — add a channel axis, e.g. x[:, None]" if len(shape) == 3 else "")
        )
    if channels is not None and shape[1] != channels:
        raise ValueError(
            f"{layer!r} expects {channels} input channels, input shape {expected}; "
            f"got shape {shape} with {shape[1]} channels"
        )
    padded = (shape[2] + 2 * padding[0], shape[3] + 2 * padding[1])
    extent = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))
    if extent[0] > padded[0] or extent[1] > padded[1]:
        raise ValueError(
            f"{layer!r}: the kernel covers {extent} pixels but the padded input is only "
            f"{padded} (input shape {shape}, padding {tuple(padding)}); use a larger input, "
            "more padding or a smaller kernel"
        )


def strided_windows(xp: Any, x: Any, shape: tuple[int, ...], strides: tuple[int, ...]) -> Any:
    """A strided view of ``x`` (byte strides), on NumPy or CuPy; writes go to ``x``.

    No bounds checks: the caller guarantees every element lies inside ``x``.
    """
    return xp.lib.stride_tricks.as_strided(x, shape=shape, strides=strides)


def zero_pad(xp: Any, x: Any, padding: tuple[int, int], value: float = 0.0) -> Any:
    """x (N, C, H, W) padded by ``padding`` rows and columns of ``value`` on each side."""
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    n, c, h, w = x.shape
    out = xp.empty((n, c, h + 2 * ph, w + 2 * pw), dtype=x.dtype)
    for border in ((slice(None), slice(None), slice(0, ph)),
                   (slice(None), slice(None), slice(ph + h, None)),
                   (slice(None), slice(None), slice(ph, ph + h), slice(0, pw)),
                   (slice(None), slice(None), slice(ph, ph + h), slice(pw + w, None))):
        out[border] = value
    out[:, :, ph:ph + h, pw:pw + w] = x
    return out


def kernel_offset_slice(i: int, j: int, out_hw, stride, dilation=(1, 1)) -> tuple[slice, ...]:
    """The (…, OH, OW) slice of the padded input that kernel offset (i, j) reads."""
    (oh, ow), (sh, sw), (dh, dw) = out_hw, stride, dilation
    return (
        slice(None),
        slice(None),
        slice(i * dh, i * dh + sh * (oh - 1) + 1, sh),
        slice(j * dw, j * dw + sw * (ow - 1) + 1, sw),
    )


class Conv2d(Module):
    """2-D convolution over NCHW inputs (see the module docstring for the equations).

    Args:
        in_channels, out_channels: C and O; both divisible by ``groups``.
        kernel_size, stride, padding, dilation: an int or an (h, w) pair. Padding is
            with zeros.
        groups: G; channel groups convolved independently (G = C is depthwise).
        bias: add a learned bias per output channel (not regularized).
        weight_init: initializer name or callable (default He uniform).
        rng, dtype: random source and float type of the parameters.
        threads: lanes of samples (None: ``ERMLAB_NUM_THREADS`` or the CPU count).
        algorithm: "auto" (default), "im2col", "winograd" or "direct" (see the module
            docstring).

    Parameters: weight (O, C/G, K_h, K_w), bias (O,) — torch's layout.

    Per-example gradients (for ``ermlab.privacy``): example n's share of ∂L/∂W_mat is
    G_n X_nᵀ, its ∂L/∂Y (O × T) times its columns (C·K_h·K_w × T), T = OH·OW. Its squared
    norm is computed either from that O × C·K_h·K_w product or, where the T × T Gram
    matrices are cheaper (small maps, wide layers), without it (Li et al. 2022, "Large
    Language Models Can Be Strong Differentially Private Learners", ghost norm):

        ‖G_n X_nᵀ‖²_F = ⟨G_nᵀ G_n, X_nᵀ X_n⟩,   ‖∂L_n/∂b‖² = Σ_o (Σ_t G_n[o, t])².

    While ``per_example_recorder`` is set, bprop hands ∂L/∂Y to it instead of
    accumulating into ``grad``; the input gradient is unchanged.

    Unlike the ``Module`` contract, ``backward`` computes ∂L/∂W, ∂L/∂b and ∂L/∂x in one
    fused pass of its path's kernels and calls neither ``accumulate_grad`` nor
    ``grad_input`` (except while ``per_example_recorder`` is set): a subclass that
    overrides either must override ``backward`` too, e.g. as ``Module.backward`` (the
    two steps, unfused).

    Example:
        >>> from ermlab import nn
        >>> conv = nn.Conv2d(1, 6, 5, padding=2)     # LeNet-5's C1 on 28×28 inputs
    """

    forward_cache = ("_x", "_cols", "_x_shape", "_u", "_relu_y")
    per_example_recorder: Any = None

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        weight_init: str | Any = "he_uniform",
        rng: Any = None,
        dtype: Any = None,
        threads: int | None = None,
        algorithm: str = "auto",
    ) -> None:
        super().__init__()
        self.threads = check_threads(threads, "Conv2d")
        if algorithm not in ALGORITHMS:
            raise ValueError(f"Conv2d: algorithm must be one of {ALGORITHMS}; got {algorithm!r}")
        self.algorithm = algorithm
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels),
                            ("groups", groups)):
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
                raise ValueError(f"Conv2d: {name} must be a positive integer; got {value!r}")
        in_channels, out_channels, groups = int(in_channels), int(out_channels), int(groups)
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"Conv2d: in_channels ({in_channels}) and out_channels ({out_channels}) must "
                f"both be divisible by groups ({groups})"
            )
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = pair(kernel_size, "kernel_size", "Conv2d", 1)
        self.stride = pair(stride, "stride", "Conv2d", 1)
        self.padding = pair(padding, "padding", "Conv2d", 0)
        self.dilation = pair(dilation, "dilation", "Conv2d", 1)
        dtype = resolve_dtype(dtype)
        shape = (out_channels, in_channels // groups, *self.kernel_size)
        weight = init.get(weight_init)(shape, rng=as_generator(rng), dtype=dtype)
        self.weight = Parameter(weight, "weight", regularize=True)
        bias_data = init.zeros((out_channels,), dtype=dtype)
        self.bias = Parameter(bias_data, "bias", regularize=False) if bias else None
        if algorithm == "winograd" and not self._winograd_geometry():
            raise ValueError(
                "Conv2d: algorithm='winograd' needs a 3×3 kernel, stride 1 and dilation 1; "
                f"got kernel_size={self.kernel_size}, stride={self.stride}, "
                f"dilation={self.dilation} — use algorithm='auto'"
            )
        if algorithm == "direct" and not (self._direct_geometry() or self._depthwise_geometry()):
            raise ValueError(
                "Conv2d: algorithm='direct' needs the same stride both ways and groups 1, or "
                f"groups = in_channels (depthwise); got stride={self.stride}, "
                f"groups={self.groups} — use algorithm='auto'"
            )
        if algorithm in ("winograd", "direct"):
            if importlib.util.find_spec("numba") is None:
                raise ImportError(
                    f"Conv2d: algorithm={algorithm!r} needs Numba: pip install \"ermlab[fast]\"")

    # -- helpers ----------------------------------------------------------------

    def _is_pointwise(self) -> bool:
        return self.kernel_size == (1, 1) and self.padding == (0, 0) and self.groups == 1

    def _winograd_geometry(self) -> bool:
        return (self.kernel_size == (3, 3) and self.stride == (1, 1)
                and self.dilation == (1, 1))

    def _winograd(self, x: Any) -> Any:
        """``ermlab.nn._winograd`` where this convolution of ``x`` uses it (see
        ``ALGORITHMS``; its kernels take C-contiguous NumPy float32/float64 arrays, see
        ``nn._fused``), else None."""
        if self.algorithm in ("im2col", "direct") or not self._winograd_geometry():
            return None
        if self.algorithm == "auto":
            _, _, oh, ow, _ = self._layout(x.shape)
            g = self.groups
            if (not self._winograd_pays(oh * ow) or x.shape[0] * oh * ow
                    < max(self.in_channels, self.out_channels) // g
                    or (g > 1 and oh * ow > GROUPED_WINOGRAD_MAX_POSITIONS)):
                return None  # few channels or output positions, or grouped on a larger plane
        return _fused.kernels("_winograd", x)

    def _winograd_pays(self, positions: int | None = None) -> bool:
        """Whether both channel counts are at least ``WINOGRAD_MIN_CHANNELS``, or with groups
        both counts of a group at least ``GROUPED_WINOGRAD_MIN_CHANNELS``; given the output
        positions a sample (``positions``), without groups, also where both are at least
        ``WINOGRAD_NARROW_CHANNELS`` on planes of up to ``WINOGRAD_NARROW_MAX_POSITIONS`` or
        with at least twice as many output channels as input channels.
        (``_direct`` asks without positions: the channel counts alone say whether direct
        summation or im2col runs the layers Winograd cannot, strided ones.)"""
        g = self.groups
        smaller = min(self.in_channels, self.out_channels) // g
        if g > 1:
            return smaller >= GROUPED_WINOGRAD_MIN_CHANNELS
        return smaller >= WINOGRAD_MIN_CHANNELS or (
            positions is not None and smaller >= WINOGRAD_NARROW_CHANNELS
            and (positions <= WINOGRAD_NARROW_MAX_POSITIONS
                 or self.out_channels >= 2 * self.in_channels))

    def _direct_geometry(self) -> bool:
        return self.stride[0] == self.stride[1] and self.groups == 1

    def _direct(self, x: Any) -> Any:
        """``ermlab.nn._direct`` where this convolution of ``x`` uses it (the same stride
        both ways, no groups; with ``algorithm="auto"`` only with few channels, where
        Winograd does not pay, see ``ALGORITHMS``), else None."""
        if self.algorithm in ("im2col", "winograd") or not self._direct_geometry():
            return None
        if self.algorithm == "auto":
            _, _, oh, ow, _ = self._layout(x.shape)
            dilated = (self.dilation != (1, 1)  # Winograd cannot run it
                       and min(self.in_channels, self.out_channels) <= DILATED_DIRECT_CHANNELS)
            if ((self._winograd_pays() and not dilated) or oh * ow < DIRECT_MIN_POSITIONS
                    or self._winograd(x) is not None):  # (``_winograd_pays``' narrow rule)
                return None
        return _fused.kernels("_direct", x)

    def _phased(self) -> bool:
        """Whether ∂L/∂x of the direct path is ``_direct.strided_input_gradient``'s (a
        stride > 1 and no dilation; stride 1 takes the transposed convolution)."""
        return self.stride[0] > 1 and self.dilation == (1, 1)

    def _depthwise_geometry(self) -> bool:
        return self.groups == self.in_channels > 1

    def _depthwise(self, x: Any) -> Any:
        """``ermlab.nn._depthwise`` where this convolution of ``x`` uses it (groups =
        in_channels; with ``algorithm="auto"`` up to ``DEPTHWISE_MAX_POSITIONS`` output
        positions per sample; its kernels take C-contiguous NumPy float32/float64
        arrays), else None."""
        if self.algorithm not in ("auto", "direct") or not self._depthwise_geometry():
            return None
        if self.algorithm == "auto":
            _, _, oh, ow, _ = self._layout(x.shape)
            if oh * ow > DEPTHWISE_MAX_POSITIONS:
                return None
        return _fused.kernels("_depthwise", x)

    def _channel_lanes(self, xp: Any, x_shape: tuple[int, ...]) -> list:
        """Ranges [c0, c1) of input channels for the depthwise kernels, one per lane (each
        runs every sample of its channels): as many as ``_lane_worth`` gives the batch, at
        most one per channel."""
        worth = self._lane_worth(xp, x_shape)
        c = self.in_channels
        return [(0, c)] if worth is None else sample_lanes(c, *worth)

    def _weight_matrix(self) -> Any:
        """W as (G, O/G, C/G·K_h·K_w)."""
        g = self.groups
        return self.weight.data.reshape(g, self.out_channels // g, -1)

    def _layout(self, x_shape: tuple[int, ...]) -> tuple[int, int, int, int, int]:
        """(H_p, W_p, OH, OW, CW): padded and output sizes, and the column row width.

        CW is OW, or W_p for the *full-width* layout (stride 1 only): each column row
        then runs over whole padded rows, so every window read and every col2im addition
        is one contiguous run of OH·W_p values instead of OH runs of OW. The W_p − OW
        extra outputs per row are computed and thrown away (their ∂L/∂Y is 0); that costs
        GEMM work ∝ O·(W_p − OW), so it is used only while that stays small.
        """
        h, w = x_shape[2:]
        (kh, kw), (ph, pw), (dh, dw) = self.kernel_size, self.padding, self.dilation
        hp, wp = h + 2 * ph, w + 2 * pw
        oh = output_size(h, kh, self.stride[0], ph, dh)
        ow = output_size(w, kw, self.stride[1], pw, dw)
        full = (self.stride == (1, 1)
                and self.out_channels // self.groups * (wp - ow) <= FULL_WIDTH_BUDGET)
        return hp, wp, oh, ow, wp if full else ow

    def _work(self, xp: Any, name: str, size: int, dtype: Any, key: tuple = (),
              lane: int = 0) -> Any:
        """The first ``size`` elements of a flat zero-initialized work array kept across
        calls (scratch, not forward cache; fprop and bprop share it), one per ``lane``.

        It is allocated again only when it is too small or ``dtype``, the array module or
        ``key`` (the geometry that places the values callers never write) change, so
        padding borders and the extra full-width columns stay zero from call to call.
        """
        if name in THREAD_WORK:  # this thread's, whichever layer or lane (see THREAD_WORK)
            work = _thread_work.__dict__.setdefault("arrays", {})
        else:
            work = self._work_dict()
            name = f"{name}{lane}" if lane else name
        signature = (xp.dtype(dtype), xp.__name__, key)
        entry = work.get(name)
        if entry is None or entry[0] != signature or entry[1].size < size:
            entry = (signature, _aligned_zeros(xp, size, dtype))
            work[name] = entry
        return entry[1][:size]

    def _lane_work(self, xp: Any, dtype: Any, lane: int) -> Any:
        """``work(name, size, key)``: ``_work`` of one lane, for ``ermlab.nn._winograd``."""
        return lambda name, size, key: self._work(xp, name, size, dtype, key, lane)

    def _work_dict(self) -> dict:
        """The work arrays by name (made before any lane runs: lanes share the dict)."""
        work = self.__dict__.get("_work_arrays")
        if work is None:
            work = {}
            object.__setattr__(self, "_work_arrays", work)
        return work

    def _lanes(self, xp: Any, x_shape: tuple[int, ...], work: float = 1.0) -> list:
        """Contiguous ranges [lo, hi) of samples, one per lane (thread): the batch of a
        NumPy input is shared out over ``threads`` lanes (default ``ERMLAB_NUM_THREADS``
        or the CPU count), as many as give each lane at least ``LANE_MIN_FLOPS``
        multiply-adds of forward GEMMs times ``work``. Each lane makes its own columns
        in its own work arrays and runs its own GEMMs with BLAS on one thread
        (``ermlab.threads.run_lanes``): the samples of a convolution are independent,
        and each lane's GEMMs on ~1 MiB of columns run at the speed of one core, where
        OpenBLAS's two threads sharing each small GEMM gain little and leave the
        copies around it on one core."""
        n = x_shape[0]
        worth = None if n == 1 else self._lane_worth(xp, x_shape, work)
        return [(0, n)] if worth is None else sample_lanes(n, *worth)

    def _lane_worth(self, xp: Any, x_shape: tuple[int, ...],
                    work: float = 1.0) -> tuple[int, float] | None:
        """(threads, how many lanes of at least ``LANE_MIN_FLOPS`` the batch's forward
        multiply-adds times ``work`` make), or None for one lane: one thread (``threads``,
        default ``ERMLAB_NUM_THREADS`` or the CPU count) or not NumPy."""
        threads = self.threads or default_threads()
        if threads == 1 or xp.__name__ != "numpy":
            return None
        _, _, oh, ow, _ = self._layout(x_shape)
        per_sample = (self.out_channels * self.in_channels // self.groups * oh * ow
                      * self.kernel_size[0] * self.kernel_size[1] * work)
        return threads, per_sample * x_shape[0] // LANE_MIN_FLOPS

    def _run_lanes(self, ranges: list, run: Any, blas: bool = True) -> list:
        """``run(lo, hi, lane)`` for each range of ``_lanes``, the lanes at once
        (``blas=False``: ``run`` calls no BLAS, the direct path's kernels).

        One lane of several samples, with several threads allowed, means the batch's work
        is too small for two lanes (``_lanes``): ``run_lanes`` runs its GEMMs with BLAS on
        one thread too. On its default threads, OpenBLAS wakes a second thread for them,
        and that thread spins on a core for a long while after (OpenBLAS's thread timeout:
        2²⁸ cycles), where the lanes of the next layers then wait for a time slice.
        Measured (2 vCPUs, ResNet-20, batch 4, whose one such layer is layer3.0's strided
        convolution): 73 → 14 ms a step (``benchmarks/small_batches.py``). One sample (a
        GEMM worth BLAS's threads), or one thread asked for, keeps BLAS's own threads, and
        the pool is told to stop spinning (``rest``)."""
        self._work_dict()
        calls = [lambda k=k, r=r: run(r[0], r[1], k) for k, r in enumerate(ranges)]
        if blas and len(ranges) == 1 and (ranges[0][1] - ranges[0][0] <= 1
                                          or (self.threads or default_threads()) == 1):
            rest()  # one sample, or one thread asked for: GEMMs on BLAS's own threads
            return [calls[0]()]
        return run_lanes(calls, blas)

    def _padded_block(self, xp: Any, x: Any, start: int, stop: int, block: int,
                      lane: int = 0) -> Any:
        """Samples [start, stop) of x̃, x zero-padded: (n_b, C, H_p, W_p), or for the
        full-width layout one flat buffer of padded planes with (K_w − 1)·d_w values of
        slack after the last plane for the last window's run to end in. The buffer holds
        ``block`` samples and is reused, its borders written once."""
        n_b, (c, h, w) = stop - start, x.shape[1:]
        hp, wp, _, ow, cw = self._layout(x.shape)
        (ph, pw), kw, dw = self.padding, self.kernel_size[1], self.dilation[1]
        if cw == ow and (ph, pw) == (0, 0):
            return x[start:stop]
        slack = (kw - 1) * dw if cw != ow else 0
        flat = self._work(xp, "padded", block * c * hp * wp + slack, x.dtype,
                          (x.shape[1:], self._layout(x.shape)), lane)
        planes = flat[: n_b * c * hp * wp].reshape(n_b, c, hp, wp)
        planes[:, :, ph:ph + h, pw:pw + w] = x[start:stop]
        return flat if cw != ow else planes

    def _column_view(self, xp: Any, padded: Any, x_shape: tuple[int, ...], n_b: int) -> Any:
        """The columns of the ``n_b`` samples of ``padded`` (see ``_padded_block``) as a
        strided view, (n_b, C, K_h, K_w, OH, OW) or, full width, (n_b, C, K_h, K_w, OH·W_p)."""
        c = x_shape[1]
        hp, wp, oh, ow, cw = self._layout(x_shape)
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        if cw == ow:
            s_n, s_c, s_h, s_w = padded.strides
            return strided_windows(xp, padded, (n_b, c, kh, kw, oh, ow),
                                   (s_n, s_c, s_h * dh, s_w * dw, s_h * sh, s_w * sw))
        plane, item = hp * wp, padded.dtype.itemsize
        return strided_windows(xp, padded, (n_b, c, kh, kw, oh * wp),
                               (c * plane * item, plane * item, dh * wp * item, dw * item, item))

    def _im2col(self, xp: Any, x: Any) -> Any:
        """Columns of the whole batch, (N, G, C/G·K_h·K_w, OH·CW), for per-example
        gradients and benchmarks; the layer itself makes them a block at a time."""
        _, _, oh, _, cw = self._layout(x.shape)
        rows = self.in_channels * self.kernel_size[0] * self.kernel_size[1]
        cols = xp.empty((x.shape[0], self.groups, rows // self.groups, oh * cw), dtype=x.dtype)
        for start, stop, _, block in self._column_blocks(xp, x, FORWARD_BLOCK_BYTES):
            cols[start:stop] = block
        return cols

    def _block_size(self, xp: Any, x_shape: tuple[int, ...], itemsize: int,
                    budget: int) -> int:
        """Samples per block: columns of at most ``budget`` bytes (whole batch off NumPy)."""
        n, c = x_shape[:2]
        if xp.__name__ != "numpy":
            return n
        _, _, oh, _, cw = self._layout(x_shape)
        sample = c * self.kernel_size[0] * self.kernel_size[1] * oh * cw * itemsize
        return max(1, min(n, budget // sample))

    def _column_blocks(self, xp: Any, x: Any, budget: int, lo: int = 0, hi: int | None = None,
                       lane: int = 0, fill: bool = True):
        """Yield (start, stop, block, columns) for blocks of samples in [lo, hi), the
        columns of samples [start, stop) copied into one reused buffer (the lane's) as
        (n_b, G, C/G·K_h·K_w, OH·CW): each block's columns are made right before the
        GEMMs that read them, from cache, and the column matrix of the whole batch never
        exists. ``fill=False`` yields the buffer without copying the columns into it (for
        bprop without ∂L/∂W, which only writes the column gradient there).

        The copy is NumPy's, of the strided window view. A compiled im2col reading x
        straight (padding as zeros, no padded copy) was slower: AMD EPYC Zen 4, 1 thread,
        batch 128, 32 → 64 with stride 2 on 16×16 (rows of 8 values), the batch's columns
        2.2–2.6 ms through NumPy (and 0.5 for the padded copy) against 7.4 with a slice per
        row (a slice costs as much as a short row's copy) and 4.4 with flat indices (loops
        that did not vectorize, ~1.9 ns a value)."""
        hi = x.shape[0] if hi is None else hi
        _, _, oh, _, cw = self._layout(x.shape)
        rows = self.in_channels * self.kernel_size[0] * self.kernel_size[1]
        block = self._block_size(xp, x.shape, x.dtype.itemsize, budget)
        buffer = self._work(xp, "columns", block * rows * oh * cw, x.dtype, lane=lane)
        for start in range(lo, hi, block):
            stop = min(hi, start + block)
            cols = buffer[: (stop - start) * rows * oh * cw]
            if fill:
                view = self._column_view(
                    xp, self._padded_block(xp, x, start, stop, block, lane), x.shape,
                    stop - start)
                cols.reshape(view.shape)[...] = view
            yield start, stop, block, cols.reshape(stop - start, self.groups,
                                                   rows // self.groups, oh * cw)

    def _merged(self, x_shape: tuple[int, ...]) -> bool:
        """Whether the im2col GEMMs run once per group over all the block's samples
        (``_samples_merged``) rather than once per sample and group: where a sample has
        fewer output positions than the group has outputs (small planes), whose
        per-sample ∂L/∂W products wrote a weight-sized matrix per sample
        (``_block_product``), and whose forward and ∂L/∂x GEMMs were P columns wide.
        Measured (AMD EPYC Zen 5, 2 threads, batch 128, 256 → 512, 3×3 stride 2, 8×8 →
        4×4, forward/backward ms): per sample 16.3/40.3 (its ∂L/∂W already merged) →
        merged 13.7/34.1, PyTorch 9.0/29–36. Not for grouped convolutions with small
        per-sample products (32 groups of 8 channels on 8×8, depthwise): the copies
        into and out of the merged layout cost more than the many small BLAS calls
        (6.4/11.7 → 8.0/14.5 ms)."""
        _, _, oh, _, cw = self._layout(x_shape)
        return oh * cw < self.out_channels // self.groups

    def _row_split(self, x_shape: tuple[int, ...]) -> bool:
        """Whether the columns are made as K_w shifted copies (``_shifted_blocks``)."""
        _, wp, oh, _, cw = self._layout(x_shape)
        return (self.stride == (1, 1) and self.groups == 1 and cw == wp
                and self.in_channels >= ROW_SPLIT_MIN_CHANNELS
                and oh * wp >= ROW_SPLIT_MIN_COLUMNS)

    def _shifted_blocks(self, xp: Any, x: Any, budget: int, lo: int = 0,
                        hi: int | None = None, lane: int = 0):
        """Yield (start, stop, block, rows) for blocks of samples in [lo, hi), stride 1,
        no groups,
        full-width layout: the columns of samples [start, stop) as K_h views ``rows[i]``
        (n_b, K_w·C, OH·W_p) of one reused buffer of K_w shifted copies of the input,

            S[n, j, c, t] = x̃[n, c, t + j d_w]   (x̃ flattened per plane),

        rows[i][n, (j, c), t] = S[n, j, c, t + i d_h W_p] = X_col[n, (c, i, j), t]. Each
        view is a matrix with a constant row stride, which BLAS reads in place, so
        Y_n = Σ_i W_i rows[i][n] (W_i[o, (j, c)] = W[o, c, i, j]) takes K_h GEMMs and a
        copy of K_w inputs instead of the K_h·K_w of im2col."""
        n, c = x.shape[:2]
        hi = n if hi is None else hi
        hp, wp, oh, _, _ = self._layout(x.shape)
        (kh, kw), (dh, dw) = self.kernel_size, self.dilation
        plane, item = hp * wp, x.dtype.itemsize
        block = max(1, min(n, budget // (kw * c * plane * item))) if xp.__name__ == "numpy" else n
        buffer = self._work(xp, "shifted", block * kw * c * plane, x.dtype, lane=lane)
        for start in range(lo, hi, block):
            stop = min(hi, start + block)
            padded = self._padded_block(xp, x, start, stop, block, lane)
            flat = padded if padded.ndim == 1 else xp.ascontiguousarray(padded).reshape(-1)
            shifted = buffer[: (stop - start) * kw * c * plane].reshape(stop - start, kw, c, plane)
            for j in range(kw):
                shifted[:, j] = strided_windows(xp, flat[j * dw:], (stop - start, c, plane),
                                                (c * plane * item, plane * item, item))
            rows = shifted.reshape(stop - start, kw * c, plane)
            yield start, stop, block, [rows[:, :, i * dh * wp:i * dh * wp + oh * wp]
                                       for i in range(kh)]

    def _row_weights(self) -> Any:
        """W as (K_h, O, K_w·C): W_i[o, (j, c)] = W[o, c, i, j]."""
        kh = self.kernel_size[0]
        return self.weight.data.transpose(2, 0, 3, 1).reshape(kh, self.out_channels, -1)

    # -- fprop --------------------------------------------------------------------

    def forward(self, x: Any) -> Any:
        self._check(x)
        return self._forward(x, False)

    def forward_relu(self, x: Any) -> Any:
        """max(conv(x), 0) — this layer and a ``ReLU`` after it — where the layer runs
        Winograd or direct sums (``ALGORITHMS``): their kernels write max(y, 0) as they
        write y (as ``_relu_kernels.forward``, bit for bit the ReLU's values), and bprop
        takes ∂L/∂y·1_{y > 0} in its own kernels or lanes (``_rectifier``); y is kept, as
        the ReLU would keep it. None elsewhere (the caller then runs the ``ReLU``). Saves
        the ReLU's forward pass and two parallel regions; ``Sequential`` calls it for a
        convolution followed by a ``ReLU``."""
        self._check(x)
        if self._is_pointwise() or self.per_example_recorder is not None:
            return None
        xc = array_module(x).ascontiguousarray(x)
        if (_fused.kernels("_relu_kernels", xc) is None
                or (self._winograd(xc) is None and self._direct(xc) is None)):
            return None
        return self._forward(xc, True)

    def _check(self, x: Any) -> None:
        check_spatial_input(self, x, self.in_channels, self.kernel_size, self.padding,
                            self.dilation)
        check_float_input(self, x, self.weight.dtype)

    def _forward(self, x: Any, relu: bool) -> Any:
        """fprop of a checked x; with ``relu`` (Winograd and direct paths only), max(y, 0)
        written by their kernels, and y kept for bprop's mask."""
        xp = array_module(x)
        if self._is_pointwise():
            if self.training:
                self._relu_y = False
            return self._forward_pointwise(xp, x)
        _, _, oh, ow, _ = self._layout(x.shape)
        y = xp.empty((x.shape[0], self.out_channels, oh, ow), dtype=x.dtype)
        if self._direct_geometry() or self._depthwise_geometry():
            x = xp.ascontiguousarray(x)
        depthwise, winograd, direct = self._depthwise(x), self._winograd(x), self._direct(x)
        ranges, u = self._lanes(xp, x.shape), None
        if depthwise is not None:  # lanes of channels, every sample
            ranges = self._channel_lanes(xp, x.shape)
            filters = depthwise.filters(self.weight.data, self.out_channels // self.groups)
            bias = None if self.bias is None else self.bias.data

            def run(lo: int, hi: int, lane: int) -> None:
                depthwise.forward(x, filters, bias, y, self.stride, self.padding,
                                  self.dilation, lo, hi)
        elif direct is not None:
            weight, bias = direct.layout(self.weight.data,
                                         None if self.bias is None else self.bias.data)
            run = partial(self._direct_samples, direct, x, weight, bias, y,
                          relu=relu)
        elif winograd is not None:
            u = winograd.filter_transform(self.weight.data, self._transform_lanes())
            bias = (self.bias.data if self.bias is not None
                    else xp.zeros(self.out_channels, dtype=x.dtype))

            def run(lo: int, hi: int, lane: int) -> None:
                winograd.forward(x, u, bias, y, self.padding, lo, hi,
                                 self._lane_work(xp, x.dtype, lane), relu)
        else:
            run = partial(self._forward_samples, xp, x, y)
        self._run_lanes(ranges, run, blas=direct is None and depthwise is None)
        if self.training:
            self._x, self._x_shape, self._u = x, x.shape, u
            self._relu_y = y if relu else False
        return y

    def _direct_samples(self, direct: Any, x: Any, weight: Any, bias: Any, y: Any, lo: int,
                        hi: int, lane: int, relu: bool = False) -> None:
        """y[lo:hi] (``relu``: max(y, 0)) by ``direct.forward`` (weight and bias in
        ``direct.layout``'s form), in ``lane``'s work arrays."""
        direct.forward(x, weight, bias, y, self.padding, self.stride, self.dilation, lo, hi,
                       self._lane_work(array_module(x), x.dtype, lane), relu)

    def _forward_samples(self, xp: Any, x: Any, y: Any, lo: int, hi: int, lane: int) -> None:
        """Samples [lo, hi) of y, a block of samples at a time, in ``lane``'s work arrays."""
        o = self.out_channels
        _, _, oh, ow, cw = self._layout(x.shape)
        row_split = self._row_split(x.shape)
        if row_split:
            weight = self._row_weights()
            blocks = self._shifted_blocks(xp, x, FORWARD_BLOCK_BYTES, lo, hi, lane)
        else:
            weight = self._weight_matrix()
            blocks = self._column_blocks(xp, x, FORWARD_BLOCK_BYTES, lo, hi, lane)
        merged = not row_split and self._merged(x.shape)
        for start, stop, block, cols in blocks:
            out = self._work(xp, "output", block * o * oh * cw, x.dtype, lane=lane)
            y_cols = out[: (stop - start) * o * oh * cw].reshape(
                stop - start, self.groups, o // self.groups, oh * cw)
            if row_split:
                y_cols = y_cols.reshape(stop - start, o, oh * cw)
                xp.matmul(weight[0], cols[0], out=y_cols)
                term = self._work(xp, "term", block * o * oh * cw, x.dtype, lane=lane)
                term = term[: y_cols.size].reshape(y_cols.shape)
                for i in range(1, len(cols)):
                    y_cols += xp.matmul(weight[i], cols[i], out=term)
            elif merged:
                y_cols[...] = _samples_split(xp.matmul(weight, _samples_merged(cols)),
                                             stop - start)
            else:
                xp.matmul(weight, cols, out=y_cols)
            y_cols = y_cols.reshape(stop - start, o, oh, cw)[..., :ow]
            if self.bias is not None:
                xp.add(y_cols, self.bias.data[:, None, None], out=y[start:stop])
            else:
                y[start:stop] = y_cols

    def _forward_pointwise(self, xp: Any, x: Any) -> Any:
        """1×1 kernel, no padding: y[n] = W x[n] (a batched GEMM, no im2col), in lanes of
        samples (``_lanes``), each with BLAS on one thread."""
        sh, sw = self.stride
        if (sh, sw) != (1, 1):
            x_s = xp.ascontiguousarray(x[:, :, ::sh, ::sw])
        else:
            x_s = x
        n, c, oh, ow = x_s.shape
        weight, cols = self.weight.data.reshape(self.out_channels, c), x_s.reshape(n, c, -1)
        if self.training:
            self._cols, self._x_shape = cols, x.shape
        if self._pointwise_merged(oh * ow):
            y = self._merged_product(xp, weight, cols, x.shape, self.bias)
            return y.reshape(n, self.out_channels, oh, ow)
        y = xp.empty((n, self.out_channels, oh * ow), dtype=cols.dtype)

        def run(lo: int, hi: int, lane: int) -> None:
            xp.matmul(weight, cols[lo:hi], out=y[lo:hi])
            if self.bias is not None:
                y[lo:hi] += self.bias.data[:, None]

        self._run_lanes(self._lanes(xp, x.shape), run)
        return y.reshape(n, self.out_channels, oh, ow)

    def _pointwise_merged(self, positions: int) -> bool:
        """Whether the 1×1 path's forward and ∂L/∂x run as one GEMM over every sample's
        positions (``_merged_product``) rather than one per sample
        (``POINTWISE_MERGED_BELOW``)."""
        return positions < POINTWISE_MERGED_BELOW

    def _merged_product(self, xp: Any, matrix: Any, stack: Any, x_shape: tuple[int, ...],
                        bias: Parameter | None = None) -> Any:
        """M S[n] (+ b) for every sample n of ``stack`` (N, K, P), as one GEMM M [S_1 … S_N]
        over a copy of the samples side by side (``_samples_merged``), in lanes of rows of the
        result (each row the same sum for any number of lanes; ``_lanes`` decides how many),
        and copied back to (N, R, P). Per sample, the GEMMs read all of M once a sample: a
        1024 → 2048 layer's 8 MB once for each of its 2×2 outputs' samples."""
        n, _, positions = stack.shape
        merged = _samples_merged(stack[:, None])[0]
        out = xp.empty((matrix.shape[0], n * positions), dtype=stack.dtype)
        self._rows_in_lanes(xp, matrix, merged, out, x_shape, bias)
        return xp.ascontiguousarray(_samples_split(out[None], n)[:, 0])

    def _rows_in_lanes(self, xp: Any, a: Any, b: Any, out: Any, x_shape: tuple[int, ...],
                       bias: Parameter | None = None) -> None:
        """out = a b (+ the bias, one value a row) in lanes of rows of ``out``, as many as
        ``_lanes`` gives a batch of ``x_shape``: each row the same sum for any number of
        lanes."""
        ranges = self._lanes(xp, x_shape)
        rows = sample_lanes(a.shape[0], len(ranges), len(ranges))
        ranges = ranges[:len(rows)]  # no more lanes than rows (one output or input channel)

        def run(lo: int, hi: int, lane: int) -> None:  # lane k: rows[k] of the result
            first, last = rows[lane]
            xp.matmul(a[first:last], b, out=out[first:last])
            if bias is not None:
                out[first:last] += bias.data[first:last, None]

        self._run_lanes(ranges, run)

    # -- bprop --------------------------------------------------------------------

    def _check_grad_out(self, grad_out: Any) -> None:
        """Raise ``ValueError`` naming both shapes unless ∂L/∂y has the shape of the last
        forward's output (the kernels index it by that shape, unchecked), and naming the
        dtypes unless it has the layer's (the compiled kernels are typed by it). O(1)."""
        n, _, h, w = self._cached("_x_shape")
        _, _, oh, ow, _ = self._layout((n, 0, h, w))
        expected = (n, self.out_channels, oh, ow)
        shape = tuple(getattr(grad_out, "shape", ()))
        if shape != expected:
            raise ValueError(
                f"{type(self).__name__}.backward: grad_out has shape {shape}; expected "
                f"{expected}, the shape of the output of the last forward (∂L/∂y, one value "
                "per output)"
            )
        if grad_out.dtype != self.weight.data.dtype:
            raise ValueError(
                f"{type(self).__name__}.backward: grad_out has dtype {grad_out.dtype}; the "
                f"layer's is {self.weight.data.dtype}. Pass ∂L/∂y in the layer's dtype "
                f"(grad_out.astype(numpy.{self.weight.data.dtype}))"
            )

    def backward(self, grad_out: Any, input_grad: bool = True) -> Any:
        """∂L/∂W, ∂L/∂b and (unless ``input_grad=False``) ∂L/∂x in one pass over the batch."""
        self._check_grad_out(grad_out)
        if self.per_example_recorder is not None:
            # ∂L/∂y of this layer's own output: after forward_relu, the ReLU's bprop first
            # (grad_input masks again, which changes nothing: G·1·1 = G·1)
            grad_out = self._rectified(array_module(grad_out), grad_out, in_lanes=False)[0]
            self.per_example_recorder.record(self, grad_out)
            return self.grad_input(grad_out) if input_grad else None
        if self._is_pointwise():
            grad_cols = self._pointwise_grad_columns(grad_out)
            self._accumulate_pointwise(grad_out, grad_cols)
            return self._grad_input_pointwise(grad_cols) if input_grad else None
        depthwise = self._depthwise(self._cached("_x"))
        if depthwise is not None:
            return self._backward_depthwise(depthwise, grad_out, weights=True,
                                            inputs=input_grad)
        winograd = self._winograd(self._cached("_x"))
        if winograd is not None:
            return self._backward_winograd(winograd, grad_out, weights=True, inputs=input_grad)
        direct = self._direct(self._cached("_x"))
        if direct is not None:
            return self._backward_direct(direct, grad_out, weights=True, inputs=input_grad)
        transposed = self._transposed(grad_out) if input_grad else None
        grad = self._backward_columns(grad_out, weights=True,
                                      inputs=input_grad and transposed is None)
        return transposed.forward(grad_out) if transposed is not None else grad

    def accumulate_grad(self, grad_out: Any) -> None:
        self._check_grad_out(grad_out)
        if self.per_example_recorder is not None:
            self.per_example_recorder.record(
                self, self._rectified(array_module(grad_out), grad_out, in_lanes=False)[0])
        elif self._is_pointwise():
            self._accumulate_pointwise(grad_out, self._pointwise_grad_columns(grad_out))
        elif (depthwise := self._depthwise(self._cached("_x"))) is not None:
            self._backward_depthwise(depthwise, grad_out, weights=True, inputs=False)
        elif (winograd := self._winograd(self._cached("_x"))) is not None:
            self._backward_winograd(winograd, grad_out, weights=True, inputs=False)
        elif (direct := self._direct(self._cached("_x"))) is not None:
            self._backward_direct(direct, grad_out, weights=True, inputs=False)
        else:
            self._backward_columns(grad_out, weights=True, inputs=False)

    # -- per-example gradients ------------------------------------------------------

    def per_example_grads(self, grad_out: Any) -> dict[str, Any]:
        """``{"weight": (N, O, C/G, K_h, K_w), "bias": (N, O)}``: each example's share
        of ∂L/∂θ, G_n X_nᵀ per group."""
        xp = array_module(grad_out)
        g, x = self._per_example_factors(xp, grad_out)
        weight = xp.matmul(g, x.transpose(0, 1, 3, 2))
        grads = {"weight": weight.reshape((len(grad_out),) + self.weight.shape)}
        if self.bias is not None:
            grads["bias"] = grad_out.sum(axis=(2, 3))
        return grads

    def per_example_sq_norms(self, grad_out: Any, method: str = "auto") -> Any:
        """(N,) squared norms ‖∂L_n/∂θ‖² over weight and bias, a block of examples at a
        time (at most ``BLOCK_BYTES`` of work arrays). ``method``: "product" (G_n X_nᵀ),
        "ghost" (Gram matrices) or "auto" (whichever takes fewer multiplications)."""
        if method not in ("auto", "product", "ghost"):
            raise ValueError(f"method must be 'auto', 'product' or 'ghost'; got {method!r}")
        xp = array_module(grad_out)
        g, x = self._per_example_factors(xp, grad_out)
        n, groups, o_g, t = g.shape
        rows = x.shape[2]
        if method == "auto":
            method = "ghost" if t * (o_g + rows) < o_g * rows else "product"
        per_example = groups * (2 * t * t if method == "ghost" else o_g * rows)
        block = max(1, min(n, BLOCK_BYTES // (per_example * grad_out.dtype.itemsize)))
        norms = xp.empty(n, dtype=grad_out.dtype)
        for start in range(0, n, block):
            gb, xb = g[start:start + block], x[start:start + block]
            if method == "ghost":
                gram = xp.matmul(gb.transpose(0, 1, 3, 2), gb)
                gram *= xp.matmul(xb.transpose(0, 1, 3, 2), xb)
            else:
                gram = xp.matmul(gb, xb.transpose(0, 1, 3, 2))
                gram *= gram
            norms[start:start + block] = gram.reshape(len(gb), -1).sum(axis=1)
        if self.bias is not None:
            bias = grad_out.sum(axis=(2, 3))
            norms += (bias * bias).sum(axis=1)
        return norms

    def _per_example_factors(self, xp: Any, grad_out: Any) -> tuple[Any, Any]:
        """∂L/∂Y as (N, G, O/G, T) and the columns as (N, G, C/G·K_h·K_w, T): the 1×1
        path's cached input, otherwise made again from the cached input (T counts the
        full-width layout's extra columns, where ∂L/∂Y is 0)."""
        n, groups = grad_out.shape[0], self.groups
        if self._is_pointwise():
            cols = self._cached("_cols")
            g = grad_out.reshape(n, 1, self.out_channels, -1)
            return g, cols.reshape(n, 1, cols.shape[1], cols.shape[2])
        x = self._im2col(xp, self._cached("_x"))
        _, _, oh, ow, cw = self._layout(self._cached("_x").shape)
        if cw != ow:
            padded = xp.zeros(grad_out.shape[:3] + (cw,), dtype=grad_out.dtype)
            padded[..., :ow] = grad_out
            grad_out = padded
        g = grad_out.reshape(n, groups, self.out_channels // groups, oh * cw)
        return g, x

    def grad_input(self, grad_out: Any) -> Any:
        self._check_grad_out(grad_out)
        if self._is_pointwise():
            return self._grad_input_pointwise(self._pointwise_grad_columns(grad_out))
        depthwise = self._depthwise(self._cached("_x"))
        if depthwise is not None:
            return self._backward_depthwise(depthwise, grad_out, weights=False, inputs=True)
        winograd = self._winograd(self._cached("_x"))
        if winograd is not None:
            return self._backward_winograd(winograd, grad_out, weights=False, inputs=True)
        direct = self._direct(self._cached("_x"))
        if direct is not None and self._phased():
            return self._backward_direct(direct, grad_out, weights=False, inputs=True)
        grad_out = self._rectified(array_module(grad_out), grad_out, in_lanes=False)[0]
        transposed = self._transposed(grad_out, direct=direct is not None)
        if transposed is not None:
            return transposed.forward(grad_out)
        return self._backward_columns(grad_out, weights=False, inputs=True)

    def _transposed(self, grad_out: Any, direct: bool = False) -> Conv2d | None:
        """For stride 1 and no groups, ∂L/∂x is itself a convolution (Dumoulin & Visin
        2016, "A guide to convolution arithmetic", §4.1): of ∂L/∂Y, padded by
        d(K − 1) − p, with the kernel flipped and its two channel axes swapped,

            ∂L/∂x[n, c, p, q] = Σ_{o,i,j} W[o, c, K_h−1−i, K_w−1−j] G̃[n, o, p + d_h i, q + d_w j].

        Computing it with the forward pass (columns in cache-sized blocks, one GEMM each)
        avoids the column gradient and its col2im scatter, the slowest part of bprop.
        Returns that convolution (a private Conv2d in evaluation mode, holding the
        flipped kernel), or None where it does not apply: strides, groups, padding wider
        than the kernel, fewer than ``TRANSPOSED_MIN_CHANNELS`` input channels unless the
        layer is ``direct`` (computed by ``nn._direct``), fewer output positions per sample
        than output channels (a small plane: the transposed convolution runs over ∂L/∂Y
        padded by K − 1, mostly zeros, in blocks of one sample; the column gradient is
        a GEMM per sample of P columns. Measured, AMD EPYC Zen 5, 2 threads, batch 128,
        LeNet-5's C5 as a convolution, 5×5 16→120 on 5×5, ∂L/∂x: 5.2 → 0.31 ms).
        """
        (kh, kw), (ph, pw), (dh, dw) = self.kernel_size, self.padding, self.dilation
        fewest = 1 if direct else TRANSPOSED_MIN_CHANNELS
        if (self.stride != (1, 1) or self.groups != 1 or self.in_channels < fewest
                or ph > dh * (kh - 1) or pw > dw * (kw - 1)
                or grad_out.shape[2] * grad_out.shape[3] < self.out_channels):
            return None
        if direct:  # (see TRANSPOSED_MAX_WASTE)
            h, w = self._cached("_x").shape[2:]
            c = self.in_channels
            waste = h * w / (grad_out.shape[2] * grad_out.shape[3]) * (-(-c // 4) * 4) / c
            if waste >= TRANSPOSED_MAX_WASTE:
                return None
        xp = array_module(grad_out)
        helper = self.__dict__.get("_transposed_conv")
        if helper is None or helper.weight.dtype != self.weight.dtype:
            helper = Conv2d(self.out_channels, self.in_channels, self.kernel_size,
                            padding=(dh * (kh - 1) - ph, dw * (kw - 1) - pw),
                            dilation=self.dilation, bias=False, weight_init="zeros",
                            dtype=self.weight.dtype,
                            algorithm=self.algorithm if self.algorithm in ("im2col", "direct")
                            else "auto").eval()
            object.__setattr__(self, "_transposed_conv", helper)
        helper.threads = self.threads
        helper.weight.data = xp.ascontiguousarray(
            self.weight.data.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1])
        return helper

    def _bias_grad(self, xp: Any, grad_out: Any, relu_y: Any = None) -> None:
        """∂L/∂b += Σ_{n,p,q} G (no bias: nothing) for the Winograd and direct paths: by
        ``_conv_kernels.channel_sums`` in lanes of channels where it takes G (float64 sums,
        the same for any number of lanes), else NumPy's sum on one thread (as im2col).
        Given ``relu_y`` (where the kernels take it: see ``_rectifier``), of
        G·1_{y > 0}, by ``_conv_kernels.masked_channel_sums``: the same sums."""
        if self.bias is None:
            return
        kernels = _fused.kernels("_conv_kernels", grad_out)
        if kernels is None:
            self.bias.accumulate(xp.sum, grad_out, axis=(0, 2, 3))
            return
        n, c, h, w = grad_out.shape
        sums = xp.empty(c, dtype=xp.float64)
        lanes = _fused.lanes(c, grad_out.nbytes, self.threads, BIAS_LANE_MIN_BYTES)
        if relu_y is None:
            run_ranges(lanes, kernels.channel_sums, grad_out.reshape(n, c, h * w), sums)
        else:
            run_ranges(lanes, kernels.masked_channel_sums, grad_out.reshape(n, c, h * w),
                       relu_y.reshape(n, c, h * w), sums)
        self.bias.add_grad(sums.astype(grad_out.dtype))

    def _rectified(self, xp: Any, grad_out: Any, in_lanes: bool) -> tuple[Any, Any]:
        """(G̃, rectify): G̃ = G·1_{y > 0} after ``forward_relu`` (the ReLU's bprop), else G,
        C-contiguous. ``in_lanes``: G̃ is an empty array that ``rectify(lo, hi)`` fills for
        samples [lo, hi), which each lane calls before reading them; else G̃ is whole and
        ``rectify`` does nothing."""
        grad_out = xp.ascontiguousarray(grad_out)
        y = self._cached("_relu_y")
        if y is False:
            return grad_out, _nothing
        relu = _fused.kernels("_relu_kernels", grad_out, y) if in_lanes else None
        if relu is None:
            return rectified_gradient(grad_out, y, self.threads), _nothing
        out = xp.empty_like(grad_out)
        return out, partial(_rectify_samples, relu, grad_out, y, out)

    def _transform_lanes(self) -> list[tuple[int, int]]:
        """Lanes of output channels for Winograd's filter transforms
        (``TRANSFORM_LANE_MIN_BYTES``)."""
        return _fused.lanes(self.out_channels, self.weight.data.nbytes, self.threads,
                            TRANSFORM_LANE_MIN_BYTES)

    def _rectifier(self, xp: Any, grad_out: Any, in_kernels: bool,
                   in_lanes: bool) -> tuple[Any, Any, Any]:
        """(G, rectify, y) for bprop after ``forward_relu``: with ``in_kernels``, where there
        is a ReLU and compiled kernels, G itself and y, its output, for the kernels to take
        G·1_{y > 0} as they read G (Winograd's, direct's ∂L/∂W, and ``_bias_grad`` by
        ``_conv_kernels.masked_channel_sums``: no masked array of the output's size made);
        otherwise ``_rectified``'s G̃ and ``rectify``, and None."""
        grad_out = xp.ascontiguousarray(grad_out)
        y = self._cached("_relu_y") if in_kernels else False
        if y is not False and _fused.kernels("_conv_kernels", grad_out, y) is not None:
            return grad_out, _nothing, y
        return (*self._rectified(xp, grad_out, in_lanes), None)

    def _backward_winograd(self, winograd: Any, grad_out: Any, weights: bool,
                           inputs: bool) -> Any:
        """bprop by ``winograd`` (``nn._winograd``; the lanes as in ``_backward_columns``): each
        lane writes ∂L/∂x of its own samples and returns its Σ ∂L/∂U, and
        ∂L/∂W += Gᵀ (Σ_lanes ∂L/∂U) G.

        After ``forward_relu`` the kernels take the ReLU's bprop, G·1_{y > 0}, as they read
        G (``_winograd.output_transform_adjoint``, ``_conv_kernels.masked_channel_sums``):
        that array, the size of the layer's output, is never made, one pass over it and its
        memory saved. The same values as the ReLU's bprop, so the same results. Measured
        (the small VGG, batch 1024, with direct's first layer masking as it reads G too,
        ``_backward_direct``): the peak of a step's allocations 879 → 751 MiB (its 32→32
        layer on 32×32 held G, G̃ and ∂L/∂x of 128 MiB each; its first layer G and G̃), the
        resident peak 1074 → 948 MiB; paired steps 0.95 at batch 512, 0.99 at 128."""
        xp = array_module(grad_out)
        x = self._cached("_x")
        grad_out, rectify, relu_y = self._rectifier(xp, grad_out, True, in_lanes=True)
        grad = xp.empty(x.shape, dtype=grad_out.dtype) if inputs else None
        u = self._cached("_u")  # U = G w Gᵀ of fprop, not transformed again
        ranges = self._lanes(xp, x.shape, 2.0 if inputs and weights else 1.0)

        def run(lo: int, hi: int, lane: int) -> Any:
            rectify(lo, hi)
            return winograd.backward(x, grad_out, u, self.padding, lo, hi,
                                     self._lane_work(xp, x.dtype, lane), grad, weights,
                                     relu_y)

        totals = self._run_lanes(ranges, run)
        if weights:
            self._bias_grad(xp, grad_out, relu_y)
            for part in totals[1:]:
                totals[0] += part
            self.weight.add_grad(winograd.filter_transform_adjoint(
                totals[0], self.weight.shape, self._transform_lanes()))
        return grad

    def _backward_depthwise(self, depthwise: Any, grad_out: Any, weights: bool,
                            inputs: bool) -> Any:
        """bprop where fprop ran ``depthwise`` (``nn._depthwise``), in lanes of channels:
        ∂L/∂W (added to the weight's gradient) and ∂L/∂b where ``weights``, ∂L/∂x (returned)
        where ``inputs``."""
        xp = array_module(grad_out)
        x = self._cached("_x")
        grad_out = xp.ascontiguousarray(grad_out, dtype=x.dtype)
        multiplier = self.out_channels // self.groups
        filters = depthwise.filters(self.weight.data, multiplier)
        grad = xp.empty(x.shape, dtype=x.dtype) if inputs else None
        grad_w = xp.empty_like(filters) if weights else None
        run_ranges(self._channel_lanes(xp, x.shape), depthwise.backward, x, filters, grad_out,
                   grad, grad_w, self.stride, self.padding, self.dilation)
        if weights:
            self.weight.add_grad(grad_w.transpose(3, 0, 1, 2).reshape(self.weight.shape))
            self._bias_grad(xp, grad_out)
        return grad

    def _backward_direct(self, direct: Any, grad_out: Any, weights: bool, inputs: bool) -> Any:
        """bprop where fprop ran ``direct`` (``nn._direct``): each lane of samples returns its
        Σ_n ∂L/∂W (``direct.backward_weights``), added up when all are done; ∂L/∂x is the
        forward pass of the transposed convolution (``_transposed``, itself direct), for a
        stride > 1 ``direct.backward_inputs`` (by phases, ``_phased``), or im2col's column
        gradient where neither applies. Where both are wanted, each lane computes ∂L/∂x of
        its own samples right after their ∂L/∂W: one parallel region, not two (paired
        whole steps at 2 threads, ∂L/∂x direct: LeNet-5 0.97 and 0.92, ResNet-20 1.02 and
        1.00; 1 thread, LeNet-5 0.97; by the column gradient, LeNet-5's C3 bprop alone,
        300 calls alternating in one process, 0.91–0.92 at 2 threads, 0.97 at 1)."""
        xp = array_module(grad_out)
        x = self._cached("_x")
        # only ∂L/∂W and ∂L/∂b wanted: their kernels take the mask
        grad_out, rectify, relu_y = self._rectifier(xp, grad_out, weights and not inputs,
                                                    in_lanes=weights)
        strided = inputs and self._phased()
        transposed = self._transposed(grad_out, direct=True) if inputs and not strided else None
        columns = inputs and not strided and transposed is None
        # ∂L/∂x the transposed convolution's forward pass by direct sums
        transposed_direct = transposed is not None and transposed._direct(grad_out) is not None
        both = weights and (strided or columns or transposed_direct)
        grad = None
        if columns and weights:  # the column gradient's GEMMs in the same lanes
            inputs_of, grad = self._column_input_gradient(xp, grad_out, weights=False)
        elif both or strided:
            grad = xp.empty(x.shape, dtype=grad_out.dtype)
        if strided:
            phased = direct.phases(self.weight.data, self.stride[0], x.shape, self.padding)

            def inputs_of(lo: int, hi: int, lane: int) -> None:
                direct.backward_inputs(grad_out, phased, grad, self.padding, self.stride[0],
                                       lo, hi, self._lane_work(xp, x.dtype, lane))

        elif both and transposed_direct:  # ∂L/∂x of the same samples in the same lane
            flipped, zero = direct.layout(transposed.weight.data, None)

            def inputs_of(lo: int, hi: int, lane: int) -> None:
                transposed._direct_samples(direct, grad_out, flipped, zero, grad, lo, hi, lane)

        if weights:
            def run(lo: int, hi: int, lane: int) -> Any:
                rectify(lo, hi)
                total = direct.backward_weights(x, grad_out, self.kernel_size, self.padding,
                                                self.stride, self.dilation, lo, hi,
                                                self._lane_work(xp, x.dtype, lane), relu_y)
                if both:
                    inputs_of(lo, hi, lane)
                return total

            if both and transposed_direct:
                transposed._work_dict()  # made before the lanes share it
            totals = self._run_lanes(self._lanes(xp, x.shape, 2.0 if both else 1.0), run,
                                     blas=columns)
            for part in totals[1:]:
                totals[0] += part
            self.weight.add_grad(totals[0][..., :self.out_channels].transpose(3, 0, 1, 2))
            self._bias_grad(xp, grad_out, relu_y)
        elif strided:
            self._run_lanes(self._lanes(xp, x.shape), inputs_of, blas=False)
        if not inputs or both or strided:
            return grad
        if transposed is not None:
            return transposed.forward(grad_out)
        return self._backward_columns(grad_out, weights=False, inputs=True)

    def _backward_columns(self, grad_out: Any, weights: bool, inputs: bool) -> Any:
        """The im2col path's bprop, a block of samples at a time.

        For each block the columns are made again from the cached input (as in fprop,
        into one reused buffer read from cache right after: recomputing them costs one
        copy, keeping them would cost K_h·K_w inputs of memory per layer between fprop
        and bprop), ∂L/∂Y is laid out like them, (n_b, G, O/G, OH·CW), and

            ∂L/∂W += Σ_n G_n X_nᵀ,     ∂L/∂X_n = Wᵀ G_n  (scattered by col2im).

        With several lanes (``_lanes``) each lane does this for its own range of
        samples: ∂L/∂X_n lands in the lane's own samples of ∂L/∂x, and the lanes after
        the first sum their Σ_n G_n X_nᵀ apart, added to ∂L/∂W once all lanes are done
        (the only place where the result depends on the number of lanes: the order of
        a floating-point sum).
        """
        xp = array_module(grad_out)
        x = self._cached("_x")
        if weights and self.bias is not None:
            self.bias.accumulate(xp.sum, grad_out, axis=(0, 2, 3))
        ranges = self._lanes(xp, x.shape, 2.0 if inputs and weights else 1.0)
        out = None
        if inputs:
            run, out = self._column_input_gradient(xp, grad_out, weights)
        elif self._row_split(x.shape):
            run = partial(self._weight_grad_rows, xp, grad_out, x)
        else:
            run = partial(self._backward_samples, xp, grad_out, x, None, weights)
        for partial_sum in self._run_lanes(ranges, run)[1:]:
            if partial_sum is not None:
                self.weight.add_grad(partial_sum.reshape(self.weight.shape))
        return out

    def _column_input_gradient(self, xp: Any, grad_out: Any, weights: bool) -> tuple[Any, Any]:
        """(run, ∂L/∂x): ``run(lo, hi, lane)`` writes ∂L/∂x of samples [lo, hi) by the
        column gradient and col2im (``_backward_samples``, with their ∂L/∂W where
        ``weights``) into ∂L/∂x̃, padded, whose samples each lane zeroes first and crops
        after (``_padded_lane``); ∂L/∂x is ∂L/∂x̃ itself where there is no padding."""
        x = self._cached("_x")
        n, c = x.shape[:2]
        hp, wp, _, ow, cw = self._layout(x.shape)
        kw, dw = self.kernel_size[1], self.dilation[1]
        ph, pw = self.padding
        slack = (kw - 1) * dw if cw != ow else 0
        grad = xp.empty(n * c * hp * wp + slack, dtype=grad_out.dtype)
        grad[n * c * hp * wp:] = 0
        out = (grad[: n * c * hp * wp].reshape(n, c, hp, wp) if (ph, pw) == (0, 0)
               else xp.empty(x.shape, dtype=grad_out.dtype))
        run = partial(self._backward_samples, xp, grad_out, x, grad, weights)
        return partial(_padded_lane, run, grad, out, (ph, pw), (hp, wp)), out

    def _weight_target(self, lane: int) -> Any:
        """Where a lane adds its Σ_n G_n X_nᵀ: ∂L/∂W itself for the first lane, a
        partial sum of its own (``_LaneSum``) for the others."""
        return self.weight if lane == 0 else _LaneSum(self.weight.shape)

    def _backward_samples(self, xp: Any, grad_out: Any, x: Any, grad: Any, weights: bool,
                          lo: int, hi: int, lane: int) -> Any:
        """bprop of samples [lo, hi) (``_backward_columns``) in ``lane``'s work arrays: adds
        into ``grad`` (∂L/∂x, flat and padded; None: not wanted) and returns the lane's
        partial ∂L/∂W (None for the first lane, which adds into ``weight.grad``)."""
        target = self._weight_target(lane) if weights else None
        w_t = self._weight_matrix().transpose(0, 2, 1) if grad is not None else None
        merged = self._merged(x.shape)
        budget = BLOCK_BYTES if grad is not None or merged else FORWARD_BLOCK_BYTES
        total = None  # merged: Σ_n G_n X_nᵀ of the lane's blocks, (G, O, R)
        for start, stop, block, cols in self._column_blocks(xp, x, budget, lo, hi, lane,
                                                            fill=weights):
            grad_cols = self._grad_columns(xp, grad_out, start, stop, block, lane)
            g_all = _samples_merged(grad_cols) if merged else None
            if weights and merged:
                product = _block_product(_samples_merged(cols), g_all)
                if total is None:
                    total = product
                else:
                    total += product
            elif weights:  # (∂L/∂W_n)ᵀ = X_n G_nᵀ: measured ~1.4× faster than G_n X_nᵀ
                per_sample = self._work(xp, "weight", cols[..., :1].size * grad_cols.shape[2],
                                        grad_out.dtype, lane=lane).reshape(cols.shape[:3] + (-1,))
                xp.matmul(cols, grad_cols.transpose(0, 1, 3, 2), out=per_sample)
                target.accumulate(_sum_transposed_into, per_sample, self.weight.shape)
            if grad is not None:
                if merged:
                    cols[...] = _samples_split(_products.matmul(w_t, g_all), stop - start)
                else:
                    _products.matmul(w_t, grad_cols, out=cols)
                self._col2im(xp, cols, grad, start, stop, x.shape)
        if total is not None:
            target.accumulate(_sum_into, total[None], self.weight.shape)
        return None if lane == 0 or target is None else target.total

    def _weight_grad_rows(self, xp: Any, grad_out: Any, x: Any, lo: int, hi: int,
                          lane: int) -> Any:
        """∂L/∂W from the shifted copies (``_shifted_blocks``) of samples [lo, hi): for
        each block and row i, (∂L/∂W_i)ᵀ = Σ_n rows[i][n] G_nᵀ, (K_w·C × O) per sample.
        Returns the lane's partial sum as ``_backward_samples`` does."""
        (kh, kw), c, o = self.kernel_size, self.in_channels, self.out_channels
        target = self._weight_target(lane)
        for start, stop, block, rows in self._shifted_blocks(xp, x, FORWARD_BLOCK_BYTES, lo, hi,
                                                             lane):
            grad_cols = self._grad_columns(xp, grad_out, start, stop, block, lane)
            grad_t = grad_cols.reshape(stop - start, o, -1).transpose(0, 2, 1)
            stack = self._work(xp, "weight", kh * (stop - start) * kw * c * o, grad_out.dtype,
                               lane=lane)
            stack = stack.reshape(kh, stop - start, kw * c, o)
            for i in range(kh):
                xp.matmul(rows[i], grad_t, out=stack[i])
            target.accumulate(_sum_rows_into, stack, self.weight.shape)
        return None if lane == 0 else target.total

    def _grad_columns(self, xp: Any, grad_out: Any, start: int, stop: int, block: int,
                      lane: int = 0) -> Any:
        """∂L/∂Y of samples [start, stop) as (n_b, G, O/G, OH·CW): a view of ``grad_out``,
        or, full width, copied into a reused buffer whose extra columns stay 0."""
        n_b, o, oh, ow = (stop - start,) + tuple(grad_out.shape[1:])
        cw = self._layout(self._cached("_x").shape)[4]
        if cw == ow:
            part = xp.ascontiguousarray(grad_out[start:stop])
        else:
            part = self._work(xp, "grad_out", n_b * o * oh * cw, grad_out.dtype,
                              (oh, ow, cw), lane).reshape(n_b, o, oh, cw)
            part[..., :ow] = grad_out[start:stop]
        return part.reshape(n_b, self.groups, o // self.groups, oh * cw)

    def _col2im(self, xp: Any, d_cols: Any, grad: Any, start: int, stop: int,
                x_shape: tuple[int, ...]) -> None:
        """Add the column gradient (n_b, G, C/G·K_h·K_w, OH·CW) of samples [start, stop)
        into ``grad``, the flat padded (N, C, H_p, W_p) input gradient: one strided
        addition per kernel offset (i, j)."""
        n, c = x_shape[:2]
        hp, wp, oh, ow, cw = self._layout(x_shape)
        (kh, kw), (dh, dw) = self.kernel_size, self.dilation
        n_b = stop - start
        d_cols = d_cols.reshape(n_b, c, kh, kw, oh * cw)
        kernels = _fused.kernels("_conv_kernels", d_cols, grad)
        if kernels is not None:  # one compiled pass, bit for bit the additions below
            kernels.col2im(d_cols, grad, start, hp, wp, oh, ow, *self.stride, dh, dw)
            return
        plane, item = hp * wp, grad.dtype.itemsize
        if cw == ow:
            block = grad[: n * c * plane].reshape(n, c, hp, wp)[start:stop]
            for i in range(kh):
                for j in range(kw):
                    block[kernel_offset_slice(i, j, (oh, ow), self.stride, self.dilation)] += (
                        d_cols[:, :, i, j].reshape(n_b, c, oh, ow)
                    )
            return
        # Full width: offset (i, j) adds one run per (n, c) plane, from i·d_h·W_p + j·d_w
        # on, of (OH − 1)·W_p + OW values: the last row's W_p − OW extra columns are
        # zeros and left out, so no run reaches into the next plane (or into another
        # lane's samples).
        length = (oh - 1) * wp + ow
        for i in range(kh):
            for j in range(kw):
                offset = start * c * plane + i * dh * wp + j * dw
                run = strided_windows(xp, grad[offset:], (n_b, c, length),
                                      (c * plane * item, plane * item, item))
                run += d_cols[:, :, i, j, :length]

    # -- bprop of the 1×1 fast path -------------------------------------------------

    def _pointwise_grad_columns(self, grad_out: Any) -> Any:
        return grad_out.reshape(grad_out.shape[0], self.out_channels, -1)

    def _accumulate_pointwise(self, grad_out: Any, grad_cols: Any) -> None:
        xp = array_module(grad_out)
        cols = self._cached("_cols")
        if self.bias is not None:
            self.bias.accumulate(xp.sum, grad_out, axis=(0, 2, 3))
        n, o, positions = grad_cols.shape
        if positions < o:  # few positions: one GEMM over all samples and positions
            self.weight.accumulate(self._pointwise_weight_product, grad_cols, cols)
            return
        # Σ_n G[n] X[n]ᵀ: a batched GEMM in lanes of samples, then one sum over the
        # (small) (N, O, C) stack, in the same order for any number of lanes.
        per_sample = xp.empty((cols.shape[0], self.out_channels, cols.shape[1]),
                              dtype=cols.dtype)

        def run(lo: int, hi: int, lane: int) -> None:
            xp.matmul(grad_cols[lo:hi], cols[lo:hi].transpose(0, 2, 1), out=per_sample[lo:hi])

        self._run_lanes(self._lanes(xp, self._cached("_x_shape")), run)
        self.weight.accumulate(_sum_into, per_sample, self.weight.shape)

    def _pointwise_weight_product(self, grad_cols: Any, cols: Any, out: Any = None) -> Any:
        """∂L/∂W = G Xᵀ with G = [G_1 … G_N] (O × N·P) and X = [X_1 … X_N] (C × N·P), laid
        out so by a copy of each (``_samples_merged``): one GEMM whose inner dimension runs
        over every sample's positions, in lanes of rows of ∂L/∂W (each row the same sum for
        any number of lanes; ``_run_lanes`` decides the lanes as for the samples). For the
        few positions P of a small plane, per-sample products (O × C over P terms each)
        wrote N·O·C values to sum after (measured, AMD EPYC Zen 5, 2 threads, batch 128,
        256 → 512 stride 2 on 8×8, ∂L/∂W 7.3–7.5 → 3.1 ms, bprop 7.8–8.1 → 4.6–5.5;
        PyTorch's bprop 6.3–6.5)."""
        xp = array_module(cols)
        g_all = _samples_merged(grad_cols[:, None])[0]
        # Xᵀ laid out (N·P, C) by its own copy: as the view of X (C, N·P) the GEMM took
        # 5–10 % longer (3.0–3.2 against 3.3–3.4 ms in the measurement above)
        x_t = xp.ascontiguousarray(cols.transpose(0, 2, 1)).reshape(g_all.shape[1], -1)
        out = (xp.empty((g_all.shape[0], x_t.shape[1]), dtype=cols.dtype) if out is None
               else out.reshape(g_all.shape[0], x_t.shape[1]))
        self._rows_in_lanes(xp, g_all, x_t, out, self._cached("_x_shape"))
        return out.reshape(self.weight.shape)

    def _grad_input_pointwise(self, grad_cols: Any) -> Any:
        xp = array_module(grad_cols)
        x_shape = self._cached("_x_shape")
        weight = self.weight.data.reshape(self.out_channels, self.in_channels).T
        if self._pointwise_merged(grad_cols.shape[2]):
            d_cols = self._merged_product(xp, weight, grad_cols, x_shape)
        else:
            d_cols = xp.empty((grad_cols.shape[0], self.in_channels, grad_cols.shape[2]),
                              dtype=grad_cols.dtype)

            def run(lo: int, hi: int, lane: int) -> None:
                xp.matmul(weight, grad_cols[lo:hi], out=d_cols[lo:hi])

            self._run_lanes(self._lanes(xp, x_shape), run)
        n, c, h, w = x_shape
        sh, sw = self.stride
        if (sh, sw) == (1, 1):
            return d_cols.reshape(x_shape)
        grad = xp.zeros(x_shape, dtype=d_cols.dtype)
        oh, ow = output_size(h, 1, sh, 0), output_size(w, 1, sw, 0)
        grad[:, :, ::sh, ::sw] = d_cols.reshape(n, c, oh, ow)
        return grad

    def extra_repr(self) -> str:
        text = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}"
        for name, default in (("stride", (1, 1)), ("padding", (0, 0)), ("dilation", (1, 1))):
            if getattr(self, name) != default:
                text += f", {name}={getattr(self, name)}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.algorithm != "auto":
            text += f", algorithm={self.algorithm!r}"
        return text + ("" if self.bias is not None else ", bias=False")


class _LaneSum:
    """A lane's partial sum of ∂L/∂W (``total``), with ``Parameter.accumulate``'s face."""

    __slots__ = ("total",)

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.total = None

    def accumulate(self, op: Any, *args: Any, **kwargs: Any) -> None:
        if self.total is None:
            self.total = op(*args, **kwargs)
        else:
            self.total += op(*args, **kwargs)


def _matmul_into(a: Any, b: Any, shape: tuple[int, ...], out: Any = None) -> Any:
    """``a @ b`` reshaped to ``shape`` (written into ``out`` when given); for
    Parameter.accumulate."""
    xp = array_module(a)
    if out is None:
        return xp.matmul(a, b).reshape(shape)
    xp.matmul(a, b, out=out.reshape(a.shape[:-1] + b.shape[-1:]))
    return out


def _samples_merged(stack: Any) -> Any:
    """(n, G, R, P) per-sample matrices as (G, R, n·P): each group's matrices side by side,
    [M_1 … M_n], a copy, so one GEMM per group runs over every sample."""
    xp = array_module(stack)
    n, g, r, p = stack.shape
    return xp.ascontiguousarray(stack.transpose(1, 2, 0, 3)).reshape(g, r, n * p)


def _samples_split(merged: Any, n: int) -> Any:
    """The inverse of ``_samples_merged``, as a view: (G, R, n·P) → (n, G, R, P)."""
    g, r, columns = merged.shape
    return merged.reshape(g, r, n, columns // n).transpose(2, 0, 1, 3)


def _block_product(x_all: Any, g_all: Any) -> Any:
    """Σ_n G_n X_nᵀ over a block, (G, O, R) (∂L/∂W's own layout), from ``_samples_merged``
    columns X (G, R, n·P) and ∂L/∂Y G (G, O, n·P): one GEMM per group whose inner dimension
    runs over the block's samples and positions. For the few positions P of a small plane:
    per sample, R × O products over P terms wrote R·O values per sample to sum after
    (measured, AMD EPYC Zen 5, 2 threads, batch 128, 256 → 512, 3×3 stride 2, 8×8 → 4×4,
    bprop 198–201 → 40–41 ms, PyTorch 29–36; 128 → 256 on 16×16 45–46 → 30–31, PyTorch
    42–43). Made as (G, R, O) and added into ∂L/∂W through a transposed ``sum``, it cost
    16.6 of the 23.0 ms of a 512 → 512 stride 2 on 4×4 bprop at batch 32 (NumPy's
    reduction into a transposed output is slow): in ∂L/∂W's layout, 23.0 → 7.6 ms."""
    return array_module(x_all).matmul(g_all, x_all.transpose(0, 2, 1))


def _sum_into(stack: Any, shape: tuple[int, ...], out: Any = None) -> Any:
    """``stack.sum(0)`` reshaped to ``shape``; for Parameter.accumulate."""
    xp = array_module(stack)
    if out is None:
        return stack.sum(axis=0).reshape(shape)
    xp.sum(stack, axis=0, out=out.reshape(stack.shape[1:]))
    return out


def _sum_transposed_into(stack: Any, shape: tuple[int, ...], out: Any = None) -> Any:
    """Σ_n stack[n] for a stack (N, G, R, O) of transposed (G, O, R) matrices, as
    ``shape``; for Parameter.accumulate. Without ``out``, a new array: never a view of
    ``stack`` (a lane's reused work array, which its next block overwrites)."""
    g, r, o = stack.shape[1:]
    # the sum into a contiguous array, then one transposing copy: NumPy's sum straight into
    # the transposed ∂L/∂W was 2–5× slower (7 samples of 2400 × 256: 3.0 against 1.3 ms;
    # 16 of 288 × 64, ResNet-20's layer3.0: 0.16 against 0.03 ms)
    total = stack.sum(axis=0) if stack.shape[0] > 1 else stack[0]
    if out is None:
        # a copy even where the transpose is contiguous already (O/G or R is 1: a depthwise
        # layer); ascontiguousarray returned the view of a one-sample block's work array,
        # and _LaneSum.accumulate kept it, so the lane's next block overwrote its sum
        return total.transpose(0, 2, 1).copy().reshape(shape)
    out.reshape(g, o, r)[...] = total.transpose(0, 2, 1)
    return out


def _sum_rows_into(stack: Any, shape: tuple[int, ...], out: Any = None) -> Any:
    """Σ_n stack[i, n] for a stack (K_h, N, K_w·C, O) of transposed row gradients, as
    ∂L/∂W of ``shape`` (O, C, K_h, K_w); for Parameter.accumulate."""
    xp = array_module(stack)
    o, c, kh, kw = shape
    if out is None:
        out = xp.empty(shape, dtype=stack.dtype)
    # as ``_sum_transposed_into``: the sum, then one transposing copy (8 samples of 5×5
    # 96 → 256 rows: 5.77 against 1.48 ms, the same values; weight-only bprop, 2 threads,
    # batch 128, im2col: 5×5 64 → 64 on 16×16 32.8–34.4 → 29.4–30.9 ms, 3×3 48 → 48 on
    # 32×32 26.1 → 23.2–23.5, 5×5 32 → 64 on 32×32 53.7 → 52.4–54.1)
    total = stack.sum(axis=1) if stack.shape[1] > 1 else stack[:, 0]
    out.transpose(2, 3, 1, 0)[...] = total.reshape(kh, kw, c, o)
    return out


def _nothing(lo: int, hi: int) -> None:
    """``Conv2d._rectified``'s ``rectify`` where there is nothing to do."""


def _rectify_samples(relu: Any, grad_out: Any, y: Any, out: Any, lo: int, hi: int) -> None:
    """out[lo:hi] = G[lo:hi]·1_{y[lo:hi] > 0}: samples [lo, hi) of the ReLU's bprop
    (``_relu_kernels.backward``) in one lane."""
    per = y[0].size
    relu.backward(grad_out.reshape(-1), y.reshape(-1), out.reshape(-1), lo * per, hi * per)


def _padded_lane(run: Any, grad: Any, out: Any, padding: tuple[int, int],
                 padded: tuple[int, int], lo: int, hi: int, lane: int) -> Any:
    """``run(lo, hi, lane)`` (``Conv2d._backward_samples``) with samples [lo, hi) of the flat
    padded ∂L/∂x̃ ``grad`` zeroed first and, after, copied without their borders into
    ``out`` (∂L/∂x; where there is no padding ``out`` is ``grad`` itself): both in the
    lane, on its own samples, not once for the batch on one thread."""
    (ph, pw), (hp, wp) = padding, padded
    n, c, h, w = out.shape
    per = c * hp * wp
    grad[lo * per:hi * per] = 0
    result = run(lo, hi, lane)
    if (ph, pw) != (0, 0):
        planes = grad[: n * per].reshape(n, c, hp, wp)
        out[lo:hi] = planes[lo:hi, :, ph:ph + h, pw:pw + w]
    return result


WORK_ALIGN = 64  # bytes: a cache line, and one AVX-512 vector


def _aligned_zeros(xp: Any, size: int, dtype: Any) -> Any:
    """``xp.zeros(size, dtype)`` starting on a ``WORK_ALIGN``-byte boundary. NumPy aligns to
    16 bytes; the direct kernels' accumulator rows and padded samples, read and written
    as 64-byte vectors, then cross cache lines. Measured (AMD Zen 5): the direct forward
    alone, 1 thread, batch 128, best of 9, unaligned → aligned in one process, 16→16 on
    32×32 4.43 → 4.17 ms, 32→32 on 16×16 5.01 → 4.74, LeNet-5's C3 1.01 → 0.92 (such
    single-kernel times move by ~10 % from one process to the next); ResNet-20 steps at
    2 threads, trees alternating in 10 process pairs, 9 faster, median of the last 6 pairs
    150.0 → 144.9 ms. CuPy's allocations are aligned already."""
    if xp.__name__ != "numpy":
        return xp.zeros(size, dtype=dtype)
    itemsize = xp.dtype(dtype).itemsize
    raw = xp.zeros(size + WORK_ALIGN // itemsize, dtype=dtype)
    start = (-raw.ctypes.data % WORK_ALIGN) // itemsize
    return raw[start:start + size]
