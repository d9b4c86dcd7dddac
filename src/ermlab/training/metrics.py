"""Classification metrics."""

from __future__ import annotations

import numpy


def accuracy(y_true: numpy.ndarray, y_pred: numpy.ndarray) -> float:
    """Fraction of predictions equal to the labels."""
    return float(numpy.mean(numpy.asarray(y_true) == numpy.asarray(y_pred)))
