"""The gradient checker itself, and the built-in suite behind `ermlab gradcheck`."""

import numpy as np
import pytest

from ermlab import backend, gradcheck, gradcheck_suite, nn
from ermlab.nn.activations import Tanh


def test_relative_error_is_relative_above_the_floor_and_scaled_below_it():
    analytic = np.array([2.0, 1e-1, 1e-6])
    numeric = np.array([2.0 * (1 + 1e-7), 1e-1 * (1 + 1e-5), 2e-6])
    rel = gradcheck.relative_error(analytic, numeric)
    np.testing.assert_allclose(rel[:2], [1e-7, 1e-5], rtol=1e-4)  # ÷ max(|a|, |n|)
    # below 1e-3 of the largest entry, errors are measured against that level (2e-3)
    assert rel[2] == pytest.approx(1e-6 / 2e-3)


def test_numerical_gradient_of_a_quadratic_is_exact():
    a = np.array([[2.0, 1.0], [1.0, 3.0]])
    x = np.array([0.3, -0.7])
    grad = gradcheck.numerical_gradient(lambda: 0.5 * x @ a @ x, x)
    np.testing.assert_allclose(grad, a @ x, rtol=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_built_in_component_passes(seed):
    results = gradcheck_suite.run(seed=seed)
    failures = [(name, r.max_rel_error, r.where) for _, name, r in results if not r.passed(1e-6)]
    assert not failures
    names = {name for _, name, _ in results}
    for expected in ("Linear", "Conv2d", "BatchNorm2d", "Dropout", "InceptionModule",
                     "SoftmaxCrossEntropy", "ElasticNet"):
        assert expected in names


def test_a_wrong_backward_is_caught(monkeypatch):
    """A derivative off by 0.1 % is a failure the checker reports, with its location."""
    right = Tanh.grad_input
    monkeypatch.setattr(Tanh, "grad_input", lambda self, g: right(self, g) * 1.001)
    with backend.default_dtype(np.float64):
        result = gradcheck.check_module(nn.Tanh(), np.random.default_rng(0).normal(size=(3, 4)))
    assert not result.passed(1e-6)
    assert result.max_rel_error == pytest.approx(1e-3, rel=1e-2)
    assert result.where.startswith("input[")


def test_float32_is_refused():
    with pytest.raises(ValueError, match="float64"):
        gradcheck.check_module(nn.Linear(2, 2), np.zeros((1, 2), np.float32))


def test_a_graph_input_that_does_not_reach_the_output_has_a_zero_gradient():
    """It used to crash with a TypeError (bprop returned None for the unused input)."""
    with backend.default_dtype(np.float64):
        graph = nn.Graph(inputs=["a", "b"]).add("fc", nn.Linear(3, 2, rng=0), "a")
    graph.set_output("fc")
    rng = np.random.default_rng(0)
    result = gradcheck.check_module(graph, rng.normal(size=(4, 3)), rng.normal(size=(4, 5)))
    assert result.passed(1e-6), result
    assert set(result.errors) == {"input0", "input1", "param:fc.weight", "param:fc.bias"}
    assert result.errors["input1"] == 0.0


def test_a_module_returning_none_for_an_input_it_uses_is_caught():
    """None is read as a zero gradient, which the finite differences then contradict."""
    class Forgetful(nn.Add):
        def backward(self, grad_out, input_grad=True):
            return (grad_out, None)

    result = gradcheck.check_module(Forgetful(), np.ones((2, 3)), np.ones((2, 3)))
    assert not result.passed(1e-6)
    assert result.where.startswith("input1[")


def test_inputs_given_as_one_tuple_get_a_clear_error():
    with backend.default_dtype(np.float64):
        graph = nn.Graph(inputs=["a", "b"])
        graph.add("f", nn.Linear(2, 2, rng=0), "a").set_output("f")
    pair = (np.ones((2, 2)), np.ones((2, 2)))
    with pytest.raises(TypeError, match=r"separate arguments: check_module\(graph, x1, x2\)"):
        gradcheck.check_module(graph, pair)
    assert gradcheck.check_module(graph, *pair).max_rel_error < 1e-7
