"""Pooling and local response normalization without torch: gradient checks, closed forms,
errors."""

import numpy as np
import pytest

from ermlab import nn
from ermlab.gradcheck import check_module

TOL = 1e-6

# (N, C, H, W, kernel, stride, padding)
POOLS = [
    (2, 2, 4, 4, 2, None, 0),
    (1, 2, 7, 6, 3, 2, 1),
    (1, 1, 7, 7, 3, 1, 1),
    (2, 1, 9, 8, 2, 3, 0),
    (1, 2, 5, 7, (2, 3), (1, 2), (1, 1)),
]


def distinct(shape, seed=0):
    """Values at least 0.1 apart, so no window has a near-tie that ε could flip."""
    values = np.random.default_rng(seed).permutation(int(np.prod(shape))) * 0.1
    return values.reshape(shape) - values.mean()


@pytest.mark.parametrize("config", POOLS)
def test_max_pool_gradcheck(config):
    n, c, h, w, k, s, p = config
    result = check_module(nn.MaxPool2d(k, stride=s, padding=p), distinct((n, c, h, w)), eps=1e-5)
    assert result.passed(TOL), result


@pytest.mark.parametrize("config", POOLS)
def test_avg_pool_gradcheck(config):
    n, c, h, w, k, s, p = config
    x = np.random.default_rng(0).standard_normal((n, c, h, w))
    result = check_module(nn.AvgPool2d(k, stride=s, padding=p), x, eps=1e-5)
    assert result.passed(TOL), result


def test_global_avg_pool_gradcheck():
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5))
    assert check_module(nn.GlobalAvgPool2d(), x, eps=1e-5).passed(TOL)


@pytest.mark.parametrize("size,alpha,beta,k", [(5, 0.5, 0.75, 1.0), (2, 1.0, 1.3, 0.7)])
def test_local_response_norm_gradcheck(size, alpha, beta, k):
    x = np.random.default_rng(0).standard_normal((2, 6, 3, 2))
    layer = nn.LocalResponseNorm(size, alpha=alpha, beta=beta, k=k)
    result = check_module(layer, x, eps=1e-5)
    assert result.passed(TOL), result


def test_pools_by_hand():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    np.testing.assert_array_equal(nn.MaxPool2d(2).forward(x)[0, 0], [[5, 7], [13, 15]])
    np.testing.assert_array_equal(nn.AvgPool2d(2).forward(x)[0, 0], [[2.5, 4.5], [10.5, 12.5]])
    # padding counts in the average's divisor: the corner window holds 0 (x) and 3 zeros
    np.testing.assert_array_equal(nn.AvgPool2d(2, padding=1).forward(x)[0, 0, 0, 0], 0.0)
    np.testing.assert_array_equal(nn.AvgPool2d(2, padding=1).forward(x)[0, 0, 0, 1], 0.75)
    np.testing.assert_array_equal(nn.GlobalAvgPool2d().forward(x), [[7.5]])


def test_local_response_norm_by_hand():
    """Window of 3 at the middle channel: s = k + α/3 (1 + 4 + 9), b = 2 / s^β."""
    x = np.array([1.0, 2.0, 3.0]).reshape(1, 3, 1, 1)
    y = nn.LocalResponseNorm(3, alpha=0.3, beta=0.5, k=2.0).forward(x)
    assert y[0, 1, 0, 0] == pytest.approx(2.0 / np.sqrt(2.0 + 0.1 * 14.0))
    assert y[0, 0, 0, 0] == pytest.approx(1.0 / np.sqrt(2.0 + 0.1 * 5.0))


@pytest.mark.parametrize(
    "layer", [nn.MaxPool2d(2), nn.AvgPool2d(3, 2, 1), nn.GlobalAvgPool2d(),
              nn.LocalResponseNorm(3)]
)
def test_float32_in_float32_out(layer):
    x = np.random.default_rng(0).standard_normal((2, 4, 6, 6)).astype(np.float32)
    y = layer.forward(x)
    gx = layer.backward(np.ones_like(y))
    assert y.dtype == gx.dtype == np.float32 and gx.shape == x.shape


@pytest.mark.parametrize("cls", [nn.MaxPool2d, nn.AvgPool2d])
def test_pool_errors_name_layer_and_shapes(cls):
    pool = cls(3, padding=1)
    name = cls.__name__
    with pytest.raises(ValueError, match=rf"{name}\(.*4-D input.*\(4, 4\)"):
        pool.forward(np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match=rf"{name}\(.*kernel covers \(3, 3\).*\(2, 6\).*"
                                         r"\(1, 1, 0, 4\)"):
        pool.forward(np.zeros((1, 1, 0, 4), np.float32))
    with pytest.raises(ValueError, match="at most half the kernel"):
        cls(2, padding=2)
    with pytest.raises(ValueError, match="stride must be an integer ≥ 1"):
        cls(2, stride=0)


def test_global_pool_and_lrn_reject_wrong_rank():
    with pytest.raises(ValueError, match=r"GlobalAvgPool2d\(\).*4-D.*\(2, 3\)"):
        nn.GlobalAvgPool2d().forward(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"LocalResponseNorm\(3.*rank ≥ 3.*\(2, 3\)"):
        nn.LocalResponseNorm(3).forward(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="size must be a positive integer"):
        nn.LocalResponseNorm(0)


def test_max_pool_backward_needs_training_forward():
    pool = nn.MaxPool2d(2)
    pool.eval()
    y = pool.forward(np.zeros((1, 1, 4, 4)))
    with pytest.raises(RuntimeError, match="training mode"):
        pool.backward(np.ones_like(y))
