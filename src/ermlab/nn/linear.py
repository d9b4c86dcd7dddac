"""Fully connected layer a = b + W h, and the shape-only boxes Flatten and Identity."""

from __future__ import annotations

from typing import Any

import numpy

from ermlab.backend import array_module, as_generator, resolve_dtype
from ermlab.nn import _fused, _products, init
from ermlab.nn.module import Module
from ermlab.nn.parameter import Parameter
from ermlab.threads import default_threads, rest, run_lanes, run_ranges, sample_lanes

# With ``lanes=True`` (see Linear) a GEMM is shared out in lanes of at least this many
# multiply-adds each.
LANE_MIN_MACS = 4_000_000
# The bias-and-ReLU passes (``forward_relu``) run in lanes of at least this many bytes of
# the layer's output: one memory-bound pass, as the ReLU's own (``activations.LANE_MIN_BYTES``).
RELU_LANE_MIN_BYTES = 2 * 2**20


def check_float_input(layer: Module, x: Any, dtype: Any) -> None:
    """Raise a clear ``ValueError`` when ``x`` is not a float array of the layer's dtype."""
    got = getattr(x, "dtype", None)
    if got != dtype:
        hint = f"convert the data with x.astype({dtype.name!r})"
        if got is not None and got.kind == "f":
            hint += f" or build the model with dtype={got.name!r}"
        raise ValueError(
            f"{layer!r} has {dtype} parameters but got input of dtype "
            f"{got if got is not None else type(x).__name__}; {hint}"
        )


