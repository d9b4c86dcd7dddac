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


def test_an_identically_zero_gradient_passes_against_the_scale_of_the_whole_check():
    """Batch normalization removes the mean over the batch, so the Linear's bias before it
    has ∂L/∂b = 0 exactly; finite differences give ~1e-10 of noise there, which must be
    measured against the check's gradients (order 1), not the bias's own (order 1e-16)."""
    with backend.default_dtype(np.float64):
        rng = np.random.default_rng(3)
        model = nn.Sequential(nn.Linear(5, 4, rng=1), nn.BatchNorm1d(4))
        for p in model.parameters():
            p.data += 0.1 * rng.standard_normal(p.shape)
        result = gradcheck.check_module(model, rng.standard_normal((6, 5)), eps=1e-5)
    assert np.abs(model[0].bias.grad).max() < 1e-14
    assert result.passed(1e-6), result


class _WrongInput(nn.Linear):
    def grad_input(self, g):
        return super().grad_input(g) * 1.01


class _WrongWeightEntry(nn.Linear):
    def accumulate_grad(self, g):
        super().accumulate_grad(g)
        self.weight.grad[0, 0] += 1e-3 * np.abs(self.weight.grad).max()


class _FlippedBias(nn.Linear):
    def accumulate_grad(self, g):
        super().accumulate_grad(g)
        self.bias.grad[...] *= -1


class _ZeroInput(nn.Linear):
    def grad_input(self, g):
        return np.zeros((g.shape[0], self.in_features))


class _TransposedWeight(nn.Linear):
    def accumulate_grad(self, g):
        super().accumulate_grad(g)
        self.weight.grad[...] = self.weight.grad.T.copy()


class _WrongOnSmallEntries(nn.Linear):
    def grad_input(self, g):
        grad = super().grad_input(g)
        grad[np.abs(grad) < 5e-3 * np.abs(grad).max()] *= 2
        return grad


@pytest.mark.parametrize("wrong", [_WrongInput, _WrongWeightEntry, _FlippedBias, _ZeroInput,
                                   _TransposedWeight, _WrongOnSmallEntries])
def test_wrong_gradients_still_fail_with_the_floor_of_the_whole_check(wrong):
    """The probe of default_rng(0) gives input-gradient entries below 5e-3 of the largest
    (1.5e-3 at input[2, 1]), which _WrongOnSmallEntries gets wrong."""
    with backend.default_dtype(np.float64):
        x = np.random.default_rng(12345).standard_normal((3, 5))
        right, bad = nn.Linear(5, 5, rng=1), wrong(5, 5, rng=1)
        for m in (right, bad):
            m.bias.data += 0.3
        assert gradcheck.check_module(right, x, rng=np.random.default_rng(0)).passed(1e-6)
        assert not gradcheck.check_module(bad, x, rng=np.random.default_rng(0)).passed(1e-6)


def test_an_input_from_the_probe_seed_does_not_hide_a_transposed_gradient():
    """With the probe r = x (both default_rng(0) in the output's shape), ∂f/∂W = xᵀx is
    symmetric and a transposed weight gradient looked right."""
    with backend.default_dtype(np.float64):
        x = np.random.default_rng(0).standard_normal((3, 5))
        result = gradcheck.check_module(_TransposedWeight(5, 5, rng=1), x)
    assert not result.passed(1e-6)
    assert result.where.startswith("param:weight[")


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


def test_the_suite_reaches_every_path(monkeypatch):
    """The paths a case list can silently miss: Conv2d's Winograd sums and its fused
    conv + ReLU pass (``forward_relu``), ZeroPadShortcut, FractionalMaxPool2d's variants,
    and one module called at two places of a Sequential and of a Graph."""
    from ermlab.nn.blocks import ZeroPadShortcut
    from ermlab.nn.conv import Conv2d
    from ermlab.nn.fractional_pooling import FractionalMaxPool2d

    reached = set()
    conv_forward, pool_forward, pad_forward = (
        Conv2d._forward, FractionalMaxPool2d.forward, ZeroPadShortcut.forward)

    def conv_spy(self, x, relu):
        path = ("winograd" if self._winograd(x) is not None else
                "direct" if self._direct(x) is not None else "other")
        reached.add(path + (" + relu" if relu else ""))
        return conv_forward(self, x, relu)

    def pool_spy(self, x):
        reached.add(("fmp", self.kernel_size, self.pseudo_random, self.overlapping))
        return pool_forward(self, x)

    def pad_spy(self, x):
        reached.add("zero pad")
        return pad_forward(self, x)

    monkeypatch.setattr(Conv2d, "_forward", conv_spy)
    monkeypatch.setattr(FractionalMaxPool2d, "forward", pool_spy)
    monkeypatch.setattr(ZeroPadShortcut, "forward", pad_spy)
    results = {name: r for _, name, r in gradcheck_suite.run(seed=0)}
    assert {"winograd", "winograd + relu", "direct + relu", "zero pad"} <= reached
    assert {("fmp", 2, True, True), ("fmp", None, False, True),
            ("fmp", None, True, False)} <= reached
    shared = {"Sequential (shared Linear)": ["param:0.weight", "param:0.bias"],
              "Graph (shared encoder)": ["param:ea.0.weight", "param:ea.0.bias"]}
    for name, params in shared.items():
        assert [k for k in results[name].errors if k.startswith("param:")] == params


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


def test_the_suite_checks_every_loss():
    """`ermlab gradcheck` claims every component: each concrete loss of ermlab.losses."""
    import inspect

    from ermlab import gradcheck_suite, losses

    concrete = {name for name, cls in vars(losses).items()
                if inspect.isclass(cls) and issubclass(cls, losses.Loss)
                and cls is not losses.Loss and not name.startswith("_")}
    checked = {name for kind, name, _ in gradcheck_suite.cases() if kind == "loss"}
    assert concrete and concrete <= checked, concrete - checked


def test_kinks_fail_by_design_and_the_docstring_says_so():
    """At a kink (ReLU at 0) the centred difference averages the one-sided slopes (½) while
    bprop returns one (0): the check fails, and the module's docstring tells the reader that
    such a failure is expected, not a bug."""
    with backend.default_dtype(np.float64):
        result = gradcheck.check_module(nn.ReLU(), np.array([[0.0, 1.0, -1.0]]))
    assert not result.passed()
    doc = " ".join(gradcheck.__doc__.split())
    assert "kink" in doc.lower()
    for case in ("ReLU", "LeakyReLU", "ELU", "hinge"):
        assert case in doc.split("Kinks:")[1]
