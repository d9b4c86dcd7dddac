"""MaxPool2d's compiled scan (``nn._pool_kernels``): outputs, winners and ∂L/∂x bit for bit
the NumPy path (``ERMLAB_FUSED=0``) — NaN, −∞ windows, ties, padding, overlapping windows,
float32/64, lanes of samples, evaluation mode — and torch's gradient."""

from collections import Counter

import numpy as np
import pytest

pytest.importorskip("numba", reason="compiled kernels need Numba: pip install numba")

from kernel_calls import count_calls  # noqa: E402

from ermlab import nn  # noqa: E402
from ermlab.nn import _pool_kernels  # noqa: E402
from ermlab.nn import pooling as pooling_module  # noqa: E402

# (kernel, stride, padding, H, W): overlapping 3×3 stride 2 (ResNet-18's), stride 1,
# odd sizes (2×2 without the pairwise path), disjoint 3×3, unequal sides.
CASES = [(3, 2, 1, 9, 9), (3, 1, 1, 7, 6), (2, 2, 0, 7, 7), (3, 3, 0, 9, 9),
         ((2, 3), (1, 2), (1, 1), 8, 7), (3, 2, 1, 10, 10)]


def batch(h, w, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((5, 4, h, w)).astype(dtype)
    x[0, 0, 0, :3] = np.nan                 # NaN: output NaN, the last NaN wins
    x[1, 1] = -np.inf                       # only −∞: the first entry inside wins
    x[2, 2, 1:4, 1:4] = 1.0                 # ties: the first maximum wins
    x[3, 3] = np.round(x[3, 3])             # many ties
    return x


def run(case, dtype, threads=1, training=True):
    k, s, p, h, w = case
    pool = nn.MaxPool2d(k, s, p)
    pool.threads = threads
    pool.train(training)
    x = batch(h, w, dtype)
    y = pool.forward(x)
    if not training:
        return y, None, None
    g = np.random.default_rng(1).standard_normal(y.shape).astype(dtype)
    return y, pool._winner.copy(), pool.backward(g)


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES)
def test_kernels_equal_numpy_bit_for_bit(case, dtype, threads, monkeypatch):
    monkeypatch.setattr(pooling_module, "LANE_MIN_BYTES", 1)
    calls = count_calls(monkeypatch, _pool_kernels, "max_forward", "max_backward")
    fused = run(case, dtype, threads)
    assert set(calls) == {"max_forward", "max_backward"}
    monkeypatch.setenv("ERMLAB_FUSED", "0")
    calls.clear()
    reference = run(case, dtype, threads)
    assert not calls
    for a, b in zip(fused, reference, strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


def test_evaluation_mode_keeps_no_winners(monkeypatch):
    calls = count_calls(monkeypatch, _pool_kernels, "max_forward", "max_backward")
    y, _, _ = run(CASES[0], np.float32, training=False)
    assert calls == Counter(max_forward=1)
    monkeypatch.setenv("ERMLAB_FUSED", "0")
    np.testing.assert_array_equal(y, run(CASES[0], np.float32, training=False)[0])


def test_pairwise_path_with_nan_falls_back_to_the_kernel(monkeypatch):
    """2×2 stride-2 pooling of even sizes runs the pairwise path; a NaN sends it to the
    scan, here the compiled one."""
    calls = count_calls(monkeypatch, _pool_kernels, "max_forward", "max_backward")
    fused = run((2, 2, 0, 8, 8), np.float32)
    assert "max_forward" in calls
    monkeypatch.setenv("ERMLAB_FUSED", "0")
    for a, b in zip(fused, run((2, 2, 0, 8, 8), np.float32), strict=True):
        np.testing.assert_array_equal(a, b)


def test_against_torch():
    torch = pytest.importorskip("torch", reason="torch oracle: pip install torch==2.13.0 (CPU)")
    x = np.random.default_rng(2).standard_normal((3, 2, 11, 11))
    pool = nn.MaxPool2d(3, 2, 1)
    y = pool.forward(x)
    g = np.random.default_rng(3).standard_normal(y.shape)
    gx = pool.backward(g)
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.nn.functional.max_pool2d(tx, 3, 2, 1)
    ty.backward(torch.tensor(g))
    np.testing.assert_array_equal(y, ty.detach().numpy())
    np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=1e-15, atol=1e-15)
