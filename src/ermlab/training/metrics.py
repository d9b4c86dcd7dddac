"""Classification metrics: accuracy, top-k accuracy, the confusion matrix.

Metrics are computed on the host (NumPy) from labels and scores; they are cheap
next to a forward pass and their results are Python floats or small tables.
Conventions are scikit-learn's (``sklearn.metrics``): weighted means with
``sample_weight``, and the confusion matrix has the true class on the rows.
"""

from __future__ import annotations

from typing import Any

import numpy

from ermlab.backend import to_numpy


def accuracy(y_true: Any, y_pred: Any, sample_weight: Any = None) -> float:
    """Fraction of correct predictions, Σ_i w_i [ŷ_i = y_i] / Σ_i w_i (w_i = 1 by default)."""
    y_true, y_pred = _pair(y_true, y_pred, "y_pred")
    return _weighted_mean(y_true == y_pred, sample_weight)


def top_k_accuracy(y_true: Any, scores: Any, k: int = 5, sample_weight: Any = None) -> float:
    """Fraction of samples whose true class is among the k highest scores.

        hit_i = [ #{c : s_ic > s_{i,y_i}} < k ]

    i.e. fewer than k classes score strictly higher than the true one. With
    distinct scores this is scikit-learn's ``top_k_accuracy_score``; with ties
    it gives the sample the benefit of the doubt (scikit-learn breaks ties by
    class order). ``k = 1`` is the accuracy of the argmax when scores are distinct.
    """
    if int(k) != k or k < 1:
        raise ValueError(f"top-k accuracy needs an integer k ≥ 1; got {k}")
    scores = to_numpy(scores)
    if scores.ndim != 2:
        raise ValueError(
            f"top-k accuracy needs scores of shape (N, C); got shape {scores.shape}"
        )
    y_true = _labels(y_true, len(scores), scores.shape[1])
    true_score = scores[numpy.arange(len(scores)), y_true]
    higher = (scores > true_score[:, None]).sum(axis=1)
    return _weighted_mean(higher < k, sample_weight)


def confusion_matrix(
    y_true: Any, y_pred: Any, num_classes: int | None = None, sample_weight: Any = None
) -> numpy.ndarray:
    """C[i, j] = (weighted) number of samples of true class i predicted as class j.

    Rows are true classes, columns predictions, as in scikit-learn (whose
    ``confusion_matrix`` sizes the table by the labels present; here it is
    ``num_classes`` × ``num_classes``, default 1 + the largest label seen).
    Integer counts without weights, floats with.
    """
    y_true, y_pred = _pair(y_true, y_pred, "y_pred")
    if num_classes is None:
        num_classes = int(max(y_true.max(initial=-1), y_pred.max(initial=-1))) + 1
    y_true = _labels(y_true, len(y_true), num_classes)
    y_pred = _labels(y_pred, len(y_pred), num_classes, "predictions")
    weights = None if sample_weight is None else _weights(sample_weight, len(y_true))
    counts = numpy.bincount(y_true * num_classes + y_pred, weights=weights,
                            minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def _pair(y_true: Any, y_pred: Any, name: str) -> tuple[numpy.ndarray, numpy.ndarray]:
    y_true, y_pred = to_numpy(y_true).reshape(-1), to_numpy(y_pred).reshape(-1)
    if len(y_true) != len(y_pred):
        raise ValueError(
            f"y_true and {name} have different lengths: {len(y_true)} and {len(y_pred)}"
        )
    return y_true, y_pred


def _labels(y: Any, n: int, c: int, what: str = "labels") -> numpy.ndarray:
    y = to_numpy(y).reshape(-1)
    if len(y) != n:
        raise ValueError(f"{what} have length {len(y)}; the scores have {n} rows")
    if y.dtype.kind == "f" and not numpy.array_equal(y, numpy.round(y)):
        raise ValueError(f"{what} must be integers in [0, {c}); got a float that is not integral")
    y = y.astype(numpy.int64)
    bad = (y < 0) | (y >= c)
    if bad.any():
        i = int(bad.argmax())
        raise ValueError(f"{what} must be integers in [0, {c}); got {y[i]} at index {i}")
    return y


def _weights(sample_weight: Any, n: int) -> numpy.ndarray:
    weight = to_numpy(sample_weight).astype(numpy.float64).reshape(-1)
    if len(weight) != n:
        raise ValueError(f"sample_weight has length {len(weight)}; expected one per sample ({n})")
    return weight


def _weighted_mean(hits: numpy.ndarray, sample_weight: Any) -> float:
    if len(hits) == 0:
        raise ValueError("a metric needs at least one sample; got an empty array")
    if sample_weight is None:
        return float(hits.mean())
    weight = _weights(sample_weight, len(hits))
    if not weight.sum() > 0:
        raise ValueError("sample_weight sums to 0; give at least one sample a positive weight")
    return float(numpy.dot(hits, weight) / weight.sum())
