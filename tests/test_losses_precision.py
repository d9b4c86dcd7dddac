"""Relative precision of the losses where the model is confident (right or wrong).

A confident, right prediction has a tiny loss, l = log(1 + Σ_{j≠y} e^{s_j − s_y}) ≈ Σ_{j≠y}
e^{s_j − s_y}; the stable forms keep it (and its gradient) to a few ulps, where adding the
tiny term to an O(|s|) one and subtracting back cancels it away. The oracle is the exact
value of the loss at the (float32 or float64) inputs, computed with mpmath at 100 digits;
PyTorch is the second oracle (float64 to 1e-10; in float32 we must be at least as close to
the exact value as torch is).
"""

import math

import mpmath
import numpy as np
import pytest

from ermlab.losses import BinaryCrossEntropyWithLogits, SoftmaxCrossEntropy

try:  # the second oracle; the exact (mpmath) tests run without it
    import torch
    import torch.nn.functional as F
except ImportError:
    torch = None
needs_torch = pytest.mark.skipif(
    torch is None, reason="PyTorch oracle absent (its CPU build: see README.md)")

DTYPES = [np.float32, np.float64]


def ulps(dtype, k=4):
    return k * float(np.finfo(dtype).eps)


def tiny(dtype):
    """Below the smallest normal number relative precision is gone (gradual underflow)."""
    return float(np.finfo(dtype).tiny)


# -- exact oracles (mpmath, 100 significant digits) ------------------------------------------


def exact_cross_entropy(row, label):
    """l = log1p(Σ_{j≠y} e^{s_j − s_y}) and ∂l/∂s = softmax(s) − onehot(y), exactly, as floats."""
    with mpmath.workdps(100):
        s = [mpmath.mpf(float(v)) for v in row]
        e = [mpmath.exp(v - s[label]) for v in s]
        rest = mpmath.fsum(v for j, v in enumerate(e) if j != label)
        grad = [-rest / (1 + rest) if j == label else v / (1 + rest) for j, v in enumerate(e)]
        return float(mpmath.log1p(rest)), np.array([float(g) for g in grad])


def cross_entropy_tolerance(row, label, exact, exact_grad, dtype):
    """Bounds on the rounding error of the stable form at these inputs (a few ulps, scaled by
    the conditioning of e^{s_j − m}: the difference d_j = s_j − m is rounded to eps·|d_j|).

    loss:      4 eps (l + Σ_{j≠k} p_j |d_j| + (m − s_y))
    gradient:  8 eps (1 + |d_j| + Σ_i p_i |d_i|) p_j,   for j = y: the sum of that over j ≠ y
    """
    eps = float(np.finfo(dtype).eps)
    row = np.asarray(row, dtype=np.float64)
    dist = row.max() - row
    prob = exact_grad.copy()
    prob[label] += 1.0
    mean_dist = float(np.dot(prob, dist))
    loss_tol = 4 * eps * (exact + mean_dist + dist[label])
    grad_tol = 8 * eps * (1 + dist + mean_dist) * prob
    grad_tol[label] = np.delete(grad_tol, label).sum()
    return loss_tol + tiny(dtype), grad_tol + tiny(dtype)
def exact_bce(score, target):
    """l = y log(1 + e^{−s}) + (1 − y) log(1 + e^{s}) and ∂l/∂s = σ(s) − y, exactly."""
    with mpmath.workdps(100):
        s, y = mpmath.mpf(float(score)), mpmath.mpf(float(target))
        value = y * mpmath.log1p(mpmath.exp(-s)) + (1 - y) * mpmath.log1p(mpmath.exp(s))
        return float(value), float(1 / (1 + mpmath.exp(-s)) - y)


def assert_relative(ours, exact, rtol, atol, what):
    ours, exact = np.asarray(ours, dtype=np.float64), np.asarray(exact, dtype=np.float64)
    err = np.abs(ours - exact)
    bad = err > rtol * np.abs(exact) + atol
    assert not bad.any(), (
        f"{what}: ours {ours[bad][:5]} exact {exact[bad][:5]} "
        f"(error {err[bad][:5]}, allowed {rtol:.1e} relative + {atol:.1e})"
    )


def per_row_cross_entropy(scores, labels):
    """Each row's loss and gradient from its own forward (a batch of one: ∂L/∂s = ∂l/∂s)."""
    loss = SoftmaxCrossEntropy()
    values, grads = [], []
    for i in range(len(scores)):
        values.append(loss.forward(scores[i:i + 1], labels[i:i + 1]))
        grads.append(loss.backward()[0])
    return np.array(values), np.array(grads)


