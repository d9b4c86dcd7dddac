"""Activation functions h = g(a), each a box with fprop and bprop (∂L/∂a = ∂L/∂h ⊙ g'(a)).

``ACTIVATIONS`` maps the names used by model builders and the command line
(``"relu"``, ``"tanh"``, …) to the classes.
"""

from __future__ import annotations

from typing import Any

import numpy

from ermlab.backend import array_module
from ermlab.nn import _fused
from ermlab.nn.linear import Identity, Linear
from ermlab.nn.module import Module
from ermlab.threads import run_ranges

# ReLU's kernels (``_relu_kernels``) share the elements out over lanes only while each lane
# gets at least this many bytes. Measured on an idle 2-core Xeon (benchmarks/norm_relu.py,
# float32, ms, 1 lane → 2): 8 MiB forward 1.43 → 0.84, 4 MiB 0.65 → 0.47, but 2 MiB
# 0.24 → 0.30 (waking a pooled thread costs ~45 µs).
LANE_MIN_BYTES = 2 * 2**20


def sigmoid(x: Any) -> Any:
    """σ(x) = 1 / (1 + e^{−x}) = max(d, 1_{x ≥ 0}) / (1 + d),  d = e^{−|x|} ∈ (0, 1].

    That is 1/(1 + d) for x ≥ 0 and d/(1 + d) = e^{x}/(1 + e^{x}) for x < 0: no
    overflow, and a few ulps of relative precision in both tails (σ(−38) =
    3.1e-17, where ½(1 + tanh(x/2)) gives 0), without a branch per element.
    """
    return _sigmoid(x, _exp_minus_abs(x))


def _exp_minus_abs(x: Any) -> Any:
    """d = e^{−|x|}, a new array."""
    xp = array_module(x)
    decay = xp.abs(x)
    xp.negative(decay, out=decay)
    return xp.exp(decay, out=decay)


def _sigmoid(x: Any, decay: Any) -> Any:
    """σ(x) from d = e^{−|x|} (see ``sigmoid``)."""
    y = array_module(x).maximum(decay, x >= 0)
    y /= decay + 1
    return y


class Sigmoid(Module):
    """g(a) = σ(a) = 1 / (1 + e^{−a});  g'(a) = σ(a)σ(−a) = d / (1 + d)²,  d = e^{−|a|}.

    Both from d ≤ 1 (see ``sigmoid``): no overflow, and relative precision in
    both tails, where ½(1 + tanh(a/2)) is 0 for a ≤ −20 in float32 (a ≤ −38 in
    float64) and g(1 − g) is 0 for a ≥ 17.3 in float32 (σ'(a) ≈ e^{−|a|} there).
    """

    forward_cache = ("_decay",)

    def forward(self, x: Any) -> Any:
        decay = _exp_minus_abs(x)
        if self.training:
            self._decay = decay
        return _sigmoid(x, decay)

    def grad_input(self, grad_out: Any) -> Any:
        decay = self._cached("_decay")
        denominator = decay + 1
        denominator *= denominator
        grad = grad_out * decay
        grad /= denominator
        return grad


class Tanh(Module):
    """g(a) = tanh(a) = (e^{a} − e^{−a}) / (e^{a} + e^{−a});

        g'(a) = 1 − g(a)² = 1 / cosh²(a) = 4 e^{−2|a|} / (1 + e^{−2|a|})²

    (from a, not as 1 − g²: that rounds to 0 for |a| ≥ 10 in float32, ≥ 19 in
    float64, where g' ≈ 4e^{−2|a|}; e^{−2|a|} ≤ 1 never overflows).
    """

    forward_cache = ("_x",)

    def forward(self, x: Any) -> Any:
        if self.training:
            self._x = x
        return array_module(x).tanh(x)

    def grad_input(self, grad_out: Any) -> Any:
        x = self._cached("_x")
        xp = array_module(x)
        decay = xp.abs(x)
        decay *= -2
        xp.exp(decay, out=decay)  # e^{−2|a|}
        denominator = decay + 1
        denominator *= denominator
        decay *= 4
        decay /= denominator
        decay *= grad_out
        return decay


