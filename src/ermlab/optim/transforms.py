"""Gradient transforms usable with any optimizer: clipping, gradient noise, weight decay.

Optax-style small pieces (Optax's ``clip_by_global_norm``, ``clip``,
``add_noise``, ``add_decayed_weights``): each transform is a callable
``transform(optimizer)`` that rewrites the gradients (or, for decoupled weight
decay, the weights) of the optimizer's parameters in place, and
``Transformed(optimizer, *transforms)`` runs them in order before every step:

    >>> opt = Transformed(Adam(model.parameters()), ClipGradNorm(1.0), GradientNoise(0.01, rng=0))
    >>> opt.zero_grad(); model.backward(loss.backward()); opt.step()

The functions ``clip_grad_norm_``, ``clip_grad_value_`` and
``decoupled_weight_decay_`` do the same work on explicit parameters.

Coupled vs decoupled weight decay. Coupled (L2) decay adds λθ to the gradient,
g ← g + λθ (``CoupledWeightDecay``, or the ``weight_decay`` option of every
optimizer): it is the gradient of λ/2 ‖θ‖², so it passes through momentum and
adaptive scaling — in Adam a weight with a large gradient history is decayed
less. Decoupled decay (Loshchilov & Hutter 2019) shrinks the weights directly,
θ ← θ (1 − γλ), then the optimizer steps on the raw gradient
(``DecoupledWeightDecay``; ``AdamW`` is ``Adam`` after it). For plain SGD
without momentum the two are the same update.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy

from ermlab.backend import array_module, as_generator
from ermlab.nn.parameter import Parameter
from ermlab.optim.base import Optimizer


def _params(optimizer: Optimizer) -> list[Parameter]:
    return [p for group in optimizer.param_groups for p in group["params"]]


def clip_grad_norm_(
    params: Iterable[Parameter],
    max_norm: float,
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
) -> float:
    """Scale all gradients by min(1, c / (‖g‖ + 1e-6)) where ‖g‖ is their global p-norm.

    Same semantics as ``torch.nn.utils.clip_grad_norm_``: the norm is that of all
    gradients concatenated into one vector (``norm_type`` p ≥ 1 or ``math.inf``),
    the 1e-6 guards against division by zero, the scale is clamped at 1 (never
    amplifies) and the total norm before clipping is returned. (Optax's
    ``clip_by_global_norm`` scales by c/‖g‖ without the 1e-6.) Pascanu, Mikolov
    & Bengio (2013), Algorithm 1.
    """
    params = list(params)
    if not max_norm >= 0:
        raise ValueError(f"clip_grad_norm_ max_norm must be ≥ 0; got {max_norm}")
    norm_type = float(norm_type)
    if not norm_type >= 1:
        raise ValueError(f"clip_grad_norm_ norm_type must be ≥ 1 or math.inf; got {norm_type}")
    if not params:
        return 0.0
    xp = array_module(params[0].grad)
    if norm_type == math.inf:
        total = max(float(xp.max(xp.abs(p.grad))) if p.grad.size else 0.0 for p in params)
    elif norm_type == 2.0:
        total = math.sqrt(sum(float(xp.vdot(p.grad.ravel(), p.grad.ravel())) for p in params))
    else:
        total = sum(float(xp.sum(xp.abs(p.grad) ** norm_type)) for p in params) ** (1 / norm_type)
    if error_if_nonfinite and not math.isfinite(total):
        raise ValueError(
            f"the total {norm_type}-norm of the gradients is {total}; the loss or a gradient "
            "has overflowed (pass error_if_nonfinite=False to clip anyway)"
        )
    scale = min(max_norm / (total + 1e-6), 1.0)
    for p in params:
        p.grad *= scale
    return total


def clip_grad_value_(params: Iterable[Parameter], clip_value: float) -> None:
    """Clamp every gradient coordinate to [−c, c] (``torch.nn.utils.clip_grad_value_``)."""
    if not clip_value >= 0:
        raise ValueError(f"clip_grad_value_ clip_value must be ≥ 0; got {clip_value}")
    for p in params:
        array_module(p.grad).clip(p.grad, -clip_value, clip_value, out=p.grad)


def decoupled_weight_decay_(
    optimizer: Optimizer, weight_decay: float, regularized_only: bool = False
) -> None:
    """θ ← θ (1 − γλ) for every parameter, γ its group's learning rate (call before ``step``).

    ``Adam`` after this is ``AdamW`` (torch decays before the Adam step, as here).
    ``regularized_only=True`` skips parameters with ``regularize=False`` (biases).
    """
    if not weight_decay >= 0:
        raise ValueError(f"weight_decay must be ≥ 0; got {weight_decay}")
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p.regularize or not regularized_only:
                p.data *= 1 - group["lr"] * weight_decay


class ClipGradNorm:
    """Transform: ``clip_grad_norm_`` over all the optimizer's parameters.

    ``last_norm`` keeps the global norm before clipping (for logging).
    """

    def __init__(self, max_norm: float, norm_type: float = 2.0) -> None:
        if not max_norm >= 0:
            raise ValueError(f"ClipGradNorm max_norm must be ≥ 0; got {max_norm}")
        self.max_norm, self.norm_type = float(max_norm), float(norm_type)
        self.last_norm: float | None = None

    def __call__(self, optimizer: Optimizer) -> None:
        self.last_norm = clip_grad_norm_(_params(optimizer), self.max_norm, self.norm_type)


class ClipGradValue:
    """Transform: clamp every gradient coordinate to [−c, c]."""

    def __init__(self, clip_value: float) -> None:
        if not clip_value >= 0:
            raise ValueError(f"ClipGradValue clip_value must be ≥ 0; got {clip_value}")
        self.clip_value = float(clip_value)

    def __call__(self, optimizer: Optimizer) -> None:
        clip_grad_value_(_params(optimizer), self.clip_value)


class GradientNoise:
    """Transform: g ← g + N(0, σ_t²),  σ_t² = η / (1 + t)^γ  (Neelakantan et al. 2015, eq. (1)).

    t counts the calls (training steps) from 0. The paper uses γ = 0.55 and
    η ∈ {0.01, 0.3, 1.0}. Noise is drawn from ``rng`` (a Generator or seed; see
    ``backend.as_generator``) in parameter order, so a seeded run is reproducible;
    ``state_dict`` saves t and the generator state (JSON-safe) for resuming.
    """

    def __init__(self, eta: float, gamma: float = 0.55, rng: Any = None) -> None:
        if not eta >= 0:
            raise ValueError(f"GradientNoise eta (the noise variance η) must be ≥ 0; got {eta}")
        if not gamma >= 0:
            raise ValueError(f"GradientNoise gamma must be ≥ 0; got {gamma}")
        self.eta, self.gamma = float(eta), float(gamma)
        self.rng = as_generator(rng)
        self.t = 0
        self._noise: dict[Parameter, Any] = {}

    def sigma(self, t: int) -> float:
        return math.sqrt(self.eta / (1 + t) ** self.gamma)

    def __call__(self, optimizer: Optimizer) -> None:
        sigma = self.sigma(self.t)
        for p in _params(optimizer):
            noise = self._noise.get(p)
            if noise is None:
                noise = self._noise[p] = numpy.empty(p.shape, dtype=p.dtype)
            self.rng.standard_normal(out=noise, dtype=p.dtype)
            noise *= sigma
            p.add_grad(array_module(p.grad).asarray(noise))
        self.t += 1

    def state_dict(self) -> dict[str, Any]:
        return {"t": self.t, "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.t = int(state["t"])
        self.rng.bit_generator.state = state["rng"]


class CoupledWeightDecay:
    """Transform: g ← g + λθ, the gradient of the L2 penalty λ/2 ‖θ‖² (coupled decay)."""

    def __init__(self, weight_decay: float, regularized_only: bool = False) -> None:
        if not weight_decay >= 0:
            raise ValueError(f"CoupledWeightDecay weight_decay must be ≥ 0; got {weight_decay}")
        self.weight_decay, self.regularized_only = float(weight_decay), regularized_only

    def __call__(self, optimizer: Optimizer) -> None:
        for p in _params(optimizer):
            if p.regularize or not self.regularized_only:
                p.add_grad(self.weight_decay * p.data)


class DecoupledWeightDecay:
    """Transform: θ ← θ (1 − γλ) before the step (Loshchilov & Hutter 2019); see module doc."""

    def __init__(self, weight_decay: float, regularized_only: bool = False) -> None:
        if not weight_decay >= 0:
            raise ValueError(f"DecoupledWeightDecay weight_decay must be ≥ 0; got {weight_decay}")
        self.weight_decay, self.regularized_only = float(weight_decay), regularized_only

    def __call__(self, optimizer: Optimizer) -> None:
        decoupled_weight_decay_(optimizer, self.weight_decay, self.regularized_only)


class Transformed:
    """An optimizer that applies ``transforms`` (in order) to its inner optimizer before each step.

    ``step(closure)`` evaluates ``closure`` first (for the loss and fresh
    gradients), then the transforms, then ``optimizer.step()`` without the
    closure — so it does not serve optimizers that re-evaluate the closure
    themselves (L-BFGS, look-ahead Nesterov).
    """

    def __init__(self, optimizer: Optimizer, *transforms: Callable[[Optimizer], None]) -> None:
        for t in transforms:
            if not callable(t):
                raise ValueError(
                    f"Transformed takes callables transform(optimizer); got {type(t).__name__}"
                )
        self.optimizer, self.transforms = optimizer, list(transforms)

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.optimizer.param_groups

    @property
    def state(self) -> dict[Parameter, dict[str, Any]]:
        return self.optimizer.state

    def zero_grad(self) -> None:
        self.optimizer.zero_grad()

    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = closure() if closure is not None else None
        for transform in self.transforms:
            transform(self.optimizer)
        self.optimizer.step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        saved = self.optimizer.state_dict()
        saved["transforms"] = [
            t.state_dict() if hasattr(t, "state_dict") else None for t in self.transforms
        ]
        return saved

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        transforms = state_dict.pop("transforms", [None] * len(self.transforms))
        self.optimizer.load_state_dict(state_dict)
        for t, saved in zip(self.transforms, transforms):
            if saved is not None:
                t.load_state_dict(saved)
