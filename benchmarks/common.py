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


def blas_kernel() -> str:
    """NumPy's BLAS as threadpoolctl sees it (library, version, kernel, threads), and the CPU:
    figures from machines with different kernels cannot be compared."""
    import platform

    import numpy  # noqa: F401  (loads the BLAS that threadpoolctl inspects)

    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "threadpoolctl absent (pip install threadpoolctl)"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info
                       if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    blas = ", ".join(f"{i.get('internal_api')} {i.get('version')} {i.get('architecture')} "
                     f"{i.get('num_threads')} threads" for i in threadpool_info()
                     if i.get("user_api") == "blas") or "no BLAS loaded"
    return f"{blas}; CPU {cpu}"


def time_per_step(step: Callable[[], None], steps: int, warmup: int = 3) -> float:
    """Seconds per call of ``step``, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps
