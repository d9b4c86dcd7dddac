"""BatchNorm's Numba kernels (``ermlab.nn._norm_kernels``) against the NumPy path and oracles.

* statistics: float32 μ and σ² within 1 ulp of the exact values (``math.fsum``) rounded
  once (the kernels sum in float64), float64 within 4; the NumPy path, summing in the
  dtype, within a few ulps of the kernels';
* y and ∂L/∂x: bit for bit the NumPy path's formulas applied to the kernels' μ, 1/√(σ² + ε)
  and sums (the same IEEE operations in the same order, no FMA);
* torch's BatchNorm2d (float32 and float64, running statistics, several steps);
* float64 finite differences; 3 lanes of channels bit for bit as 1;
* ``ERMLAB_FUSED=0``, no Numba, and layouts the kernels do not take run the NumPy path.
"""

import math

import numpy as np
import pytest

pytest.importorskip("numba", reason="Numba kernels absent: pip install 'ermlab[fast]'")

from kernel_calls import count_calls  # noqa: E402

from ermlab import nn  # noqa: E402
from ermlab.gradcheck import check_module  # noqa: E402
from ermlab.nn import _fused, _norm_kernels, normalization  # noqa: E402

SHAPES = [(5, 3, 4, 6), (4, 2, 2, 2), (3, 4, 7, 5)]  # rows of L ≥ KERNEL_MIN_ROW values


def _layer(c, dtype, affine=True, seed=0):
    bn = nn.BatchNorm2d(c, affine=affine, dtype=dtype)
    if affine:
        rng = np.random.default_rng(seed)
        bn.weight.data[:] = rng.standard_normal(c)
        bn.bias.data[:] = rng.standard_normal(c)
    return bn


def _data(shape, dtype, seed=1):
    rng = np.random.default_rng(seed)
    x = 3 * rng.standard_normal(shape) + rng.standard_normal((1, shape[1], 1, 1)) * 10
    return x.astype(dtype), rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES + [(2, 2, 128, 128)])
def test_statistics_are_the_float64_values_rounded_once(dtype, shape):
    x, _ = _data(shape, dtype)
    x += 1000  # μ/σ ≈ 100: the centred second pass; m up to 32,768 values per channel
    c = shape[1]
    x3 = x.reshape(shape[0], c, -1)
    mean, var, inv_std = (np.empty(c, dtype) for _ in range(3))
    y = np.empty_like(x3)
    eps = dtype(1e-5)
    two_pass = dtype == np.float64
    affine = np.empty((2, c), dtype)
    _norm_kernels.forward(x3, y, mean, var, inv_std, None, None, eps, dtype(1), True, two_pass,
                          False, affine, 0, c)
    channels = x.astype(np.float64).transpose(1, 0, 2, 3).reshape(c, -1)
    want_mean = np.array([math.fsum(row) / row.size for row in channels])
    want_var = np.array([math.fsum((row - mu) ** 2) / row.size
                         for row, mu in zip(channels, want_mean)])
    ulps = 1 if dtype == np.float32 else 4  # float64: the sums' own rounding
    np.testing.assert_array_max_ulp(mean, want_mean.astype(dtype), maxulp=ulps)
    np.testing.assert_array_max_ulp(var, want_var.astype(dtype), maxulp=ulps)
    np.testing.assert_array_equal(inv_std, 1.0 / np.sqrt(var + 1e-5))  # the NumPy path's
    numpy_bn = nn.BatchNorm2d(c, dtype=dtype)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ERMLAB_FUSED", "0")
        numpy_bn.forward(x)
    np.testing.assert_array_max_ulp(numpy_bn._mean, mean, maxulp=8)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("shape", SHAPES)
