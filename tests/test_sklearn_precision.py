"""MLPClassifier's probabilities at extreme scores, against the exact softmax (mpmath)."""

import mpmath
import numpy
import pytest

from ermlab.sklearn import MLPClassifier

SCORES = numpy.array([
    [0.0, -800.0, -30.0],  # e^{−800} underflows: log p is −800, not −inf
    [1e4, 1e4 - 7, 0.0],  # confident and right: log p_0 = −log1p(e^{−7}) ≈ −9.1e-4
    [-5.0, 0.0, 5.0],
    [40.0, 0.0, 0.0],  # log p_0 = −2e^{−40}: an ulp of 1 would make it 0
])


def exact_log_softmax(row):
    with mpmath.workdps(100):
        s = [mpmath.mpf(float(v)) for v in row]
        total = mpmath.fsum(mpmath.exp(v - max(s)) for v in s)
        return numpy.array([float(v - max(s) - mpmath.log(total)) for v in s])


@pytest.fixture(scope="module")
def classifier():
    rng = numpy.random.default_rng(0)
    x, y = rng.standard_normal((30, 2)), numpy.arange(30) % 3
    return MLPClassifier((4,), max_iter=2, random_state=0).fit(x, y)


def test_log_proba_is_exact_at_extreme_scores(classifier, monkeypatch):
    monkeypatch.setattr(classifier, "_scores", lambda X: SCORES.copy())
    exact = numpy.array([exact_log_softmax(row) for row in SCORES])
    log_proba = classifier.predict_log_proba(numpy.zeros((len(SCORES), 2)))
    assert numpy.all(numpy.isfinite(log_proba))
    numpy.testing.assert_allclose(log_proba, exact, rtol=4e-16, atol=0)
    proba = classifier.predict_proba(numpy.zeros((len(SCORES), 2)))
    # (exp of the rounded exact log adds |log p|·eps of its own)
    numpy.testing.assert_allclose(proba, numpy.exp(exact), rtol=1e-14, atol=1e-300)
