"""Batch normalization (Ioffe & Szegedy 2015), with torch.nn.BatchNorm1d/2d's exact semantics.

For each feature (BatchNorm1d) or channel (BatchNorm2d) c, over the m values
of the mini-batch that share it (the batch, and the spatial positions):

    training   μ = (1/m) Σ x,   σ² = (1/m) Σ (x − μ)²        (biased, used to normalize)
               x̂ = (x − μ) / √(σ² + ε),   y = γ x̂ + β
               running_mean ← (1 − α) running_mean + α μ
               running_var  ← (1 − α) running_var  + α σ² · m / (m − 1)   (unbiased)
    test       y = γ (x − running_mean) / √(running_var + ε) + β

with α = ``momentum`` (0.1); ``momentum=None`` uses the cumulative average
α = 1 / num_batches_tracked, as torch does. bprop in training mode, with
G = ∂L/∂y and means over the m values of the channel:

    ∂L/∂γ = Σ G ⊙ x̂,   ∂L/∂β = Σ G,
    ∂L/∂x = (γ / √(σ² + ε)) (G − mean(G) − x̂ ⊙ mean(G ⊙ x̂))

How it is computed (torch's CPU kernel does the same): the output is one affine map per
channel, y = a x + (β − a μ) with a = γ / √(σ² + ε); σ² is the centred sum Σ (x − μ)²
(never the one-pass E[x²] − μ², which loses (μ/σ)² ulps); bprop needs Σ G and
Σ G (x − μ) and returns ∂L/∂x = a G + b (x − μ) + c per channel. Sums are GEMVs against
ones and every pass runs over blocks of samples (``BLOCK_BYTES``), so x − μ lives in
cache only; the forward cache is x itself, μ and 1/√(σ² + ε), not a normalized copy.
Measured (1 thread, loaded 2-core Xeon, 128×16×32×32 float32): forward 19.5 → 7.7 ms,
backward 20.1 → 11.6 ms.

Compiled kernels. On C-contiguous NumPy float32/float64 arrays with rows of at least
``KERNEL_MIN_ROW`` values per (sample, channel), with Numba installed (``pip install
"ermlab[fast]"``) and ``ERMLAB_FUSED`` not ``0``, forward and bprop run ``_norm_kernels``
instead: x walked in memory order, the statistics in one pass (a stable pairwise merge of
row sums, not E[x²] − μ²) summed in float64, y and ∂L/∂x bit for bit the formulas above
given the statistics (see that module). ``threads`` (an attribute; default None:
``ERMLAB_NUM_THREADS`` or the CPU count) lanes of ``ermlab.threads`` share the channels
out, each at least ``LANE_MIN_BYTES`` of x; results do not depend on them.
Measured (ResNet-20, batch 128, float32, the 19 batch norms of one step, ms,
``benchmarks/cnn.py --threads 1 --only resnet20``, shared 2-core Xeon at load 1.4–3.5,
torch 2.13's ``native_batch_norm``/``_backward`` in the same runs): forward 40–47 (NumPy
path 90–104, torch 81–94), bprop 45–46 (NumPy path 120–128, torch 39–51). One layer
alone, forward + bprop, idle machine (``benchmarks/norm_relu.py``, best of 15, ms; 1 lane /
2 lanes against torch at 1 / 2 threads): 128×16×32×32 6.8 / 3.9 vs 11.0 / 6.7,
128×32×16×16 2.9 / 2.0 vs 5.7 / 3.3, 128×64×8×8 1.3 / 1.3 vs 3.3 / 2.3 (NumPy path 17.7,
6.6, 3.8).

Frozen statistics. With ``frozen = True`` a training-mode forward normalizes with the
running statistics, as at test time, leaves them unchanged and keeps its cache; bprop is
then that of the test-time affine map, ∂L/∂x = G γ / √(running_var + ε) (γ and β still
get their gradients). ``ermlab.robustness.gradients_at_test_time`` uses it to differentiate
the evaluated model; torch's equivalent is a BatchNorm in ``eval()`` under autograd.

Buffers (saved in ``state_dict`` under torch's names): ``running_mean``,
``running_var`` and ``num_batches_tracked`` (an int64 scalar). Parameters
``weight`` γ (ones) and ``bias`` β (zeros) are not regularized.

Where frameworks differ: the momentum α here (torch's) weights the NEW batch
statistic; Keras/TensorFlow's ``momentum`` = 1 − α weights the old running
value. The running variance uses the unbiased estimate (torch, and the paper's
inference step), but normalization uses the biased one.

Reference: S. Ioffe, C. Szegedy. Batch Normalization: Accelerating Deep
Network Training by Reducing Internal Covariate Shift. ICML 2015.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy

from ermlab.backend import array_module, resolve_dtype
from ermlab.nn import _fused
from ermlab.nn.linear import check_float_input
from ermlab.nn.module import Module
from ermlab.nn.parameter import Parameter
from ermlab.threads import run_ranges

# Passes over x and ∂L/∂y run on blocks of samples of about this many bytes, so that the
# centred values x − μ they need stay in cache and are never a whole array.
BLOCK_BYTES = 256 * 2**10
# The Numba kernels (``_norm_kernels``) share the channels out over lanes only while each
# lane gets at least this many bytes of x.
LANE_MIN_BYTES = 256 * 2**10
# ... and only on rows of at least this many values per (sample, channel): they walk x row
# by row, and BatchNorm1d's (N, C) rows of 1 value ran 3–5× slower than the NumPy path's
# GEMVs (128 × 512 float32: forward 1.07 vs 0.22 ms); rows of 4 (128 × 64 × 2 × 2) ran
# 1.6–2.6× faster.
KERNEL_MIN_ROW = 4
# BatchNorm1d's (N, C) sums add runs of this many rows in the input's dtype, the runs' sums
# in float64 (``_column_sums``).
SUM_RUN = 16


def _kernels(x3: Any, *others: Any) -> Any:
    """``_norm_kernels`` where it can take (N, C, L) ``x3`` and ``others``
    (``_fused.kernels``) and L ≥ ``KERNEL_MIN_ROW``; else None."""
    if x3.shape[2] < KERNEL_MIN_ROW:
        return None
    return _fused.kernels("_norm_kernels", x3, *others)


def _sample_blocks(a3: Any) -> Iterator[slice]:
    """Slices of axis 0 of ``a3`` covering about BLOCK_BYTES each."""
    n = a3.shape[0]
    step = max(1, BLOCK_BYTES // max(1, a3[:1].nbytes))
    return (slice(start, min(n, start + step)) for start in range(0, n, step))


def _channel_sums(xp: Any, a3: Any, accurate: bool = False) -> Any:
    """Σ over axes 0 and 2 of an (N, C, L) array: each (n, c) row summed as one GEMV
    against ones, then the N partial sums added; for L = 1 (BatchNorm1d on (N, C)) the
    rows added one by one, or with ``accurate`` (the batch statistics) ``_column_sums``."""
    if a3.shape[2] == 1:
        return _column_sums(xp, a3[:, :, 0]) if accurate else a3[:, :, 0].sum(axis=0)
    return (a3 @ xp.ones(a3.shape[2], dtype=a3.dtype)).sum(axis=0)


def _column_sums(xp: Any, a2: Any) -> Any:
    """Σ over axis 0 of an (N, C) array: runs of ``SUM_RUN`` rows summed in its dtype, the
    runs' sums added in float64. NumPy adds the rows of ``a2.sum(axis=0)`` one by one, an
    error of O(N) ulps: at N = 65536, mean 1e4, std 1 the float32 mean was off by ~3 and
    the batch variance came out 9.2 instead of 1 (torch's is as bad). Here the error is
    O(``SUM_RUN``) ulps, as the kernels' float64 sums for L ≥ 4 (``_norm_kernels``).
    Summing every row in float64 cost 15–20 µs more a call at 128 × 512 float32 (NumPy's
    casting buffers); this costs ~4.5 µs more (AMD EPYC, 1 thread), twice a forward (μ
    and σ²). bprop's sums keep the rows added one by one, as torch's."""
    n, c = a2.shape
    whole = n - n % SUM_RUN
    runs = a2[:whole].reshape(whole // SUM_RUN, SUM_RUN, c).sum(axis=1)
    total = runs.sum(axis=0, dtype=xp.float64)
    if whole < n:
        total += a2[whole:].sum(axis=0, dtype=xp.float64)
    return total.astype(a2.dtype, copy=False)


def _centred_products(xp: Any, x3: Any, mean: Any, other: Any = None) -> tuple[Any, Any]:
    """Per channel (Σ (x − μ)·o, Σ o) over axes 0 and 2 of (N, C, L) arrays, with
    o = x − μ when ``other`` is None (Σ o is then None): x − μ is formed block by block
    (``_sample_blocks``), as torch forms it, never as a whole array."""
    c = x3.shape[1]
    mu = mean.reshape(1, c, 1)
    products = xp.zeros(c, dtype=x3.dtype)
    totals = None if other is None else xp.zeros(c, dtype=x3.dtype)
    for block in _sample_blocks(x3):
        centred = x3[block] - mu
        if other is None:
            centred *= centred
        else:
            centred *= other[block]
            totals += _channel_sums(xp, other[block])
        products += _channel_sums(xp, centred, accurate=other is None)
    return products, totals


class _BatchNorm(Module):
    """Shared code; subclasses set ``_ranks`` (accepted input ranks) and ``_layout``."""

    _ranks: tuple[int, ...] = ()
    _layout = ""
    forward_cache = ("_x", "_mean", "_inv_std", "_batch_stats", "_relu")
    frozen = False
    threads: int | None = None

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if isinstance(num_features, bool) or not isinstance(num_features, int) or num_features < 1:
            raise ValueError(
                f"{name} num_features must be a positive integer; got {num_features!r}"
            )
        if not eps > 0:
            raise ValueError(f"{name} eps must be > 0; got {eps!r}")
        if momentum is not None and not 0 <= momentum <= 1:
            raise ValueError(f"{name} momentum must be in [0, 1] or None; got {momentum!r}")
        dtype = self._dtype = resolve_dtype(dtype)
        self.num_features, self.eps, self.momentum = num_features, float(eps), momentum
        self.affine, self.track_running_stats = bool(affine), bool(track_running_stats)
        if self.affine:
            self.weight = Parameter(numpy.ones(num_features, dtype), "weight", regularize=False)
            self.bias = Parameter(numpy.zeros(num_features, dtype), "bias", regularize=False)
        else:
            self.weight = self.bias = None
        if self.track_running_stats:
            self.register_buffer("running_mean", numpy.zeros(num_features, dtype))
            self.register_buffer("running_var", numpy.ones(num_features, dtype))
            self.register_buffer("num_batches_tracked", numpy.zeros((), numpy.int64))

    def _check_input(self, x: Any) -> None:
        name = type(self).__name__
        if getattr(x, "ndim", None) not in self._ranks:
            raise ValueError(
                f"{name} expects input of shape {self._layout}; got shape "
                f"{tuple(getattr(x, 'shape', ()))} (rank {getattr(x, 'ndim', None)})"
            )
        if x.shape[1] != self.num_features:
            raise ValueError(
                f"{name}({self.num_features}) expects {self.num_features} features/channels on "
                f"axis 1; got input of shape {tuple(x.shape)}"
            )
        check_float_input(self, x, self._dtype)

    def forward(self, x: Any) -> Any:
        self._check_input(x)
        return self._forward(x, relu=False)

    def forward_relu(self, x: Any) -> Any:
        """max(BN(x), 0) — this layer and a ``ReLU`` after it — in one pass of the kernels
        (``_norm_kernels``), bit for bit the two layers' values; None where the kernels do
        not take x (the caller then runs the ``ReLU`` itself). ``Sequential`` calls it for
        a batch norm followed by a ``ReLU``: the ReLU's pass over y (read y, write its
        output) is saved, and in bprop the gradient is masked, G·1_{y > 0}, inside this
        layer's passes, with y = a x + b recomputed from the x it keeps (its forward cache
        is that of ``forward`` and the (a, b) of every channel; the ReLU keeps nothing)."""
        self._check_input(x)
        x3 = x.reshape(x.shape[0], x.shape[1], -1)
        if _kernels(x3, *((self.weight.data, self.bias.data) if self.affine else ())) is None:
            return None
        return self._forward(x, relu=True)

    def _forward(self, x: Any, relu: bool) -> Any:
        """fprop of a checked x (``relu``: on the kernels, max(y, 0))."""
        xp = array_module(x)
        n, c = x.shape[:2]
        x3 = x.reshape(n, c, -1)
        use_batch = (self.training and not self.frozen) or not self.track_running_stats
        if use_batch:
            m = x.size // self.num_features
            if m < 2 and self.training:
                raise ValueError(
                    f"{type(self).__name__} needs more than 1 value per channel in training "
                    f"mode; got input of shape {tuple(x.shape)} (use a batch of ≥ 2 examples, "
                    "or call eval())"
                )
        kernels = _kernels(x3, *((self.weight.data, self.bias.data) if self.affine else ()))
        affine = False
        if kernels is not None:
            mean, var, inv_std, affine, y = self._fused_forward(kernels, x3, use_batch, relu)
        elif use_batch:
            mean = _channel_sums(xp, x3, accurate=True) / m
            var = _centred_products(xp, x3, mean)[0] / m
        else:
            mean, var = self.running_mean.copy(), self.running_var
        if use_batch and self.training and self.track_running_stats:
            self._update_running(mean, var, m)
        if kernels is None:
            inv_std = 1.0 / xp.sqrt(var + self.eps)
            scale = self.weight.data * inv_std if self.affine else inv_std
            shift = -mean * scale
            if self.affine:
                shift += self.bias.data
            y = xp.empty_like(x3)
            scale3, shift3 = scale.reshape(1, c, 1), shift.reshape(1, c, 1)
            for block in _sample_blocks(x3):
                xp.multiply(x3[block], scale3, out=y[block])
                y[block] += shift3
        if self.training:
            self._x, self._mean, self._inv_std, self._batch_stats = x3, mean, inv_std, use_batch
            self._relu = affine if relu else False
        return y.reshape(x.shape)

    def _channel_lanes(self, x3: Any) -> list[tuple[int, int]]:
        """Ranges [c0, c1) of channels, one per lane (see the ``threads`` attribute)."""
        return _fused.lanes(x3.shape[1], x3.nbytes, self.threads, LANE_MIN_BYTES)

    def _fused_forward(self, kernels: Any, x3: Any, use_batch: bool, relu: bool) -> tuple:
        """(μ, σ², 1/√(σ² + ε), (a, b) per channel, y) from ``_norm_kernels.forward``
        (``relu``: y rectified), lanes of channels."""
        c, dtype = self.num_features, x3.dtype
        if use_batch:
            mean, var = numpy.empty(c, dtype), numpy.empty(c, dtype)
        else:
            mean, var = self.running_mean.copy(), self.running_var
        inv_std, affine, y = numpy.empty(c, dtype), numpy.empty((2, c), dtype), numpy.empty_like(x3)
        weight, bias = (self.weight.data, self.bias.data) if self.affine else (None, None)
        eps, one, two_pass = dtype.type(self.eps), dtype.type(1), dtype == numpy.float64
        run_ranges(self._channel_lanes(x3), kernels.forward, x3, y, mean, var, inv_std, weight,
                   bias, eps, one, use_batch, two_pass, relu, affine)
        return mean, var, inv_std, affine, y

    def _update_running(self, mean: Any, var: Any, m: int) -> None:
        self.num_batches_tracked += 1
        alpha = self.momentum
        if alpha is None:
            alpha = 1.0 / float(self.num_batches_tracked)
        self.running_mean *= 1 - alpha
        self.running_mean += alpha * mean
        self.running_var *= 1 - alpha
        self.running_var += alpha * var * (m / (m - 1))

    def backward(self, grad_out: Any, input_grad: bool = True) -> Any:
        if not input_grad:
            self.accumulate_grad(grad_out)
            return None
        grad, sums = self._grad_input_and_sums(grad_out)
        self._accumulate(sums)
        return grad

    def accumulate_grad(self, grad_out: Any) -> None:
        self._accumulate(self._grad_sums(grad_out))

    def grad_input(self, grad_out: Any) -> Any:
        return self._grad_input_and_sums(grad_out)[0]

    def _grad_input_and_sums(self, grad_out: Any) -> tuple[Any, Any]:
        """(∂L/∂x, ``_grad_sums``): with batch statistics on the kernels' layout in one
        ``_norm_kernels.backward`` per lane of channels (the sums, then ∂L/∂x, channel by
        channel); else ``_grad_sums`` and ``_grad_input``."""
        x3 = self._cached("_x")
        g3 = grad_out.reshape(x3.shape)
        kernels = _kernels(x3, g3) if self._cached("_batch_stats") else None
        if kernels is None:
            grad_out = self._rectified(grad_out)
            sums = self._grad_sums(grad_out, rectified=True)
            return self._grad_input(grad_out, sums), sums
        c, dtype = self.num_features, x3.dtype
        dot, total, grad = numpy.empty(c, dtype), numpy.empty(c, dtype), numpy.empty_like(x3)
        mean, inv_std = self._cached("_mean"), self._cached("_inv_std")
        weight = self.weight.data if self.affine else None
        m = dtype.type(x3.shape[0] * x3.shape[2])
        relu, affine = self._relu_affine()
        run_ranges(self._channel_lanes(x3), kernels.backward, x3, g3, mean, inv_std, weight,
                   dot, total, m, grad, relu, affine)
        return grad.reshape(grad_out.shape), (dot, total)

    def _relu_affine(self) -> tuple[bool, Any]:
        """(whether forward rectified y, its (a, b) per channel — zeros (2, C) if not):
        the kernels' ``relu`` and ``affine`` arguments."""
        affine = self._cached("_relu")
        if affine is False:
            return False, numpy.zeros((2, self.num_features), self._cached("_x").dtype)
        return True, affine

    def _rectified(self, grad_out: Any) -> Any:
        """G·1_{y > 0}, the bprop of the ReLU that ``forward_relu`` applied, as ``ReLU``'s
        NumPy path computes it (y = x·a + b recomputed as forward made it); G itself
        otherwise."""
        affine = self._cached("_relu")
        if affine is False:
            return grad_out
        x3 = self._cached("_x")
        c = self.num_features
        y = x3 * affine[0].reshape(1, c, 1)
        y += affine[1].reshape(1, c, 1)
        return (grad_out.reshape(x3.shape) * ~(y <= 0)).reshape(grad_out.shape)

    def _grad_sums(self, grad_out: Any, rectified: bool = False) -> tuple[Any, Any] | None:
        """(Σ G (x − μ), Σ G) per channel, in one blocked pass over x and G (or
        ``_norm_kernels.grad_sums`` per lane of channels); None when neither γ, β nor a
        batch-statistics bprop needs them. After ``forward_relu`` G is masked first
        (``_rectified``) unless ``rectified`` says it is already."""
        if not (self.affine or self._cached("_batch_stats")):
            return None
        x3, mean = self._cached("_x"), self._cached("_mean")
        g3 = grad_out.reshape(x3.shape)
        kernels = _kernels(x3, g3)
        if kernels is None:
            if not rectified:
                g3 = self._rectified(grad_out).reshape(x3.shape)
            return _centred_products(array_module(x3), x3, mean, g3)
        dot, total = numpy.empty_like(mean), numpy.empty_like(mean)
        relu, affine = self._relu_affine()
        if rectified:
            relu = False
        run_ranges(self._channel_lanes(x3), kernels.grad_sums, x3, g3, mean, dot, total, relu,
                   affine)
        return dot, total

    def _accumulate(self, sums: tuple[Any, Any] | None) -> None:
        if self.affine:
            dot, total = sums
            self.weight.add_grad(dot * self._cached("_inv_std"))
            self.bias.add_grad(total)

    def _grad_input(self, grad_out: Any, sums: tuple[Any, Any] | None) -> Any:
        """∂L/∂x = a G + b (x − μ) + c per channel, with a = γ/√(σ² + ε) (the scale),
        b = −a · mean(G x̂) / √(σ² + ε) and c = −a · mean(G): the module docstring's
        formula with x̂ = (x − μ)/√(σ² + ε) folded into the coefficients."""
        x3, mean, inv_std = self._cached("_x"), self._cached("_mean"), self._cached("_inv_std")
        xp = array_module(x3)
        c = self.num_features
        scale = self.weight.data * inv_std if self.affine else inv_std
        if not self._cached("_batch_stats"):
            return grad_out * scale.reshape((1, c) + (1,) * (grad_out.ndim - 2))
        m = x3.shape[0] * x3.shape[2]
        dot, total = sums
        a = scale.reshape(1, c, 1)
        b = (-scale * inv_std * inv_std * dot / m).reshape(1, c, 1)
        offset = (-scale * total / m).reshape(1, c, 1)
        mu = mean.reshape(1, c, 1)
        g3 = grad_out.reshape(x3.shape)
        grad = xp.empty_like(g3)
        for block in _sample_blocks(x3):
            centred = x3[block] - mu
            centred *= b
            centred += offset
            xp.multiply(g3[block], a, out=grad[block])
            grad[block] += centred
        return grad.reshape(grad_out.shape)

    def extra_repr(self) -> str:
        text = f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"
        text += "" if self.affine else ", affine=False"
        return text + ("" if self.track_running_stats else ", track_running_stats=False")


class BatchNorm1d(_BatchNorm):
    """Batch normalization over features: input (N, C) or (N, C, L), statistics per C.

    Same arguments, defaults and buffers as ``torch.nn.BatchNorm1d``:
    ``num_features`` C, ``eps`` = 1e-5, ``momentum`` = 0.1 (or None),
    ``affine`` = True, ``track_running_stats`` = True; plus ``dtype``.
    See the module docstring for the equations.
    """

    _ranks = (2, 3)
    _layout = "(N, C) or (N, C, L)"


class BatchNorm2d(_BatchNorm):
    """Batch normalization over channels: input (N, C, H, W) (NCHW), statistics per C.

    Same arguments, defaults and buffers as ``torch.nn.BatchNorm2d``; the
    mean and variance run over N, H and W. NHWC data must be transposed first.
    """

    _ranks = (4,)
    _layout = "(N, C, H, W)"
