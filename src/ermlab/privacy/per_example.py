"""Per-example gradients through the fprop/bprop modules, and per-example clipping.

DP-SGD needs, for every example n of a batch, the gradient g_n = ∇_θ l(f(x_n; θ), y_n)
of its own loss, or at least its norm ‖g_n‖ and the clipped sum

    Σ_n c_n g_n,    c_n = min(1, C / (‖g_n‖ + 10⁻⁶))         (Abadi et al. 2016, Alg. 1;
                                                            10⁻⁶ as Opacus)

How, without a loop over examples. Every layer with parameters here is linear in
its parameters given its input, so example n's share of ∂L/∂θ is built from row n of
the layer's ∂L/∂output alone (``Linear``: G_n H_nᵀ; ``Conv2d``: G_n X_nᵀ over the
im2col columns). One bprop with a *recorder* set on those layers
(``per_example_recorder``) hands each layer's ∂L/∂output to the recorder instead of
accumulating ∂L/∂θ, while input gradients flow as usual:

* ``per_example_gradients``: the recorder materializes (N, *θ.shape) arrays;
* ``clip_and_sum``: the recorder adds up the per-layer squared norms ‖g_n‖² (for
  ``Linear`` by Goodfellow's ‖G_n‖²‖H_n‖², never forming G_n H_nᵀ; for ``Conv2d`` by
  the cheaper of the product and the Gram-matrix "ghost norm") and keeps each layer's
  ∂L/∂output with its forward cache; once every norm is known, each layer accumulates
  ∂L/∂θ from c_n-scaled rows, diag(c) G — which is Σ_n c_n g_n, since ∂L/∂θ is linear
  in the rows of G (Bu et al. 2023, "Differentially Private Optimization on Large Model
  at Small Cost", book-keeping). One forward, one bprop, no N × |θ| array.

What cannot give per-example gradients is refused before any work
(``check_per_example_support``): batch normalization (its output for one example
depends on the whole batch; Opacus refuses it too), ``DropConnect`` (it computes its
Linear's gradients itself), and any other module owning parameters. A layer called
at several places (weight sharing) is refused when it is met: ‖Σ_sites g_n‖ is not
the sum of the sites' norms.

Losses are batch means L = (1/N) Σ_n l_n, so the rows of N ∂L/∂scores are the per-example
∂l_n/∂scores; ``sample_weight`` is not supported here.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ermlab.backend import array_module
from ermlab.nn.conv import Conv2d
from ermlab.nn.linear import Linear
from ermlab.nn.module import Module
from ermlab.nn.normalization import _BatchNorm
from ermlab.nn.stochastic import DropConnect

# The layers with per-example gradients (``per_example_grads``, ``per_example_sq_norms``).
PER_EXAMPLE_LAYERS = (Linear, Conv2d)
# Added to ‖g_n‖ before dividing, as Opacus does.
CLIP_EPS = 1e-6


def check_per_example_support(model: Module) -> None:
    """Raise ``ValueError`` naming the first module of ``model`` without per-example
    gradients (batch norm, DropConnect, any other layer owning parameters)."""
    for name, module in model.named_modules():
        where = f"{name} ({type(module).__name__})" if name else type(module).__name__
        if isinstance(module, _BatchNorm):
            raise ValueError(
                f"DP-SGD needs per-example gradients, but {where} is batch normalization, "
                "which mixes the examples of a batch (Opacus refuses it too); "
                "build the model without batch norm (e.g. no --batch-norm)")
        if isinstance(module, DropConnect):
            raise ValueError(
                f"DP-SGD needs per-example gradients, but {where} computes its Linear's "
                "gradients itself and has no per-example support; use Dropout instead")
        if module._parameters and not isinstance(module, PER_EXAMPLE_LAYERS):
            raise ValueError(
                f"DP-SGD needs per-example gradients, but {where} owns parameters "
                f"{sorted(module._parameters)} and has no per-example support (supported: "
                f"{', '.join(c.__name__ for c in PER_EXAMPLE_LAYERS)})")


class PerExampleRecorder:
    """What layers hand their ∂L/∂output to while it is set on them (see the module
    docstring). ``mode`` "grads" keeps per-example gradients, "norms" keeps squared norms
    and the sites for ``accumulate_clipped``."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.grads: dict[int, Any] = {}
        self.sq_norms: Any = None
        self.sites: list[tuple[Module, tuple, Any]] = []

    def record(self, layer: Module, grad_out: Any) -> None:
        params = [p for p in (layer.weight, layer.bias) if p is not None]
        if any(id(p) in self.grads for p in params):
            raise ValueError(
                f"{layer!r} is called at several places (weight sharing); DP-SGD's "
                "per-example norms need each parameter used once")
        if self.mode == "grads":
            for name, grad in layer.per_example_grads(grad_out).items():
                self.grads[id(getattr(layer, name))] = grad
            return
        for p in params:
            self.grads[id(p)] = None
        norms = layer.per_example_sq_norms(grad_out)
        self.sq_norms = norms if self.sq_norms is None else self.sq_norms + norms
        self.sites.append((layer, layer.cache_state(), grad_out))

    def accumulate_clipped(self, factors: Any) -> None:
        """∂L/∂θ += Σ_n c_n g_n at every recorded layer: its cache put back, its
        ∂L/∂output scaled row by row."""
        for layer, cache, grad_out in self.sites:
            layer.restore_cache(cache)
            scale = factors.reshape((-1,) + (1,) * (grad_out.ndim - 1))
            layer.accumulate_grad(grad_out * scale.astype(grad_out.dtype, copy=False))