def test_output_and_gradients_are_the_numpy_formulas_bit_for_bit(monkeypatch, dtype, affine,
                                                                shape):
    calls = count_calls(monkeypatch, _norm_kernels, "forward", "backward", "grad_sums")
    x, g = _data(shape, dtype)
    bn = _layer(shape[1], dtype, affine)
    y = bn.forward(x)
    grad, (dot, total) = bn._grad_input_and_sums(g)
    assert calls["forward"] == calls["backward"] == 1
    mean, inv_std = bn._mean.reshape(1, -1, 1, 1), bn._inv_std.reshape(1, -1, 1, 1)
    scale = bn.weight.data.reshape(1, -1, 1, 1) * inv_std if affine else inv_std
    shift = -mean * scale
    if affine:
        shift += bn.bias.data.reshape(1, -1, 1, 1)
    want = x * scale
    want += shift
    np.testing.assert_array_equal(y, want)
    np.testing.assert_array_equal(grad, bn._grad_input(g, (dot, total)))
    numpy_bn = _layer(shape[1], dtype, affine)
    monkeypatch.setenv("ERMLAB_FUSED", "0")
    y_numpy = numpy_bn.forward(x)
    grad_numpy, (dot_numpy, total_numpy) = numpy_bn._grad_input_and_sums(g)
    assert calls["forward"] == calls["backward"] == 1  # the NumPy path: no kernel
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(y, y_numpy, **tol)
    np.testing.assert_allclose(grad, grad_numpy, **tol)
    np.testing.assert_allclose(total, total_numpy, **tol)
    np.testing.assert_allclose(dot, dot_numpy, **tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("fused", ["1", "0"])
def test_matches_torch_with_running_statistics(monkeypatch, dtype, fused):
    torch = pytest.importorskip("torch", reason="PyTorch oracle absent: pip install torch (CPU)")
    monkeypatch.setenv("ERMLAB_FUSED", fused)
    calls = count_calls(monkeypatch, _norm_kernels, "forward", "backward", "grad_sums")
    shape = (6, 4, 5, 3)
    ours = _layer(4, dtype, seed=3)
    theirs = torch.nn.BatchNorm2d(4, dtype=getattr(torch, np.dtype(dtype).name))
    with torch.no_grad():
        theirs.weight.copy_(torch.from_numpy(ours.weight.data))
        theirs.bias.copy_(torch.from_numpy(ours.bias.data))
    tol = dict(rtol=2e-5, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)
    for step in range(3):
        x, g = _data(shape, dtype, seed=step)
        ours.zero_grad()
        theirs.zero_grad()
        y = ours.forward(x)
        grad = ours.backward(g)
        xt = torch.tensor(x, requires_grad=True)
        yt = theirs(xt)
        yt.backward(torch.from_numpy(g))
        np.testing.assert_allclose(y, yt.detach().numpy(), **tol)
        np.testing.assert_allclose(grad, xt.grad.numpy(), **tol)
        np.testing.assert_allclose(ours.weight.grad, theirs.weight.grad.numpy(), **tol)
        np.testing.assert_allclose(ours.bias.grad, theirs.bias.grad.numpy(), **tol)
        np.testing.assert_allclose(ours.running_mean, theirs.running_mean.numpy(), **tol)
        np.testing.assert_allclose(ours.running_var, theirs.running_var.numpy(), **tol)
    theirs.eval()
    x, _ = _data(shape, dtype, seed=9)
    np.testing.assert_allclose(ours.eval().forward(x),
                               theirs(torch.from_numpy(x)).detach().numpy(), **tol)
    assert (calls["forward"] == 4 and calls["backward"] == 3) == (fused == "1")


@pytest.mark.parametrize("affine", [True, False])
def test_gradcheck_float64_through_the_kernels(monkeypatch, affine):
    calls = count_calls(monkeypatch, _norm_kernels, "forward", "backward", "grad_sums")
    monkeypatch.setattr(normalization, "LANE_MIN_BYTES", 1)
    bn = _layer(3, np.float64, affine, seed=4)
    bn.threads = 2
    x, _ = _data((4, 3, 3, 2), np.float64, seed=5)
    result = check_module(bn, x)
    assert result.max_rel_error < 1e-6, result
    assert calls["forward"] > 0 and calls["backward"] > 0


def test_lanes_of_channels_equal_one_lane_bit_for_bit(monkeypatch):
    calls = count_calls(monkeypatch, _norm_kernels, "forward", "backward", "grad_sums")
    monkeypatch.setattr(normalization, "LANE_MIN_BYTES", 1)
    x, g = _data((4, 7, 5, 6), np.float32, seed=6)
    results = []
    for threads in (1, 3):
        bn = _layer(7, np.float32, seed=7)
        bn.threads = threads
        before = calls.copy()
        y = bn.forward(x)
        grad = bn.backward(g)
        bn.accumulate_grad(g)  # input_grad=False's path: the sums only
        results.append([y, grad, bn.weight.grad, bn.bias.grad, bn.running_mean, bn.running_var])
        assert [calls[k] - before[k] for k in ("forward", "backward", "grad_sums")] == \
            [threads] * 3
    for ours, theirs in zip(*results):
        np.testing.assert_array_equal(ours, theirs)


def test_the_numpy_path_runs_without_numba_and_for_other_layouts(monkeypatch):
    calls = count_calls(monkeypatch, _norm_kernels, "forward", "backward", "grad_sums")
    x, g = _data((4, 3, 5, 6), np.float32, seed=8)
    want_y = _layer(3, np.float32).forward(x)
    assert calls["forward"] == 1
    monkeypatch.setitem(_fused._loaded, "_norm_kernels", False)  # as without Numba
    assert normalization._kernels(x) is None
    np.testing.assert_allclose(_layer(3, np.float32).forward(x), want_y, rtol=1e-5, atol=1e-5)
    monkeypatch.setitem(_fused._loaded, "_norm_kernels", _norm_kernels)
    pairs, g = _data((8, 3, 5, 6), np.float32, seed=9)
    every_other = pairs[::2]  # its (N, C, H·W) view is not C-contiguous: the NumPy path
    bn, want = _layer(3, np.float32), _layer(3, np.float32)
    y = bn.forward(every_other)
    grad = bn.backward(g[::2])
    assert calls["forward"] == 1 and calls["backward"] == calls["grad_sums"] == 0
    want_y = want.forward(every_other.copy())
    np.testing.assert_allclose(y, want_y, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(grad, want.backward(g[::2].copy()), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(bn.weight.grad, want.weight.grad, rtol=1e-5, atol=1e-5)
    assert calls["forward"] == 2 and calls["backward"] == 1
    assert normalization._kernels(x.reshape(4, 3, -1).astype(np.float16)) is None
    short = normalization.KERNEL_MIN_ROW - 1  # rows shorter than that: the NumPy path
    features, _ = _data((16, 5, short, 1), np.float32)
    bn1d = nn.BatchNorm1d(5)
    np.testing.assert_allclose(bn1d.forward(features[..., 0]),
                               nn.BatchNorm2d(5).forward(features)[..., 0], rtol=1e-5, atol=1e-5)
    bn1d.backward(features[..., 0])
    assert calls["forward"] == 2 and calls["backward"] == 1
