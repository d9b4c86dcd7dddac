"""2-D test functions with exact gradients, as problems any ermlab optimizer minimizes.

Each function is f(x, y) with its gradient written out by hand; the iterate is
one ``Parameter`` of shape (2,) (float64), so every ``ermlab.optim`` optimizer
runs on it unchanged. With ``noise=σ > 0`` the optimizer sees the stochastic
gradient g̃ = ∇f(θ) + σξ, ξ ~ N(0, I) (the stochastic variant); the loss
reported is always the exact f(θ).

===================  ===========================================  =====================
name                 f(x, y)                                      minima (f*)
===================  ===========================================  =====================
rosenbrock           (1 − x)² + 100 (y − x²)²                     (1, 1) (0)
beale                (1.5 − x + xy)² + (2.25 − x + xy²)²          (3, 0.5) (0)
                     + (2.625 − x + xy³)²
booth                (x + 2y − 7)² + (2x + y − 5)²                (1, 3) (0)
himmelblau           (x² + y − 11)² + (x + y² − 7)²               four, e.g. (3, 2) (0)
saddle               x² − y²                                      none (saddle at 0)
monkey_saddle        x³ − 3xy²                                    none (saddle at 0)
quadratic            ½ (x² + κ y²), κ = 50 (ill-conditioned)      (0, 0) (0)
===================  ===========================================  =====================

References: Rosenbrock (1960), Beale (1958), Himmelblau (1972); the list and
starting points follow the optimization-test-function collections used by the
seeds' animations (Alec Radford's 2014 contour/saddle animations).

An "epoch" of a function problem is ``steps_per_epoch`` updates; the run
records f after every step (``minibatch_train_losses``) and the iterate
(``trajectory``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy

from ermlab.nn.parameter import Parameter

Vector = numpy.ndarray


def rosenbrock(p: Vector) -> tuple[float, Vector]:
    x, y = p
    value = (1 - x) ** 2 + 100 * (y - x * x) ** 2
    grad = numpy.array([-2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)])
    return value, grad


def beale(p: Vector) -> tuple[float, Vector]:
    x, y = p
    a, b, c = 1.5 - x + x * y, 2.25 - x + x * y * y, 2.625 - x + x * y ** 3
    value = a * a + b * b + c * c
    grad = numpy.array([2 * a * (y - 1) + 2 * b * (y * y - 1) + 2 * c * (y ** 3 - 1),
                        2 * a * x + 4 * b * x * y + 6 * c * x * y * y])
    return value, grad


def booth(p: Vector) -> tuple[float, Vector]:
    x, y = p
    a, b = x + 2 * y - 7, 2 * x + y - 5
    return a * a + b * b, numpy.array([2 * a + 4 * b, 4 * a + 2 * b])


def himmelblau(p: Vector) -> tuple[float, Vector]:
    x, y = p
    a, b = x * x + y - 11, x + y * y - 7
    return a * a + b * b, numpy.array([4 * a * x + 2 * b, 2 * a + 4 * b * y])


def saddle(p: Vector) -> tuple[float, Vector]:
    x, y = p
    return x * x - y * y, numpy.array([2 * x, -2 * y])


def monkey_saddle(p: Vector) -> tuple[float, Vector]:
    x, y = p
    return x ** 3 - 3 * x * y * y, numpy.array([3 * x * x - 3 * y * y, -6 * x * y])


CONDITION = 50.0


def quadratic(p: Vector) -> tuple[float, Vector]:
    """½ pᵀ H p with H = diag(1, κ), κ = ``CONDITION``."""
    x, y = p
    return 0.5 * (x * x + CONDITION * y * y), numpy.array([x, CONDITION * y])


@dataclass(frozen=True)
class TestFunction:
    """A 2-D function, its start, its known minima and a window that shows it."""

    function: Callable[[Vector], tuple[float, Vector]]
    start: tuple[float, float]
    minima: tuple[tuple[float, float], ...]
    bounds: tuple[tuple[float, float], tuple[float, float]]  # ((x_lo, x_hi), (y_lo, y_hi))
    minimum_value: float | None = 0.0


FUNCTIONS: dict[str, TestFunction] = {
    "rosenbrock": TestFunction(rosenbrock, (-1.2, 1.0), ((1.0, 1.0),), ((-2, 2), (-1, 3))),
    "beale": TestFunction(beale, (1.0, 1.4), ((3.0, 0.5),), ((-4.5, 4.5), (-4.5, 4.5))),
    "booth": TestFunction(booth, (-6.0, -4.0), ((1.0, 3.0),), ((-10, 10), (-10, 10))),
    "himmelblau": TestFunction(
        himmelblau, (0.0, 0.0),
        ((3.0, 2.0), (-2.805118, 3.131312), (-3.779310, -3.283186), (3.584428, -1.848126)),
        ((-5, 5), (-5, 5))),
    "saddle": TestFunction(saddle, (1.0, 1e-3), (), ((-1.5, 1.5), (-1.5, 1.5)), None),
    "monkey_saddle": TestFunction(monkey_saddle, (0.5, 0.1), (), ((-1.5, 1.5), (-1.5, 1.5)),
                                  None),
    "quadratic": TestFunction(quadratic, (-3.0, 1.0), ((0.0, 0.0),), ((-4, 4), (-2, 2))),
}

BUDGETS = {"full": {"epochs": 50}, "small": {"epochs": 20}, "tiny": {"epochs": 5}}


@dataclass
class FunctionProblem:
    """Minimize a 2-D test function from its start (``TestFunction.start`` or ``start``).

    Args:
        name: a key of ``FUNCTIONS``.
        noise: σ of the Gaussian gradient noise (0: exact gradients).
        epochs, steps_per_epoch: the budget, epochs × steps updates.
        start: the initial iterate (default the function's).
    """

    name: str
    noise: float = 0.0
    epochs: int = 50
    steps_per_epoch: int = 10
    start: tuple[float, float] | None = None
    classification: bool = field(default=False, init=False)
    batch_size: None = field(default=None, init=False)
    weight_decay: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        if self.name not in FUNCTIONS:
            raise ValueError(f"unknown test function {self.name!r}; choose one of "
                             f"{', '.join(FUNCTIONS)}")
        if not self.noise >= 0:
            raise ValueError(f"{self.name}: noise is a standard deviation ≥ 0; got {self.noise}")
        for key in ("epochs", "steps_per_epoch"):
            if int(getattr(self, key)) != getattr(self, key) or getattr(self, key) < 1:
                raise ValueError(f"{self.name}: {key} must be an integer ≥ 1; "
                                 f"got {getattr(self, key)!r}")

    @property
    def function(self) -> TestFunction:
        return FUNCTIONS[self.name]

    @property
    def problem_name(self) -> str:
        return self.name if not self.noise else f"{self.name}_noisy"

    def spec(self) -> dict[str, Any]:
        """What fully specifies this problem (JSON)."""
        test = self.function
        return {"kind": "function", "name": self.name, "noise": self.noise,
                "epochs": self.epochs, "steps_per_epoch": self.steps_per_epoch,
                "start": list(self.start or test.start), "minima": [list(m) for m in test.minima],
                "bounds": [list(b) for b in test.bounds], "minimum_value": test.minimum_value}

    def train(self, make_optimizer: Callable[[list[Parameter]], Any], seed: int,
              epochs: int | None = None) -> dict[str, Any]:
        """Run the optimizer for ``epochs`` × ``steps_per_epoch`` steps; the run's curves."""
        epochs = self.epochs if epochs is None else int(epochs)
        rng = numpy.random.default_rng(seed)
        theta = Parameter(numpy.array(self.start or self.function.start, dtype=numpy.float64),
                          "theta", regularize=False)
        optimizer = make_optimizer([theta])
        f = self.function.function
        losses = [float(f(theta.data)[0])]
        trajectory, steps, times = [theta.data.tolist()], [], [0.0]
        diverged, start, elapsed = False, time.perf_counter(), 0.0
        for _ in range(epochs):
            tick = time.perf_counter()
            for _ in range(self.steps_per_epoch):
                value, grad = f(theta.data)
                if self.noise:
                    grad = grad + self.noise * rng.standard_normal(2)
                optimizer.zero_grad()
                theta.grad[...] = grad
                optimizer.step()
                steps.append(float(value))
                trajectory.append(theta.data.tolist())
            elapsed += time.perf_counter() - tick
            losses.append(float(f(theta.data)[0]))
            times.append(elapsed)
            if not (math.isfinite(losses[-1]) and numpy.isfinite(theta.data).all()):
                diverged = True
                break
        return {"train_losses": losses, "valid_losses": list(losses), "test_losses": list(losses),
                "minibatch_train_losses": steps, "train_times": times,
                "wall_time": time.perf_counter() - start, "diverged": diverged,
                "trajectory": trajectory}
