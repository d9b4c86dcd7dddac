"""The lab's problems: 2-D test functions and learning problems, each fully specified.

    get("rosenbrock")                      a 2-D function (``functions``)
    get("rosenbrock", noise=0.5)           its stochastic variant
    get("fmnist_2c2d", budget="small")     a learning problem (``learning``, ``catalog``)
    get("mlp", data_path="~/mnist")        on any MNIST-format IDX folder
    user_problem({"dataset": "digits", "hidden": [64], ...})

Every problem has ``train(make_optimizer, seed, epochs=None) -> curves``,
``spec()`` (its JSON specification), ``problem_name``, ``classification``,
``batch_size``, ``weight_decay`` and ``epochs``.
"""

from __future__ import annotations

from typing import Any

from ermlab.lab.problems import catalog, functions, learning, quadratic
from ermlab.lab.problems.catalog import PROBLEMS, learning_problem, user_problem
from ermlab.lab.problems.functions import BUDGETS, FUNCTIONS, FunctionProblem
from ermlab.lab.problems.learning import LearningProblem

BUDGET_NAMES = ("full", "small", "tiny")

__all__ = ["catalog", "functions", "learning", "quadratic"]
__all__ += ["FUNCTIONS", "PROBLEMS", "FunctionProblem", "LearningProblem", "describe", "get",
           "names", "user_problem"]


def names() -> list[str]:
    """Learning problems first, then the 2-D functions."""
    return [*PROBLEMS, *FUNCTIONS]


def get(name: str, budget: str = "full", data_path: str | None = None,
        **overrides: Any) -> FunctionProblem | LearningProblem:
    """The problem ``name`` at ``budget`` (full: published settings; small; tiny)."""
    if budget not in BUDGET_NAMES:
        raise ValueError(f"unknown budget {budget!r}; choose one of {', '.join(BUDGET_NAMES)}")
    key = str(name).strip().lower()
    if key.endswith("_noisy") and key[:-6] in FUNCTIONS:
        key, overrides = key[:-6], {"noise": 1.0, **overrides}
    if key in FUNCTIONS:
        options = {**BUDGETS[budget], **{k: v for k, v in overrides.items() if v is not None}}
        unknown = sorted(set(options) - {"noise", "epochs", "steps_per_epoch", "start"})
        if unknown:
            raise ValueError(f"{key}: a test function takes noise, epochs, steps_per_epoch and "
                             f"start; got {unknown}")
        return FunctionProblem(key, **options)
    if key in PROBLEMS:
        unknown = sorted(set(overrides) - {"epochs", "n_train", "n_valid", "n_test",
                                           "batch_size"})
        if unknown:
            raise ValueError(f"{key}: a learning problem takes epochs, n_train, n_valid, n_test "
                             f"and batch_size; got {unknown}")
        return learning_problem(key, budget, data_path, **overrides)
    raise ValueError(f"unknown problem {name!r}; choose one of {', '.join(names())} "
                     "(a 2-D function with '_noisy' for its stochastic variant), or give a "
                     "TOML file describing your own")


def describe(problem: FunctionProblem | LearningProblem) -> str:
    """One line: the name and the settings that specify the problem."""
    spec = problem.spec()
    keys = [k for k in spec if k not in ("kind", "name", "minima", "bounds")]
    return f"{problem.problem_name:16s} " + ", ".join(f"{k}={spec[k]}" for k in keys)
