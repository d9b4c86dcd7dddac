"""Mini-batches: shuffled every epoch from a seeded generator."""

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
    drawn from ``rng`` each call, i.e. each epoch.
    """
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1 (or None for the full batch); got {batch_size}")
    size = n if batch_size is None else min(batch_size, n)
    order = as_generator(rng).permutation(n) if shuffle else numpy.arange(n)
    for start in range(0, n, size):
        yield order[start:start + size]
