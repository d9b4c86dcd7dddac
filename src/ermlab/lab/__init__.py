"""The optimizer lab: benchmark problems, a tuning protocol, results and metrics.

    problems   the 2-D test functions and the learning problems, fully specified
    protocol   equal tuning budget per optimizer, best setting rerun over seeds
    results    one JSON file per run, DeepOBS's layout (resumable, mergeable)
    metrics    final/best test metrics with seed spread, time to target (AlgoPerf),
               learning-rate sensitivity, performance profiles (Dolan & Moré)

``ermlab lab run`` is the command line over the same functions.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any


def __getattr__(name: str) -> Any:
    """``ermlab.lab.protocol`` etc. without importing them first (imported on first use)."""
    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
