"""Train/validation/test splits and k-fold cross-validation, stratified and seeded.

These are wrappers over scikit-learn's splitters (``train_test_split``,
``StratifiedKFold``, ``KFold``) that return *index arrays*, so one split serves
any number of aligned arrays (inputs, labels, sample weights). Stratified means
every split keeps the class proportions of ``y`` (up to rounding); shuffled
means the assignment is random, drawn from ``seed``, and the same seed gives
the same split.

A stratified split of integer labels is drawn here, not by scikit-learn
(``stratified_shuffle_split``): the same algorithm and the same draws as its
``StratifiedShuffleSplit``, so the same examples land in each part, but each
part gathered with array operations. scikit-learn builds each part as a Python
list of indices, 0.17 s per split of a million labels, twice in ``ermlab
train`` on a file without a test set; 0.06 s here. The tests hold the two
equal, part for part.
"""

from __future__ import annotations

import math
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
    counts when ≥ 1). A fraction f of n examples is ⌈f·n⌉ of them, as
    scikit-learn's ``train_test_split(test_size=f)`` counts its test part. The
    test part is drawn first, from all n examples, then the validation part
    from the rest, each as ``train_test_split(rest, test_size=count,
    random_state=seed, stratify=y[rest])`` draws it. So with one part (the
    other 0) the split is ``train_test_split(..., test_size=f)``'s; with both
    it is those two draws, of ⌈f_test·n⌉ and ⌈f_validation·n⌉ examples (not
    scikit-learn's ⌈f·(n − n_test)⌉ for a second call given a fraction). With
    ``stratify`` each part keeps the class proportions of ``y``; every class
    then needs at least one example per stratified part. Each index array is
    sorted.
    """
    from sklearn.model_selection import train_test_split

    y = numpy.asarray(y)
    n = len(y)
    counts = {what: _count(size, n, what) for what, size in (("validation", validation),
                                                            ("test", test))}
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
            if stratify and y.ndim == 1 and y.dtype.kind in "iub":
                keep, held = stratified_shuffle_split(y[rest], counts[what], state)
                rest, parts[what] = rest[keep], rest[held]
            else:
                rest, parts[what] = train_test_split(
                    rest, test_size=counts[what], random_state=state,
                    stratify=y[rest] if stratify else None)
        except ValueError as error:
            raise ValueError(
                f"cannot stratify the {what} split ({error}): every class needs an example in "
                f"each part; {_stratify_advice(y[rest], counts[what], what)}") from None
    return Split(numpy.sort(rest), numpy.sort(parts["validation"]), numpy.sort(parts["test"]))


def _count(size: Any, n: int, what: str) -> int:
    """The number of examples a fraction (⌈size·n⌉, scikit-learn's rule) or a count asks for."""
    if not numpy.isfinite(size) or size < 0 or (size >= 1 and size != int(size)):
        raise ValueError(f"{what} must be a fraction in [0, 1) or a whole count; got {size}")
    return math.ceil(size * n) if size < 1 else int(size)


def _stratify_advice(y: numpy.ndarray, held: int, what: str) -> str:
    """What to change when ``held`` of the labels ``y`` cannot be drawn stratified: the side
    with fewer examples than classes, or (a class of one example) stratification."""
    classes = len(numpy.unique(y))
    hint = {"validation": "command line: --validation-fraction",
            "test": "or give the data a test set of its own"}[what]
    if held < classes:
        change = f"use a larger {what} fraction or "
    elif len(y) - held < classes:
        change = (f"use a smaller {what} fraction (it leaves {len(y) - held} of {len(y)} "
                  f"examples for {classes} classes) or ")
    else:
        change = ""
    return f"{change}pass stratify=False ({hint})"


def stratified_shuffle_split(y: Any, n_test: int, seed: int) -> tuple[numpy.ndarray,
                                                                       numpy.ndarray]:
    """``(train, test)``: positions in the labels ``y`` (1-D, integers) of a stratified
    shuffled split with ``n_test`` test examples, in the order scikit-learn's
    ``train_test_split(..., stratify=y, random_state=seed)`` gives them.

    Its ``StratifiedShuffleSplit``: from ``numpy.random.RandomState(seed)``, the
    training and then the test count of each class (``_allocation``), one permutation
    of each class's examples (class by class, in sorted order; its first counts go to
    training, the next to test), then one permutation of each part.
    """
    n = len(y)
    n_train = n - n_test
    order = numpy.argsort(y, kind="stable")  # each class's positions, in order, class by class
    ordered = y[order]
    starts = numpy.concatenate([[0], numpy.flatnonzero(ordered[1:] != ordered[:-1]) + 1])
    sizes = numpy.diff(numpy.append(starts, n))
    if sizes.min() < 2:
        raise ValueError(f"class {ordered[starts[sizes.argmin()]]} has only 1 example, and "
                         "each class needs at least 2")
    if min(n_train, n_test) < len(sizes):
        raise ValueError(f"{min(n_train, n_test)} examples cannot hold one of each of "
                         f"{len(sizes)} classes")
    rng = numpy.random.RandomState(seed)
    train_counts = _allocation(sizes, n_train, rng)
    test_counts = _allocation(sizes - train_counts, n_test, rng)
    train, test = [], []
    for start, size, k, t in zip(starts, sizes, train_counts, test_counts, strict=True):
        shuffled = order[start:start + size][rng.permutation(size)]
        train.append(shuffled[:k])
        test.append(shuffled[k:k + t])
    return rng.permutation(numpy.concatenate(train)), rng.permutation(numpy.concatenate(test))


def _allocation(sizes: numpy.ndarray, draws: int, rng: numpy.random.RandomState) -> numpy.ndarray:
    """How many of ``draws`` examples each class of ``sizes`` examples gets: ⌊draws·nᵢ/N⌋,
    then one more each for the classes of the largest remainders, ties drawn at random
    (scikit-learn's ``_approximate_mode``, with the same draws from ``rng``)."""
    share = sizes / sizes.sum() * draws
    counts = numpy.floor(share)
    missing = int(draws - counts.sum())
    if missing > 0:
        remainder = share - counts
        for value in numpy.sort(numpy.unique(remainder))[::-1]:
            tied = numpy.flatnonzero(remainder == value)
            now = min(len(tied), missing)
            counts[rng.choice(tied, size=now, replace=False)] += 1
            missing -= now
            if missing == 0:
                break
    return counts.astype(int)


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
    every fold; it needs every class to have at least ``k`` examples (a class
    with fewer would be missing from some folds: refused, where scikit-learn
    only warns).
    """
    from sklearn.model_selection import KFold, StratifiedKFold

    y = numpy.asarray(y)
    if not 2 <= k <= len(y):
        raise ValueError(f"k must be in [2, {len(y)}] for {len(y)} examples; got {k}")
    if stratify:
        classes, sizes = numpy.unique(y, return_counts=True)
        small = sizes.argmin()
        if sizes[small] < k:
            fix = ("pass stratify=False or a smaller k (command line: a smaller cv in [search])"
                   if sizes[small] >= 2 else "no k ≥ 2 puts it in every fold: pass stratify=False")
            raise ValueError(f"cannot make {k} stratified folds: class {classes[small]} has "
                             f"{sizes[small]} example(s), and each class needs at least {k}; "
                             f"{fix}")
    options = {"n_splits": k, "shuffle": shuffle,
               "random_state": random_state(seed) if shuffle else None}
    splitter = StratifiedKFold(**options) if stratify else KFold(**options)
    try:
        return list(splitter.split(numpy.zeros((len(y), 1)), y))
    except ValueError as error:
        raise ValueError(f"cannot make {k} stratified folds ({error}); pass stratify=False or "
                         "a smaller k (command line: a smaller cv in [search])") from None
