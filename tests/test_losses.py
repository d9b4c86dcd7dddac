"""Tests of ermlab.losses without PyTorch: finite differences, hand-computed values, stability,
dtypes and the errors raised at the boundary. (The PyTorch oracle is in test_losses_torch.py.)"""

import math

import numpy as np
import pytest

from ermlab import losses
from ermlab.gradcheck import check_loss
from ermlab.losses import (
    LOSSES,
    BinaryCrossEntropyWithLogits,
    MeanSquaredError,
    MulticlassHinge,
    NegativeLogLikelihood,
    OneVsAllHinge,
    SoftmaxCrossEntropy,
)

ALL = [
    SoftmaxCrossEntropy,
    NegativeLogLikelihood,
    MulticlassHinge,
    OneVsAllHinge,
    MeanSquaredError,
    BinaryCrossEntropyWithLogits,
]
SHAPES = [(1, 2), (5, 3), (17, 10)]
SEEDS = [0, 1, 2]


def make_batch(loss_cls, shape, seed, dtype=np.float64):
    """Scores and targets for ``loss_cls``, chosen so that no gradient entry is tiny.

    Finite differences of the batch loss L have an absolute error of about ulp(L)/ε, so
    an entry of ∂L/∂s near 0 would show a large *relative* error that says nothing about
    the code: probabilities stay in [0.05, 0.95], squared-error residuals ≥ 0.5 in size,
    and binary targets are 0/1.
    """
    rng = np.random.default_rng(seed)
    n, c = shape
    scores = rng.standard_normal(shape)
    if loss_cls is NegativeLogLikelihood:
        scores = rng.uniform(0.05, 0.95, shape)
        target = rng.integers(0, c, n)
    elif loss_cls in (SoftmaxCrossEntropy, MulticlassHinge, OneVsAllHinge):
        target = rng.integers(0, c, n)
    elif loss_cls is MeanSquaredError:
        target = scores + rng.choice([-1.0, 1.0], shape) * rng.uniform(0.5, 1.5, shape)
    else:
        target = rng.integers(0, 2, shape).astype(np.float64)
    weight = rng.uniform(0.2, 2.0, n)
    return scores.astype(dtype), target, weight


