"""Toy 2-D classification problems: two spirals, XOR, moons, circles, Gaussian blobs.

Each returns ``(x, y)``: x of shape (n, 2) in the default float dtype, y integer
class labels of shape (n,). Randomness comes from ``rng`` (Generator, seed or None).
"""

from __future__ import annotations

from typing import Any

import numpy

from ermlab.backend import as_generator, resolve_dtype


def two_spirals(
    n: int = 400, noise: float = 0.0, turns: float = 1.75, rng: Any = None, dtype: Any = None
) -> tuple[numpy.ndarray, numpy.ndarray]:
    """Two interleaved spirals (Lang & Witbrock 1988), ⌊n/2⌋ and ⌈n/2⌉ points.

    Class c ∈ {0, 1}: r = t, angle = 2π·turns·t + cπ, with t = √u for u
    uniform in [0.0025, 1): t in [0.05, 1) with density 2t/0.9975, so (the
    arm's length element growing about ∝ t) points are spread about evenly
    along each arm.
    """
    rng = as_generator(rng)
    y = _two_classes(n)
    t = numpy.sqrt(rng.uniform(0.0025, 1.0, size=n))
    angle = 2 * numpy.pi * turns * t + numpy.pi * y
    x = numpy.stack([t * numpy.cos(angle), t * numpy.sin(angle)], axis=-1)
    x += noise * rng.standard_normal(x.shape)
    return _shuffled(x, y, rng, dtype)


def xor(
    n: int = 4, noise: float = 0.0, rng: Any = None, dtype: Any = None
) -> tuple[numpy.ndarray, numpy.ndarray]:
    """XOR: label = x₁ XOR x₂ on the corners of {0, 1}², cycled to n points, plus noise."""
    rng = as_generator(rng)
    corners = numpy.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    x = corners[numpy.arange(n) % 4] + noise * rng.standard_normal((n, 2))
    y = numpy.array([0, 1, 1, 0])[numpy.arange(n) % 4]
    return _shuffled(x, y, rng, dtype) if n > 4 else _cast(x, y, dtype)


def moons(
    n: int = 400, noise: float = 0.1, rng: Any = None, dtype: Any = None
) -> tuple[numpy.ndarray, numpy.ndarray]:
    """Two interleaving half circles (as scikit-learn's ``make_moons``), ⌊n/2⌋ and ⌈n/2⌉
    points."""
    rng = as_generator(rng)
    y = _two_classes(n)
    angle = rng.uniform(0, numpy.pi, size=n)
    upper = numpy.stack([numpy.cos(angle), numpy.sin(angle)], axis=-1)
    lower = numpy.stack([1 - numpy.cos(angle), 0.5 - numpy.sin(angle)], axis=-1)
    x = numpy.where(y[:, None] == 0, upper, lower) + noise * rng.standard_normal((n, 2))
    return _shuffled(x, y, rng, dtype)


def circles(
    n: int = 400, noise: float = 0.05, factor: float = 0.5, rng: Any = None, dtype: Any = None
) -> tuple[numpy.ndarray, numpy.ndarray]:
    """A small circle (class 1, radius ``factor``, ⌈n/2⌉ points) inside a large one (class 0,
    radius 1, ⌊n/2⌋ points)."""
    rng = as_generator(rng)
    y = _two_classes(n)
    angle = rng.uniform(0, 2 * numpy.pi, size=n)
    radius = numpy.where(y == 0, 1.0, factor)
    x = numpy.stack([radius * numpy.cos(angle), radius * numpy.sin(angle)], axis=-1)
    x += noise * rng.standard_normal((n, 2))
    return _shuffled(x, y, rng, dtype)


def blobs(
    n: int = 400, centers: int = 3, std: float = 0.5, rng: Any = None, dtype: Any = None
) -> tuple[numpy.ndarray, numpy.ndarray]:
    """Isotropic Gaussian blobs around ``centers`` random centres in [−3, 3]²."""
    rng = as_generator(rng)
    means = rng.uniform(-3, 3, size=(centers, 2))
    y = numpy.arange(n) % centers
    x = means[y] + std * rng.standard_normal((n, 2))
    return _shuffled(x, y, rng, dtype)


TOY_PROBLEMS = {
    "two_spirals": two_spirals,
    "xor": xor,
    "moons": moons,
    "circles": circles,
    "blobs": blobs,
}


def _two_classes(n):
    """Labels of n points in order: ⌊n/2⌋ of class 0, then ⌈n/2⌉ of class 1 (as scikit-learn's
    ``make_moons`` and ``make_circles`` divide them)."""
    return numpy.repeat(numpy.arange(2), [n // 2, n - n // 2])


def _cast(x, y, dtype):
    return x.astype(resolve_dtype(dtype)), y.astype(numpy.int64)


def _shuffled(x, y, rng, dtype):
    order = rng.permutation(len(y))
    return _cast(x[order], y[order], dtype)
