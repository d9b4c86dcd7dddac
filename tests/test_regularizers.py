"""Tests of ermlab.regularizers: gradients by finite differences, penalties by hand, max-norm."""

import math

import numpy as np
import pytest

from ermlab import nn
from ermlab.backend import default_dtype
from ermlab.gradcheck import check_regularizer
from ermlab.nn.parameter import Parameter
from ermlab.regularizers import (
    L1,
    L2,
    REGULARIZERS,
    Compose,
    ElasticNet,
    MaxNorm,
    Regularizer,
    get,
)

SHAPES = [(7,), (4, 5), (3, 2, 3, 3)]
PENALTIES = [
    ("l2", lambda: L2(0.3)),
    ("l1", lambda: L1(0.2)),
    ("elastic_net", lambda: ElasticNet(0.15, 0.7)),
    ("l2+l1", lambda: L2(0.05) + L1(0.1)),
    ("elastic_net+max_norm", lambda: ElasticNet(0.2, 2.0) + MaxNorm(1.0)),
]


def away_from_zero(rng, shape, margin=0.05):
    """Normal draws pushed at least ``margin`` from 0, so |w| is differentiable everywhere."""
    w = rng.standard_normal(shape)
    return np.sign(w) * (np.abs(w) + margin)


def make_params(seed, shape):
    rng = np.random.default_rng(seed)
    weight = Parameter(away_from_zero(rng, shape), "weight", regularize=True)
    other = Parameter(away_from_zero(rng, (3, 4)), "other", regularize=True)
    bias = Parameter(away_from_zero(rng, (shape[0],)), "bias", regularize=False)
    return [weight, other, bias]


# -- gradients ------------------------------------------------------------------


@pytest.mark.parametrize("name,make", PENALTIES, ids=[p[0] for p in PENALTIES])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gradient_matches_finite_differences(name, make, shape, seed):
    params = make_params(seed, shape)
    result = check_regularizer(make(), params)
    assert result.max_rel_error <= 1e-6, result
    assert set(result.errors) == {"weight", "other", "bias"}


def test_gradient_on_a_model_in_float64():
    with default_dtype(np.float64):
        model = nn.mlp([6, 5, 4, 3], activation="tanh", rng=3)
    for reg in (L2(0.1), ElasticNet(0.1, 0.5)):
        assert check_regularizer(reg, model.parameters()).max_rel_error <= 1e-6


# -- penalties and gradients by hand ------------------------------------------------


def hand_params():
    w = Parameter(np.array([[1.0, -2.0], [0.5, 0.0]]), "w")
    v = Parameter(np.array([3.0, -4.0]), "v")
    b = Parameter(np.array([10.0, -10.0]), "b", regularize=False)
    return w, v, b


def test_l2_penalty_and_gradient_by_hand():
    w, v, b = hand_params()
    # ‖w‖² = 1 + 4 + 0.25 + 0 = 5.25, ‖v‖² = 25
    assert L2(0.5).penalty([w, v, b]) == pytest.approx(0.5 * 30.25, rel=1e-15)
    L2(0.5).add_gradient([w, v, b])
    np.testing.assert_array_equal(w.grad, [[1.0, -2.0], [0.5, 0.0]])
    np.testing.assert_array_equal(v.grad, [3.0, -4.0])


def test_l1_penalty_and_gradient_by_hand():
    w, v, b = hand_params()
    # Σ|w| = 3.5, Σ|v| = 7
    assert L1(0.2).penalty([w, v, b]) == pytest.approx(0.2 * 10.5, rel=1e-15)
    L1(0.2).add_gradient([w, v, b])
    np.testing.assert_allclose(w.grad, [[0.2, -0.2], [0.2, 0.0]], rtol=0, atol=1e-15)
    np.testing.assert_allclose(v.grad, [0.2, -0.2], rtol=0, atol=1e-15)


def test_elastic_net_penalty_and_gradient_by_hand():
    w, v, b = hand_params()
    lam, beta = 0.1, 3.0
    expected = lam * (beta * (5.25 + 25.0) + (3.5 + 7.0))
    assert ElasticNet(lam, beta).penalty([w, v, b]) == pytest.approx(expected, rel=1e-14)
    ElasticNet(lam, beta).add_gradient([w, v, b])
    expected_w = lam * (2 * beta * np.array([[1.0, -2.0], [0.5, 0.0]])
                        + np.array([[1.0, -1.0], [1.0, 0.0]]))
    np.testing.assert_allclose(w.grad, expected_w, rtol=1e-14, atol=0)
    np.testing.assert_allclose(v.grad, lam * (2 * beta * np.array([3.0, -4.0]) + [1.0, -1.0]),
                               rtol=1e-14)


