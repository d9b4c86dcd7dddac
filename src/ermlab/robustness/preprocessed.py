"""Attacks in the units of the raw data: the run's preprocessing as the model's first box.

The preprocessing of ``ermlab train`` (mean image, channel mean, standardization,
flattening) maps each raw value elementwise and affinely, z = a ⊙ x + b, then reshapes.
``AffineInput`` is that map as a Module,

    fprop  z = reshape(a ⊙ x + b),      bprop  ∂L/∂x = a ⊙ reshape⁻¹(∂L/∂z),

so ``Sequential(AffineInput.of(preprocessor, shape), model)`` takes raw inputs: an
attack's ε and valid range are then those of the data (pixels in [0, 1]), not of the
preprocessed values. ``RawUnits(attack, affine)`` is such an attack applied to
preprocessed inputs (what the Trainer and ``ermlab evaluate`` hold): it maps them back,
x = (z − b) / a, attacks ``Sequential(affine, model)`` and maps the result forward.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy

from ermlab.backend import array_module
from ermlab.nn.module import Module
from ermlab.nn.sequential import Sequential


class AffineInput(Module):
    """z = reshape(a ⊙ x + b) to ``(N, *out_shape)``; ``a``, ``b`` of one raw example's shape."""

    forward_cache = ("_in_shape",)

    def __init__(self, scale: Any, shift: Any, out_shape: Sequence[int]) -> None:
        super().__init__()
        self.scale, self.shift = scale, shift
        self.out_shape = tuple(int(d) for d in out_shape)

    @classmethod
    def of(cls, preprocessor: Any, shape: Sequence[int], dtype: Any = numpy.float32,
           probe: Any = None) -> AffineInput:
        """The map of a fitted preprocessor for raw examples of ``shape``: b = T(0),
        a = T(1) − T(0); checked on ``probe`` (raw inputs), ValueError if not affine."""
        shape = tuple(int(d) for d in shape)
        zeros, ones = numpy.zeros((1, *shape), dtype), numpy.ones((1, *shape), dtype)
        shift = preprocessor.transform(zeros)
        out_shape = shift.shape[1:]
        shift = shift.reshape(shape)
        scale = preprocessor.transform(ones).reshape(shape) - shift
        if not (scale != 0).all():
            raise ValueError(f"the preprocessing {preprocessor!r} maps some inputs to a "
                             "constant; it cannot be inverted for an attack in raw units")
        module = cls(scale, shift, out_shape)
        if probe is not None:
            expected = preprocessor.transform(probe)
            got = module.forward(numpy.asarray(probe, dtype))
            if not numpy.allclose(got, expected, rtol=1e-4, atol=1e-5 * max(1.0, float(
                    numpy.abs(expected).max()))):
                raise ValueError(f"the preprocessing {preprocessor!r} is not an elementwise "
                                 "affine map; attack the preprocessed inputs instead")
        return module

    def forward(self, x: Any) -> Any:
        xp = array_module(x)
        z = x * xp.asarray(self.scale, dtype=x.dtype) + xp.asarray(self.shift, dtype=x.dtype)
        if self.training:
            self._in_shape = x.shape
        return z.reshape((len(x), *self.out_shape))

    def invert(self, z: Any) -> Any:
        """x = (z − b) / a, in raw shape: the raw inputs of preprocessed ones."""
        xp = array_module(z)
        z = z.reshape((len(z), *numpy.shape(self.scale)))
        return (z - xp.asarray(self.shift, dtype=z.dtype)) / xp.asarray(self.scale,
                                                                        dtype=z.dtype)

    def grad_input(self, grad_out: Any) -> Any:
        xp = array_module(grad_out)
        shape = self._cached("_in_shape")
        return grad_out.reshape(shape) * xp.asarray(self.scale, dtype=grad_out.dtype)

    def extra_repr(self) -> str:
        return f"{tuple(numpy.shape(self.scale))} → {self.out_shape}"


class RawUnits:
    """``attack`` (its ε and bounds in raw-data units) applied to preprocessed inputs z:
    x = clip(invert(z)) is attacked through ``Sequential(affine, model)`` and the result
    is returned preprocessed. The clip to the attack's bounds only removes the rounding of
    the inversion (and clamps test data outside the training range)."""

    def __init__(self, attack: Any, affine: AffineInput) -> None:
        self.attack, self.affine = attack, affine

    def __call__(self, target: Module, z: Any, y: Any, rng: Any = None, loss: Any = None) -> Any:
        xp = array_module(z)
        raw = self.affine.invert(z)
        raw = xp.clip(raw, *self.attack._bounds(raw))
        adversarial = self.attack(Sequential(self.affine, target), raw, y, rng=rng, loss=loss)
        training = self.affine.training
        self.affine.eval()
        try:
            return self.affine.forward(adversarial)
        finally:
            self.affine.train(training)

    def __repr__(self) -> str:
        return f"{self.attack!r} in raw units"
