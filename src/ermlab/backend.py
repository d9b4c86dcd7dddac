"""The array backend: which array module, which float type, which random stream.

* The array module comes from the data: ``array_module(x)`` is NumPy for NumPy
  arrays and CuPy for CuPy arrays, so one code path serves CPU and GPU
  (Chainer's ``get_array_module``). CuPy is untested on a GPU: ``tests/backend``
  runs layers, losses, optimizers, the Trainer and checkpoints on a strict CuPy
  stand-in (no implicit conversion to NumPy, no mixing with NumPy arrays) and
  checks them against the NumPy run; that proves the array module flows through
  the code, not that CUDA's arithmetic gives the same numbers.
* Floating point defaults to float32; ``set_default_dtype(numpy.float64)`` (or
  the ``default_dtype`` context manager) switches it, e.g. for gradient checks.
* Randomness flows from an explicit ``numpy.random.Generator``. Functions that
  draw random numbers take ``rng``: a Generator, an integer seed, or ``None``
  for the module-wide generator that ``seed(n)`` resets.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy

try:  # CuPy is optional: present only on machines with a GPU.
    import cupy
except Exception:  # pragma: no cover - exercised only where CuPy is installed
    cupy = None

_FLOAT_DTYPES = (numpy.dtype(numpy.float32), numpy.dtype(numpy.float64))
_default_dtype = numpy.dtype(numpy.float32)
_global_rng = numpy.random.default_rng(0)


def array_module(*arrays: Any):
    """Return ``cupy`` if any argument is a CuPy array, else ``numpy``."""
    if cupy is not None:
        return cupy.get_array_module(*arrays)
    return numpy


def on_device_of(reference: Any, x: Any) -> Any:
    """``x`` as an array of ``reference``'s module: a host (NumPy or memory-mapped) batch
    copied to the GPU when ``reference`` (a model's parameter) is a CuPy array, as torch
    users move each batch with ``.to(device)``; otherwise ``x`` itself (None stays None)."""
    if x is None or cupy is None:
        return x
    xp = array_module(reference)
    return x if xp is numpy or array_module(x) is xp else xp.asarray(x)


def to_numpy(x: Any) -> numpy.ndarray:
    """Return ``x`` as a NumPy array (copying from the GPU when it is a CuPy array)."""
    if cupy is not None and isinstance(x, cupy.ndarray):
        return cupy.asnumpy(x)
    return numpy.asarray(x)


def get_default_dtype() -> numpy.dtype:
    """The floating-point type new parameters and data get (float32 unless changed)."""
    return _default_dtype


def set_default_dtype(dtype: Any) -> None:
    """Set the default floating-point type: ``numpy.float32`` or ``numpy.float64``."""
    global _default_dtype
    dtype = numpy.dtype(dtype)
    if dtype not in _FLOAT_DTYPES:
        raise ValueError(f"default dtype must be float32 or float64; got {dtype}")
    _default_dtype = dtype


@contextlib.contextmanager
def default_dtype(dtype: Any) -> Iterator[numpy.dtype]:
    """Context manager: use ``dtype`` as the default inside the ``with`` block."""
    previous = _default_dtype
    set_default_dtype(dtype)
    try:
        yield _default_dtype
    finally:
        set_default_dtype(previous)


def resolve_dtype(dtype: Any = None) -> numpy.dtype:
    """``dtype`` as a NumPy float dtype, or the default one when ``None``."""
    if dtype is None:
        return _default_dtype
    dtype = numpy.dtype(dtype)
    if dtype not in _FLOAT_DTYPES:
        raise ValueError(f"dtype must be float32 or float64; got {dtype}")
    return dtype


def seed(n: int) -> None:
    """Reset the module-wide generator used when no ``rng`` is passed."""
    global _global_rng
    _global_rng = numpy.random.default_rng(n)


def as_generator(rng: numpy.random.Generator | int | None = None) -> numpy.random.Generator:
    """A ``numpy.random.Generator`` from a Generator, an integer seed, or ``None``.

    ``None`` gives the module-wide generator (see ``seed``); an integer gives a
    fresh generator seeded with it; a Generator is returned as it is.
    """
    if rng is None:
        return _global_rng
    if isinstance(rng, numpy.random.Generator):
        return rng
    if isinstance(rng, (int, numpy.integer)) and not isinstance(rng, bool):
        return numpy.random.default_rng(int(rng))
    raise TypeError(
        f"rng must be a numpy.random.Generator, an integer seed or None; got {type(rng).__name__}"
    )