def confident_batch(rng, dtype, n=150, c=10):
    """Rows from unsure to absurdly sure, right and wrong, at scales up to 1e4."""
    scale = rng.choice([0.1, 1.0, 10.0, 100.0, 1e4], n)
    scores = scale[:, None] * rng.standard_normal((n, c))
    labels = rng.integers(0, c, n)
    sure = rng.random(n) < 0.7
    margin = rng.choice([0.0, 1.0, 7.0, 17.0, 30.0, 38.0, 60.0, 100.0, 200.0], n)
    rows = np.arange(n)
    top = scores.max(axis=1)
    wrong = rng.random(n) < 0.2  # some sure rows are sure of another class
    target_score = np.where(wrong, top - margin, top + margin)
    scores[rows[sure], labels[sure]] = target_score[sure]
    return scores.astype(dtype), labels


# -- SoftmaxCrossEntropy ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_confident_and_right_keeps_relative_precision(dtype):
    # the case of issue 9: logits [1e4, 1e4 − 7] give 9.766e-4 instead of 9.1147e-4 in float32
    scores = np.array([[1e4, 1e4 - 7]], dtype=dtype)
    exact, exact_grad = exact_cross_entropy(scores[0], 0)
    loss = SoftmaxCrossEntropy()
    assert_relative(loss.forward(scores, [0]), exact, ulps(dtype), 0.0, "loss")
    assert_relative(loss.backward()[0], exact_grad, ulps(dtype), 0.0, "gradient")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("margin", [15.0, 30.0, 38.0, 100.0, 700.0])
def test_cross_entropy_tiny_loss_is_not_rounded_to_zero(dtype, margin):
    # l = log1p(9 e^{−margin}) ≈ 9 e^{−margin}; 1 − p_y = Σ_{j≠y} p_j, not 1 − p_y by subtraction
    scores = np.full((1, 10), -margin, dtype=dtype)
    scores[0, 3] = 0.0
    exact, exact_grad = exact_cross_entropy(scores[0], 3)
    loss = SoftmaxCrossEntropy()
    assert_relative(loss.forward(scores, [3]), exact, ulps(dtype), tiny(dtype), "loss")
    assert_relative(loss.backward()[0], exact_grad, ulps(dtype), tiny(dtype), "gradient")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", [0, 1])
def test_cross_entropy_matches_the_exact_value_row_by_row(dtype, seed):
    scores, labels = confident_batch(np.random.default_rng(seed), dtype)
    values, grads = per_row_cross_entropy(scores, labels)
    for i in range(len(scores)):
        exact, exact_grad = exact_cross_entropy(scores[i], labels[i])
        loss_tol, grad_tol = cross_entropy_tolerance(scores[i], labels[i], exact, exact_grad,
                                                     dtype)
        assert_relative(values[i], exact, 0.0, loss_tol, f"loss of row {i}")
        assert_relative(grads[i], exact_grad, 0.0, grad_tol, f"gradient of row {i}")


@needs_torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", [0, 1])
def test_cross_entropy_at_least_as_exact_as_torch(dtype, seed):
    """Row by row, our error is within the rounding bound or no larger than torch's."""
    scores, labels = confident_batch(np.random.default_rng(seed), dtype)
    s = torch.tensor(scores, requires_grad=True)
    theirs = F.cross_entropy(s, torch.tensor(labels), reduction="none")
    theirs.sum().backward()
    theirs, their_grads = theirs.detach().numpy(), s.grad.numpy()
    values, grads = per_row_cross_entropy(scores, labels)
    for i in range(len(scores)):
        exact, exact_grad = exact_cross_entropy(scores[i], labels[i])
        loss_tol, grad_tol = cross_entropy_tolerance(scores[i], labels[i], exact, exact_grad,
                                                     dtype)
        ours_err, torch_err = abs(values[i] - exact), abs(float(theirs[i]) - exact)
        assert ours_err <= max(torch_err, loss_tol), (i, values[i], theirs[i], exact)
        ours_g = np.abs(grads[i] - exact_grad)
        torch_g = np.abs(their_grads[i].astype(np.float64) - exact_grad)
        assert np.all(ours_g <= np.maximum(torch_g, grad_tol)), (i, grads[i], their_grads[i])


