"""Mini-batches: shuffled every epoch from a seeded generator, optionally easy to hard."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy

from ermlab.backend import as_generator


def batches(
    n: int, batch_size: int | None, shuffle: bool = True, rng: Any = None
) -> Iterator[numpy.ndarray]:
    """Index arrays of consecutive mini-batches over ``n`` examples.

    ``batch_size=1`` is per-example SGD, ``None`` (or ≥ n) the full batch
    (batch gradient descent). With ``shuffle`` the order is a fresh permutation
    drawn from ``rng`` each call, i.e. each epoch (lazily: when iteration starts).
    """
    _check_batch_size(batch_size)
    order = as_generator(rng).permutation(n) if shuffle else numpy.arange(n)
    yield from _slices(order, batch_size)


def curriculum_order(
    difficulty: Any, epoch: int, sorted_epochs: int = 1, rng: Any = None
) -> numpy.ndarray:
    """The visiting order of one epoch under a curriculum (Bengio et al. 2009).

    Curriculum learning presents easy examples before hard ones. The choice
    made here: for the first ``sorted_epochs`` epochs (``epoch`` counts from
    0) the examples are visited in order of increasing ``difficulty`` (ties in
    random order), so every epoch still sees every example once; from then on
    the order is a uniform random permutation, as in plain SGD. Bengio et al.
    instead train on an easy *subset* first and then switch to the full set;
    pass ``x[order]`` subsets yourself for that variant.

    Bengio, Louradour, Collobert & Weston, "Curriculum learning", ICML 2009.
    """
    difficulty = numpy.asarray(difficulty, dtype=numpy.float64)
    if difficulty.ndim != 1:
        raise ValueError(f"difficulty must be one score per example (1-D); got shape "
                         f"{difficulty.shape}")
    if not numpy.isfinite(difficulty).all():
        raise ValueError("difficulty scores must be finite; got NaN or infinity at index "
                         f"{int(numpy.flatnonzero(~numpy.isfinite(difficulty))[0])}")
    rng = as_generator(rng)
    permutation = rng.permutation(len(difficulty))
    if epoch >= sorted_epochs:
        return permutation
    return permutation[numpy.argsort(difficulty[permutation], kind="stable")]


def curriculum_batches(
    difficulty: Any, batch_size: int | None, epoch: int, sorted_epochs: int = 1, rng: Any = None
) -> Iterator[numpy.ndarray]:
    """Mini-batches of one epoch in ``curriculum_order``: easy to hard, later shuffled."""
    _check_batch_size(batch_size)
    return _slices(curriculum_order(difficulty, epoch, sorted_epochs, rng), batch_size)


def _check_batch_size(batch_size: int | None) -> None:
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1 (or None for the full batch); got {batch_size}")


def _slices(order: numpy.ndarray, batch_size: int | None) -> Iterator[numpy.ndarray]:
    n = len(order)
    size = max(n, 1) if batch_size is None else min(batch_size, max(n, 1))
    return (order[start:start + size] for start in range(0, n, size))
