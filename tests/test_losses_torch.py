"""ermlab.losses against PyTorch in float64: values and gradients (torch autograd) to 1e-10.

Weighted losses are compared with the weighted mean Σ w_i l_i / Σ w_i built from torch's
per-sample losses (reduction='none').
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch oracle absent (its CPU build: see README.md)")
F = torch.nn.functional

from ermlab.losses import (  # noqa: E402
    BinaryCrossEntropyWithLogits,
    MeanSquaredError,
    MulticlassHinge,
    NegativeLogLikelihood,
    SoftmaxCrossEntropy,
)

RTOL = 1e-10
SHAPES = [(1, 2), (5, 3), (17, 10), (64, 100)]


def torch_per_sample(name, s, y, margin=1.0):
    """Per-sample losses l_i from torch (reduction='none'), as ermlab defines them."""
    c = s.shape[1] if s.ndim == 2 else 1
    if name == "cross_entropy":
        return F.cross_entropy(s, y, reduction="none")
    if name == "nll":
        return F.nll_loss(torch.log(s), y, reduction="none")
    if name == "hinge":  # torch divides by C; ermlab does not
        return c * F.multi_margin_loss(s, y, margin=margin, reduction="none")
    if name == "mse":
        per_entry = F.mse_loss(s, y, reduction="none")
    else:
        per_entry = F.binary_cross_entropy_with_logits(s, y, reduction="none")
    return per_entry.reshape(s.shape[0], -1).mean(dim=1)


def torch_reduced(name, s, y):
    """torch's own mean reduction (the unweighted oracle)."""
    c = s.shape[1]
    return {
        "cross_entropy": lambda: F.cross_entropy(s, y),
        "nll": lambda: F.nll_loss(torch.log(s), y),
        "hinge": lambda: c * F.multi_margin_loss(s, y),
        "mse": lambda: F.mse_loss(s, y),
        "bce": lambda: F.binary_cross_entropy_with_logits(s, y),
    }[name]()


LOSSES = {
    "cross_entropy": SoftmaxCrossEntropy,
    "nll": NegativeLogLikelihood,
    "hinge": MulticlassHinge,
    "mse": MeanSquaredError,
    "bce": BinaryCrossEntropyWithLogits,
}


def make_batch(name, shape, seed):
    rng = np.random.default_rng(seed)
    n, c = shape
    scores = 3 * rng.standard_normal(shape)
    if name == "nll":
        e = np.exp(scores)
        return e / e.sum(axis=1, keepdims=True), rng.integers(0, c, n)
    if name in ("cross_entropy", "hinge"):
        return scores, rng.integers(0, c, n)
    if name == "mse":
        return scores, rng.standard_normal(shape)
    return scores, rng.uniform(0.0, 1.0, shape)  # soft binary targets


def as_torch(scores, target, name):
    s = torch.tensor(scores, dtype=torch.float64, requires_grad=True)
    if name in ("cross_entropy", "nll", "hinge"):
        return s, torch.tensor(target, dtype=torch.int64)
    return s, torch.tensor(target, dtype=torch.float64)


def assert_close(ours, theirs):
    np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=1e-300)


@pytest.mark.parametrize("name", list(LOSSES))
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seed", [0, 1])
def test_unweighted_matches_torch_mean(name, shape, seed):
    scores, target = make_batch(name, shape, seed)
    s, y = as_torch(scores, target, name)
    expected = torch_reduced(name, s, y)
    expected.backward()
    loss = LOSSES[name]()
    assert_close(loss.forward(scores, target), expected.item())
    grad = loss.backward()
    assert grad.dtype == np.float64
    assert_close(grad, s.grad.numpy())


@pytest.mark.parametrize("name", list(LOSSES))
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seed", [0, 1])
def test_weighted_matches_torch_weighted_mean(name, shape, seed):
    scores, target = make_batch(name, shape, seed)
    weight = np.random.default_rng(seed + 10).uniform(0.0, 3.0, shape[0])
    s, y = as_torch(scores, target, name)
    w = torch.tensor(weight)
    expected = (w * torch_per_sample(name, s, y)).sum() / w.sum()
    expected.backward()
    loss = LOSSES[name]()
    assert_close(loss.forward(scores, target, sample_weight=weight), expected.item())
    assert_close(loss.backward(), s.grad.numpy())


@pytest.mark.parametrize("margin", [0.0, 0.5, 2.0])
def test_hinge_margin_matches_torch(margin):
    scores, labels = make_batch("hinge", (17, 10), 3)
    weight = np.random.default_rng(4).uniform(0.0, 3.0, 17)
    s, y = as_torch(scores, labels, "hinge")
    w = torch.tensor(weight)
    expected = (w * torch_per_sample("hinge", s, y, margin=margin)).sum() / w.sum()
    expected.backward()
    loss = MulticlassHinge(margin=margin)
    assert_close(loss.forward(scores, labels, sample_weight=weight), expected.item())
    assert_close(loss.backward(), s.grad.numpy())


def test_cross_entropy_class_weights_equal_sample_weights():
    """torch's per-class ``weight`` c is our ``sample_weight = c[y]`` (both divide by Σ c[y_i])."""
    scores, labels = make_batch("cross_entropy", (33, 7), 5)
    class_weight = np.random.default_rng(6).uniform(0.1, 2.0, 7)
    s, y = as_torch(scores, labels, "cross_entropy")
    expected = F.cross_entropy(s, y, weight=torch.tensor(class_weight))
    expected.backward()
    loss = SoftmaxCrossEntropy()
    assert_close(loss.forward(scores, labels, sample_weight=class_weight[labels]), expected.item())
    assert_close(loss.backward(), s.grad.numpy())


@pytest.mark.parametrize("name", ["mse", "bce"])
@pytest.mark.parametrize("shape", [(9,), (9, 1), (4, 3, 5)])
def test_regression_shapes_match_torch(name, shape):
    rng = np.random.default_rng(7)
    scores = 3 * rng.standard_normal(shape)
    target = rng.standard_normal(shape) if name == "mse" else rng.uniform(0, 1, shape)
    s, t = as_torch(scores, target, name)
    fn = F.mse_loss if name == "mse" else F.binary_cross_entropy_with_logits
    expected = fn(s, t)
    expected.backward()
    loss = LOSSES[name]()
    ours_target = target[:, 0] if shape == (9, 1) else target  # 1-D targets for (N, 1) scores
    assert_close(loss.forward(scores, ours_target), expected.item())
    assert_close(loss.backward(), s.grad.numpy())


@pytest.mark.parametrize("name", ["cross_entropy", "bce"])
def test_large_logits_match_torch(name):
    """Scores of ±1e3..1e4 saturate the softmax / sigmoid; both stay exact and finite."""
    rng = np.random.default_rng(8)
    scores = rng.choice([-1.0, 1.0], (17, 10)) * rng.uniform(1e3, 1e4, (17, 10))
    target = (rng.integers(0, 10, 17) if name == "cross_entropy"
              else rng.integers(0, 2, (17, 10)).astype(np.float64))
    s, y = as_torch(scores, target, name)
    expected = torch_reduced(name, s, y)
    expected.backward()
    loss = LOSSES[name]()
    assert_close(loss.forward(scores, target), expected.item())
    assert_close(loss.backward(), s.grad.numpy())
