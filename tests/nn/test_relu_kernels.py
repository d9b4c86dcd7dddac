"""ReLU's Numba kernels (``ermlab.nn._relu_kernels``) against its NumPy path, bit for bit.

The values are compared as raw bits (so −0 ≠ +0 and NaN payloads count), on edge values
in both the input and the incoming gradient (±0, ±∞, NaN, subnormals), in place and not,
in float32 and float64; 3 lanes against 1; and the NumPy path where the kernels do not run.
"""

import numpy as np
import pytest

pytest.importorskip("numba", reason="Numba kernels absent: pip install 'ermlab[fast]'")

from kernel_calls import count_calls  # noqa: E402

from ermlab import nn  # noqa: E402
from ermlab.nn import _relu_kernels, activations  # noqa: E402

EDGES = [-0.0, 0.0, np.nan, -np.nan, -1.0, 2.0, np.inf, -np.inf, 1e-45, -1e-45, 5e-324]


def _arrays(dtype, shape=(6, 5, 7), seed=0):
    rng = np.random.default_rng(seed)
    x, g = rng.standard_normal((2, *shape)).astype(dtype)
    x.reshape(-1)[:len(EDGES)] = EDGES
    g.reshape(-1)[3:3 + len(EDGES)] = EDGES  # edges in G, some where y > 0, some not
    g.reshape(-1)[40:40 + len(EDGES)] = EDGES
    return x, g


def _bits(a):
    return a.view(np.uint32 if a.dtype == np.float32 else np.uint64)


def _run(x, g, inplace, threads=None):
    relu = nn.ReLU(inplace=inplace)
    relu.threads = threads
    x_in, g_in = x.copy(), g.copy()
    y = relu.forward(x_in)
    grad = relu.backward(g_in)
    assert (y is x_in and grad is g_in) == inplace
    return y, grad


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("inplace", [False, True])
def test_kernels_equal_the_numpy_path_bit_for_bit(monkeypatch, dtype, inplace):
    names = ("forward_in_place", "backward_in_place") if inplace else ("forward", "backward")
    calls = count_calls(monkeypatch, _relu_kernels, *names)
    x, g = _arrays(dtype)
    y, grad = _run(x, g, inplace)
    assert calls == dict.fromkeys(names, 1)  # in place: the one-array kernels
    monkeypatch.setenv("ERMLAB_FUSED", "0")
    with np.errstate(invalid="ignore"):  # ∞·0 in the NumPy path's G·1_{y > 0}
        y_numpy, grad_numpy = _run(x, g, inplace)
    assert calls == dict.fromkeys(names, 1)  # the NumPy path: no kernel
    np.testing.assert_array_equal(_bits(y), _bits(y_numpy))
    np.testing.assert_array_equal(_bits(grad), _bits(grad_numpy))
    assert y.dtype == grad.dtype == dtype and y.shape == grad.shape == x.shape


@pytest.mark.parametrize("inplace", [False, True])
def test_lanes_of_elements_equal_one_lane(monkeypatch, inplace):
    names = ("forward_in_place", "backward_in_place") if inplace else ("forward", "backward")
    calls = count_calls(monkeypatch, _relu_kernels, *names)
    monkeypatch.setattr(activations, "LANE_MIN_BYTES", 1)
    x, g = _arrays(np.float32, shape=(5, 67))
    y1, grad1 = _run(x, g, inplace, threads=1)
    assert calls == dict.fromkeys(names, 1)
    y3, grad3 = _run(x, g, inplace, threads=3)
    assert calls == dict.fromkeys(names, 4)
    np.testing.assert_array_equal(_bits(y3), _bits(y1))
    np.testing.assert_array_equal(_bits(grad3), _bits(grad1))


@pytest.mark.filterwarnings("ignore:invalid value encountered in multiply:RuntimeWarning")
def test_other_layouts_and_dtypes_take_the_numpy_path(monkeypatch):
    calls = count_calls(monkeypatch, _relu_kernels, "forward", "backward")
    x, g = _arrays(np.float32)
    relu = nn.ReLU()
    y = relu.forward(np.asfortranarray(x))
    grad = relu.backward(np.asfortranarray(g))
    with np.errstate(invalid="ignore"):  # ∞·0
        np.testing.assert_array_equal(y, np.maximum(x, 0))
        np.testing.assert_array_equal(grad, g * ~(x <= 0))  # a NaN x passes g, as torch
    half = nn.ReLU().forward(x.astype(np.float16))
    np.testing.assert_array_equal(half, np.maximum(x, 0).astype(np.float16))
    assert not calls  # no kernel ran


def test_in_place_after_batch_norm_equals_out_of_place():
    """BatchNorm keeps its input and statistics, not its output, so an in-place ReLU after
    it (as ``ReLU``'s docstring allows) changes nothing: y, ∂L/∂x and ∂L/∂θ bit for bit."""
    rng = np.random.default_rng(0)
    x, g = rng.standard_normal((4, 3, 5, 5)), rng.standard_normal((4, 3, 5, 5))
    runs = []
    for inplace in (False, True):
        model = nn.Sequential(nn.BatchNorm2d(3, dtype=np.float64), nn.ReLU(inplace=inplace))
        y = model.forward(x.copy())
        model.zero_grad()
        runs.append((y, model.backward(g.copy()), *[p.grad.copy() for p in model.parameters()]))
    for a, b in zip(*runs, strict=True):
        np.testing.assert_array_equal(a, b)
