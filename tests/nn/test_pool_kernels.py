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
# disjoint 3×3, unequal sides; 2×2 stride 2 (its own kernels) on even sizes (the NumPy
# path's pairwise maxima) and odd ones (the NumPy path's scan; a last row and column outside
# every window); rows long enough for the scan's vector loops and their remainders (37
# and 35 outputs a row at stride 1, 20 at stride 2, 13 at stride 3).
CASES = [(3, 2, 1, 9, 9), (3, 1, 1, 7, 6), (2, 2, 0, 7, 7), (3, 3, 0, 9, 9),
         ((2, 3), (1, 2), (1, 1), 8, 7), (3, 2, 1, 10, 10), (2, 2, 0, 8, 8), (2, 2, 0, 6, 9),
         (3, 1, 1, 9, 37), ((3, 5), 1, (1, 2), 6, 35), (3, 2, 1, 7, 40), (4, 3, 1, 8, 40)]


def kernel_names(case):
    if case[:3] == (2, 2, 0):
        return {"max2x2_forward", "max2x2_backward"}
    (kh, kw), (sh, sw), (ph, pw) = (v if isinstance(v, tuple) else (v, v) for v in case[:3])
    h, w = case[3:]
    outputs = ((h + 2 * ph - kh) // sh + 1) * ((w + 2 * pw - kw) // sw + 1)
    forward = outputs >= pooling_module.FORWARD_PLANES_MIN_OUTPUTS
    passes = (sh, sw) == (1, 1) and outputs >= pooling_module.PLANES_MIN_OUTPUTS
    return {"max_forward" if forward else "max_forward_windows",
            "max_backward" if passes else "max_backward_scatter"}


def batch(h, w, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((5, 4, h, w)).astype(dtype)
    x[0, 0, 0, :3] = np.nan                 # NaN: output NaN, the last NaN wins
    x[1, 1] = -np.inf                       # only −∞: the first entry inside wins
    x[2, 2, 1:4, 1:4] = 1.0                 # ties: the first maximum wins
    x[3, 3] = np.round(x[3, 3])             # many ties
    return x


def run(case, dtype, threads=1, training=True, layer=nn.MaxPool2d):
    """y, the winners (max pooling) and ∂L/∂x of one pass on ``batch``."""
    k, s, p, h, w = case
    pool = layer(k, s, p)
    pool.threads = threads
    pool.train(training)
    x = batch(h, w, dtype)
    y = pool.forward(x)
    if not training:
        return y, None, None
    g = np.random.default_rng(1).standard_normal(y.shape).astype(dtype)
    winner = pool._winner.copy() if layer is nn.MaxPool2d else None
    return y, winner, pool.backward(g)


def check_compiled_equal_numpy(case, dtype, threads, monkeypatch, layer, kernels, names):
    """One pass in lanes of one sample through the compiled ``kernels`` (those called:
    ``names``) and through the NumPy path (``ERMLAB_FUSED=0``, no kernel): equal bit for
    bit, dtypes included."""
    monkeypatch.setattr(pooling_module, "LANE_MIN_BYTES", 1)
    calls = count_calls(monkeypatch, _pool_kernels, *kernels)
    fused = run(case, dtype, threads, layer=layer)
    assert set(calls) == names
    monkeypatch.setenv("ERMLAB_FUSED", "0")
    calls.clear()
    reference = run(case, dtype, threads, layer=layer)
    assert not calls
    for a, b in zip(fused, reference, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES)
def test_kernels_equal_numpy_bit_for_bit(case, dtype, threads, monkeypatch):
    check_compiled_equal_numpy(case, dtype, threads, monkeypatch, nn.MaxPool2d, (
        "max_forward", "max_forward_windows", "max_backward", "max_backward_scatter",
        "max2x2_forward", "max2x2_backward"), kernel_names(case))


@pytest.mark.parametrize("case,scan", [(CASES[0], "max_forward"),
                                       (CASES[3], "max_forward_windows")])
def test_evaluation_mode_keeps_no_winners(case, scan, monkeypatch):
    calls = count_calls(monkeypatch, _pool_kernels, "max_forward", "max_forward_windows",
                        "max_backward")
    y, _, _ = run(case, np.float32, training=False)
    assert calls == Counter({scan: 1})
    monkeypatch.setenv("ERMLAB_FUSED", "0")
    np.testing.assert_array_equal(y, run(case, np.float32, training=False)[0])


def test_two_by_two_in_evaluation_mode_and_an_odd_gradient(monkeypatch):
    """2×2 stride 2 without winners kept (evaluation), and a ∂L/∂x whose last row and
    column lie outside every window: 0 there, written by the kernel (∂L/∂x is not zeroed
    first)."""
    calls = count_calls(monkeypatch, _pool_kernels, "max2x2_forward", "max2x2_backward")
    y, _, _ = run((2, 2, 0, 7, 9), np.float32, training=False)
    assert calls == Counter(max2x2_forward=1)
    _, _, grad = run((2, 2, 0, 7, 9), np.float64)
    assert not grad[:, :, 6].any() and not grad[:, :, :, 8].any()
    assert np.count_nonzero(grad[:, :, :6, :8]) == grad.size // (7 * 9) * 3 * 4
    monkeypatch.setenv("ERMLAB_FUSED", "0")
    np.testing.assert_array_equal(y, run((2, 2, 0, 7, 9), np.float32, training=False)[0])


@pytest.mark.parametrize("case", [(3, 2, 1, 11, 11), (2, 2, 0, 8, 8), (2, 2, 0, 7, 9)])
def test_against_torch(case):
    """torch's outputs and gradients, on ``batch``'s NaN, −∞ and tied windows."""
    torch = pytest.importorskip("torch", reason="torch oracle: pip install torch==2.13.0 (CPU)")
    k, stride, p, h, w = case
    x = batch(h, w, np.float64, seed=2)
    (y, gx), (ty, tgx) = against_torch(torch, nn.MaxPool2d, "max_pool2d", case, x)
    np.testing.assert_array_equal(y, ty)
    if stride < k:  # overlapping windows: their gradients add up in another order
        np.testing.assert_allclose(gx, tgx, rtol=1e-13, atol=1e-15)
    else:
        np.testing.assert_array_equal(gx, tgx)


def against_torch(torch, layer, function, case, x):
    """(y, ∂L/∂x) of ``layer`` and of torch's ``function`` with the same window, on x."""
    k, stride, p = case[:3]
    pool = layer(k, stride, p)
    pool.train()
    y = pool.forward(x)
    g = np.random.default_rng(3).standard_normal(y.shape)
    gx = pool.backward(g)
    tx = torch.tensor(x, requires_grad=True)
    ty = getattr(torch.nn.functional, function)(tx, k, stride, p)
    ty.backward(torch.tensor(g))
    return (y, gx), (ty.detach().numpy(), tx.grad.numpy())


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES)
def test_average_kernels_equal_numpy_bit_for_bit(case, dtype, threads, monkeypatch):
    """AvgPool2d's compiled passes: the NumPy path's sums (padding zeros, NaN and −∞
    included) and shares, added where windows overlap and written where they do not;
    windows that tile the input (2×2 stride 2 on even sizes here) stay with NumPy."""
    tiles = case[0] == case[1] and case[2] == 0 and case[3] % case[0] == case[4] % case[0] == 0
    check_compiled_equal_numpy(case, dtype, threads, monkeypatch, nn.AvgPool2d,
                               ("avg_forward", "avg_backward"),
                               set() if tiles else {"avg_forward", "avg_backward"})


@pytest.mark.parametrize("case", [(3, 2, 1, 11, 11), (3, 1, 1, 9, 37), (2, 2, 0, 7, 9)])
def test_average_against_torch(case):
    torch = pytest.importorskip("torch", reason="torch oracle: pip install torch==2.13.0 (CPU)")
    x = np.random.default_rng(2).standard_normal((3, 4, *case[3:]))
    for ours, theirs in zip(*against_torch(torch, nn.AvgPool2d, "avg_pool2d", case, x),
                            strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-13, atol=1e-15)