def test_elastic_net_is_l2_plus_l1():
    params = make_params(5, (4, 5))
    lam, beta = 0.3, 0.25
    combined = L2(lam * beta) + L1(lam)
    assert ElasticNet(lam, beta).penalty(params) == pytest.approx(combined.penalty(params))


def test_zero_strength_gives_zero():
    params = make_params(0, (4, 5))
    for reg in (L2(0), L1(0.0), ElasticNet(0, 1.0)):
        assert reg.penalty(params) == 0.0
        for p in params:
            p.zero_grad()
        reg.add_gradient(params)
        assert all(not p.grad.any() for p in params)


def test_gradient_adds_to_an_existing_gradient():
    w, v, b = hand_params()
    w.add_grad(np.ones_like(w.data))
    L2(0.5).add_gradient([w, v, b])
    np.testing.assert_array_equal(w.grad, 1.0 + w.data)
    L2(0.5).add_gradient([w, v, b])  # accumulates again: grad is now 1 + 2·w
    np.testing.assert_array_equal(w.grad, 1.0 + 2 * w.data)


def test_accepts_a_module_or_a_generator():
    model = nn.mlp([4, 3, 2], rng=0)
    expected = sum(float(np.sum(p.data.astype(np.float64) ** 2))
                   for p in model.parameters() if p.regularize)
    assert L2(1.0).penalty(model) == pytest.approx(expected, rel=1e-5)
    assert L2(1.0).penalty(p for p in model.parameters()) == pytest.approx(expected, rel=1e-5)
    reg = L2(1.0) + L1(1.0)
    assert reg.penalty(p for p in model.parameters()) == pytest.approx(
        L2(1.0).penalty(model) + L1(1.0).penalty(model), rel=1e-6)


def test_a_parameter_listed_twice_counts_once():
    w, v, b = hand_params()
    assert L2(1.0).penalty([w, w, v]) == pytest.approx(30.25)
    L2(1.0).add_gradient([w, w])
    np.testing.assert_array_equal(w.grad, 2 * w.data)


def test_float32_stays_float32():
    model = nn.mlp([4, 3, 2], rng=0)
    model.zero_grad()
    ElasticNet(0.1, 0.5).add_gradient(model)
    for p in model.parameters():
        assert p.grad.dtype == np.float32
    assert isinstance(L2(0.1).penalty(model), float)


# -- biases are never regularized --------------------------------------------------


@pytest.mark.parametrize("make", [p[1] for p in PENALTIES], ids=[p[0] for p in PENALTIES])
def test_biases_untouched(make):
    reg = make()
    w, v, b = hand_params()
    assert reg.penalty([b]) == 0.0
    b.add_grad(np.array([0.25, -0.5]))
    before_data, before_grad = b.data.copy(), b.grad.copy()
    reg.add_gradient([w, v, b])
    reg.apply([w, v, b])
    np.testing.assert_array_equal(b.grad, before_grad)
    np.testing.assert_array_equal(b.data, before_data)
    assert reg.penalty([w, v, b]) == pytest.approx(reg.penalty([w, v]), rel=1e-15)


def test_model_biases_untouched():
    model = nn.mlp([4, 3, 2], rng=0)
    model.zero_grad()
    L1(1.0).add_gradient(model)
    for name, p in model.named_parameters():
        assert p.grad.any() == p.regularize, name


# -- max-norm -------------------------------------------------------------------