class Linear(Module):
    """Affine layer a(x) = b + W x, for inputs of shape (N, in_features).

    Parameters (torch's layout, so state dicts line up):
        weight W: (out_features, in_features), initialized by ``weight_init``
            (default ``glorot_uniform``: U[−b, b], b = √6 / √(in + out)).
        bias b: (out_features,), initialized to 0, not regularized.

    bprop, for a batch H (N × in) and G = ∂L/∂A (N × out):
        ∂L/∂W = Gᵀ H,   ∂L/∂b = Σ_n G_n,   ∂L/∂H = G W.

    Per-example gradients (for ``ermlab.privacy``): example n's share of ∂L/∂W
    is the outer product G_n H_nᵀ, so its squared norm needs no N × out × in
    array (Goodfellow 2015, "Efficient Per-Example Gradient Computations"):

        ‖G_n H_nᵀ‖²_F = ‖G_n‖² ‖H_n‖²,   ‖∂L_n/∂b‖² = ‖G_n‖².

    While ``per_example_recorder`` is set, bprop hands G to it instead of
    accumulating into ``grad`` (the recorder calls ``per_example_grads`` or
    ``per_example_sq_norms``); the input gradient is unchanged.

    A ``ReLU`` after the layer in a ``Sequential`` runs inside it (``forward_relu``, on the
    compiled kernels): the bias and the ReLU in one pass over x Wᵀ, and in bprop the
    ReLU's mask and ∂L/∂b in one pass over G, the same values bit for bit. Measured
    (AMD Zen 5, 2 threads, paired in one process), forward and bprop of the Fashion-MNIST
    MLP 784-512-256-10 at batch 128: 1.21 ms a step against 1.23–1.24 apart, and
    1.26–1.29 before the in-place ReLU kernels (``_relu_kernels.forward_in_place``).

    ``lanes=True`` (the convolutional networks of ``nn.zoo`` set it for their heads): with
    more than one thread (``threads``, default ``ERMLAB_NUM_THREADS`` or the CPU count),
    the GEMMs of NumPy arrays run in ermlab's lanes (``ermlab.threads``: the longer side
    of each result, batch rows or features, and rows of ∂L/∂W, at least ``LANE_MIN_MACS``
    multiply-adds per lane) with BLAS on one thread, not on BLAS's own threads. In a
    network whose other layers run lanes this keeps one pool of threads: OpenBLAS's
    threads spin on after each GEMM and take the cores from the next layers' lanes
    (measured, small VGG at 2 threads, paired: 199 → 156 ms per step). Alone (an MLP)
    BLAS's own threads are faster (Fashion-MNIST MLP epoch at 2 threads 1.71 s, in lanes
    2.2 s), so it is off by default. Each value of the results is the same sum as without
    lanes, up to the rounding of BLAS's blocking.
    """

    forward_cache = ("_x", "_relu_y")
    per_example_recorder: Any = None
    threads: int | None = None

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        weight_init: str | Any = "glorot_uniform",
        rng: Any = None,
        dtype: Any = None,
        lanes: bool = False,
    ) -> None:
        super().__init__()
        self.lanes = bool(lanes)
        if in_features < 1 or out_features < 1:
            raise ValueError(
                f"Linear needs positive sizes; got in_features={in_features}, "
                f"out_features={out_features}"
            )
        self.in_features, self.out_features = int(in_features), int(out_features)
        dtype = resolve_dtype(dtype)
        shape = (self.out_features, self.in_features)
        weight = init.get(weight_init)(shape, rng=as_generator(rng), dtype=dtype)
        self.weight = Parameter(weight, "weight", regularize=True)
        bias_data = init.zeros((out_features,), dtype=dtype)
        self.bias = Parameter(bias_data, "bias", regularize=False) if bias else None

    def forward(self, x: Any) -> Any:
        self._check(x)
        a = self._product(x, self.weight.data.T)
        if self.bias is not None:
            a += self.bias.data
        if self.training:
            self._x, self._relu_y = x, False
        return a

    def forward_relu(self, x: Any) -> Any:
        """max(b + W x, 0) — this layer and a ``ReLU`` after it — with the bias added and
        the ReLU applied in one compiled pass over the product (``_relu_kernels``), bit for
        bit ``a += b`` and the ReLU's values; None where the kernels do not run (no Numba,
        CuPy; the caller then runs the ``ReLU``). ``Sequential`` calls it for a linear
        layer followed by a ``ReLU``. y is kept, as the ReLU would keep it, and bprop
        masks ∂L/∂y, G̃ = G·1_{y > 0}, in the same pass that sums G̃ over the batch for
        ∂L/∂b: one pass each way instead of three, and no ReLU box called."""
        kernels = _fused.kernels("_relu_kernels", self.weight.data)
        if kernels is None:
            return None
        self._check(x)
        a = self._product(x, self.weight.data.T)
        if self.bias is None:
            run_ranges(self._relu_lanes(a.size, a.nbytes), kernels.forward_in_place,
                       a.reshape(-1))
        else:
            run_ranges(self._relu_lanes(len(a), a.nbytes), kernels.bias_forward, a,
                       self.bias.data)
        if self.training:
            self._x, self._relu_y = x, a
        return a

    def backward(self, grad_out: Any, input_grad: bool = True) -> Any:
        y = self._cached("_relu_y")
        if y is False:
            return super().backward(grad_out, input_grad)
        # after forward_relu: the ReLU's bprop, with Σ_n G̃_n for ∂L/∂b in its pass
        kernels = _fused.kernels("_relu_kernels", grad_out, y)
        if kernels is None or grad_out.shape != y.shape:  # activations.rectified_gradient's
            # NumPy path (that module imports this one)
            return super().backward(numpy.multiply(grad_out, ~(y <= 0)), input_grad)
        masked = numpy.empty_like(y)
        sums = None if self.bias is None else numpy.empty(y.shape[1], dtype=y.dtype)
        run_ranges(self._relu_lanes(y.shape[1], y.nbytes), kernels.bias_backward, grad_out, y,
                   masked, sums)
        self.accumulate_grad(masked, sums)
        return self.grad_input(masked) if input_grad else None

    def _check(self, x: Any) -> None:
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(
                f"{self!r} expects input of shape (N, {self.in_features}); got "
                f"{tuple(x.shape)}" + (" — add nn.Flatten() before it" if x.ndim > 2 else "")
            )
        check_float_input(self, x, self.weight.dtype)

    def _relu_lanes(self, n: int, nbytes: int) -> list[tuple[int, int]]:
        """Ranges of ``n`` rows, columns or elements for the bias-and-ReLU passes."""
        return _fused.lanes(n, nbytes, self.threads, RELU_LANE_MIN_BYTES)

    def accumulate_grad(self, grad_out: Any, bias_sums: Any = None) -> None:
        """∂L/∂W += Gᵀ H and ∂L/∂b += Σ_n G_n (``bias_sums``: that sum, made already), or G
        handed to the ``per_example_recorder``."""
        if self.per_example_recorder is not None:
            self.per_example_recorder.record(self, grad_out)
            return
        xp = array_module(grad_out)
        if bias_sums is not None:
            self.bias.accumulate(xp.positive, bias_sums)  # a copy, or an addition
        elif self.bias is not None:  # first, while G is in the cache: the GEMM evicts it
            self.bias.accumulate(xp.sum, grad_out, axis=0)
        # rows of ∂L/∂W (outputs) in lanes: each the same sum as in one GEMM
        self.weight.accumulate(self._product, grad_out.T, self._cached("_x"), rows_only=True)

    def per_example_grads(self, grad_out: Any) -> dict[str, Any]:
        """``{"weight": (N, out, in), "bias": (N, out)}``: row n of ``grad_out`` times
        example n's input, each example's share of ∂L/∂θ."""
        x = self._cached("_x")
        grads = {"weight": grad_out[:, :, None] * x[:, None, :]}
        if self.bias is not None:
            grads["bias"] = grad_out.copy()
        return grads

    def per_example_sq_norms(self, grad_out: Any) -> Any:
        """(N,) squared norms ‖∂L_n/∂θ‖² over weight and bias, by ‖G_n‖² (‖H_n‖² + 1)."""
        x = self._cached("_x")
        g2 = (grad_out * grad_out).sum(axis=1)
        x2 = (x * x).sum(axis=1)
        return g2 * (x2 + 1) if self.bias is not None else g2 * x2

    def grad_input(self, grad_out: Any) -> Any:
        return self._product(grad_out, self.weight.data)

    def _product(self, a: Any, b: Any, out: Any = None, rows_only: bool = False) -> Any:
        """``a @ b`` (into ``out`` if given; ``nn._products.matmul``): one call on BLAS's
        own threads, or with ``lanes`` in ermlab's lanes (``_lanes``), each a block of rows
        or of columns of the result, BLAS on one thread."""
        xp = array_module(a)
        rows, lanes = self._lanes(xp, a.shape[0], b.shape[1], a.shape[1], rows_only)
        if lanes is None:
            rest()  # BLAS's own threads: the pool's workers stop spinning
            return _products.matmul(a, b, out=out)
        if out is None:
            out = numpy.empty((a.shape[0], b.shape[1]), dtype=numpy.result_type(a, b))
        self._run(lanes, (lambda lo, hi: _products.matmul(a[lo:hi], b, out=out[lo:hi])) if rows
                  else (lambda lo, hi: _products.matmul(a, b[:, lo:hi], out=out[:, lo:hi])))
        return out

    def _lanes(self, xp: Any, rows: int, cols: int, inner: int,
               rows_only: bool = False) -> tuple[bool, list | None]:
        """(whether the lanes take rows, their ranges [lo, hi)) for a GEMM of NumPy arrays
        whose result is ``rows`` × ``cols`` over an ``inner`` dimension, at least
        ``LANE_MIN_MACS`` multiply-adds a lane (one lane at least); the ranges are None
        without ``lanes``, with one thread, or for CuPy: the GEMM runs as one call.

        The lanes share out the result's longer side (``rows_only``: its rows whatever the
        shape). Each lane reads all of the other side's operand, so splitting the
        shorter side reads the larger operand once per lane: a batch of 8 through a
        4096 → 512 layer in lanes of samples read its 8 MB weight matrix twice, and at that
        size a GEMM runs at the speed its operands are read. Measured (AMD EPYC Zen 5, 2
        threads, that layer, 8 MB of other writes between calls), lanes of samples →
        lanes of features: batch 8 forward 0.95 → 0.60 ms, ∂L/∂x 0.85–0.92 → 0.45–0.54;
        the small VGG of ``nn.zoo`` (``benchmarks/small_batches.py --networks vgg``, 4
        processes each) batch 4 6.4 → 5.2 ms a step, 8 8.4 → 7.5, 32 19.6 → 18.6."""
        if not self.lanes or xp is not numpy:
            return True, None
        threads = self.threads or default_threads()
        if threads == 1:
            return True, None
        by_rows = rows_only or rows >= cols
        return by_rows, sample_lanes(rows if by_rows else cols, threads,
                                     rows * cols * inner // LANE_MIN_MACS)

    @staticmethod
    def _run(lanes: list, gemm: Any) -> None:
        """``gemm(lo, hi)`` for each lane, BLAS on one thread (one lane too, ``run_lanes``)."""
        run_lanes([lambda lo=lo, hi=hi: gemm(lo, hi) for lo, hi in lanes])

    def extra_repr(self) -> str:
        return (f"{self.in_features} → {self.out_features}" + ("" if self.bias else ", bias=False")
                + (", lanes=True" if self.lanes else ""))


class Flatten(Module):
    """Reshape (N, d₁, d₂, …) to (N, d₁·d₂·…); bprop restores the shape."""

    forward_cache = ("_shape",)

    def forward(self, x: Any) -> Any:
        if x.ndim < 1:
            raise ValueError("Flatten needs an input with a batch dimension")
        if self.training:
            self._shape = x.shape
        return x.reshape(x.shape[0], -1)

    def grad_input(self, grad_out: Any) -> Any:
        return grad_out.reshape(self._cached("_shape"))


class Identity(Module):
    """y = x (also the 'linear' activation)."""

    def forward(self, x: Any) -> Any:
        return x

    def grad_input(self, grad_out: Any) -> Any:
        return grad_out