def zeros_like(x: Any) -> Any:
    """An array of zeros with the shape and dtype of ``x``, a view of one cached buffer per
    array module and dtype (grown when needed, never written): NumPy's ``maximum(x, 0)``
    against a scalar runs ~3× slower than against a contiguous array of zeros (numpy 2.4,
    AVX-512: 47 vs 15 µs on 128 × 512). Large buffers are calloc'ed pages that are only
    read, so they cost no resident memory."""
    xp = array_module(x)
    key = (xp.__name__, x.dtype.str)
    flat = _ZEROS.get(key)
    if flat is None or flat.size < x.size:
        flat = _ZEROS[key] = xp.zeros(max(x.size, 1 << 16), dtype=x.dtype)
    return flat[:x.size].reshape(x.shape)


_ZEROS: dict[tuple[str, str], Any] = {}


class ReLU(Module):
    """g(a) = max(0, a);  g'(a) = 1_{a > 0} (0 at a = 0, as torch; where g(a) is NaN,
    bprop passes ∂L/∂h, as torch's does).

    ``inplace=True`` (torch's ``nn.ReLU(inplace=True)``) writes g(a) over its input
    and, in bprop, ∂L/∂a = ∂L/∂h ⊙ g'(a) over the incoming gradient, instead of
    allocating new arrays. Use it only where nothing else holds either array: right
    after a layer that keeps its input but not its output (``Linear``, ``Conv2d``,
    ``BatchNorm``, which keeps its input and statistics) and whose bprop hands over a
    fresh gradient, as ``nn.mlp`` does — not in a ``Graph`` where a gradient may be
    shared by two branches.

    On C-contiguous NumPy float32/float64 arrays with Numba (``pip install "ermlab[fast]"``,
    ``ERMLAB_FUSED`` not ``0``) fprop and bprop are one pass each (``_relu_kernels``), bit
    for bit the NumPy path's values, cut into lanes of elements on ``ermlab.threads``
    (``threads`` attribute; default None: ``ERMLAB_NUM_THREADS`` or the CPU count).
    Measured (1 thread, shared 2-core Xeon at load 1.4–3.7, float32 128×16×32×32, ms):
    forward 1.2–1.3, caches flushed 1.75–1.86 (NumPy path 1.5–2.2; torch 2.13's relu
    1.2, flushed 1.7–1.8), bprop 1.8–2.0, flushed 2.2 (NumPy path 3.2; torch's
    threshold_backward 2.2). The 19 ReLUs of a ResNet-20 step (``benchmarks/cnn.py
    --threads 1 --only resnet20``): forward 24–37 (NumPy path 42–54, torch 19–22),
    bprop 25 (NumPy path 38–39, torch 23–28): memory-bound passes, at torch's speed
    alone and within noise of it in the network.
    """

    forward_cache = ("_y",)
    threads: int | None = None

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = bool(inplace)

    def forward(self, x: Any) -> Any:
        kernels = _fused.kernels("_relu_kernels", x)
        if kernels is None:
            y = array_module(x).maximum(x, zeros_like(x), out=x if self.inplace else None)
        else:
            y = x if self.inplace else numpy.empty_like(x)
            if self.inplace:
                in_element_lanes(kernels.forward_in_place, self.threads, x.reshape(-1))
            else:
                in_element_lanes(kernels.forward, self.threads, x.reshape(-1), y.reshape(-1))
        if self.training:
            self._y = y
        return y

    def grad_input(self, grad_out: Any) -> Any:
        return rectified_gradient(grad_out, self._cached("_y"), self.threads,
                                  out=grad_out if self.inplace else None)

    def extra_repr(self) -> str:
        return "inplace=True" if self.inplace else ""


# The forward-cache site of a ReLU that the box before it applied (``Module.forward_relu``),
# in ``Sequential`` and ``Graph``: it has no cache and no bprop of its own.
ABSORBED = ("absorbed",)


def in_element_lanes(kernel: Any, threads: int | None, first: Any, *rest: Any) -> None:
    """``kernel(first, *rest, lo, hi)`` over lanes of elements (``ermlab.threads``; threads
    None: ``ERMLAB_NUM_THREADS`` or the CPU count), each of at least ``LANE_MIN_BYTES`` of
    ``first``: the ReLU's, ``Add``'s and ``sum_of``'s elementwise kernels."""
    run_ranges(_fused.lanes(first.size, first.nbytes, threads, LANE_MIN_BYTES), kernel,
               first, *rest)