def softmax(s):
    e = np.exp(s - s.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# -- gradients by finite differences ---------------------------------------------------------


@pytest.mark.parametrize("loss_cls", ALL, ids=lambda c: c.__name__)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_gradcheck(loss_cls, shape, seed, weighted):
    scores, target, weight = make_batch(loss_cls, shape, seed)
    # ε = 1e-5 balances truncation (ε²) against rounding (ulp(L)/ε) for these smooth losses.
    result = check_loss(loss_cls(), scores, target, weight if weighted else None, eps=1e-5)
    assert result.max_rel_error <= 1e-6, result


@pytest.mark.parametrize("loss_cls", [MeanSquaredError, BinaryCrossEntropyWithLogits])
@pytest.mark.parametrize("scores_shape", [(7,), (7, 1), (4, 2, 3)])
def test_gradcheck_regression_shapes(loss_cls, scores_shape):
    rng = np.random.default_rng(3)
    scores = rng.standard_normal(scores_shape)
    if loss_cls is MeanSquaredError:
        target = scores + rng.choice([-1.0, 1.0], scores_shape) * rng.uniform(0.5, 1.5)
    else:
        target = rng.integers(0, 2, scores_shape).astype(np.float64)
    if scores_shape == (7, 1):
        target = target[:, 0]  # 1-D targets with (N, 1) scores
    weight = rng.uniform(0.2, 2.0, scores_shape[0])
    for w in (None, weight):
        result = check_loss(loss_cls(), scores, target, w, eps=1e-5)
        assert result.max_rel_error <= 1e-6, result


def test_gradcheck_hinge_with_margin():
    scores, labels, weight = make_batch(MulticlassHinge, (17, 10), 4)
    result = check_loss(MulticlassHinge(margin=0.3), scores, labels, weight, eps=1e-5)
    assert result.max_rel_error <= 1e-6, result


def test_gradcheck_detects_a_wrong_gradient():
    """The check above can fail: a gradient off by a factor 1.001 is caught."""

    class Wrong(SoftmaxCrossEntropy):
        def backward(self):
            return super().backward() * 1.001

    scores, labels, _ = make_batch(SoftmaxCrossEntropy, (5, 3), 0)
    assert check_loss(Wrong(), scores, labels, eps=1e-5).max_rel_error > 1e-4


# -- closed forms ----------------------------------------------------------------------------


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_cross_entropy_value_and_gradient_closed_form(weighted):
    rng = np.random.default_rng(5)
    scores = 3 * rng.standard_normal((9, 4))
    labels = rng.integers(0, 4, 9)
    w = rng.uniform(0.1, 3.0, 9) if weighted else np.ones(9)
    loss = SoftmaxCrossEntropy()
    value = loss.forward(scores, labels, sample_weight=w if weighted else None)
    p = softmax(scores)
    onehot = np.eye(4)[labels]
    per_sample = -np.log(p[np.arange(9), labels])
    assert value == pytest.approx(np.sum(w * per_sample) / np.sum(w), rel=1e-13)
    expected = (p - onehot) * (w / w.sum())[:, None]  # (softmax(s) − onehot(y)) / N unweighted
    np.testing.assert_allclose(loss.backward(), expected, rtol=1e-12, atol=1e-16)


def test_cross_entropy_of_uniform_scores_is_log_c():
    loss = SoftmaxCrossEntropy()
    assert loss.forward(np.zeros((3, 10)), [0, 4, 9]) == pytest.approx(math.log(10), rel=1e-15)


def test_hinge_hand_computed():
    # cs231n's example, margin 1: rows give 2.9, 0 and 12.9.
    scores = np.array([[3.2, 5.1, -1.7], [1.3, 4.9, 2.0], [2.2, 2.5, -3.1]])
    labels = np.array([0, 1, 2])
    loss = MulticlassHinge()
    assert loss.forward(scores, labels) == pytest.approx((2.9 + 0.0 + 12.9) / 3, rel=1e-14)
    expected = np.array([[-1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [1.0, 1.0, -2.0]]) / 3
    np.testing.assert_array_equal(loss.backward(), expected)
    # margin 3: row 1 becomes max(0, 3 + 1.3 − 4.9) + max(0, 3 + 2.0 − 4.9) = 0.1 (≈ 0 + 0.1).
    loss = MulticlassHinge(margin=3.0)
    value = loss.forward(scores, labels, sample_weight=[0.0, 1.0, 0.0])
    assert value == pytest.approx(0.1, abs=1e-14)
    np.testing.assert_array_equal(loss.backward(), [[0, 0, 0], [0, -1, 1], [0, 0, 0]])


def test_nll_hand_computed():
    p = np.array([[0.5, 0.5], [0.25, 0.75]])
    loss = NegativeLogLikelihood()
    assert loss.forward(p, [0, 1]) == pytest.approx((math.log(2) + math.log(4 / 3)) / 2)
    np.testing.assert_allclose(loss.backward(), [[-1 / (2 * 0.5), 0], [0, -1 / (2 * 0.75)]])


def test_nll_of_zero_probability_is_infinite():
    with np.errstate(divide="ignore"):
        assert NegativeLogLikelihood().forward(np.array([[0.0, 1.0]]), [0]) == math.inf


def test_mse_hand_computed():
    scores = np.array([[1.0, 2.0], [3.0, 4.0]])
    target = np.array([[0.0, 2.0], [3.0, 6.0]])
    loss = MeanSquaredError()
    assert loss.forward(scores, target) == pytest.approx((0.5 + 2.0) / 2, rel=1e-15)
    np.testing.assert_allclose(loss.backward(), [[0.5, 0.0], [0.0, -1.0]])
    assert loss.forward(scores, target, sample_weight=[1, 3]) == pytest.approx(6.5 / 4)
    np.testing.assert_allclose(loss.backward(), 2 * (scores - target) / 2 * [[1 / 4], [3 / 4]])


def test_bce_hand_computed():
    # l(0, y) = log 2 for every y; l(s, 1) = log(1 + e^{−s}); ∂l/∂s = σ(s) − y.
    scores = np.array([[0.0, 2.0], [-1.0, 0.0]])
    target = np.array([[0.3, 1.0], [1.0, 0.0]])
    loss = BinaryCrossEntropyWithLogits()
    expected = (math.log(2) + math.log1p(math.exp(-2)) + math.log1p(math.e) + math.log(2)) / 4
    assert loss.forward(scores, target) == pytest.approx(expected, rel=1e-14)
    sig = 1 / (1 + np.exp(-scores))
    np.testing.assert_allclose(loss.backward(), (sig - target) / 4, rtol=1e-14)


# -- numerical stability ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_stable_for_huge_logits(dtype):
    scores = np.array([[1e4, -1e4]], dtype=dtype)
    loss = SoftmaxCrossEntropy()
    assert loss.forward(scores, [0]) == 0.0
    np.testing.assert_array_equal(loss.backward(), [[0.0, 0.0]])
    assert loss.forward(scores, [1]) == 2e4
    np.testing.assert_array_equal(loss.backward(), [[1.0, -1.0]])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bce_stable_for_huge_logits(dtype):
    scores = np.array([[1e4, -1e4, 1e4, -1e4]], dtype=dtype)
    loss = BinaryCrossEntropyWithLogits()
    # per entry: 0, 1e4, 1e4, 0 (max(s, 0) − s·y + log(1 + e^{−|s|}) with e^{−1e4} = 0)
    assert loss.forward(scores, [[1.0, 1.0, 0.0, 0.0]]) == 5e3
    np.testing.assert_array_equal(loss.backward(), [[0.0, -0.25, 0.25, 0.0]])


def test_bce_keeps_relative_precision_of_tiny_losses():
    # s = −40, y = 0: l = log(1 + e^{−40}) ≈ e^{−40}, ∂l/∂s = σ(−40) ≈ e^{−40}; log(1 + x)
    # instead of log1p(x), or σ as ½(1 + tanh(s/2)), would give 0 here.
    loss = BinaryCrossEntropyWithLogits()
    assert loss.forward(np.array([[-40.0]]), [[0.0]]) == pytest.approx(math.exp(-40), rel=1e-14)
    np.testing.assert_allclose(loss.backward(), [[math.exp(-40)]], rtol=1e-14)


@pytest.mark.parametrize("loss_cls", [SoftmaxCrossEntropy, MulticlassHinge,
                                      MeanSquaredError, BinaryCrossEntropyWithLogits])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_finite_for_logits_of_1e4(loss_cls, dtype):
    scores, target, weight = make_batch(loss_cls, (17, 10), 6)
    scores = (1e4 * np.sign(scores)).astype(dtype)
    loss = loss_cls()
    assert math.isfinite(loss.forward(scores, target, sample_weight=weight))
    assert np.all(np.isfinite(loss.backward()))


# -- dtypes, caching, weights ----------------------------------------------------------------


@pytest.mark.parametrize("loss_cls", ALL, ids=lambda c: c.__name__)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_dtype_and_shape_kept(loss_cls, dtype, weighted):
    scores, target, weight = make_batch(loss_cls, (6, 4), 7, dtype)
    before = scores.copy()
    loss = loss_cls()
    value = loss.forward(scores, target, sample_weight=weight if weighted else None)
    grad = loss.backward()
    assert type(value) is float
    assert grad.dtype == dtype and grad.shape == scores.shape
    np.testing.assert_array_equal(scores, before)  # the input is not modified
    np.testing.assert_array_equal(loss.backward(), grad)  # backward can be called again
    reference = loss_cls().forward(scores.astype(np.float64), target,
                                   sample_weight=weight if weighted else None)
    assert value == pytest.approx(reference, rel=1e-5)


@pytest.mark.parametrize("loss_cls", ALL, ids=lambda c: c.__name__)
def test_weights_are_a_weighted_mean(loss_cls):
    """Integer weights repeat samples; scaling all weights changes nothing; 0 drops a sample."""
    scores, target, _ = make_batch(loss_cls, (3, 4), 8)
    loss = loss_cls()
    value = loss.forward(scores, target, sample_weight=[2.0, 1.0, 0.0])
    grad = loss.backward()
    repeated = [0, 0, 1]
    value_rep = loss.forward(scores[repeated], np.asarray(target)[repeated])
    grad_rep = loss.backward()
    assert value == pytest.approx(value_rep, rel=1e-14)
    np.testing.assert_allclose(grad[0], grad_rep[0] + grad_rep[1], rtol=1e-14, atol=1e-17)
    np.testing.assert_allclose(grad[1], grad_rep[2], rtol=1e-14, atol=1e-17)
    np.testing.assert_array_equal(grad[2], 0.0)
    assert loss.forward(scores, target, sample_weight=[20.0, 10.0, 0.0]) == pytest.approx(value)


def test_integral_float_labels_accepted():
    scores, labels, _ = make_batch(SoftmaxCrossEntropy, (5, 3), 9)
    loss = SoftmaxCrossEntropy()
    assert loss.forward(scores, labels.astype(np.float32)) == loss.forward(scores, labels)
    assert loss.forward(scores, list(labels)) == loss.forward(scores, labels)


def test_backward_before_forward_raises():
    for loss_cls in ALL:
        with pytest.raises(RuntimeError, match="backward called before forward"):
            loss_cls().backward()


def test_failed_forward_clears_the_cache():
    loss = SoftmaxCrossEntropy()
    loss.forward(np.zeros((2, 3)), [0, 1])
    with pytest.raises(ValueError):
        loss.forward(np.zeros((2, 3)), [0, 3])
    with pytest.raises(RuntimeError, match="before forward"):
        loss.backward()


# -- registry ----------------------------------------------------------------------------------


def test_registry():
    assert LOSSES["cross_entropy"] is LOSSES["softmax_cross_entropy"] is SoftmaxCrossEntropy
    assert LOSSES["hinge"] is LOSSES["multiclass_hinge"] is MulticlassHinge
    assert LOSSES["ova_hinge"] is LOSSES["one_vs_all_hinge"] is OneVsAllHinge
    assert LOSSES["nll"] is NegativeLogLikelihood
    assert LOSSES["mse"] is MeanSquaredError
    assert LOSSES["bce_with_logits"] is BinaryCrossEntropyWithLogits
    assert isinstance(losses.get("cross_entropy"), SoftmaxCrossEntropy)
    assert losses.get("hinge", margin=2.0).margin == 2.0
    loss = MeanSquaredError()
    assert losses.get(loss) is loss
    with pytest.raises(ValueError, match="unknown loss 'l2'; choose one of"):
        losses.get("l2")


# -- errors at the boundary ------------------------------------------------------------------

S = np.zeros((4, 3))
Y = np.array([0, 1, 2, 0])


@pytest.mark.parametrize(
    "loss_cls, scores, target, kwargs, match",
    [
        (SoftmaxCrossEntropy, np.zeros(4), Y, {}, r"needs scores of shape \(N, C\).*\(4,\)"),
        (MulticlassHinge, np.zeros((2, 2, 2)), [0, 1], {}, r"shape \(N, C\)"),
        (NegativeLogLikelihood, np.full(3, 0.5), Y, {}, r"probabilities of shape \(N, C\)"),
        (SoftmaxCrossEntropy, np.zeros((0, 3)), [], {}, "empty batch"),
        (SoftmaxCrossEntropy, np.zeros((4, 3), dtype=int), Y, {}, "must be floating point"),
        (SoftmaxCrossEntropy, np.array([[0, np.nan, 0], [0, 0, 0], [np.inf, 0, -np.inf]]),
         [0, 1, 2], {}, r"scores contain 3 NaN or infinite values \(first at index \(0, 1\)\)"),
        (MeanSquaredError, np.array([1.0, 2.0, np.nan]), [1.0, 2.0, 3.0], {},
         r"scores contain 1 NaN or infinite values \(first at index 2\)"),
        (MeanSquaredError, np.zeros(3), [1.0, np.inf, 3.0], {},
         r"targets contain 1 NaN or infinite values \(first at index 1\)"),
        (SoftmaxCrossEntropy, S, [0, 1, 2], {}, "different lengths: 4 rows of scores, 3 labels"),
        (SoftmaxCrossEntropy, S, Y[:, None], {}, r"labels must be integers in \[0, 3\), one per"),
        (SoftmaxCrossEntropy, S, [0, 1, 3, 0], {}, r"integers in \[0, 3\); got 3 at index 2$"),
        (MulticlassHinge, S, [0, -1, 2, 0], {}, r"integers in \[0, 3\); got -1 at index 1$"),
        (SoftmaxCrossEntropy, S, [0.0, 1.5, 2.0, 0.0], {}, r"got 1\.5 at index 1$"),
        (SoftmaxCrossEntropy, S, [0.0, np.nan, 2.0, 0.0], {}, r"got nan at index 1$"),
        (SoftmaxCrossEntropy, S, np.array([True, False, True, True]), {}, "got booleans"),
        (SoftmaxCrossEntropy, S, np.array(["a", "b", "c", "d"]), {}, "got dtype <U1"),
        (SoftmaxCrossEntropy, S, Y, {"sample_weight": [1.0, 1.0]},
         r"one weight per sample, shape \(4,\); got shape \(2,\)"),
        (SoftmaxCrossEntropy, S, Y, {"sample_weight": [1.0, -0.5, 1.0, 1.0]},
         r"non-negative; got -0\.5 at index 1"),
        (MeanSquaredError, np.zeros(4), np.zeros(4), {"sample_weight": [1, 1, np.nan, 1]},
         r"finite and non-negative; got nan at index 2"),
        (BinaryCrossEntropyWithLogits, S, np.ones((4, 3)), {"sample_weight": np.zeros(4)},
         "sample_weight sums to 0; give at least one sample a positive weight"),
        (NegativeLogLikelihood, np.array([[0.5, 0.5], [0.2, 1.2]]), [0, 1], {},
         r"probabilities must lie in \[0, 1\]; got 1\.2 at index \(1, 1\)"),
        (NegativeLogLikelihood, np.array([[0.5, 0.5], [-0.1, 1.0]]), [0, 1], {},
         r"probabilities must lie in \[0, 1\]; got -0\.1 at index \(1, 0\)"),
        (BinaryCrossEntropyWithLogits, np.zeros((3, 1)), [1.0, -1.0, 0.0], {},
         r"targets must lie in \[0, 1\]; got -1\.0 at index \(1, 0\)"),
        (MeanSquaredError, np.zeros((4, 3)), np.zeros((4, 2)), {},
         r"targets must have the shape of the scores, \(4, 3\); got \(4, 2\)"),
        (MeanSquaredError, np.zeros((4, 3)), np.zeros(4), {}, r"shape of the scores"),
        (BinaryCrossEntropyWithLogits, np.zeros(4), np.zeros((4, 1)), {}, "shape of the scores"),
        (MeanSquaredError, np.float64(1.0), 1.0, {}, "got a scalar"),
    ],
)
def test_bad_input_raises(loss_cls, scores, target, kwargs, match):
    with pytest.raises(ValueError, match=match):
        loss_cls().forward(scores, target, **kwargs)


def test_label_error_names_value_and_index_in_a_large_batch():
    labels = np.random.default_rng(0).integers(0, 10, 600)
    labels[523] = 10
    with pytest.raises(ValueError, match=r"^labels must be integers in \[0, 10\); got 10 at "
                                         r"index 523$"):
        SoftmaxCrossEntropy().forward(np.zeros((600, 10), dtype=np.float32), labels)


def test_negative_margin_rejected():
    with pytest.raises(ValueError, match="margin must be a non-negative number"):
        MulticlassHinge(margin=-1.0)


# -- one-vs-all hinge ----------------------------------------------------------------------------


def test_one_vs_all_hinge_by_hand():
    """s = [2, 0.5, −3], y = 0: terms max(0, 1 − 2) + max(0, 1 + 0.5) + max(0, 1 − 3) = 1.5;
    ∂/∂s = [0, +1, 0] (only class 1's machine is inside its margin, on the wrong side)."""
    loss = OneVsAllHinge()
    assert loss.forward(np.array([[2.0, 0.5, -3.0]]), [0]) == 1.5
    np.testing.assert_array_equal(loss.backward(), [[0.0, 1.0, 0.0]])
    loss = OneVsAllHinge(margin=3.0)  # now the true class is inside too: 1 + 3.5 + 0
    assert loss.forward(np.array([[2.0, 0.5, -3.0]]), [0]) == 4.5
    np.testing.assert_array_equal(loss.backward(), [[-1.0, 1.0, 0.0]])


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_one_vs_all_hinge_is_the_sum_of_scikit_learns_binary_hinges(weighted):
    """Independent oracle: sklearn.metrics.hinge_loss of each class's binary problem (labels
    ±1, decision s_c), summed over the classes."""
    from sklearn.metrics import hinge_loss

    scores, labels, weight = make_batch(OneVsAllHinge, (40, 5), 11)
    w = weight if weighted else None
    expected = sum(hinge_loss(np.where(labels == c, 1, -1), scores[:, c], sample_weight=w)
                   for c in range(5))
    assert OneVsAllHinge().forward(scores, labels, sample_weight=w) == pytest.approx(
        expected, rel=1e-12)


def test_one_vs_all_hinge_bad_margin():
    with pytest.raises(ValueError, match="margin must be a non-negative number"):
        OneVsAllHinge(margin=-1)


# -- the compiled softmax cross-entropy (nn._softmax_kernels) ----------------------------


def _softmax_ce(monkeypatch, fused, scores, labels, weight):
    monkeypatch.setenv("ERMLAB_FUSED", "1" if fused else "0")
    loss = SoftmaxCrossEntropy()
    value = loss.forward(scores, labels, weight)
    return value, loss.backward(), loss._cache


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("classes", [1, 2, 3, 7, 8, 9, 10, 16, 17, 31, 100, 128, 129, 300])
@pytest.mark.parametrize("weighted", [False, True])
def test_softmax_cross_entropy_kernels_equal_numpy_path_bit_for_bit(monkeypatch, dtype,
                                                                    classes, weighted):
    """With Numba the loss runs its compiled passes (``nn._softmax_kernels``): the value and
    ∂L/∂s are bit for bit those of the NumPy path (``ERMLAB_FUSED=0``), for rows of 1 to 128
    classes in NumPy's pairwise summation order, with ties for the maximum (the first is
    the one shifted to e⁰ = 1), scores from 1e-3 to 1e4 in size and sample weights; rows
    of more classes take the NumPy path."""
    pytest.importorskip("numba")
    rng = np.random.default_rng(classes)
    scale = rng.choice([1e-3, 1.0, 30.0, 1e4], size=(257, 1))
    scores = (rng.standard_normal((257, classes)) * scale).astype(dtype)
    scores[::4] = np.round(scores[::4] / scale[::4])  # ties for the maximum
    labels = rng.integers(0, classes, 257)
    weight = rng.uniform(0.0, 2.0, 257) if weighted else None
    value, grad, cache = _softmax_ce(monkeypatch, True, scores, labels, weight)
    want_value, want_grad, want_cache = _softmax_ce(monkeypatch, False, scores, labels, weight)
    assert value == want_value
    assert grad.dtype == want_grad.dtype == dtype
    assert grad.tobytes() == want_grad.tobytes()
    for got, want in zip(cache[:3], want_cache[:3], strict=True):  # prob, labels, 1 − f_y
        assert got.tobytes() == want.tobytes()


def test_softmax_cross_entropy_kernels_keep_the_boundary_checks(monkeypatch):
    """The compiled path is taken after the checks: bad labels and non-finite scores are
    still refused, and scores that are not C-contiguous take the NumPy path, same values."""
    pytest.importorskip("numba")
    monkeypatch.setenv("ERMLAB_FUSED", "1")
    loss = SoftmaxCrossEntropy()
    scores = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
    with pytest.raises(ValueError, match=r"labels must be integers in \[0, 4\)"):
        loss.forward(scores, np.array([0, 1, 2, 3, 4, 0]))
    bad = scores.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        loss.forward(bad, np.zeros(6, dtype=int))
    labels = np.array([0, 1, 2, 3, 0, 1])
    value = loss.forward(np.asfortranarray(scores), labels)  # the NumPy path
    grad = loss.backward()
    assert loss.forward(scores, labels) == value  # the kernels
    assert loss.backward().tobytes() == grad.tobytes()


# -- sample weights whose sum overflows the dtype ----------------------------------------------


@pytest.mark.parametrize("weight", [[2e38, 2e38, 1e38, 0.0], [3e38, 3e38, 3e38, 3e38]])
def test_cross_entropy_weights_summing_past_float32_max(weight):
    """Σ w = ∞ in float32 made every w/Σw zero: loss 0 and a zero gradient, silently."""
    rng = np.random.default_rng(11)
    scores = rng.standard_normal((4, 3)).astype(np.float32)
    labels = np.array([0, 2, 1, 1])
    w = np.array(weight)  # float64 here: the reference
    loss = SoftmaxCrossEntropy()
    value = loss.forward(scores, labels, sample_weight=np.array(weight, np.float32))
    s = scores.astype(np.float64)
    p = np.exp(s - s.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    share = w / w.sum()
    assert value == pytest.approx(np.sum(share * -np.log(p[np.arange(4), labels])), rel=1e-6)
    expected = (p - np.eye(3)[labels]) * share[:, None]
    np.testing.assert_allclose(loss.backward(), expected, rtol=1e-5, atol=1e-7)


def test_mean_squared_error_weights_summing_past_float32_max():
    scores = np.array([[1.0], [2.0], [-1.0]], np.float32)
    target = np.zeros((3, 1), np.float32)
    w = np.array([3e38, 3e38, 1e38])  # float64 here: the reference
    loss = MeanSquaredError()
    value = loss.forward(scores, target, sample_weight=w.astype(np.float32))
    share = w / w.sum()
    d = scores.astype(np.float64)
    assert value == pytest.approx(np.sum(share * d[:, 0] ** 2), rel=1e-6)
    np.testing.assert_allclose(loss.backward(), 2 * d * share[:, None], rtol=1e-6)
