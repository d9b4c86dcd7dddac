"""ReLU's fast paths: max(a, 0) against a cached array of zeros, and ``inplace=True``.

Oracles: the plain NumPy formulas max(a, 0) and g·1[not max(a, 0) ≤ 0] (bit for bit:
the same ufuncs on the same values; a NaN passes g, as torch's), torch's relu and its
bprop for the edge values, and an
identical MLP built without in-place ReLUs.
"""

import numpy as np
import pytest

from ermlab import losses, nn
from ermlab.nn.activations import zeros_like

EDGES = np.array([-0.0, 0.0, np.nan, -1.0, 2.0, np.inf, -np.inf, 1e-45, -1e-45], np.float32)


def _batch(dtype, shape=(7, 33), seed=0):
    x = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    x.reshape(-1)[:EDGES.size] = EDGES
    return x


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("inplace", [False, True])
def test_relu_equals_the_formula_bit_for_bit(dtype, inplace):
    x, g = _batch(dtype), np.random.default_rng(1).standard_normal((7, 33)).astype(dtype)
    want_y, want_g = np.maximum(x, 0), g * ~(np.maximum(x, 0) <= 0)
    relu = nn.ReLU(inplace=inplace)
    x_in, g_in = x.copy(), g.copy()
    y = relu.forward(x_in)
    grad = relu.backward(g_in)
    np.testing.assert_array_equal(y, want_y)
    np.testing.assert_array_equal(grad, want_g)
    assert not np.signbit(y[y == 0]).any()  # never −0, as torch's relu of a negative number
    assert y.dtype == grad.dtype == dtype
    assert (y is x_in and grad is g_in) == inplace  # in place: the arrays passed in, overwritten
    if not inplace:
        np.testing.assert_array_equal(x_in, x)
        np.testing.assert_array_equal(g_in, g)


def test_relu_matches_torch_at_the_edges():
    torch = pytest.importorskip("torch", reason="PyTorch oracle absent: pip install torch (CPU)")
    x = _batch(np.float32)
    relu = nn.ReLU()
    ours = relu.forward(x.copy())
    t = torch.from_numpy(x.copy()).requires_grad_()
    theirs = torch.relu(t)
    np.testing.assert_array_equal(ours, theirs.detach().numpy())  # −0.0 == 0.0; NaN stays NaN
    g = np.random.default_rng(1).standard_normal(x.shape).astype(np.float32)
    theirs.backward(torch.from_numpy(g))
    # where relu(x) is NaN torch passes g (its bprop zeroes y ≤ 0); it was 0 here
    np.testing.assert_array_equal(relu.backward(g), t.grad.numpy())


def test_zeros_like_views_one_buffer_that_stays_zero():
    small = zeros_like(np.ones((3, 4), np.float32))
    assert small.shape == (3, 4) and small.dtype == np.float32 and not small.any()
    big = np.full((300, 1000), -5.0)  # float64 and beyond the first buffer: it grows
    relu = nn.ReLU()
    assert not relu.forward(big).any()
    assert zeros_like(big).shape == big.shape and not zeros_like(big).any()
    assert np.shares_memory(zeros_like(np.ones(5)), zeros_like(np.ones((2, 2))))
    for _ in range(2):  # in place over the input: the zeros buffer is never the output
        x = np.random.default_rng(2).standard_normal((300, 1000))
        nn.ReLU(inplace=True).forward(x)
    assert not zeros_like(big).any()


def test_mlp_uses_inplace_relu_only_after_linear():
    plain = nn.mlp([6, 5, 4, 3], rng=0)
    normed = nn.mlp([6, 5, 4, 3], batch_norm=True, rng=0)
    tanh = nn.mlp([6, 5, 3], activation="tanh", rng=0)
    assert [m.inplace for m in plain if isinstance(m, nn.ReLU)] == [True, True]
    assert [m.inplace for m in normed if isinstance(m, nn.ReLU)] == [False, False]
    assert not any(isinstance(m, nn.ReLU) for m in tanh)


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_mlp_with_inplace_relu_trains_like_without(dropout):
    """Two steps of the in-place MLP and of the same MLP with copying ReLUs: the same
    scores, parameter gradients and input gradient, bit for bit."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((16, 6)).astype(np.float32)
    y = rng.integers(0, 3, 16)
    fast, slow = (nn.mlp([6, 8, 8, 3], dropout=dropout, rng=0) for _ in range(2))
    for module in slow:
        if isinstance(module, nn.ReLU):
            module.inplace = False
    results = []
    for model in (fast, slow):
        loss = losses.SoftmaxCrossEntropy()
        for _ in range(2):
            scores = model.forward(x.copy())
            loss.forward(scores, y)
            model.zero_grad()
            grad_x = model.backward(loss.backward())
            for p in model.parameters():
                p.data -= 0.1 * p.grad
        results.append([scores, grad_x] + [p.grad for p in model.parameters()])
    for ours, theirs in zip(*results):
        np.testing.assert_array_equal(ours, theirs)
