"""Stochastic layers: training adds randomness, testing averages it out.

Dropout, DropConnect, GaussianNoise and StochasticDepth each draw a random
sample ξ in training mode (a Bernoulli mask, or Gaussian noise) and replace it
by its expectation E[ξ] (or by nothing) in evaluation mode.

Randomness. Every layer takes ``rng`` at construction: a
``numpy.random.Generator`` (share one across the model so a seeded run repeats
exactly), an integer seed, or ``None`` for the module-wide generator that
``ermlab.backend.seed(n)`` resets (looked up at each draw, so seeding after
building the model works). ``use_generator(model, rng)`` gives every
stochastic layer of a model one shared generator. Samples are drawn on the CPU
with NumPy and moved to the data's array module (CuPy on a GPU), so a run on
the GPU draws the same masks as on the CPU.

The expectation in place of a draw (attacks). With ``layer.expectation = True`` a
training-mode forward uses E[ξ] (the keep probability 1 − p of a Bernoulli mask, 0
for Gaussian noise) instead of a draw and leaves the generator untouched; since every
layer here is linear in ξ with E[y_train] = y_test, the forward then computes the
test-time function while keeping its cache, so bprop gives the gradient of the model
that is evaluated (``ermlab.robustness.gradients_at_test_time``). A layer that is random
at test time too (``random_at_test``: noise injection) keeps drawing.

Fixing the sample (gradient checks). ``forward`` draws a fresh sample at each
training-mode call and caches it for ``backward``. ``layer.freeze_mask(mask)``
makes every later training-mode forward reuse ``mask``; ``freeze_mask()``
with no argument reuses the *next* sample drawn. ``unfreeze_mask()`` goes back
to fresh draws. ``frozen_masks(model)`` is the context manager that freezes
every stochastic layer of a model, e.g. for ``gradcheck.check_module``::

    with frozen_masks(model):
        result = check_module(model, x)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy

from ermlab.backend import array_module, as_generator
from ermlab.nn import _products
from ermlab.nn.graph import Graph
from ermlab.nn.linear import Linear, check_float_input
from ermlab.nn.merge import Add
from ermlab.nn.module import Module


def _check_drop_probability(layer: str, p: float) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float, numpy.floating)) or not 0 <= p < 1:
        raise ValueError(
            f"{layer} p is the probability of DROPPING a unit and must be in [0, 1); got {p!r} "
            "(p = 1 would drop everything; pass the keep probability as 1 − p)"
        )
    return float(p)


class Stochastic(Module):
    """Base of the layers that draw a random sample in training mode.

    Subclasses call ``self._sample(shape, draw)`` in a training-mode forward,
    where ``draw(generator, shape)`` returns a NumPy array; the result is the
    sample to use (the frozen one when frozen) and is kept in ``self.mask``.
    """

    def __init__(self, rng: Any = None) -> None:
        super().__init__()
        self.set_generator(rng)
        self.mask = None
        self._frozen = None
        self._freeze_next = False
        self.expectation = False

    @property
    def random_at_test(self) -> bool:
        """Whether the layer draws at test time too (then ``expectation`` does not apply)."""
        return False

    @property
    def generator(self) -> numpy.random.Generator:
        """The generator the next sample comes from."""
        return as_generator(self._rng)

    def set_generator(self, rng: Any) -> None:
        """Draw from ``rng`` from now on (Generator, seed, or None for the module-wide one)."""
        self._rng = None if rng is None else as_generator(rng)

    def freeze_mask(self, mask: Any = None) -> Stochastic:
        """Reuse ``mask`` in every training-mode forward (or, with no argument, the next draw)."""
        self._frozen, self._freeze_next = mask, mask is None
        return self

    def unfreeze_mask(self) -> Stochastic:
        """Draw a fresh sample at every training-mode forward again."""
        self._frozen, self._freeze_next = None, False
        return self

    def _sample(self, shape: tuple[int, ...], draw: Any, like: Any) -> Any:
        xp = array_module(like)
        if self.expectation and not self.random_at_test:
            sample = xp.full(shape, draw.mean)
        elif self._frozen is not None:
            if tuple(self._frozen.shape) != tuple(shape):
                raise ValueError(
                    f"{type(self).__name__} has a frozen mask of shape "
                    f"{tuple(self._frozen.shape)} but this input needs {tuple(shape)}; call "
                    "unfreeze_mask() or freeze a mask of the right shape"
                )
            sample = self._frozen
        else:
            sample = xp.asarray(draw(self.generator, shape))
            if self._freeze_next:
                self._frozen, self._freeze_next = sample, False
        self.mask = sample
        return sample


def use_generator(model: Module, rng: Any) -> Module:
    """Make every stochastic layer of ``model`` draw from one generator (``as_generator(rng)``)."""
    generator = None if rng is None else as_generator(rng)
    for module in model.modules():
        if isinstance(module, Stochastic):
            module.set_generator(generator)
    return model


@contextlib.contextmanager
def frozen_masks(model: Module) -> Iterator[Module]:
    """Within the block, each stochastic layer of ``model`` reuses the first sample it draws."""
    layers = [m for m in model.modules() if isinstance(m, Stochastic)]
    for layer in layers:
        layer.freeze_mask()
    try:
        yield model
    finally:
        for layer in layers:
            layer.unfreeze_mask()


def _bernoulli_keep(p_drop: float):
    def draw(generator: numpy.random.Generator, shape: tuple[int, ...]) -> numpy.ndarray:
        return generator.random(shape) >= p_drop

    draw.mean = 1.0 - p_drop
    return draw


class Dropout(Stochastic):
    """Dropout (Srivastava et al. 2014): zero each unit with probability ``p``.

    ``p`` is the DROP probability, as in ``torch.nn.Dropout`` (the paper's
    retention probability is 1 − p). With m ~ Bernoulli(1 − p) elementwise:

        inverted (default, torch's):  training y = m ⊙ x / (1 − p),  test y = x
        classic (the paper's):        training y = m ⊙ x,            test y = (1 − p) x

    Both make the test output the expectation of the training output,
    E[y_train] = y_test. bprop: ∂L/∂x = ∂L/∂y ⊙ m / (1 − p) (inverted) or ⊙ m.

    Args:
        p: drop probability in [0, 1) (default 0.5).
        inverted: scale at training time (True) or at test time (False).
        rng: Generator, seed or None (see the module docstring).

    The mask given to ``freeze_mask`` holds keep indicators (1 keep, 0 drop) of
    the input's shape.

    Reference: N. Srivastava, G. Hinton, A. Krizhevsky, I. Sutskever,
    R. Salakhutdinov. Dropout: A Simple Way to Prevent Neural Networks from
    Overfitting. JMLR 15, 2014.
    """

    forward_cache = ("_scaled_mask",)

    def __init__(self, p: float = 0.5, inverted: bool = True, rng: Any = None) -> None:
        super().__init__(rng)
        self.p = _check_drop_probability("Dropout", p)
        self.inverted = bool(inverted)

    def forward(self, x: Any) -> Any:
        keep = 1.0 - self.p
        if not self.training:
            return x if self.inverted else x * x.dtype.type(keep)
        mask = self._sample(x.shape, _bernoulli_keep(self.p), x).astype(x.dtype)
        if self.inverted:
            mask = mask * x.dtype.type(1.0 / keep)
        self._scaled_mask = mask
        return x * mask

    def grad_input(self, grad_out: Any) -> Any:
        return grad_out * self._cached("_scaled_mask")

    def extra_repr(self) -> str:
        return f"p={self.p}" + ("" if self.inverted else ", inverted=False")


class DropConnect(Stochastic):
    """DropConnect (Wan et al. 2013) on a Linear layer: y = (M ⊙ W) x + b.

    M ~ Bernoulli(1 − p) elementwise over the weight W (not the bias); ``p``
    is the DROP probability, as for ``Dropout``. At test time the mean-weight
    approximation replaces M ⊙ W by its expectation:

        training  y = (M ⊙ W) x + b          test  y = ((1 − p) W) x + b

    bprop (one mask for the batch): ∂L/∂W = M ⊙ (Gᵀ X), ∂L/∂b = Σ_n G_n,
    ∂L/∂X = G (M ⊙ W).

    Args:
        linear: the ``Linear`` layer whose weights are dropped; it stays a
            child (``state_dict`` keys ``linear.weight``, ``linear.bias``).
        p: drop probability in [0, 1) (default 0.5).
        per_example: draw a mask per example, as the paper does (memory
            N × out × in), instead of one mask shared by the mini-batch
            (default False; the common implementation).
        rng: Generator, seed or None.

    Where it differs from the paper: Wan et al. infer with a Gaussian
    moment-matching approximation of the activation; this layer uses the
    mean-weight approximation (their baseline), which is exact for the
    pre-activation mean.

    Reference: L. Wan, M. Zeiler, S. Zhang, Y. LeCun, R. Fergus. Regularization
    of Neural Networks using DropConnect. ICML 2013.
    """

    forward_cache = ("_x", "_weight_mask", "_masked")

    def __init__(
        self, linear: Linear, p: float = 0.5, per_example: bool = False, rng: Any = None
    ) -> None:
        super().__init__(rng)
        if not isinstance(linear, Linear):
            raise ValueError(
                f"DropConnect wraps an nn.Linear layer; got {type(linear).__name__}. "
                "Use DropConnect(nn.Linear(in_features, out_features), p)"
            )
        self.linear = linear
        self.p = _check_drop_probability("DropConnect", p)
        self.per_example = bool(per_example)

    def forward(self, x: Any) -> Any:
        linear = self.linear
        if x.ndim != 2 or x.shape[1] != linear.in_features:
            raise ValueError(
                f"DropConnect({linear!r}) expects input of shape (N, {linear.in_features}); "
                f"got {tuple(x.shape)}"
            )
        check_float_input(self, x, linear.weight.dtype)
        xp = array_module(x)
        weight = linear.weight.data
        if not self.training:
            y = xp.matmul(x, weight.T) * x.dtype.type(1.0 - self.p)
        else:
            shape = (x.shape[0], *weight.shape) if self.per_example else weight.shape
            mask = self._sample(shape, _bernoulli_keep(self.p), x).astype(x.dtype)
            masked = mask * weight
            if self.per_example:
                y = xp.einsum("noi,ni->no", masked, x)
            else:
                y = xp.matmul(x, masked.T)
            self._x, self._weight_mask, self._masked = x, mask, masked
        if linear.bias is not None:
            y += linear.bias.data
        return y

    def accumulate_grad(self, grad_out: Any) -> None:
        xp = array_module(grad_out)
        x, mask = self._cached("_x"), self._cached("_weight_mask")
        if self.per_example:
            self.linear.weight.add_grad(xp.einsum("noi,no,ni->oi", mask, grad_out, x))
        else:
            self.linear.weight.add_grad(mask * _products.matmul(grad_out.T, x))
        if self.linear.bias is not None:
            self.linear.bias.accumulate(xp.sum, grad_out, axis=0)

    def grad_input(self, grad_out: Any) -> Any:
        xp = array_module(grad_out)
        masked = self._cached("_masked")
        if self.per_example:
            return xp.einsum("noi,no->ni", masked, grad_out)
        return xp.matmul(grad_out, masked)

    def extra_repr(self) -> str:
        return f"p={self.p}" + (", per_example=True" if self.per_example else "")


class GaussianNoise(Stochastic):
    """Additive Gaussian noise: y = x + σ ε, ε ~ N(0, I), at training time; test y = x.

    E[y_train] = y_test. bprop: ∂L/∂x = ∂L/∂y. The frozen "mask" is the draw ε
    (standard normal, the input's shape).

    With ``at_test=True`` the noise is drawn at test time too, fresh at every
    forward: the noise injection of Wang, Yuan, Shi & Osher (2019), whose residual
    blocks x_{l+1} = x_l + F(x_l) + σ ε discretize a convection-diffusion equation;
    averaging predictions over noise draws (``Ensemble(draws=...)``) smooths the
    classifier and bounds the change under an input perturbation δ,
    |u(x + δ) − u(x)| ≤ C (‖δ‖₂ / σ)^α.

    Args:
        sigma: the standard deviation σ ≥ 0.
        rng: Generator, seed or None.
        at_test: also add noise in evaluation mode (default False; keyword only).

    References: C. M. Bishop. Training with Noise is Equivalent to Tikhonov
    Regularization. Neural Computation 7(1), 1995. B. Wang, B. Yuan, Z. Shi,
    S. Osher. ResNets Ensemble via the Feynman-Kac Formalism to Improve Natural
    and Robust Accuracies. NeurIPS 2019.
    """

    forward_cache = ("_shape",)

    def __init__(self, sigma: float, rng: Any = None, *, at_test: bool = False) -> None:
        super().__init__(rng)
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not sigma >= 0:
            raise ValueError(f"GaussianNoise sigma must be a number ≥ 0; got {sigma!r}")
        self.sigma = float(sigma)
        self.at_test = bool(at_test)

    @property
    def random_at_test(self) -> bool:
        return self.at_test

    def forward(self, x: Any) -> Any:
        if not self.training:
            if not self.at_test:
                return x
            noise = array_module(x).asarray(_standard_normal(self.generator, x.shape))
            return x + noise.astype(x.dtype) * x.dtype.type(self.sigma)
        self._sample(x.shape, _standard_normal, x)
        self._shape = x.shape
        return x + self.mask.astype(x.dtype) * x.dtype.type(self.sigma)

    def grad_input(self, grad_out: Any) -> Any:
        self._cached("_shape")
        return grad_out

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}" + (", at_test=True" if self.at_test else "")


def _standard_normal(generator: numpy.random.Generator, shape: tuple[int, ...]) -> numpy.ndarray:
    return generator.standard_normal(shape)


_standard_normal.mean = 0.0


class StochasticDepth(Stochastic):
    """The residual branch of a stochastic-depth block (Huang et al. 2016).

    Wraps the branch f_l of a residual block H_l = x + f_l(x) and returns the
    branch's contribution, so that ``x + StochasticDepth(f, p)(x)`` is the block
    (``residual_block`` builds that Graph). With b_l ~ Bernoulli(p_l), p_l the
    SURVIVAL probability:

        training  b_l f_l(x)        (paper, inverted=False)   or b_l f_l(x) / p_l
        test      p_l f_l(x)        (the full network, each        f_l(x)
                                     branch re-calibrated)

    so E[training output] = test output. With ``mode="batch"`` (the paper) one
    b_l is drawn per mini-batch and a dropped branch is not computed at all (a
    zero output, zero gradients, no parameter gradients: the network really is
    shorter); ``mode="row"`` draws one b_l per example (torchvision's default,
    which also uses the inverted scaling).

    Args:
        branch: any Module (one or several inputs) computing f_l.
        survival_prob: p_l in (0, 1]; ``linear_decay`` gives the paper's rule.
        mode: "batch" (default) or "row".
        inverted: scale by 1/p_l at training time instead of p_l at test time.
        rng: Generator, seed or None.

    The frozen mask is a boolean scalar array (batch) or shape (N,) (row).

    Reference: G. Huang, Y. Sun, Z. Liu, D. Sedra, K. Weinberger. Deep Networks
    with Stochastic Depth. ECCV 2016.
    """

    forward_cache = ("_inputs_like", "_dropped", "_scale", "_branch_cache")

    def __init__(
        self,
        branch: Module,
        survival_prob: float,
        mode: str = "batch",
        inverted: bool = False,
        rng: Any = None,
    ) -> None:
        super().__init__(rng)
        if not isinstance(branch, Module):
            raise ValueError(f"StochasticDepth wraps a Module; got {type(branch).__name__}")
        if isinstance(survival_prob, bool) or not 0 < survival_prob <= 1:
            raise ValueError(
                f"StochasticDepth survival_prob is the probability of KEEPING the branch and "
                f"must be in (0, 1]; got {survival_prob!r}"
            )
        if mode not in ("batch", "row"):
            raise ValueError(f"StochasticDepth mode must be 'batch' or 'row'; got {mode!r}")
        self.branch = branch
        self.survival_prob = float(survival_prob)
        self.mode = mode
        self.inverted = bool(inverted)
        self._output_shapes: dict[tuple, tuple[int, ...]] = {}

    def forward(self, *inputs: Any) -> Any:
        p = self.survival_prob
        if not self.training:
            y = self.branch.forward(*inputs)
            return y if self.inverted else y * y.dtype.type(p)
        first = inputs[0]
        shape = () if self.mode == "batch" else (first.shape[0],)
        keep = self._sample(shape, _bernoulli_keep(1.0 - p), first)
        key = tuple(tuple(x.shape) for x in inputs)
        self._inputs_like = [(x.shape, x.dtype) for x in inputs]
        self._dropped = self.mode == "batch" and not bool(keep)
        self._scale = self._branch_cache = None  # the last pass's go as this pass's come
        if self._dropped:
            return array_module(first).zeros(self._output_shape(key, inputs), dtype=first.dtype)
        y = self.branch.forward(*inputs)
        self._branch_cache = self.branch.cache_state()
        self._output_shapes[key] = tuple(y.shape)
        scale = keep.astype(y.dtype)
        if self.inverted:
            scale = scale * y.dtype.type(1.0 / p)
        self._scale = scale.reshape(scale.shape + (1,) * (y.ndim - scale.ndim))
        return y * self._scale

    def _output_shape(self, key: tuple, inputs: Sequence[Any]) -> tuple[int, ...]:
        """The branch's output shape for inputs of these shapes (one eval pass if unknown)."""
        if key not in self._output_shapes:
            self.branch.eval()
            try:
                self._output_shapes[key] = tuple(self.branch.forward(*inputs).shape)
            finally:
                self.branch.train()
        return self._output_shapes[key]

    def backward(self, grad_out: Any, input_grad: bool = True) -> Any:
        if self._cached("_dropped") is True:  # the branch was skipped for this mini-batch
            if not input_grad:
                return None
            xp = array_module(grad_out)
            grads = tuple(xp.zeros(s, dtype=d) for s, d in self._cached("_inputs_like"))
            return grads[0] if len(grads) == 1 else grads
        self.branch.restore_cache(self._cached("_branch_cache"))
        self._branch_cache = None  # let go once the branch's bprop is done (see Module)
        grad = self.branch.backward(grad_out * self._cached("_scale"), input_grad=input_grad)
        self.branch.release_cache()
        return grad

    def extra_repr(self) -> str:
        extra = "" if self.mode == "batch" else f", mode={self.mode!r}"
        extra += ", inverted=True" if self.inverted else ""
        return f"survival_prob={self.survival_prob}" + extra


def linear_decay(num_blocks: int, final_survival: float = 0.5) -> list[float]:
    """The linear decay rule of Huang et al. (2016), eq. 4: p_l = 1 − (l / L)(1 − p_L).

    Returns [p_1, …, p_L] for the L residual blocks counted from the input
    (p_0 = 1 is the input). With p_L = 0.5 (the paper's choice) the expected
    number of surviving blocks is Σ p_l = (3L − 1) / 4, e.g. ≈ 40 of the 54
    blocks of a 110-layer ResNet.
    """
    if isinstance(num_blocks, bool) or not isinstance(num_blocks, int) or num_blocks < 1:
        raise ValueError(f"linear_decay needs num_blocks ≥ 1 (an integer); got {num_blocks!r}")
    if not 0 < final_survival <= 1:
        raise ValueError(f"final_survival p_L must be in (0, 1]; got {final_survival!r}")
    L = num_blocks
    return [1.0 - (l / L) * (1.0 - final_survival) for l in range(1, L + 1)]


def residual_block(
    branch: Module, survival_prob: float = 1.0, rng: Any = None, **options: Any
) -> Graph:
    """The block H = x + StochasticDepth(branch, survival_prob)(x), as a Graph.

    Boxes: ``branch`` (the StochasticDepth wrapper) and ``sum`` (Add); apply any
    post-activation (the paper's ReLU) after the block. ``options`` go to
    ``StochasticDepth`` (``mode``, ``inverted``).
    """
    graph = Graph(inputs="x")
    graph.add("branch", StochasticDepth(branch, survival_prob, rng=rng, **options), "x")
    return graph.add("sum", Add(), ["branch", "x"]).set_output("sum")
