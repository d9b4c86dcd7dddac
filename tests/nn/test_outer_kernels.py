"""Linear's weight gradient for a batch of one example: the outer product g hᵀ by
``_outer_kernels.outer`` through ``_products.matmul`` (NumPy's ``multiply`` without Numba),
bit for bit the GEMM's result, with and without lanes, added onto a gradient that is not
zero, and in DropConnect."""

import numpy as np
import pytest

pytest.importorskip("numba", reason="Numba kernels absent: pip install 'ermlab[fast]'")

from kernel_calls import count_calls  # noqa: E402

from ermlab import nn  # noqa: E402
from ermlab.nn import _outer_kernels, _products, linear, stochastic  # noqa: E402


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("fused", ["1", "0"])
@pytest.mark.parametrize("lanes", [False, True])
def test_one_example_gives_the_outer_product_exactly(dtype, fused, lanes, monkeypatch):
    monkeypatch.setenv("ERMLAB_FUSED", fused)
    monkeypatch.setattr(linear, "LANE_MIN_MACS", 1)  # with lanes=True: two lanes
    calls = count_calls(monkeypatch, _outer_kernels, "outer")
    rng = np.random.default_rng(0)
    layer = nn.Linear(37, 23, rng=0, dtype=dtype, lanes=lanes)
    layer.threads = 2
    x = rng.standard_normal((1, 37)).astype(dtype)
    g = rng.standard_normal((1, 23)).astype(dtype)
    layer.zero_grad()
    layer.forward(x)
    layer.backward(g)
    product = g[0][:, None] * x[0][None, :]  # each value one product, rounded once
    np.testing.assert_array_equal(layer.weight.grad, product)
    assert layer.weight.grad.dtype == dtype
    layer.backward(g)  # a second bprop adds to it
    np.testing.assert_array_equal(layer.weight.grad, product + product)
    assert calls["outer"] == (0 if fused == "0" else 2 * (1 + lanes))


def test_the_kernel_is_what_the_gemm_gives_on_a_column_slice():
    """A lane's rows of ∂L/∂W take a column slice of G (not contiguous): the same values."""
    rng = np.random.default_rng(1)
    g = rng.standard_normal((1, 9)).astype(np.float32)
    x = rng.standard_normal((1, 5)).astype(np.float32)
    out = np.full((4, 5), np.nan, np.float32)
    _products.matmul(g[:, 3:7].T, x, out=out)
    np.testing.assert_array_equal(out, np.matmul(g[:, 3:7].T, x))


def test_larger_batches_still_take_the_gemm(monkeypatch):
    calls = count_calls(monkeypatch, _outer_kernels, "outer")
    rng = np.random.default_rng(2)
    g, x = rng.standard_normal((2, 6)), rng.standard_normal((2, 4))
    np.testing.assert_allclose(_products.matmul(g.T, x), g.T @ x, rtol=1e-15)
    assert calls["outer"] == 0


def test_dropconnect_with_one_example():
    rng = np.random.default_rng(3)
    layer = stochastic.DropConnect(nn.Linear(8, 5, rng=0), p=0.5, rng=0)
    x = rng.standard_normal((1, 8)).astype(np.float32)
    g = rng.standard_normal((1, 5)).astype(np.float32)
    layer.zero_grad()
    layer.forward(x)
    layer.backward(g)
    mask = layer._cached("_weight_mask")
    np.testing.assert_array_equal(layer.linear.weight.grad,
                                  mask * (g[0][:, None] * x[0][None, :]))
