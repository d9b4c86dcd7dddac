"""The dataset registry: ``load(name)`` returns train and test arrays with their metadata."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy

from ermlab.backend import resolve_dtype
from ermlab.data import toy


@dataclass
class Dataset:
    """Train and test splits and what is known about them.

    x arrays are float (the default dtype) of shape (N, *input_shape); y arrays
    are integer class labels of shape (N,).
    """

    name: str
    x_train: numpy.ndarray
    y_train: numpy.ndarray
    x_test: numpy.ndarray
    y_test: numpy.ndarray
    class_names: list[str] = field(default_factory=list)
    description: str = ""

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}: train {self.x_train.shape}, test {self.x_test.shape}, "
            f"{self.num_classes} classes)"
        )


def _digits(test_fraction: float = 0.25, seed: int = 0, dtype: Any = None) -> Dataset:
    """scikit-learn's bundled 8×8 handwritten digits (1,797 images, pixel values 0–16).

    ships with scikit-learn, so it loads with no network. There is no official
    split: a stratified split with a fixed seed is used, the same every time.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = (bunch.data / 16.0).astype(resolve_dtype(dtype))
    y = bunch.target.astype(numpy.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_fraction, stratify=y, random_state=seed
    )
    return Dataset("digits", x_train, y_train, x_test, y_test,
                   [str(d) for d in range(10)], "8×8 handwritten digits, scaled to [0, 1]")


def _toy(name: str):
    def loader(n: int = 1000, seed: int = 0, dtype: Any = None, **kwargs: Any) -> Dataset:
        x, y = toy.TOY_PROBLEMS[name](n=n, rng=seed, dtype=dtype, **kwargs)
        cut = (3 * len(y)) // 4
        classes = [str(c) for c in range(int(y.max()) + 1)]
        return Dataset(name, x[:cut], y[:cut], x[cut:], y[cut:], classes, f"toy 2-D: {name}")

    return loader


LOADERS = {"digits": _digits, **{name: _toy(name) for name in toy.TOY_PROBLEMS}}


def names() -> list[str]:
    """The names ``load`` accepts."""
    return sorted(LOADERS)


def load(name: str, **options: Any) -> Dataset:
    """Load a dataset by name (see ``names()``)."""
    try:
        loader = LOADERS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; available: {', '.join(names())}") from None
    return loader(**options)
