"""Parameter initialization.

Every initializer has the signature ``init(shape, rng=None, dtype=None) -> array``
and returns a NumPy array of the default dtype (float32 unless changed).
Shapes follow torch's layout: (out, in) for fully connected weights and
(out, in, k_h, k_w) for convolution kernels, so

    fan_in  = in  · k_h · k_w   (H_{k−1}, the units feeding a unit)
    fan_out = out · k_h · k_w   (H_k, the units a unit feeds)

Biases start at 0. Why not all zeros for weights too: with zero weights and
tanh, every hidden gradient is zero, and with equal weights every hidden unit
of a layer stays identical forever — random initialization breaks symmetry.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy

from ermlab.backend import as_generator, resolve_dtype

Initializer = Callable[..., numpy.ndarray]


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight of ``shape`` (out, in, *kernel)."""
    if len(shape) < 2:
        raise ValueError(f"fan-in and fan-out need a weight of rank ≥ 2; got shape {shape}")
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def zeros(shape: tuple[int, ...], rng: Any = None, dtype: Any = None) -> numpy.ndarray:
    """All zeros (the default for biases)."""
    return numpy.zeros(shape, dtype=resolve_dtype(dtype))


def constant(value: float) -> Initializer:
    """An initializer that fills with ``value``: ``constant(0.1)(shape)``."""

    def init(shape: tuple[int, ...], rng: Any = None, dtype: Any = None) -> numpy.ndarray:
        return numpy.full(shape, value, dtype=resolve_dtype(dtype))

    init.__name__ = f"constant({value})"
    return init


def uniform(low: float = -0.05, high: float = 0.05) -> Initializer:
    """An initializer drawing from U[low, high]."""

    def init(shape: tuple[int, ...], rng: Any = None, dtype: Any = None) -> numpy.ndarray:
        return _uniform(shape, low, high, rng, dtype)

    init.__name__ = f"uniform({low}, {high})"
    return init


def normal(mean: float = 0.0, std: float = 0.05) -> Initializer:
    """An initializer drawing from N(mean, std²)."""

    def init(shape: tuple[int, ...], rng: Any = None, dtype: Any = None) -> numpy.ndarray:
        return _normal(shape, mean, std, rng, dtype)

    init.__name__ = f"normal({mean}, {std})"
    return init


def glorot_uniform(shape: tuple[int, ...], rng: Any = None, dtype: Any = None) -> numpy.ndarray:
    """Glorot & Bengio (2010): W ~ U[−b, b], b = √6 / √(H_k + H_{k−1}).

    Variance b²/3 = 2 / (fan_in + fan_out).
    """
    fan_in, fan_out = fans(shape)
    bound = math.sqrt(6.0) / math.sqrt(fan_in + fan_out)
    return _uniform(shape, -bound, bound, rng, dtype)


def glorot_normal(shape: tuple[int, ...], rng: Any = None, dtype: Any = None) -> numpy.ndarray:
    """Glorot & Bengio (2010), normal form: W ~ N(0, 2 / (fan_in + fan_out))."""
    fan_in, fan_out = fans(shape)
    return _normal(shape, 0.0, math.sqrt(2.0 / (fan_in + fan_out)), rng, dtype)


def he_uniform(shape: tuple[int, ...], rng: Any = None, dtype: Any = None) -> numpy.ndarray:
    """He et al. (2015), for ReLU: W ~ U[−b, b], b = √(6 / fan_in) (variance 2 / fan_in)."""
    fan_in, _ = fans(shape)
    bound = math.sqrt(6.0 / fan_in)
    return _uniform(shape, -bound, bound, rng, dtype)


def he_normal(shape: tuple[int, ...], rng: Any = None, dtype: Any = None) -> numpy.ndarray:
    """He et al. (2015), for ReLU: W ~ N(0, 2 / fan_in)."""
    fan_in, _ = fans(shape)
    return _normal(shape, 0.0, math.sqrt(2.0 / fan_in), rng, dtype)


def lecun_normal(shape: tuple[int, ...], rng: Any = None, dtype: Any = None) -> numpy.ndarray:
    """LeCun et al. (1998): W ~ N(0, 1 / fan_in)."""
    fan_in, _ = fans(shape)
    return _normal(shape, 0.0, math.sqrt(1.0 / fan_in), rng, dtype)


INITIALIZERS: dict[str, Initializer] = {
    "zeros": zeros,
    "glorot_uniform": glorot_uniform,
    "glorot_normal": glorot_normal,
    "he_uniform": he_uniform,
    "he_normal": he_normal,
    "lecun_normal": lecun_normal,
    "uniform": uniform(),
    "normal": normal(),
}


def get(init: str | Initializer) -> Initializer:
    """An initializer by name (see ``INITIALIZERS``) or the callable itself."""
    if callable(init):
        return init
    try:
        return INITIALIZERS[init]
    except KeyError:
        raise ValueError(
            f"unknown initializer {init!r}; choose one of {sorted(INITIALIZERS)} or pass a "
            "callable init(shape, rng, dtype)"
        ) from None


def _uniform(shape, low, high, rng, dtype) -> numpy.ndarray:
    sample = as_generator(rng).uniform(low, high, size=shape)
    return sample.astype(resolve_dtype(dtype), copy=False)


def _normal(shape, mean, std, rng, dtype) -> numpy.ndarray:
    sample = as_generator(rng).normal(mean, std, size=shape)
    return sample.astype(resolve_dtype(dtype), copy=False)
