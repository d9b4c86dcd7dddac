"""Initializers: supports, variances (checked statistically), fans, dtypes, seeding, errors.

Statistical bound: for n i.i.d. draws with known mean 0, the estimator
s² = (1/n) Σ w² of the variance σ² has standard error √(Var(w²)/n), where
Var(w²) = 2σ⁴ for a normal and 4b⁴/45 for U[−b, b] (E w⁴ − σ⁴ = b⁴/5 − b⁴/9).
With n ≈ 10⁵ draws we require |s² − σ²| ≤ 5 standard errors (a false alarm
has probability ≈ 6·10⁻⁷ per check; the seeds are fixed anyway), i.e. about
±1.4 % of σ² for a normal: a wrong factor (1/fan_in vs 2/fan_in, fan_in vs
fan_in + fan_out) is far outside.
"""

import math

import numpy as np
import pytest

from ermlab import nn
from ermlab.backend import default_dtype
from ermlab.nn import init

Z = 5.0  # standard errors allowed
SHAPES = [(400, 250), (64, 32, 5, 5)]  # 100 000 and 51 200 draws


def variance_within_bound(w, variance, fourth_moment_excess):
    """Assert (1/n) Σ w² is within Z standard errors of ``variance``; the mean within Z too."""
    w = w.astype(np.float64).ravel()
    n = w.size
    se_var = math.sqrt(fourth_moment_excess / n)
    assert abs(np.mean(w ** 2) - variance) <= Z * se_var, (np.mean(w ** 2), variance, se_var)
    assert abs(np.mean(w)) <= Z * math.sqrt(variance / n)


def uniform_bound(name, fan_in, fan_out):
    return {
        "glorot_uniform": math.sqrt(6.0) / math.sqrt(fan_in + fan_out),
        "he_uniform": math.sqrt(6.0 / fan_in),
    }[name]


