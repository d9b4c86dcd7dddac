"""``Dataset``: train and test splits with what is known about them."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy


@dataclass
class Dataset:
    """Train and test splits and what is known about them.

    x arrays are float (the default dtype) of shape (N, *input_shape), images in
    NCHW order ((N, 1, 28, 28) for MNIST, (N, 3, 32, 32) for CIFAR-10); y arrays
    are integer class labels in [0, num_classes) of shape (N,).
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
