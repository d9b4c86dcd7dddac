"""Train/validation/test splits and k-fold cross-validation, stratified and seeded.

These are thin wrappers over scikit-learn's splitters (``train_test_split``,
``StratifiedKFold``, ``KFold``) that return *index arrays*, so one split serves
any number of aligned arrays (inputs, labels, sample weights). Stratified means
every split keeps the class proportions of ``y`` (up to rounding); shuffled
means the assignment is random, drawn from ``seed``, and the same seed gives
the same split.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy

from ermlab.backend import as_generator


class Split(NamedTuple):
    """Index arrays of the three parts (``test`` is empty when no test part was asked for)."""

    train: numpy.ndarray
    validation: numpy.ndarray
    test: numpy.ndarray


def random_state(seed: Any) -> int:
    """An integer seed for scikit-learn from an int, a ``numpy.random.Generator`` or ``None``.

    A Generator (or ``None``: the module-wide one, see ``ermlab.backend.seed``)
    is advanced by one draw.
    """
    if isinstance(seed, (int, numpy.integer)) and not isinstance(seed, bool):
        return int(seed)
    return int(as_generator(seed).integers(2**31 - 1))


def train_val_test_split(
    y: Any, validation: float = 0.1, test: float = 0.0, seed: Any = 0, stratify: bool = True
) -> Split:
    """Indices of a shuffled train/validation/test split of ``len(y)`` examples.

    ``validation`` and ``test`` are fractions of the whole set (or absolute
    counts when ≥ 1). With ``stratify`` each part keeps the class proportions
    of ``y``; every class then needs at least one example per stratified part.
    Each index array is sorted.
    """
    from sklearn.model_selection import train_test_split

    y = numpy.asarray(y)
    n = len(y)
    sizes = {"validation": validation, "test": test}
    for what, size in sizes.items():
        if size < 0 or (size >= 1 and size != int(size)):
            raise ValueError(f"{what} must be a fraction in [0, 1) or a whole count; got {size}")
    counts = {what: int(round(size * n)) if size < 1 else int(size) for what, size in sizes.items()}
    if counts["validation"] + counts["test"] >= n:
        raise ValueError(f"validation ({counts['validation']}) and test ({counts['test']}) leave "
                         f"no training examples out of {n}")
    state = random_state(seed)
    rest, parts = numpy.arange(n), {}
    for what in ("test", "validation"):
        if counts[what] == 0:
            parts[what] = numpy.arange(0)
            continue
        try:
            rest, parts[what] = train_test_split(
                rest, test_size=counts[what], random_state=state,
                stratify=y[rest] if stratify else None)
        except ValueError as error:
            flag = {"validation": "--validation-fraction",
                    "test": "x_test and y_test in the .npz file"}[what]
            raise ValueError(
                f"cannot stratify the {what} split ({error}): every class needs an example in "
                f"each part; use a larger {what} fraction or pass stratify=False (command "
                f"line: {flag})") from None
    return Split(numpy.sort(rest), numpy.sort(parts["validation"]), numpy.sort(parts["test"]))


def train_validation_split(
    x: Any, y: Any, validation: float = 0.1, seed: Any = 0, stratify: bool = True
) -> tuple[Any, Any, Any, Any]:
    """``(x_train, y_train, x_val, y_val)``: a stratified shuffled split of arrays."""
    if len(x) != len(y):
        raise ValueError(f"x and y have different lengths: {len(x)} and {len(y)}")
    split = train_val_test_split(y, validation, 0.0, seed, stratify)
    return x[split.train], y[split.train], x[split.validation], y[split.validation]


def kfold_indices(
    y: Any, k: int = 5, seed: Any = 0, stratify: bool = True, shuffle: bool = True
) -> list[tuple[numpy.ndarray, numpy.ndarray]]:
    """``k`` pairs ``(train, validation)`` of index arrays; each example validates exactly once.

    Stratified k-fold (``StratifiedKFold``) keeps the class proportions in
    every fold; it needs every class to have at least ``k`` examples.
    """
    from sklearn.model_selection import KFold, StratifiedKFold

    y = numpy.asarray(y)
    if not 2 <= k <= len(y):
        raise ValueError(f"k must be in [2, {len(y)}] for {len(y)} examples; got {k}")
    options = {"n_splits": k, "shuffle": shuffle,
               "random_state": random_state(seed) if shuffle else None}
    splitter = StratifiedKFold(**options) if stratify else KFold(**options)
    try:
        return list(splitter.split(numpy.zeros((len(y), 1)), y))
    except ValueError as error:
        raise ValueError(f"cannot make {k} stratified folds ({error}); pass stratify=False or "
                         "a smaller k (command line: a smaller cv in [search])") from None