@pytest.mark.parametrize("name", ["glorot_uniform", "he_uniform"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_uniform_initializers_support_and_variance(name, shape):
    fan_in, fan_out = init.fans(shape)
    b = uniform_bound(name, fan_in, fan_out)
    w = init.get(name)(shape, rng=0)
    assert w.shape == shape
    assert np.all(np.abs(w) <= np.float32(b))
    # the support is all of [−b, b], not a narrower interval: P(max < b(1−10⁻³)) < e⁻²⁵
    assert w.max() > b * (1 - 1e-3) and w.min() < -b * (1 - 1e-3)
    variance = b * b / 3
    expected = {"glorot_uniform": 2.0 / (fan_in + fan_out), "he_uniform": 2.0 / fan_in}[name]
    assert variance == pytest.approx(expected, rel=1e-12)
    variance_within_bound(w, expected, 4 * b ** 4 / 45)


@pytest.mark.parametrize("name,variance", [
    ("glorot_normal", lambda fi, fo: 2.0 / (fi + fo)),
    ("he_normal", lambda fi, fo: 2.0 / fi),
    ("lecun_normal", lambda fi, fo: 1.0 / fi),
])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_normal_initializers_variance(name, variance, shape):
    fan_in, fan_out = init.fans(shape)
    w = init.get(name)(shape, rng=1)
    sigma2 = variance(fan_in, fan_out)
    variance_within_bound(w, sigma2, 2 * sigma2 ** 2)
    # unbounded: some draws beyond 3σ (≈ 0.27 % of 5·10⁴+ draws)
    assert np.mean(np.abs(w) > 3 * math.sqrt(sigma2)) > 0.001


def test_generic_uniform_and_normal():
    w = init.uniform(-0.2, 0.6)((300, 300), rng=0)
    assert w.min() >= np.float32(-0.2) and w.max() <= np.float32(0.6)
    variance_within_bound(w - 0.2, 0.8 ** 2 / 12, 4 * 0.4 ** 4 / 45)
    w = init.normal(1.0, 0.5)((300, 300), rng=0)
    variance_within_bound(w - 1.0, 0.25, 2 * 0.25 ** 2)
    np.testing.assert_array_equal(init.constant(0.3)((2, 3)), np.full((2, 3), 0.3, np.float32))
    assert not init.zeros((4, 5)).any()


def test_fans():
    assert init.fans((10, 20)) == (20, 10)
    assert init.fans((16, 3, 5, 5)) == (75, 400)
    assert init.fans((8, 4, 3)) == (12, 24)
    with pytest.raises(ValueError, match=r"rank ≥ 2; got shape \(5,\)"):
        init.fans((5,))
    with pytest.raises(ValueError, match="rank ≥ 2"):
        init.glorot_uniform((5,))


def test_conv_glorot_bound_uses_receptive_field():
    w = init.glorot_uniform((16, 3, 5, 5), rng=0)
    b = math.sqrt(6.0 / (75 + 400))
    assert np.abs(w).max() <= np.float32(b) and np.abs(w).max() > 0.99 * b


ALL = ["zeros", "glorot_uniform", "glorot_normal", "he_uniform", "he_normal", "lecun_normal",
       "uniform", "normal"]


@pytest.mark.parametrize("name", ALL)
def test_dtype_float32_by_default_and_float64_on_request(name):
    fn = init.get(name)
    assert fn((3, 4), rng=0).dtype == np.float32
    assert fn((3, 4), rng=0, dtype=np.float64).dtype == np.float64
    with default_dtype(np.float64):
        assert fn((3, 4), rng=0).dtype == np.float64
    with pytest.raises(ValueError, match="float32 or float64"):
        fn((3, 4), rng=0, dtype=np.int32)


@pytest.mark.parametrize("name", ALL[1:])
def test_same_seed_same_weights(name):
    fn = init.get(name)
    np.testing.assert_array_equal(fn((5, 6), rng=3), fn((5, 6), rng=3))
    assert not np.array_equal(fn((5, 6), rng=3), fn((5, 6), rng=4))
    g1, g2 = np.random.default_rng(7), np.random.default_rng(7)
    np.testing.assert_array_equal(fn((5, 6), rng=g1), fn((5, 6), rng=g2))
    # a Generator is consumed: the next draw differs from the first
    assert not np.array_equal(fn((5, 6), rng=g1), fn((5, 6), rng=7))


def test_float64_draws_are_the_float32_draws_rounded():
    w32 = init.glorot_normal((5, 6), rng=2)
    w64 = init.glorot_normal((5, 6), rng=2, dtype=np.float64)
    np.testing.assert_array_equal(w64.astype(np.float32), w32)


def test_same_seed_same_model():
    a, b = nn.mlp([5, 4, 3], rng=11), nn.mlp([5, 4, 3], rng=11)
    for (ka, pa), (kb, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert ka == kb
        np.testing.assert_array_equal(pa.data, pb.data)
    c = nn.mlp([5, 4, 3], rng=12)
    assert not np.array_equal(a[0].weight.data, c[0].weight.data)
    square = nn.mlp([5, 5, 5], rng=11)  # layers draw in turn from one generator: they differ
    assert not np.array_equal(square[0].weight.data, square[2].weight.data)


def test_unknown_name_raises():
    with pytest.raises(ValueError, match="unknown initializer 'xavier'; choose one of"):
        init.get("xavier")
    with pytest.raises(ValueError, match="unknown initializer 'glorot'"):
        nn.Linear(3, 2, weight_init="glorot")


def test_callable_initializer_is_used():
    layer = nn.Linear(3, 2, weight_init=init.constant(0.25))
    np.testing.assert_array_equal(layer.weight.data, np.full((2, 3), 0.25, np.float32))


def test_biases_start_at_zero():
    model = nn.mlp([6, 5, 4, 2], rng=0)
    biases = [p for name, p in model.named_parameters() if name.endswith("bias")]
    assert len(biases) == 3
    for p in biases:
        assert not p.data.any() and p.data.dtype == np.float32 and p.regularize is False
    maxout = nn.Maxout(3, 2, pieces=3, rng=0)
    assert maxout.linear.bias.shape == (6,) and not maxout.linear.bias.data.any()


def test_mlp_default_init_follows_activation():
    """mlp uses He for ReLU-like units (bound √(6/fan_in)) and Glorot otherwise."""
    relu = nn.mlp([300, 200], activation="relu", rng=0)[0].weight.data
    tanh = nn.mlp([300, 200], activation="tanh", rng=0)[0].weight.data
    assert np.abs(relu).max() == pytest.approx(math.sqrt(6 / 300), rel=1e-3)
    assert np.abs(tanh).max() == pytest.approx(math.sqrt(6 / 500), rel=1e-3)
