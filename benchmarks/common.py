"""Pieces the benchmark scripts share: the PyTorch twin of ``ermlab.nn.mlp`` and a step timer."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence


def torch_mlp(sizes: Sequence[int]):
    """torch.nn.Sequential(Linear, ReLU, …, Linear): the architecture of ``ermlab.nn.mlp``."""
    import torch

    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(torch.nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


def time_per_step(step: Callable[[], None], steps: int, warmup: int = 3) -> float:
    """Seconds per call of ``step``, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps
