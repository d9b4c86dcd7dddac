"""Adversarial examples: FGSM and PGD (L∞ and L2), from the model's own input gradients.

An attack looks for a perturbation δ in the ε-ball B = {‖δ‖ ≤ ε} that raises the loss,

    max_{δ ∈ B, x + δ ∈ [lower, upper]}  L(f(x + δ), y),

with ∇ₓL from the model's bprop (``ermlab.robustness.gradients``: the gradient of the
model as evaluated — dropout off, batch norm with running statistics; noise that is
drawn at test time is drawn).

* FGSM (Goodfellow, Shlens & Szegedy 2015), one step:  x' = clip(x + ε sign ∇ₓL).
* PGD (Madry, Makelov, Schmidt, Tsipras & Vladu 2018), projected gradient ascent from a
  random start x₀ = clip(x + δ₀) (δ₀ uniform in B), T steps of size α:

      L∞:  x_{t+1} = clip(Π_∞(x_t + α sign ∇ₓL(x_t)))
      L2:  x_{t+1} = clip(Π_2(x_t + α ∇ₓL(x_t) / ‖∇ₓL(x_t)‖₂))

  where Π projects onto x + B (Π_∞ clips each coordinate to [x − ε, x + ε]; Π_2 scales
  δ = x' − x by min(1, ε/‖δ‖₂), norms per example) and clip onto [lower, upper].
  Clipping to the valid range after the projection keeps δ in B: x is in the range,
  so each coordinate of δ only moves toward 0. The default step α = 2.5 ε / T (Madry
  et al.'s rule). The last iterate is returned, as in Madry et al.'s code.

Randomized models: with ``samples=k`` each step uses the mean of k input gradients
(expectation over transformation, Athalye, Carlini & Wagner 2018), so an attack on a
noise-injected network follows E_ξ ∇ₓL rather than one noise draw. A target may be a
Module or an ``Ensemble`` (then L = −log of the averaged probability).

The random start draws from ``rng`` (a Generator, a seed, or None for the module-wide
generator) on the CPU, so a seeded attack repeats exactly, also on CuPy.

Example:
    >>> pgd = PGD(eps=0.1, steps=20)                     # L∞, pixels in [0, 1]
    >>> x_adv = pgd(model, x, y, rng=0)                  # doctest: +SKIP
    >>> robust_accuracy(model, x, y, pgd)                # doctest: +SKIP
"""

from __future__ import annotations

import math
from typing import Any

import numpy

from ermlab.backend import array_module, as_generator
from ermlab.robustness.gradients import input_gradient

NORMS = ("linf", "l2")


def _number(name: str, value: Any, who: str, low: float = 0.0, integer: bool = False) -> Any:
    kinds = (int,) if integer else (int, float, numpy.integer, numpy.floating)
    if isinstance(value, bool) or not isinstance(value, kinds) or not value > low:
        kind = "an integer" if integer else "a number"
        raise ValueError(f"{who} {name} must be {kind} > {low:g}; got {value!r}")
    return int(value) if integer else float(value)


