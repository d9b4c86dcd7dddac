"""MaxPool2d, AvgPool2d, GlobalAvgPool2d and LocalResponseNorm against torch.nn.functional.

Forward and backward (a fixed random G = ∂L/∂y fed back) must match torch to 1e-10 in
float64 and 1e-4 in float32, including ties in max pooling: torch sends a window's
gradient to the first maximum in row-major order, and so must we; and non-finite inputs
(windows of only −∞, NaN), where the gradient must go to the very entry torch picks.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch oracle absent (its CPU build: see README.md)")
F = torch.nn.functional

from ermlab import nn  # noqa: E402

# (N, C, H, W, kernel, stride, padding)
POOLS = [
    (2, 3, 8, 8, 2, None, 0),        # LeNet/VGG 2×2: windows tile the input (pairwise path)
    (1, 4, 6, 10, 2, 2, 0),          # the same path: batch 1, stride given, H ≠ W
    (2, 3, 9, 7, 2, None, 0),        # odd sizes: the last row/column is dropped
    (2, 2, 13, 13, 3, 2, 0),         # AlexNet's overlapping 3×3 stride 2
    (2, 2, 8, 9, 3, 2, 1),           # GoogLeNet/ResNet stem: 3×3 stride 2 padding 1
    (1, 2, 7, 8, 3, 1, 1),           # inception pooling branch: stride 1, 'same'
    (2, 2, 11, 10, 2, 3, 0),         # stride > kernel: skipped pixels
    (2, 1, 7, 9, (2, 3), (1, 2), (1, 1)),  # rectangular
    (1, 2, 4, 4, 4, None, 0),        # kernel = input
    (2, 2, 6, 6, 4, 1, 2),           # padding = kernel / 2
]

DTYPES = [(np.float64, 1e-10), (np.float32, 1e-4)]


def inputs(shape, kind, dtype, seed=0):
    rng = np.random.default_rng(seed)
    if kind == "normal":
        x = rng.standard_normal(shape)
    elif kind == "integers":                  # many ties within windows
        x = rng.integers(-2, 3, size=shape)
    else:                                      # all equal: every window is one big tie
        x = np.full(shape, 0.5)
    return x.astype(dtype)


def ours(layer, x, seed=1):
    layer.train()
    y = layer.forward(x)
    g = np.random.default_rng(seed).standard_normal(y.shape).astype(x.dtype)
    return y, g, layer.backward(g)


def theirs(fn, x, g):
    tx = torch.tensor(x, requires_grad=True)
    ty = fn(tx)
    ty.backward(torch.tensor(g))
    return ty.detach().numpy(), tx.grad.numpy()


def check(y, gx, ty, tgx, x, tol):
    assert y.dtype == gx.dtype == x.dtype
    assert y.shape == ty.shape and gx.shape == x.shape
    np.testing.assert_allclose(y, ty, rtol=tol, atol=tol, err_msg="output")
    np.testing.assert_allclose(gx, tgx, rtol=tol, atol=tol, err_msg="∂L/∂x")


@pytest.mark.parametrize("kind", ["normal", "integers", "equal"])
@pytest.mark.parametrize("config", POOLS)
@pytest.mark.parametrize("dtype,tol", DTYPES)
def test_max_pool_matches_torch(config, kind, dtype, tol):
    n, c, h, w, k, s, p = config
    x = inputs((n, c, h, w), kind, dtype)
    y, g, gx = ours(nn.MaxPool2d(k, stride=s, padding=p), x)
    ty, tgx = theirs(lambda t: F.max_pool2d(t, k, stride=s, padding=p), x, g)
    check(y, gx, ty, tgx, x, tol)


def non_finite(shape, kind, dtype, seed=0):
    """Ties (small integers) with −∞, NaN or ±∞ sprinkled in, or only −∞."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-2, 3, size=shape).astype(dtype)
    if kind == "only -inf":
        x[...] = -np.inf
    elif kind == "-inf":                     # many windows of only −∞, some at the border
        x[rng.random(shape) < 0.7] = -np.inf
    elif kind == "nan":                      # windows with one NaN, several, or none
        x[rng.random(shape) < 0.2] = np.nan
    else:
        u = rng.random(shape)
        x[u < 0.3] = -np.inf
        x[(u > 0.3) & (u < 0.4)] = np.inf
        x[u > 0.9] = np.nan
    return x


