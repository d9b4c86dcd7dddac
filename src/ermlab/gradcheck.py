"""Gradient checking by centred finite differences.

For every scalar entry θ_i of an input or parameter,

    ∂f/∂θ_i ≈ (f(θ + ε e_i) − f(θ − ε e_i)) / 2ε        (error O(ε²))

is compared with the gradient that bprop computes, through the relative error

    rel(a, n) = |a − n| / max(|a|, |n|, floor),
    floor = max(1e-8, 1e-3 · max |g|),  max |g| over every entry, analytic or numeric,
                                         of every array in the check

The floor is there because finite differences cannot resolve an entry much
smaller than the largest gradient of the check: rounding in f(θ ± ε) and the
O(ε²) truncation leave an absolute error of ~1e-10 on every entry — the same f and
ε for every array, so the same noise level — which is a large *relative* error on
an entry of 1e-5 (batch normalization's input gradient, which sums to zero, has
many such entries). The level is that of the whole check, not of each array: an
array whose true gradient is identically zero (the bias of a layer followed by
batch normalization) is measured against it, not against its own rounding noise.
Entries above 1e-3 of the largest are held to the full relative tolerance; below
it, |a − n| is held to tolerance · 1e-3 · max |g|, the noise level itself.

For a module the scalar is f = Σ r ⊙ module(x) with a fixed random r (the probe,
see ``check_module``), so bprop is called with ∂f/∂y = r. Run checks in float64:
in float32 the differences drown in rounding error.

Scale: the ~1e-10 above assumes inputs, parameters and outputs of order 1 (the
layers' default initializations, standard-normal inputs). The rounding error of
f(θ ± ε) grows with the size of f's terms, and divided by 2ε it is ~1e-6
relative for a correct ``Linear`` on inputs of scale 10 (3–6e-6 measured, 64 → 64,
batch 16) and ~1e-4 for weights of scale 100: check such modules with a larger ε
(``eps=1e-4``: 3.5e-8 there; exact for layers affine in the checked array, whose
O(ε²) term is 0) or a looser tolerance, rather than reading a failure as a bug.

Kinks: the centred difference assumes f is differentiable on [θ − ε, θ + ε]. Where an
entry lies within ε of a kink — ReLU or LeakyReLU at 0, ELU with α ≠ 1 at 0, a hinge
loss at a tie (a margin of exactly 0) — it averages the two one-sided slopes, while
bprop returns one of them (the subgradient the layer documents), so the check fails
there by design, not because bprop is wrong: keep inputs away from kinks (|x| ≫ ε).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy

from ermlab.backend import array_module, as_generator, to_numpy
from ermlab.nn.module import Module
from ermlab.nn.parameter import Parameter

DEFAULT_EPS = 1e-6
DEFAULT_FLOOR = 1e-8
RELATIVE_FLOOR = 1e-3
#: ``check_module(rng=s)`` draws its probe from SeedSequence(s, spawn_key=PROBE_SPAWN_KEY).
PROBE_SPAWN_KEY = (0x70726F6265,)  # "probe"


@dataclass
class GradcheckResult:
    """Outcome of a gradient check.

    Attributes:
        max_rel_error: the largest relative error over every checked entry.
        where: the entry where it occurred, e.g. ``"weight[2, 0]"``.
        errors: the largest relative error of each checked array, by name.
    """

    max_rel_error: float
    where: str
    errors: dict[str, float] = field(default_factory=dict)

    def passed(self, tolerance: float = 1e-6) -> bool:
        return bool(self.max_rel_error <= tolerance)


def relative_error(
    analytic: Any, numeric: Any, floor: float = DEFAULT_FLOOR,
    relative_floor: float = RELATIVE_FLOOR, largest: float | None = None,
) -> numpy.ndarray:
    """Elementwise |a − n| / max(|a|, |n|, floor, relative_floor · largest).

    ``largest`` is the largest |gradient| entry of the whole check (see the module
    docstring); by default that of ``analytic`` and ``numeric`` alone.
    """
    a, n = to_numpy(analytic), to_numpy(numeric)
    scale = numpy.maximum(numpy.abs(a), numpy.abs(n))
    if largest is None:
        largest = float(scale.max()) if scale.size else 0.0
    floor = max(floor, relative_floor * largest)
    return numpy.abs(a - n) / numpy.maximum(scale, floor)


def numerical_gradient(
    f: Callable[[], float], array: Any, eps: float = DEFAULT_EPS
) -> numpy.ndarray:
    """Centred differences of the scalar ``f()`` with respect to every entry of ``array``.

    ``array`` is perturbed in place and restored entry by entry.
    """
    grad = numpy.zeros(array.shape, dtype=numpy.float64)
    for index in numpy.ndindex(*array.shape):
        saved = array[index].copy()
        array[index] = saved + eps
        f_plus = float(f())
        array[index] = saved - eps
        f_minus = float(f())
        array[index] = saved
        grad[index] = (f_plus - f_minus) / (2 * eps)
    return grad


def compare(
    pairs: Iterable[tuple[str, Any, Any]], floor: float = DEFAULT_FLOOR
) -> GradcheckResult:
    """Summarize (name, analytic, numeric) triples into a ``GradcheckResult``, with the
    floor set by the largest gradient entry of all of them (see the module docstring)."""
    pairs = [(name, to_numpy(a), to_numpy(n)) for name, a, n in pairs]
    largest = max((float(numpy.abs(g).max()) for _, a, n in pairs for g in (a, n) if g.size),
                  default=0.0)
    worst, where, errors = 0.0, "", {}
    for name, analytic, numeric in pairs:
        rel = relative_error(analytic, numeric, floor, largest=largest)
        if rel.size == 0:
            continue
        index = numpy.unravel_index(int(numpy.argmax(rel)), rel.shape)
        errors[name] = float(rel[index])
        if errors[name] >= worst:
            worst, where = errors[name], f"{name}[{', '.join(map(str, index))}]"
    return GradcheckResult(worst, where, errors)


def _require_float64(arrays: Sequence[Any], what: str) -> None:
    for array in arrays:
        if not hasattr(array, "dtype"):
            raise TypeError(
                f"gradient checks take arrays as {what}; got a {type(array).__name__}. Pass "
                "several inputs as separate arguments: check_module(graph, x1, x2)"
            )
        if array.dtype != numpy.float64:
            raise ValueError(
                f"gradient checks need float64 {what}; got {array.dtype}. Build the model "
                "inside `with ermlab.backend.default_dtype(numpy.float64):`"
            )


def _probe_generator(rng: Any) -> numpy.random.Generator:
    if isinstance(rng, (int, numpy.integer)) and not isinstance(rng, bool):
        seed = numpy.random.SeedSequence(int(rng), spawn_key=PROBE_SPAWN_KEY)
        return numpy.random.default_rng(seed)
    return as_generator(rng)


def check_module(
    module: Module,
    *inputs: Any,
    eps: float = DEFAULT_EPS,
    rng: Any = 0,
    check_inputs: bool = True,
    floor: float = DEFAULT_FLOOR,
) -> GradcheckResult:
    """Check ``module.backward`` against finite differences, for each input and parameter.

    The module must be deterministic from one forward pass to the next (fix the
    masks of stochastic layers first).

    ``rng`` is where the probe r (f = Σ r ⊙ module(x)) comes from. An integer seed s
    draws it from ``SeedSequence(s, spawn_key=PROBE_SPAWN_KEY)``, a stream of its own:
    an input drawn from ``default_rng(s)`` in the output's shape is then not also the
    probe (with r = x, ∂f/∂W = xᵀx of a square ``Linear`` is symmetric and a transposed
    weight gradient would pass). A Generator is drawn from as it is.
    """
    params = module.parameters()
    _require_float64([*inputs, *(p.data for p in params)], "inputs and parameters")
    module.train()
    output = module.forward(*inputs)
    probe = _probe_generator(rng).standard_normal(output.shape)  # on the host, for objective()

    def objective() -> float:
        return float(numpy.sum(probe * to_numpy(module.forward(*inputs))))

    module.zero_grad()
    module.forward(*inputs)
    back = module.backward(array_module(output).asarray(probe), input_grad=check_inputs)
    analytic = {f"param:{name}": p.grad.copy() for name, p in module.named_parameters()}
    if check_inputs:
        back = back if isinstance(back, tuple) else (back,)
        names = ["input"] if len(inputs) == 1 else [f"input{i}" for i in range(len(inputs))]
        analytic.update({  # None: the module says the input does not matter (∂f/∂x = 0)
            name: numpy.zeros(x.shape) if g is None else g
            for name, g, x in zip(names, back, inputs, strict=True)
        })
        arrays = dict(zip(names, inputs))
    else:
        arrays = {}
    arrays.update({f"param:{name}": p.data for name, p in module.named_parameters()})
    pairs = [
        (name, analytic[name], numerical_gradient(objective, arrays[name], eps))
        for name in arrays
    ]
    return compare(pairs, floor)


def check_loss(
    loss: Any,
    scores: Any,
    target: Any,
    sample_weight: Any = None,
    eps: float = DEFAULT_EPS,
    floor: float = DEFAULT_FLOOR,
) -> GradcheckResult:
    """Check ``loss.backward()`` (∂l/∂scores) against finite differences of ``loss.forward``."""
    _require_float64([scores], "scores")
    scores = scores.copy()

    def objective() -> float:
        return float(loss.forward(scores, target, sample_weight=sample_weight))

    objective()
    analytic = loss.backward()
    return compare([("scores", analytic, numerical_gradient(objective, scores, eps))], floor)


def check_regularizer(
    regularizer: Any,
    params: Sequence[Parameter],
    eps: float = DEFAULT_EPS,
    floor: float = DEFAULT_FLOOR,
) -> GradcheckResult:
    """Check ``regularizer.add_gradient`` (λ∇Ω) against finite differences of ``penalty``."""
    _require_float64([p.data for p in params], "parameters")
    for p in params:
        p.zero_grad()
    regularizer.add_gradient(params)
    pairs = [
        (p.name or f"param{i}", p.grad.copy(),
         numerical_gradient(lambda: regularizer.penalty(params), p.data, eps))
        for i, p in enumerate(params)
    ]
    return compare(pairs, floor)