class Attack:
    """Shared arguments and checks: ``eps``, ``bounds``, ``norm``, ``samples``, ``loss``.

    Args:
        eps: radius ε > 0 of the ball, in the units of the inputs the model takes.
        bounds: (lower, upper), the valid input range: numbers or arrays broadcastable
            to one example (e.g. the preprocessed images of pixels in [0, 1]).
        norm: "linf" (default) or "l2".
        samples: input gradients averaged per step (EOT; > 1 for randomized models).
        loss: the loss to raise (default softmax cross-entropy; ignored for Ensembles).

    ``attack(target, x, y, rng=None, loss=None)`` returns x + δ, of x's shape and dtype.
    """

    name = "attack"

    def __init__(self, eps: float, bounds: tuple[Any, Any] = (0.0, 1.0), norm: str = "linf",
                 samples: int = 1, loss: Any = None) -> None:
        who = type(self).__name__
        self.eps = _number("eps", eps, who)
        if norm not in NORMS:
            raise ValueError(f"{who} norm must be one of {NORMS}; got {norm!r}")
        self.norm = norm
        self.samples = _number("samples", samples, who, integer=True)
        self.loss = loss
        if len(bounds) != 2:
            raise ValueError(f"{who} bounds must be a pair (lower, upper); got {bounds!r}")
        lower, upper = (numpy.asarray(b, dtype=numpy.float64) for b in bounds)
        if not (lower < upper).all():
            raise ValueError(f"{who} bounds must have lower < upper everywhere; got "
                             f"[{lower.min():g}, {upper.max():g}]")
        self.lower, self.upper = lower, upper
        width = float((upper - lower).max())
        if norm == "linf" and self.eps >= width:
            raise ValueError(
                f"{who} eps {self.eps:g} is outside the data range: the inputs span "
                f"[{lower.min():g}, {upper.max():g}] (width {width:g}), and an L∞ ball that "
                "wide holds every input; give eps in the data's units (e.g. 0.1 for pixels "
                "in [0, 1]) or pass bounds= the valid input range")

    def __call__(self, target: Any, x: Any, y: Any, rng: Any = None, loss: Any = None) -> Any:
        self._check(x)
        return self.perturb(target, x, y, rng, self.loss if loss is None else loss)

    def perturb(self, target: Any, x: Any, y: Any, rng: Any, loss: Any) -> Any:
        raise NotImplementedError

    def _check(self, x: Any) -> None:
        who = type(self).__name__
        xp = array_module(x)
        if getattr(x, "dtype", None) is None or x.dtype.kind != "f" or x.ndim < 2:
            raise ValueError(f"{who} needs a float batch of inputs (N, ...); got "
                             f"{getattr(x, 'dtype', type(x).__name__)} of shape "
                             f"{tuple(getattr(x, 'shape', ()))}")
        lower, upper = self._bounds(x)
        outside = (x < lower) | (x > upper)
        if bool(outside.any()):
            raise ValueError(
                f"{who}: {int(outside.sum())} input values lie outside the attack bounds "
                f"[{self.lower.min():g}, {self.upper.max():g}] (inputs span "
                f"[{float(x.min()):g}, {float(x.max()):g}]); pass bounds= the valid range of "
                "the inputs the model takes (after preprocessing)")
        if self.norm == "l2":
            diameter = float(xp.sqrt(((upper - lower) ** 2).sum() / len(x)))
            if self.eps >= diameter:
                raise ValueError(
                    f"{who} eps {self.eps:g} is outside the data range: the L2 diameter of "
                    f"the valid inputs is {diameter:g}, so the ball holds every input; give "
                    "eps in the data's units")

    def _bounds(self, x: Any) -> tuple[Any, Any]:
        xp = array_module(x)
        shape = x.shape
        lower = xp.broadcast_to(xp.asarray(self.lower, dtype=x.dtype), shape)
        upper = xp.broadcast_to(xp.asarray(self.upper, dtype=x.dtype), shape)
        return lower, upper

    def gradient(self, target: Any, x: Any, y: Any, loss: Any) -> Any:
        """∇ₓL at x, averaged over ``samples`` passes."""
        grad = input_gradient(target, x, y, loss)
        for _ in range(self.samples - 1):
            grad = grad + input_gradient(target, x, y, loss)
        return grad if self.samples == 1 else grad / x.dtype.type(self.samples)

    def _ascent(self, grad: Any) -> Any:
        """The unit-norm ascent direction: sign g (L∞) or g / ‖g‖₂ per example (L2; 0 for g = 0)."""
        xp = array_module(grad)
        if self.norm == "linf":
            return xp.sign(grad)
        norms = xp.sqrt((grad.reshape(len(grad), -1) ** 2).sum(axis=1))
        norms = xp.where(norms > 0, norms, 1).astype(grad.dtype)
        return grad / norms.reshape((-1,) + (1,) * (grad.ndim - 1))

    def _project(self, x_adv: Any, x: Any) -> Any:
        """Π onto x + B, then clip onto [lower, upper]."""
        xp = array_module(x)
        eps = x.dtype.type(self.eps)
        if self.norm == "linf":
            x_adv = xp.clip(x_adv, x - eps, x + eps)
        else:
            delta = x_adv - x
            norms = xp.sqrt((delta.reshape(len(x), -1) ** 2).sum(axis=1))
            factor = xp.minimum(1, eps / xp.maximum(norms, xp.finfo(x.dtype).tiny))
            x_adv = x + delta * factor.astype(x.dtype).reshape((-1,) + (1,) * (x.ndim - 1))
        return xp.clip(x_adv, *self._bounds(x))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"

    def extra_repr(self) -> str:
        text = f"eps={self.eps:g}" + ("" if self.norm == "linf" else f", norm={self.norm!r}")
        return text + ("" if self.samples == 1 else f", samples={self.samples}")


