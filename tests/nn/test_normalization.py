"""BatchNorm without torch: gradient checks, the equations written out by hand, bad inputs."""

import numpy as np
import pytest

from ermlab import nn
from ermlab.gradcheck import check_module


def normal(seed, shape):
    return np.random.default_rng(seed).standard_normal(shape)


def with_random_affine(layer, seed):
    layer.weight.data[:] = normal(seed, layer.num_features)
    layer.bias.data[:] = normal(seed + 1, layer.num_features)
    return layer


@pytest.mark.parametrize(
    "layer, shape",
    [(nn.BatchNorm1d, (6, 3)), (nn.BatchNorm1d, (3, 2, 4)), (nn.BatchNorm2d, (3, 2, 3, 2))],
)
def test_gradcheck_training_mode(layer, shape):
    bn = with_random_affine(layer(shape[1], dtype=np.float64), 0)
    result = check_module(bn, 2 * normal(1, shape) + 1)
    assert set(result.errors) == {"input", "param:weight", "param:bias"}
    assert result.max_rel_error < 1e-6, result


def test_gradcheck_without_affine():
    bn = nn.BatchNorm2d(2, affine=False, dtype=np.float64)
    assert check_module(bn, normal(5, (4, 2, 2, 2))).max_rel_error < 1e-6


def test_training_and_test_equations_by_hand():
    momentum, eps = 0.2, 1e-5
    bn = with_random_affine(nn.BatchNorm2d(3, momentum=momentum, dtype=np.float64), 3)
    gamma, beta = bn.weight.data.copy(), bn.bias.data.copy()
    mean_run, var_run = np.zeros(3), np.ones(3)
    for seed in range(3):
        x = normal(seed, (4, 3, 2, 5)) * 2 + 3
        m = 4 * 2 * 5
        mu = x.mean(axis=(0, 2, 3))
        var = x.var(axis=(0, 2, 3))  # biased, for normalization
        y = bn.forward(x)
        x_hat = (x - mu[None, :, None, None]) / np.sqrt(var[None, :, None, None] + eps)
        np.testing.assert_allclose(y, gamma[:, None, None] * x_hat + beta[:, None, None],
                                   rtol=1e-12, atol=1e-12)
        mean_run = (1 - momentum) * mean_run + momentum * mu
        var_run = (1 - momentum) * var_run + momentum * var * m / (m - 1)  # unbiased
        np.testing.assert_allclose(bn.running_mean, mean_run, rtol=1e-13)
        np.testing.assert_allclose(bn.running_var, var_run, rtol=1e-13)
    x = normal(9, (2, 3, 2, 5))
    expected = (x - mean_run[:, None, None]) / np.sqrt(var_run[:, None, None] + eps)
    np.testing.assert_allclose(bn.eval().forward(x),
                               gamma[:, None, None] * expected + beta[:, None, None], rtol=1e-12)
    assert int(bn.num_batches_tracked) == 3


def test_running_statistics_are_in_state_dict_and_load_back():
    bn = nn.BatchNorm1d(3)
    assert bn.weight.dtype == np.float32 and bn.running_var.dtype == np.float32
    bn.forward(normal(0, (5, 3)).astype(np.float32))
    state = bn.state_dict()
    other = nn.BatchNorm1d(3)
    other.load_state_dict(state)
    for key in ("running_mean", "running_var", "num_batches_tracked"):
        np.testing.assert_array_equal(getattr(other, key), state[key])
    assert not bn.weight.regularize and not bn.bias.regularize


@pytest.mark.parametrize("shape", [(4, 3), (4, 3, 5), (2, 3, 4, 5, 6)])
def test_batchnorm2d_rejects_wrong_rank(shape):
    with pytest.raises(ValueError, match=r"BatchNorm2d expects input of shape \(N, C, H, W\)"):
        nn.BatchNorm2d(3).forward(np.zeros(shape, np.float32))


def test_other_bad_inputs_and_arguments():
    with pytest.raises(ValueError, match=r"\(N, C\) or \(N, C, L\)"):
        nn.BatchNorm1d(3).forward(np.zeros((2, 3, 4, 5), np.float32))
    with pytest.raises(ValueError, match="expects 3 features/channels on axis 1"):
        nn.BatchNorm1d(3).forward(np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        nn.BatchNorm1d(3).forward(np.zeros((1, 3), np.float32))
    with pytest.raises(ValueError, match="dtype"):
        nn.BatchNorm1d(3).forward(np.zeros((2, 3), np.float64))
    with pytest.raises(ValueError, match="momentum"):
        nn.BatchNorm1d(3, momentum=1.5)
    with pytest.raises(ValueError, match="num_features"):
        nn.BatchNorm2d(0)
    # One example is fine at test time (running statistics).
    assert nn.BatchNorm1d(3).eval().forward(np.ones((1, 3), np.float32)).shape == (1, 3)


@pytest.mark.parametrize("n", [65536, 65536 + 7])
def test_batchnorm1d_statistics_of_many_rows_are_accurate(n):
    """(N, C) input: the float32 sums over N added row by row (error O(N) ulps): at
    N = 65536, mean 1e4, std 1 the mean was off by ~3 and the batch variance 9.2, not 1.
    Against float64 (what the kernels' (N, C, L ≥ 4) path reaches: ~1e-7)."""
    rng = np.random.default_rng(0)
    x = (1e4 + rng.standard_normal((n, 4))).astype(np.float32)
    bn = nn.BatchNorm1d(4, momentum=1.0)
    bn.train()
    y = bn.forward(x)
    x64 = x.astype(np.float64)
    mean, var = x64.mean(0), x64.var(0)
    np.testing.assert_allclose(bn.running_mean, mean, rtol=1e-7, atol=0)
    np.testing.assert_allclose(bn.running_var * (n - 1) / n, var, rtol=1e-5)
    y_ref = (x64 - mean) / np.sqrt(var + bn.eps)
    assert np.abs(y - y_ref).max() < 5e-3  # x's own float32 rounding near 1e4: ~1e-3