@contextmanager
def recording(model: Module, mode: str) -> Iterator[PerExampleRecorder]:
    """Set a fresh recorder on every per-example layer of ``model`` for the block."""
    check_per_example_support(model)
    recorder = PerExampleRecorder(mode)
    layers = [m for m in model.modules() if isinstance(m, PER_EXAMPLE_LAYERS)]
    for layer in layers:
        layer.per_example_recorder = recorder
    try:
        yield recorder
    finally:
        for layer in layers:
            layer.__dict__.pop("per_example_recorder", None)
    _check_all_recorded(model, recorder)


def _check_all_recorded(model: Module, recorder: PerExampleRecorder) -> None:
    missing = [name for name, p in model.named_parameters() if id(p) not in recorder.grads]
    if missing:
        raise ValueError(
            f"no per-example gradient reached parameter(s) {missing}: the module computing "
            "their gradient has no per-example support, or they are unused by the model")


def per_example_gradients(model: Module, loss: Any, x: Any, y: Any) -> dict[str, Any]:
    """``{parameter name: (N, *shape)}``: ∇_θ l(f(x_n), y_n) for every example n.

    Runs ``model`` forward in training mode on the batch, then one bprop with a
    recorder; the parameters' ``grad`` are left as they were. Memory: N times the
    parameters.

    Example:
        >>> from ermlab import nn, losses
        >>> model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))
        >>> grads = per_example_gradients(model, losses.SoftmaxCrossEntropy(), x, y)
        >>> grads["0.weight"].shape    # (len(x), 3, 4)
    """
    grad_scores = _per_example_loss_grad(model, loss, x, y)
    with recording(model, "grads") as recorder:
        model.backward(grad_scores, input_grad=False)
    return {name: recorder.grads[id(p)] for name, p in model.named_parameters()}


def clip_and_sum(model: Module, grad_scores: Any, max_norm: float) -> Any:
    """Add Σ_n c_n g_n to the parameters' ``grad``; return the norms ‖g_n‖ (N,).

    ``grad_scores``: the rows ∂l_n/∂scores of the batch the model last ran forward on
    (in training mode), e.g. N · ``loss.backward()``. c_n = min(1, C/(‖g_n‖ + 10⁻⁶)).
    """
    xp = array_module(grad_scores)
    with recording(model, "norms") as recorder:
        model.backward(grad_scores, input_grad=False)
    norms = xp.sqrt(recorder.sq_norms)
    factors = xp.minimum(1.0, max_norm / (norms + CLIP_EPS))
    recorder.accumulate_clipped(factors)
    return norms


def _per_example_loss_grad(model: Module, loss: Any, x: Any, y: Any) -> Any:
    model.train()
    scores = model.forward(x)
    loss.forward(scores, y)
    return loss.backward() * scores.dtype.type(len(x))