class FGSM(Attack):
    """The fast gradient sign method (Goodfellow, Shlens & Szegedy, "Explaining and
    Harnessing Adversarial Examples", ICLR 2015): one step to the corner of the L∞ ball,

        x' = clip(x + ε sign ∇ₓL(f(x), y), lower, upper).

    With ``norm="l2"``, the fast gradient method x' = clip(x + ε ∇ₓL / ‖∇ₓL‖₂).
    """

    name = "fgsm"

    def perturb(self, target: Any, x: Any, y: Any, rng: Any, loss: Any) -> Any:
        step = self._ascent(self.gradient(target, x, y, loss))
        return self._project(x + x.dtype.type(self.eps) * step, x)


class PGD(Attack):
    """Projected gradient descent on the negative loss (Madry et al., "Towards Deep
    Learning Models Resistant to Adversarial Attacks", ICLR 2018); see the module
    docstring for the iteration.

    Args (besides ``Attack``'s):
        steps: iterations T ≥ 1 (default 10).
        step_size: α > 0 (default 2.5 ε / T).
        random_start: start from a uniform draw in the ball (default True).
    """

    name = "pgd"

    def __init__(self, eps: float, steps: int = 10, step_size: float | None = None,
                 random_start: bool = True, **options: Any) -> None:
        super().__init__(eps, **options)
        self.steps = _number("steps", steps, "PGD", integer=True)
        self.step_size = (2.5 * self.eps / self.steps if step_size is None
                          else _number("step_size", step_size, "PGD"))
        self.random_start = bool(random_start)

    def start(self, shape: tuple[int, ...], rng: Any = None) -> numpy.ndarray:
        """δ₀ uniform in the ball, float64 on the CPU: U[−ε, ε] per coordinate (L∞), or
        ε u^{1/d} z / ‖z‖₂ with z ~ N(0, I), u ~ U[0, 1] per example (L2)."""
        generator = as_generator(rng)
        if self.norm == "linf":
            return generator.uniform(-self.eps, self.eps, size=shape)
        n, d = shape[0], math.prod(shape[1:])
        z = generator.standard_normal((n, d))
        radius = self.eps * generator.random(n) ** (1.0 / d)
        z *= (radius / numpy.maximum(numpy.linalg.norm(z, axis=1), 1e-300))[:, None]
        return z.reshape(shape)

    def perturb(self, target: Any, x: Any, y: Any, rng: Any, loss: Any) -> Any:
        xp = array_module(x)
        x_adv = x
        if self.random_start:
            x_adv = self._project(x + xp.asarray(self.start(x.shape, rng), dtype=x.dtype), x)
        alpha = x.dtype.type(self.step_size)
        for _ in range(self.steps):
            step = self._ascent(self.gradient(target, x_adv, y, loss))
            x_adv = self._project(x_adv + alpha * step, x)
        return x_adv

    def extra_repr(self) -> str:
        text = super().extra_repr() + f", steps={self.steps}, step_size={self.step_size:g}"
        return text + ("" if self.random_start else ", random_start=False")


ATTACKS = {"fgsm": FGSM, "pgd": PGD}
_KEYS = {"fgsm": ("eps", "norm", "samples"),
         "pgd": ("eps", "steps", "step_size", "random_start", "norm", "samples")}


def parse(spec: str, bounds: tuple[Any, Any] = (0.0, 1.0)) -> Attack:
    """An attack from a short spec: ``fgsm:eps=0.1`` or ``pgd:eps=0.1,steps=20`` (keys: eps,
    steps, step_size, random_start (0/1), norm (linf/l2), samples)."""
    name, _, rest = str(spec).partition(":")
    name = name.strip().lower()
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r} in {spec!r}; use fgsm:eps=E or "
                         "pgd:eps=E,steps=T[,step_size=A,norm=l2,random_start=0,samples=K]")
    options: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in _KEYS[name]:
            raise ValueError(f"attack {spec!r}: {item!r} is not KEY=VALUE with KEY one of "
                             f"{', '.join(_KEYS[name])}")
        value = value.strip()
        try:
            if key == "norm":
                options[key] = value.lower()
            elif key in ("steps", "samples"):
                options[key] = int(value)
            elif key == "random_start":
                options[key] = {"0": False, "1": True, "false": False,
                                "true": True}[value.lower()]
            else:
                options[key] = float(value)
        except (ValueError, KeyError):
            raise ValueError(f"attack {spec!r}: {key}={value!r} is not a valid value") from None
    if "eps" not in options:
        raise ValueError(f"attack {spec!r} needs eps=E, the radius of the ball (e.g. eps=0.1)")
    return ATTACKS[name](bounds=bounds, **options)