def rectified_gradient(grad_out: Any, y: Any, threads: int | None = None,
                       out: Any = None) -> Any:
    """G·1_{y > 0} for a ReLU's output y, into ``out`` (None: a new array; ``ReLU(inplace)``
    passes G itself): the kernel in lanes of elements where it takes G and y, else NumPy's
    product with the mask. ``ReLU``'s bprop, and that of a ReLU which the box before it
    applied (``Module.forward_relu``)."""
    kernels = _fused.kernels("_relu_kernels", grad_out, y)
    if kernels is None or grad_out.shape != y.shape:
        return array_module(y).multiply(grad_out, ~(y <= 0), out=out)  # a NaN y passes G
    if out is grad_out:
        in_element_lanes(kernels.backward_in_place, threads, grad_out.reshape(-1),
                         y.reshape(-1))
        return out
    grad = numpy.empty_like(grad_out) if out is None else out
    in_element_lanes(kernels.backward, threads, grad_out.reshape(-1), y.reshape(-1),
                     grad.reshape(-1))
    return grad


def absorbs_relu(module: Module, following: Module) -> bool:
    """Whether a composite asks ``module`` to apply ``following`` itself
    (``Module.forward_relu``): ``following`` a ``ReLU`` (not a subclass), and neither
    ``forward`` replaced on the instance (a hook, as ``summary`` sets)."""
    return (type(following) is ReLU and "forward" not in vars(module)
            and "forward" not in vars(following))


