"""Input gradients of the model as it is evaluated: ∇ₓ L(f(x), y) from the model's own bprop.

An attack needs the gradient of the loss with respect to the *input*, of the function the
model computes at test time (dropout off, batch norm with its running statistics). A
Module keeps its forward cache — and so can run ``backward`` — only in training mode, so
``gradients_at_test_time(model)`` puts the model in training mode while making every layer
compute its test-time function:

* stochastic layers use the expectation of their sample instead of a draw
  (``Stochastic.expectation``; E[y_train] = y_test for each of them), except layers that
  are random at test time too (noise injection), which keep drawing;
* batch norm normalizes with its running statistics and leaves them unchanged
  (``BatchNorm.frozen``).

Then ``model.backward(loss.backward())`` returns ∂L/∂x, exactly the gradient torch's
autograd gives for the same network in ``eval()``. Modes and flags are restored on exit.

``input_gradient(target, x, y)`` does the whole computation for a Module (with any ermlab
loss; softmax cross-entropy by default) or for an ``Ensemble``, whose loss is the negative
log of the averaged probability,

    L(x, y) = −log p̄_y(x),   p̄(x) = Σ_m w_m (1/D) Σ_d softmax(f_m(x; ξ_d)),
    ∂L/∂s_{m,d} = −(w_m / D) (p_{m,d,y} / p̄_y) (e_y − p_{m,d}),

over the members m and D noise draws ξ_d of each (``Ensemble.draws``), backpropagated
through each member. Parameter gradients are left as they were.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from ermlab.backend import array_module
from ermlab.ensemble import Ensemble, softmax
from ermlab.losses import SoftmaxCrossEntropy
from ermlab.nn.module import Module
from ermlab.nn.normalization import _BatchNorm
from ermlab.nn.stochastic import Stochastic


@contextlib.contextmanager
def gradients_at_test_time(model: Module) -> Iterator[Module]:
    """Within the block, ``model`` computes its evaluation-mode function and can run bprop."""
    if not isinstance(model, Module):
        raise TypeError(f"gradients_at_test_time needs an ermlab Module; got "
                        f"{type(model).__name__}")
    modules = list(model.modules())
    modes = [module.training for module in modules]
    stochastic = [m for m in modules if isinstance(m, Stochastic)]
    norms = [m for m in modules if isinstance(m, _BatchNorm)]
    saved = [m.expectation for m in stochastic], [m.frozen for m in norms]
    model.train()
    for layer in stochastic:
        layer.expectation = True
    for norm in norms:
        norm.frozen = True
    try:
        yield model
    finally:
        for module, mode in zip(modules, modes):
            object.__setattr__(module, "training", mode)
        for layer, flag in zip(stochastic, saved[0]):
            layer.expectation = flag
        for norm, flag in zip(norms, saved[1]):
            norm.frozen = flag


@contextlib.contextmanager
def _parameter_gradients_kept(models: list[Module]) -> Iterator[None]:
    params = [p for model in models for p in model.parameters()]
    zero = [p.grad_is_zero for p in params]
    saved = [None if z else p.grad.copy() for p, z in zip(params, zero)]
    try:
        yield
    finally:
        for param, was_zero, grad in zip(params, zero, saved):
            if was_zero:
                param.zero_grad()
            else:
                param.grad[...] = grad


def input_gradient(target: Module | Ensemble, x: Any, y: Any, loss: Any = None) -> Any:
    """∂L/∂x of a Module (``loss``: default softmax cross-entropy, mean over the batch) or
    of an ``Ensemble`` (−log of the averaged probability, summed over the batch)."""
    if isinstance(target, Ensemble):
        return _ensemble_gradient(target, x, y)
    loss = SoftmaxCrossEntropy() if loss is None else loss
    with _parameter_gradients_kept([target]), gradients_at_test_time(target):
        scores = target.forward(x)
        loss.forward(scores, y)
        return target.backward(loss.backward())


def _ensemble_gradient(ensemble: Ensemble, x: Any, y: Any) -> Any:
    if ensemble.to_probabilities is not softmax:
        raise ValueError("attacks on an Ensemble differentiate the softmax of its members' "
                         "scores; build it with the default to_probabilities=softmax")
    xp = array_module(x)
    rows, labels = xp.arange(len(x)), xp.asarray(y).astype(xp.int64)
    members = [(model, weight / ensemble.draws) for model, weight in
               zip(ensemble.models, ensemble.weights) for _ in range(ensemble.draws)]
    distinct = list({id(model): model for model in ensemble.models}.values())
    with _parameter_gradients_kept(distinct), contextlib.ExitStack() as stack:
        for model in distinct:
            stack.enter_context(gradients_at_test_time(model))
        passes = []
        for model, _ in members:  # one forward per member and draw; its cache kept aside
            p = softmax(model.forward(x))
            passes.append((p, model.cache_state()))
        mean = sum(w * p[rows, labels] for (_, w), (p, _) in zip(members, passes))
        grad = xp.zeros_like(x)
        for (model, weight), (p, cache) in zip(members, passes):
            onehot = xp.zeros_like(p)
            onehot[rows, labels] = 1
            coefficient = (-weight * p[rows, labels] / mean).astype(p.dtype)
            model.restore_cache(cache)
            grad += model.backward(coefficient[:, None] * (onehot - p))
    return grad