@pytest.mark.parametrize("kind", ["only -inf", "-inf", "nan", "mixed"])
@pytest.mark.parametrize("config", POOLS)
@pytest.mark.parametrize("dtype,tol", DTYPES)
def test_max_pool_with_non_finite_inputs_routes_gradients_like_torch(config, kind, dtype, tol):
    """torch: a window of only −∞ → its first entry inside the input (never the padding);
    a NaN wins its window (the last NaN); ties → the first maximum."""
    n, c, h, w, k, s, p = config
    x = non_finite((n, c, h, w), kind, dtype)
    y, g, gx = ours(nn.MaxPool2d(k, stride=s, padding=p), x)
    ty, tgx = theirs(lambda t: F.max_pool2d(t, k, stride=s, padding=p), x, g)
    np.testing.assert_array_equal(y, ty, err_msg="output")
    check(y, gx, ty, tgx, x, tol)


def test_max_pool_tie_goes_to_the_first_maximum():
    x = np.array([[[[1.0, 3.0], [3.0, 3.0]]]])
    pool = nn.MaxPool2d(2)
    pool.forward(x)
    np.testing.assert_array_equal(pool.backward(np.array([[[[7.0]]]])),
                                  [[[[0.0, 7.0], [0.0, 0.0]]]])


@pytest.mark.parametrize("kind", ["normal", "integers"])
@pytest.mark.parametrize("config", POOLS)
@pytest.mark.parametrize("dtype,tol", DTYPES)
def test_avg_pool_matches_torch(config, kind, dtype, tol):
    n, c, h, w, k, s, p = config
    x = inputs((n, c, h, w), kind, dtype)
    y, g, gx = ours(nn.AvgPool2d(k, stride=s, padding=p), x)
    ty, tgx = theirs(lambda t: F.avg_pool2d(t, k, stride=s, padding=p), x, g)
    check(y, gx, ty, tgx, x, tol)


@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 4, 1, 1)])
@pytest.mark.parametrize("dtype,tol", DTYPES)
def test_global_avg_pool_matches_torch(shape, dtype, tol):
    x = inputs(shape, "normal", dtype)
    y, g, gx = ours(nn.GlobalAvgPool2d(), x)
    ty, tgx = theirs(lambda t: F.adaptive_avg_pool2d(t, 1).flatten(1), x, g)
    check(y, gx, ty, tgx, x, tol)


@pytest.mark.parametrize(
    "size,alpha,beta,k,shape",
    [
        (5, 1e-4, 0.75, 1.0, (2, 7, 4, 5)),     # torch defaults
        (5, 5e-4, 0.75, 2.0, (2, 8, 3, 3)),     # AlexNet's constants (α·n, k = 2)
        (4, 0.5, 0.9, 1.5, (1, 6, 3, 4)),       # even window, large α: a real gradient
        (3, 1.0, 0.5, 0.5, (2, 2, 3, 3)),       # window wider than the channels
        (1, 0.3, 0.75, 1.0, (2, 3, 2, 2)),      # window of one
        (6, 0.2, 1.2, 1.0, (2, 9, 5)),          # 3-D input (N, C, L)
    ],
)
@pytest.mark.parametrize("dtype,tol", DTYPES)
def test_local_response_norm_matches_torch(size, alpha, beta, k, shape, dtype, tol):
    x = inputs(shape, "normal", dtype)
    layer = nn.LocalResponseNorm(size, alpha=alpha, beta=beta, k=k)
    y, g, gx = ours(layer, x)
    ty, tgx = theirs(lambda t: F.local_response_norm(t, size, alpha, beta, k), x, g)
    check(y, gx, ty, tgx, x, tol)