def test_max_norm_projects_long_rows_and_keeps_short_ones():
    rng = np.random.default_rng(0)
    c = 1.5
    w = rng.standard_normal((20, 8))
    w[::2] *= 0.1  # even rows have norms well below c
    norms = np.linalg.norm(w, axis=1)
    long, short = norms > c, norms <= c
    assert long.sum() >= 5 and short.sum() >= 10
    param = Parameter(w.copy(), "weight")
    MaxNorm(c).apply([param])
    new_norms = np.linalg.norm(param.data, axis=1)
    np.testing.assert_allclose(new_norms[long], c, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(param.data[short], w[short])
    # direction preserved: each long row is a positive multiple of its old self
    cosine = np.sum(param.data * w, axis=1) / (new_norms * norms)
    np.testing.assert_allclose(cosine, 1.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(param.data[long], w[long] * (c / norms[long])[:, None], rtol=1e-12)


def test_max_norm_conv_weight_uses_all_axes_but_the_first():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((6, 3, 3, 3))
    w[:3] *= 0.05
    norms = np.sqrt(np.sum(w ** 2, axis=(1, 2, 3)))
    c = 2.0
    param = Parameter(w.copy(), "conv")
    MaxNorm(c).apply([param])
    new_norms = np.sqrt(np.sum(param.data ** 2, axis=(1, 2, 3)))
    assert (norms[3:] > c).all() and (norms[:3] <= c).all()
    np.testing.assert_allclose(new_norms[3:], c, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(param.data[:3], w[:3])


def test_max_norm_explicit_axis_and_rank_one():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((5, 7)) * 3
    param = Parameter(w.copy(), "weight")
    MaxNorm(1.0, axis=0).apply([param])  # columns instead of rows
    np.testing.assert_allclose(np.linalg.norm(param.data, axis=0), 1.0, atol=1e-6)
    vector = Parameter(np.array([3.0, 4.0]), "v")
    MaxNorm(1.0).apply([vector])
    np.testing.assert_allclose(vector.data, [0.6, 0.8], rtol=1e-15)
    with pytest.raises(ValueError, match="axis 2 is out of range"):
        MaxNorm(1.0, axis=2).apply([param])


def test_max_norm_float32_and_model():
    model = nn.mlp([30, 20, 5], rng=0, weight_init=nn.init.normal(0.0, 1.0))
    MaxNorm(0.5).apply(model)
    for p in model.parameters():
        if p.regularize:
            assert p.data.dtype == np.float32
            assert np.linalg.norm(p.data.astype(np.float64), axis=1).max() <= 0.5 + 1e-6


def test_max_norm_is_not_a_penalty():
    w, v, b = hand_params()
    reg = MaxNorm(1.0)
    assert reg.penalty([w, v, b]) == 0.0
    reg.add_gradient([w, v, b])
    assert not w.grad.any() and not v.grad.any()


def test_compose_runs_projection_after_penalty_terms():
    rng = np.random.default_rng(3)
    param = Parameter(rng.standard_normal((4, 6)) * 5, "weight")
    reg = L2(0.1) + MaxNorm(2.0)
    assert isinstance(reg, Compose) and len(reg.regularizers) == 2
    assert reg.penalty([param]) == pytest.approx(0.1 * np.sum(param.data ** 2))
    reg.apply([param])
    np.testing.assert_allclose(np.linalg.norm(param.data, axis=1), 2.0, atol=1e-6)
    nested = Compose(reg, L1(0.2))
    assert len(nested.regularizers) == 3


# -- validation and registry ---------------------------------------------------------


@pytest.mark.parametrize("bad", [-1, -1e-12, math.nan, math.inf, "0.1", None, True])
def test_bad_lambda_raises(bad):
    for make in (L2, L1, lambda lam: ElasticNet(lam, 0.5)):
        with pytest.raises(ValueError, match="lam to be a finite number ≥ 0"):
            make(bad)


@pytest.mark.parametrize("bad", [-0.5, math.nan])
def test_bad_beta_raises(bad):
    with pytest.raises(ValueError, match="ElasticNet needs beta"):
        ElasticNet(0.1, bad)


@pytest.mark.parametrize("bad", [0, -1.0, math.inf])
def test_bad_max_norm_raises(bad):
    with pytest.raises(ValueError, match="MaxNorm needs c to be a finite number > 0"):
        MaxNorm(bad)


def test_non_parameters_raise():
    with pytest.raises(TypeError, match="pass model.parameters"):
        L2(0.1).penalty([np.ones(3)])


def test_registry():
    assert set(REGULARIZERS) == {"l1", "l2", "elastic_net", "max_norm"}
    reg = get("elastic_net", lam=0.1, beta=0.2)
    assert isinstance(reg, ElasticNet) and (reg.lam, reg.beta) == (0.1, 0.2)
    assert isinstance(get("max_norm", c=3.0), MaxNorm)
    same = L2(0.1)
    assert get(same) is same
    assert all(issubclass(cls, Regularizer) for cls in REGULARIZERS.values())
    with pytest.raises(ValueError, match="unknown regularizer 'l3'; choose one of"):
        get("l3", lam=0.1)
