"""Metrics against scikit-learn's: accuracy, top-k accuracy, confusion matrix."""

import numpy as np
import pytest
from sklearn import metrics as skm

from ermlab.training import metrics


@pytest.fixture
def scored():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(300, 6))
    y = rng.integers(0, 6, 300)
    weight = rng.uniform(0, 2, 300)
    return y, scores, weight


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_top_k_accuracy_matches_sklearn(scored, k):
    y, scores, weight = scored
    expected = skm.top_k_accuracy_score(y, scores, k=k, labels=range(6))
    assert metrics.top_k_accuracy(y, scores, k) == pytest.approx(expected, abs=1e-12)
    expected_w = skm.top_k_accuracy_score(y, scores, k=k, labels=range(6), sample_weight=weight)
    assert metrics.top_k_accuracy(y, scores, k, weight) == pytest.approx(expected_w, abs=1e-12)


def test_top_1_is_argmax_accuracy(scored):
    y, scores, _ = scored
    assert metrics.top_k_accuracy(y, scores, 1) == metrics.accuracy(y, scores.argmax(axis=1))


def test_accuracy_matches_sklearn(scored):
    y, scores, weight = scored
    pred = scores.argmax(axis=1)
    assert metrics.accuracy(y, pred) == pytest.approx(skm.accuracy_score(y, pred), abs=1e-12)
    assert metrics.accuracy(y, pred, weight) == pytest.approx(
        skm.accuracy_score(y, pred, sample_weight=weight), abs=1e-12)


def test_confusion_matrix_matches_sklearn(scored):
    y, scores, weight = scored
    pred = scores.argmax(axis=1)
    np.testing.assert_array_equal(metrics.confusion_matrix(y, pred, num_classes=6),
                                  skm.confusion_matrix(y, pred, labels=range(6)))
    np.testing.assert_allclose(metrics.confusion_matrix(y, pred, 6, sample_weight=weight),
                               skm.confusion_matrix(y, pred, labels=range(6),
                                                    sample_weight=weight), rtol=1e-12)


def test_confusion_matrix_counts_classes_absent_from_the_data():
    table = metrics.confusion_matrix([0, 0, 2], [0, 2, 2], num_classes=4)
    assert table.shape == (4, 4)
    assert table.tolist() == [[1, 0, 1, 0], [0, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]


def test_bad_labels_are_named():
    with pytest.raises(ValueError, match=r"integers in \[0, 3\); got 3 at index 1"):
        metrics.top_k_accuracy([0, 3], np.zeros((2, 3)), k=1)
    with pytest.raises(ValueError, match="different lengths"):
        metrics.accuracy([0, 1], [0])
    with pytest.raises(ValueError, match="k ≥ 1"):
        metrics.top_k_accuracy([0], np.zeros((1, 3)), k=0)
