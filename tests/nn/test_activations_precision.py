"""Relative precision of activations and their derivatives in the tails (saturation).

Where an activation or its derivative is tiny (σ(−38) ≈ 3e-17, tanh'(20) ≈ 2e-17,
ELU'(−20) ≈ 2e-9), it must keep a few ulps of relative precision, not round to 0 or to an
ulp of 1: forms such as ½(1 + tanh(a/2)), y(1 − y), 1 − y² or y + α cancel there. The
oracle is the exact value at the (float32 or float64) inputs, from mpmath at 100 digits.
"""

import mpmath
import numpy as np
import pytest

from ermlab import nn

DTYPES = [np.float32, np.float64]
POINTS = [-1e4, -700.0, -100.0, -88.0, -38.0, -30.0, -20.0, -15.0, -10.0, -7.0, -1.0, -1e-3,
          -1e-8, 0.0, 1e-8, 1e-3, 1.0, 7.0, 10.0, 15.0, 20.0, 30.0, 38.0, 100.0, 700.0, 1e4]


def exact(function, x):
    with mpmath.workdps(100):
        return np.array([float(function(mpmath.mpf(float(v)))) for v in x])


def sigmoid(a):
    return 1 / (1 + mpmath.exp(-a))


def sigmoid_grad(a):
    return sigmoid(a) * sigmoid(-a)


def tanh_grad(a):
    return 1 / mpmath.cosh(a) ** 2


def softplus(a):
    return mpmath.log1p(mpmath.exp(a))


def elu_grad(alpha):
    return lambda a: 1 if a > 0 else alpha * mpmath.exp(a)


def forward_backward(module, x):
    """g(x) and g'(x) (the input gradient for ∂L/∂y = 1) from one training-mode pass."""
    module.train()
    y = module.forward(x)
    return y, module.backward(np.ones_like(x))


def assert_ulps(ours, expected, dtype, what, k=4):
    """Within k ulps, relative; below the smallest normal number, within that number."""
    eps, tiny = float(np.finfo(dtype).eps), float(np.finfo(dtype).tiny)
    ours = np.asarray(ours, dtype=np.float64)
    bad = np.abs(ours - expected) > k * eps * np.abs(expected) + tiny
    assert not bad.any(), f"{what} at x = {np.asarray(POINTS)[bad]}: {ours[bad]} != {expected[bad]}"


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_exact_in_both_tails(dtype):
    # ½(1 + tanh(x/2)) gave exactly 0 for x ≤ −38 in float64 (torch: 3e-17), x ≤ −20 in float32
    x = np.array(POINTS, dtype=dtype)
    y, grad = forward_backward(nn.Sigmoid(), x)
    assert y.dtype == dtype and grad.dtype == dtype
    assert_ulps(y, exact(sigmoid, x), dtype, "σ(x)")
    # g(1 − g) cancels for g ≈ 1: σ'(x) = σ(x)σ(−x) from the small one, σ(−|x|)
    assert_ulps(grad, exact(sigmoid_grad, x), dtype, "σ'(x)")


@pytest.mark.parametrize("dtype", DTYPES)
def test_tanh_derivative_exact_in_the_tails(dtype):
    # 1 − tanh(x)² rounds to 0 for |x| ≥ 10 in float32, ≥ 19 in float64
    x = np.array(POINTS, dtype=dtype)
    y, grad = forward_backward(nn.Tanh(), x)
    assert_ulps(y, exact(mpmath.tanh, x), dtype, "tanh(x)")
    assert_ulps(grad, exact(tanh_grad, x), dtype, "tanh'(x)")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("alpha", [1.0, 0.7])
def test_elu_derivative_exact_for_negative_inputs(dtype, alpha):
    # g(x) + α cancels for g ≈ −α: α e^{x} instead
    x = np.array(POINTS, dtype=dtype)
    y, grad = forward_backward(nn.ELU(alpha), x)
    expected = exact(lambda a: a if a > 0 else alpha * mpmath.expm1(a), x)
    assert_ulps(y, expected, dtype, "ELU(x)")
    assert_ulps(grad, exact(elu_grad(alpha), x), dtype, "ELU'(x)")


@pytest.mark.parametrize("dtype", DTYPES)
def test_softplus_and_its_derivative_exact_in_both_tails(dtype):
    # the derivative is σ(x): it was ½(1 + tanh(x/2)), exactly 0 for x ≤ −38
    x = np.array(POINTS, dtype=dtype)
    y, grad = forward_backward(nn.Softplus(), x)
    assert_ulps(y, exact(softplus, x), dtype, "softplus(x)")
    assert_ulps(grad, exact(sigmoid, x), dtype, "softplus'(x)")


def test_no_overflow_warnings_at_extreme_inputs():
    # the stable forms take e^{−|x|} (never e^{+|x|}): no overflow, no inf/inf, no 0·inf
    x = np.array([[-1e30, -1e4, 1e4, 1e30], [-1e38, -1.0, 1.0, 1e38]], dtype=np.float32)
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        for module in (nn.Sigmoid(), nn.Tanh(), nn.ELU(), nn.Softplus(), nn.Softmax()):
            y, grad = forward_backward(module, x)
            assert np.all(np.isfinite(y)) and np.all(np.isfinite(grad)), type(module).__name__


def exact_softmax_backward(row, grad):
    """y and ∂L/∂a_j = y_j (g_j − Σ_k y_k g_k) at 100 digits."""
    with mpmath.workdps(100):
        a = [mpmath.mpf(float(v)) for v in row]
        g = [mpmath.mpf(float(v)) for v in grad]
        e = [mpmath.exp(v - max(a)) for v in a]
        y = [v / mpmath.fsum(e) for v in e]
        inner = mpmath.fsum(p * h for p, h in zip(y, g))
        return (np.array([float(p) for p in y]),
                np.array([float(p * (h - inner)) for p, h in zip(y, g)]))


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_backward_keeps_precision_when_confident(dtype):
    # y ⊙ (g − Σ y g) cancels at the winning class (g_k − Σ y g ≈ g_k − g_k); with g shifted
    # by its value there (softmax bprop ignores a constant in g) nothing large cancels
    rng = np.random.default_rng(5)
    gap = rng.choice([0.0, 3.0, 7.0, 15.0, 30.0], (40, 1))
    x = rng.standard_normal((40, 6)) + 1e3 * rng.uniform(-1, 1, (40, 1))
    x[:, 2] = x.max(axis=1) + gap[:, 0]
    x, g = x.astype(dtype), rng.standard_normal((40, 6)).astype(dtype)
    module = nn.Softmax()
    module.train()
    y = module.forward(x)
    grad = module.backward(g)
    eps, tiny = float(np.finfo(dtype).eps), float(np.finfo(dtype).tiny)
    for i in range(len(x)):
        exact_y, exact_grad = exact_softmax_backward(x[i], g[i])
        dist = (x[i].max() - x[i]).astype(np.float64)  # e^{a−max}: relative error eps·dist
        spread = np.abs(g[i][:, None] - g[i][None, :]).astype(np.float64)
        scale = 1 + dist[:, None] + dist[None, :]
        bound = 16 * eps * exact_y * ((spread * scale) @ exact_y) + tiny
        assert np.all(np.abs(y[i] - exact_y) <= 8 * eps * (1 + dist) * exact_y + tiny), i
        assert np.all(np.abs(grad[i] - exact_grad) <= bound), (i, grad[i], exact_grad)
