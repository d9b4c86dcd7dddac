"""No layer hands NumPy's ``matmul`` a product whose inner dimension is 1 (an outer
product): NumPy computes that shape in an unvectorized loop of its own, not BLAS, 5–25×
slower than one ``multiply``. The layers where it arose: ``Linear``'s ∂L/∂W of one example,
a depthwise convolution's ∂L/∂x (one output channel per group), a convolution's ∂L/∂W with
one output position; each also against a float64 reference by finite differences."""

import numpy as np
import pytest

from ermlab import gradcheck, nn


@pytest.fixture
def outer_products(monkeypatch):
    """The shapes of every numpy.matmul call with an inner dimension of 1."""
    seen = []
    real = np.matmul

    def spy(a, b, *args, **kwargs):
        a_, b_ = np.asarray(a), np.asarray(b)
        if a_.ndim >= 2 and b_.ndim >= 2 and a_.shape[-1] == 1:
            seen.append((a_.shape, b_.shape))
        return real(a, b, *args, **kwargs)

    monkeypatch.setattr(np, "matmul", spy)
    return seen


@pytest.mark.parametrize("lanes", [False, True])
def test_linear_with_one_example(lanes, outer_products):
    layer = nn.Linear(6, 4, rng=0, dtype=np.float64, lanes=lanes)
    layer.threads = 2
    result = gradcheck.check_module(layer, np.random.default_rng(0).standard_normal((1, 6)))
    assert result.passed(), result
    assert outer_products == []


@pytest.mark.parametrize("multiplier", [1, 2])
def test_depthwise_convolution(multiplier, outer_products):
    conv = nn.Conv2d(3, 3 * multiplier, 3, padding=1, groups=3, rng=0, dtype=np.float64,
                     algorithm="im2col")
    result = gradcheck.check_module(conv, np.random.default_rng(1).standard_normal((2, 3, 4, 5)))
    assert result.passed(), result
    assert outer_products == []


@pytest.mark.parametrize("kernel", [1, 3])
def test_convolution_with_one_output_position(kernel, outer_products):
    conv = nn.Conv2d(2, 5, kernel, rng=0, dtype=np.float64, algorithm="im2col")
    x = np.random.default_rng(2).standard_normal((3, 2, kernel, kernel))
    result = gradcheck.check_module(conv, x)
    assert result.passed(), result
    assert outer_products == []
