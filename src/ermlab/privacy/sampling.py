"""Poisson sampling of mini-batches, the sampling DP-SGD's privacy analysis assumes.

Each of an epoch's ``steps`` batches takes every one of the N examples independently
with probability q (Abadi et al. 2016, §3.1, "lots"; Mironov et al. 2019 for its Rényi
analysis). Batch sizes vary (Binomial(N, q), mean q·N) and may be 0: a step is still
taken, with noise only. The shuffled batches of ordinary SGD are *not* what the
accountant analyses; Poisson sampling is what this package uses.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy


def poisson_batches(n: int, sample_rate: float, steps: int,
                    rng: numpy.random.Generator) -> Iterator[numpy.ndarray]:
    """``steps`` index arrays; each example is in each batch with probability ``sample_rate``."""
    if not 0 < sample_rate <= 1:
        raise ValueError(f"sample_rate must be in (0, 1]; got {sample_rate}")
    for _ in range(steps):
        yield numpy.flatnonzero(rng.random(n) < sample_rate)
