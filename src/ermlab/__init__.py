"""ermlab: neural networks trained by empirical risk minimization.

    argmin_θ (1/T) Σ_t l(f(x_t; θ), y_t) + λ Ω(θ)

Modules with explicit fprop/bprop (``ermlab.nn``), losses (``ermlab.losses``),
regularizers (``ermlab.regularizers``), optimizers (``ermlab.optim``) and a
finite-difference gradient checker (``ermlab.gradcheck``), on NumPy or CuPy.
Data (``ermlab.data``), training (``ermlab.training``), configurations
(``ermlab.config``), model selection (``ermlab.selection``) and scikit-learn
estimators (``ermlab.sklearn``) build on them.

``import ermlab`` is cheap: each submodule is imported the first time it is
used (``ermlab.nn`` works without ``import ermlab.nn``).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

SUBMODULES = (
    "backend", "cli", "config", "data", "distributed", "ensemble", "features", "gradcheck",
    "gradcheck_suite", "lab", "losses", "nn", "optim", "privacy", "regularizers", "robustness",
    "run", "selection", "sklearn", "threads", "training",
)


def __getattr__(name: str) -> Any:
    if name in SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *SUBMODULES])