@needs_torch
@pytest.mark.parametrize("seed", [0, 1])
def test_cross_entropy_matches_torch_float64_row_by_row(seed):
    # torch computes log Σ e^{s_j − m} − (s_y − m): at most an ulp of 1 off where it cancels
    scores, labels = confident_batch(np.random.default_rng(seed), np.float64)
    s = torch.tensor(scores, requires_grad=True)
    expected = F.cross_entropy(s, torch.tensor(labels), reduction="none")
    expected.sum().backward()
    values, grads = per_row_cross_entropy(scores, labels)
    np.testing.assert_allclose(values, expected.detach().numpy(), rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(grads, s.grad.numpy(), rtol=1e-10, atol=1e-15)


def test_cross_entropy_batch_mean_of_confident_rows_is_exact():
    # a batch of rows all confident and right: the mean of tiny losses, not 0 or an ulp of 1e4
    rng = np.random.default_rng(3)
    offset = 1e3 * rng.uniform(-1, 1, (64, 1))  # logits far from 0, as a trained net gives
    scores = rng.uniform(-1, 1, (64, 10)) + offset
    labels = rng.integers(0, 10, 64)
    scores[np.arange(64), labels] = offset[:, 0] + rng.uniform(8, 20, 64)
    scores = scores.astype(np.float32)
    exact = math.fsum(exact_cross_entropy(r, y)[0] for r, y in zip(scores, labels)) / 64
    assert_relative(SoftmaxCrossEntropy().forward(scores, labels), exact, ulps(np.float32), 0.0,
                    "mean loss")


# -- BinaryCrossEntropyWithLogits ------------------------------------------------------------

LOGITS = [-1e4, -100.0, -38.0, -30.0, -15.0, -7.0, -1.0, 0.0, 1.0, 7.0, 15.0, 30.0, 38.0,
          100.0, 1e4]


def bce_gradient_bound(scores, targets, dtype):
    """σ(s) − y = ±(w − q), w = y (s < 0) or 1 − y (s ≥ 0), q = σ(−|s|): a few ulps of w + q
    (w − q cancels, genuinely, only where σ(s) ≈ y; for 0/1 labels the bound is relative)."""
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(targets, dtype=np.float64)
    w = np.where(s < 0, y, 1 - y)
    q = np.exp(-np.abs(s)) / (1 + np.exp(-np.abs(s)))
    return ulps(dtype) * (w + q) + tiny(dtype)


def per_entry_bce(scores, targets):
    loss = BinaryCrossEntropyWithLogits()
    values, grads = [], []
    for s, y in zip(scores, targets):
        values.append(loss.forward(np.array([[s]]), np.array([[y]], dtype=scores.dtype)))
        grads.append(loss.backward()[0, 0])
    return np.array(values), np.array(grads)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bce_hard_labels_keep_relative_precision_at_large_logits(dtype):
    # logit 15, label 1 gave 0 in float32; logit 30 was 1e-2 off in float64
    scores = np.array(LOGITS * 2, dtype=dtype)
    targets = np.repeat([1.0, 0.0], len(LOGITS))
    values, grads = per_entry_bce(scores, targets)
    exact = [exact_bce(s, y) for s, y in zip(scores, targets)]
    assert_relative(values, [e[0] for e in exact], ulps(dtype), tiny(dtype), "loss")
    assert_relative(grads, [e[1] for e in exact], ulps(dtype), tiny(dtype), "gradient")


@pytest.mark.parametrize("dtype", DTYPES)
def test_bce_soft_labels_match_the_exact_value(dtype):
    rng = np.random.default_rng(4)
    scores = (rng.choice(LOGITS, 200) * rng.uniform(0.5, 1, 200)).astype(dtype)
    targets = rng.choice([0.0, 1.0, 0.5, 1e-3, 1 - 1e-3], 200).astype(dtype)
    values, grads = per_entry_bce(scores, targets)
    exact = np.array([exact_bce(s, y) for s, y in zip(scores, targets)])
    assert_relative(values, exact[:, 0], ulps(dtype), tiny(dtype), "loss")
    assert_relative(grads, exact[:, 1], 0.0, bce_gradient_bound(scores, targets, dtype),
                    "gradient")


@needs_torch
@pytest.mark.parametrize("dtype", DTYPES)
def test_bce_at_least_as_exact_as_torch_at_large_logits(dtype):
    # torch float64 gives 9.237e-14 at logit 30 (exact 9.3576e-14) and 0 at logit 38
    scores = np.array(LOGITS * 3, dtype=dtype)
    targets = np.repeat([1.0, 0.0, 0.25], len(LOGITS)).astype(dtype)
    s = torch.tensor(scores, requires_grad=True)
    theirs = F.binary_cross_entropy_with_logits(s, torch.tensor(targets), reduction="none")
    theirs.sum().backward()
    values, grads = per_entry_bce(scores, targets)
    exact = np.array([exact_bce(a, b) for a, b in zip(scores, targets)])
    bound = ulps(dtype) * np.abs(exact[:, 0]) + tiny(dtype)
    torch_err = np.abs(theirs.detach().numpy().astype(np.float64) - exact[:, 0])
    assert np.all(np.abs(values - exact[:, 0]) <= np.maximum(torch_err, bound))
    torch_err = np.abs(s.grad.numpy().astype(np.float64) - exact[:, 1])
    bound = bce_gradient_bound(scores, targets, dtype)
    assert np.all(np.abs(grads - exact[:, 1]) <= np.maximum(torch_err, bound))


@needs_torch
def test_bce_matches_torch_float64():
    # torch rounds a tiny loss to an ulp of |s| and σ(s) − 1 to an ulp of 1: absolute 1e-14
    scores = np.array(LOGITS * 3)
    targets = np.repeat([1.0, 0.0, 0.25], len(LOGITS))
    s = torch.tensor(scores, requires_grad=True)
    expected = F.binary_cross_entropy_with_logits(s, torch.tensor(targets), reduction="none")
    expected.sum().backward()
    values, grads = per_entry_bce(scores, targets)
    np.testing.assert_allclose(values, expected.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(grads, s.grad.numpy(), rtol=1e-12, atol=1e-15)