class LeakyReLU(Module):
    """g(a) = a for a > 0, α a otherwise (α = ``negative_slope``, torch's default 0.01)."""

    forward_cache = ("_positive",)

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        self.negative_slope = float(negative_slope)

    def forward(self, x: Any) -> Any:
        xp = array_module(x)
        positive = x > 0
        if self.training:
            self._positive = positive
        return xp.where(positive, x, x * self.negative_slope)

    def grad_input(self, grad_out: Any) -> Any:
        positive = self._cached("_positive")
        return array_module(grad_out).where(positive, grad_out, grad_out * self.negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"


class ELU(Module):
    """Clevert et al. (2016): g(a) = a for a > 0, α(e^{a} − 1) otherwise;
    g'(a) = 1 for a > 0, α e^{a} otherwise.

    Computed without a branch per element: g(a) = max(a, 0) + α expm1(min(a, 0)),
    g'(a) = e^{min(a, 0)} · (1 for a > 0, α otherwise). (g(a) + α instead of α e^{a}
    cancels for g ≈ −α: 0 instead of 2e-9 at a = −20 in float32.)
    """

    forward_cache = ("_x",)

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        self.alpha = float(alpha)

    def forward(self, x: Any) -> Any:
        xp = array_module(x)
        y = xp.minimum(x, 0)
        xp.expm1(y, out=y)
        y *= self.alpha
        y += xp.maximum(x, 0)
        if self.training:
            self._x = x
        return y

    def grad_input(self, grad_out: Any) -> Any:
        x = self._cached("_x")
        xp = array_module(x)
        slope = xp.minimum(x, 0)
        xp.exp(slope, out=slope)  # e^{min(a, 0)}: g'(a) itself when α = 1
        if self.alpha != 1.0:
            factor = (x > 0).astype(slope.dtype)
            factor += (x <= 0) * slope.dtype.type(self.alpha)  # 1 or α, exactly
            slope *= factor
        slope *= grad_out
        return slope

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


class Softplus(Module):
    """g(a) = log(1 + e^{a}) = max(a, 0) + log1p(e^{−|a|});  g'(a) = σ(a) (``sigmoid``).

    Both from e^{−|a|} ≤ 1: no overflow, relative precision in both tails.
    Framework difference: torch's ``softplus`` returns a itself for a > 20
    (``threshold=20``); ours stays log(1 + e^{a}) (the same in float64 for a > 37).
    """

    forward_cache = ("_x", "_decay")

    def forward(self, x: Any) -> Any:
        xp = array_module(x)
        decay = _exp_minus_abs(x)
        if self.training:
            self._x, self._decay = x, decay
        y = xp.log1p(decay)
        y += xp.maximum(x, 0)
        return y

    def grad_input(self, grad_out: Any) -> Any:
        y = _sigmoid(self._cached("_x"), self._cached("_decay"))
        y *= grad_out
        return y


class Softmax(Module):
    """softmax(a)_c = e^{a_c} / Σ_c' e^{a_c'} along ``axis`` (shifted by max a for stability).

    bprop: ∂L/∂a = y ⊙ (g − Σ_c g_c y_c) with y the output and g = ∂L/∂y,
    computed with g shifted by its value at the most probable class k,
    g' = g − g_k (a constant in g changes nothing, as Σ_c y_c = 1): then
    g'_k − Σ_c g'_c y_c = −Σ_{c≠k} g'_c y_c keeps its precision when y_k ≈ 1,
    where g_k − Σ_c g_c y_c cancels to an ulp of g_k.
    To train a classifier, prefer ``losses.SoftmaxCrossEntropy`` on the scores:
    it fuses the two and its gradient is simply f(x) − e(y).
    """

    forward_cache = ("_y",)

    def __init__(self, axis: int = -1) -> None:
        super().__init__()
        self.axis = axis

    def forward(self, x: Any) -> Any:
        xp = array_module(x)
        y = x - x.max(axis=self.axis, keepdims=True)
        xp.exp(y, out=y)
        y /= y.sum(axis=self.axis, keepdims=True)
        if self.training:
            self._y = y
        return y

    def grad_input(self, grad_out: Any) -> Any:
        y = self._cached("_y")
        xp = array_module(y)
        best = y.argmax(axis=self.axis, keepdims=True)
        shifted = grad_out - xp.take_along_axis(grad_out, best, axis=self.axis)
        shifted -= (shifted * y).sum(axis=self.axis, keepdims=True)
        shifted *= y
        return shifted

    def extra_repr(self) -> str:
        return f"axis={self.axis}"


class Maxout(Module):
    """Goodfellow et al. (2013): h_j = max_{i ≤ k} (W_{j,i} x + b_{j,i}), k linear pieces per unit.

    A Linear layer to ``out_features · k`` pieces (unit j owns rows jk … jk+k−1)
    followed by the max over each unit's pieces; bprop sends the gradient to
    the winning piece only.
    """

    forward_cache = ("_winner", "_linear_cache")

    def __init__(
        self, in_features: int, out_features: int, pieces: int = 2, **linear_kwargs: Any
    ) -> None:
        super().__init__()
        if pieces < 1:
            raise ValueError(f"Maxout needs at least one piece per unit; got pieces={pieces}")
        self.out_features, self.pieces = int(out_features), int(pieces)
        self.linear = Linear(in_features, out_features * pieces, **linear_kwargs)

    def forward(self, x: Any) -> Any:
        xp = array_module(x)
        z = self.linear.forward(x).reshape(x.shape[0], self.out_features, self.pieces)
        winner = z.argmax(axis=2)[..., None]
        if self.training:
            self._winner, self._linear_cache = winner, self.linear.cache_state()
        return xp.take_along_axis(z, winner, axis=2)[..., 0]

    def backward(self, grad_out: Any, input_grad: bool = True) -> Any:
        winner = self._cached("_winner")
        self.linear.restore_cache(self._cached("_linear_cache"))
        xp = array_module(grad_out)
        n = grad_out.shape[0]
        grad_z = xp.zeros((n, self.out_features, self.pieces), dtype=grad_out.dtype)
        xp.put_along_axis(grad_z, winner, grad_out[..., None], axis=2)
        grad = self.linear.backward(grad_z.reshape(n, -1), input_grad=input_grad)
        self.linear.release_cache()  # (see Module: a call site's cache serves one bprop)
        return grad

    def extra_repr(self) -> str:
        return f"{self.linear.in_features} → {self.out_features}, pieces={self.pieces}"


ACTIVATIONS: dict[str, type[Module]] = {
    "linear": Identity,
    "identity": Identity,
    "sigmoid": Sigmoid,
    "tanh": Tanh,
    "relu": ReLU,
    "leaky_relu": LeakyReLU,
    "elu": ELU,
    "softplus": Softplus,
    "softmax": Softmax,
}


def get(name: str | Module) -> Module:
    """A fresh activation module by name (see ``ACTIVATIONS``), or the module itself."""
    if isinstance(name, Module):
        return name
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}"
        ) from None
