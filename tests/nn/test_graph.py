"""Graph: fan-out and multi-input gradient checks, topological order, and construction errors."""

import itertools

import numpy as np
import pytest

from ermlab import nn
from ermlab.backend import default_dtype
from ermlab.gradcheck import check_module

EPS, TOL = 1e-5, 1e-6  # see tests/nn/test_modules.py for the choice of ε


def normal(seed, shape):
    return np.random.default_rng(seed).standard_normal(shape)


def residual_inception(seed, width=4):
    """x fans out to a residual Add; tanh(fc1 x) fans out to two branches joined by Concatenate.

        fc1 = W₁x + b₁,  act = tanh(fc1)
        residual = (W₂ act + b₂) + x          (x used twice)
        branch = sigmoid(act)                  (act used twice)
        out = W₃ [residual, branch] + b₃
    """
    with default_dtype(np.float64):
        g = nn.Graph(inputs="x")
        g.add("fc1", nn.Linear(width, width, rng=seed), "x")
        g.add("act", nn.Tanh(), "fc1")
        g.add("fc2", nn.Linear(width, width, rng=seed + 1), "act")
        g.add("residual", nn.Add(), ["fc2", "x"])
        g.add("branch", nn.Sigmoid(), "act")
        g.add("concat", nn.Concatenate(), ["residual", "branch"])
        g.add("out", nn.Linear(2 * width, 3, rng=seed + 2), "concat")
    return g.set_output("out")


def manual_residual_inception(g, x):
    """The same function written out with NumPy, as an oracle for the forward pass."""
    fc1, fc2, out = g.fc1, g.fc2, g.out
    act = np.tanh(x @ fc1.weight.data.T + fc1.bias.data)
    residual = act @ fc2.weight.data.T + fc2.bias.data + x
    branch = 1 / (1 + np.exp(-act))
    return np.concatenate([residual, branch], axis=1) @ out.weight.data.T + out.bias.data


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("n,width", [(3, 4), (5, 2)])
def test_fan_out_graph_gradcheck(seed, n, width):
    g = residual_inception(seed, width)
    for p in g.parameters():
        if not p.regularize:
            p.data[...] = 0.1 * normal(seed + 10, p.shape)
    x = normal(seed, (n, width))
    np.testing.assert_allclose(g.forward(x), manual_residual_inception(g, x), rtol=1e-13)
    result = check_module(g, x, rng=seed, eps=EPS)
    assert result.max_rel_error <= TOL, result
    assert "input" in result.errors and "param:fc1.weight" in result.errors


def test_fan_out_sums_gradients():
    """y = x + x + x through Add: ∂L/∂x = 3 g (the multivariate chain rule)."""
    g = nn.Graph(inputs="x")
    g.add("a", nn.Identity(), "x").add("b", nn.Identity(), "x")
    g.add("sum", nn.Add(), ["a", "b", "x"]).set_output("sum")
    x, grad = normal(0, (2, 3)), normal(1, (2, 3))
    np.testing.assert_array_equal(g.forward(x), 3 * x)
    np.testing.assert_array_equal(g.backward(grad), 3 * grad)


def multi_input_graph(seed):
    with default_dtype(np.float64):
        g = nn.Graph(inputs=["image", "meta"])
        g.add("flat", nn.Flatten(), "image")
        g.add("fc_img", nn.Linear(6, 4, rng=seed), "flat")
        g.add("fc_meta", nn.Linear(3, 4, rng=seed + 1), "meta")
        g.add("sum", nn.Add(), ["fc_img", "fc_meta"])
        g.add("act", nn.ELU(), "sum")
        g.add("cat", nn.Concatenate(), ["act", "meta"])
        g.add("out", nn.Linear(7, 2, rng=seed + 2), "cat")
    return g.set_output("out")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_multi_input_graph_gradcheck(seed):
    g = multi_input_graph(seed)
    image, meta = normal(seed, (4, 2, 3)), normal(seed + 5, (4, 3))
    result = check_module(g, image, meta, rng=seed, eps=EPS)
    assert result.max_rel_error <= TOL, result
    assert {"input0", "input1"} <= set(result.errors)
    grads = g.backward(normal(0, (4, 2)))
    assert isinstance(grads, tuple) and len(grads) == 2
    assert grads[0].shape == image.shape and grads[1].shape == meta.shape


def test_multi_input_graph_input_grad_false():
    g = multi_input_graph(0)
    image, meta = normal(0, (4, 2, 3)), normal(5, (4, 3))
    grad = normal(1, (4, 2))
    g.forward(image, meta)
    g.zero_grad()
    g.backward(grad)
    full = {k: p.grad.copy() for k, p in g.named_parameters()}
    g.zero_grad()
    g.forward(image, meta)
    assert g.backward(grad, input_grad=False) is None
    for k, p in g.named_parameters():
        np.testing.assert_allclose(p.grad, full[k], rtol=1e-14, atol=1e-15, err_msg=k)


def test_input_grad_false_with_a_merge_box_on_the_graph_inputs():
    """Regression: Concatenate/Add reading only graph inputs return None with input_grad=False."""
    with default_dtype(np.float64):
        g = nn.Graph(inputs=["a", "b"])
        g.add("cat", nn.Concatenate(), ["a", "b"]).add("fc", nn.Linear(5, 2, rng=0), "cat")
        g.add("plus", nn.Add(), ["a", "a"]).add("fc2", nn.Linear(2, 2, rng=1), "plus")
        g.add("out", nn.Add(), ["fc", "fc2"]).set_output("out")
    a, b, grad = normal(0, (3, 2)), normal(1, (3, 3)), normal(2, (3, 2))
    g.forward(a, b)
    g.zero_grad()
    assert g.backward(grad, input_grad=False) is None
    np.testing.assert_allclose(g.fc.weight.grad, grad.T @ np.concatenate([a, b], axis=1))
    np.testing.assert_allclose(g.fc2.weight.grad, grad.T @ (2 * a))


def test_unused_input_gets_a_zero_gradient():
    """As torch.autograd.grad(..., materialize_grads=True): zeros of the input's shape and dtype."""
    g = nn.Graph(inputs=["a", "b"]).add("f", nn.Tanh(), "a").set_output("f")
    a, b = normal(0, (2, 3)), normal(1, (4, 5)).astype(np.float32)
    g.forward(a, b)
    grad_a, grad_b = g.backward(np.ones((2, 3)))
    np.testing.assert_array_equal(grad_b, np.zeros((4, 5), np.float32))
    assert grad_b.dtype == np.float32
    np.testing.assert_allclose(grad_a, 1 - np.tanh(a) ** 2)


def test_unused_input_of_a_nested_graph_reaches_the_outer_merge_as_zeros():
    """The inner graph ignores its input "b"; the outer graph adds its gradients into "y"."""
    inner = nn.Graph(inputs=["a", "b"]).add("f", nn.Tanh(), "a").set_output("f")
    outer = nn.Graph(inputs=["x", "y"]).add("inner", inner, ["x", "y"])
    outer.add("sum", nn.Add(), ["inner", "y"]).set_output("sum")
    x, y = normal(0, (2, 3)), normal(1, (2, 3))
    outer.forward(x, y)
    grad_x, grad_y = outer.backward(np.full((2, 3), 2.0))
    np.testing.assert_allclose(grad_x, 2 * (1 - np.tanh(x) ** 2))
    np.testing.assert_array_equal(grad_y, np.full((2, 3), 2.0))


def test_wrong_number_of_inputs():
    g = multi_input_graph(0)
    with pytest.raises(ValueError, match=r"expects 2 inputs \['image', 'meta'\]; got 1"):
        g.forward(normal(0, (4, 6)))


# -- topological order ---------------------------------------------------------------------

BOXES = [
    ("fc1", lambda: nn.Linear(3, 3, rng=1, dtype=np.float64), ["x"]),
    ("act", nn.Tanh, ["fc1"]),
    ("fc2", lambda: nn.Linear(3, 3, rng=2, dtype=np.float64), ["act"]),
    ("side", nn.Sigmoid, ["x"]),
    ("plus", nn.Add, ["fc2", "side", "x"]),
    ("out", lambda: nn.Linear(3, 2, rng=3, dtype=np.float64), ["plus"]),
]


@pytest.mark.parametrize("perm", list(itertools.permutations(range(len(BOXES))))[::37])
def test_order_is_independent_of_insertion_order(perm):
    reference = nn.Graph(inputs="x")
    for name, make, inputs in BOXES:
        reference.add(name, make(), inputs)
    reference.set_output("out")
    shuffled = nn.Graph(inputs="x")
    for index in perm:
        name, make, inputs = BOXES[index]
        shuffled.add(name, make(), inputs)
    shuffled.set_output("out")
    order = shuffled.order()
    assert sorted(order) == sorted(name for name, _, _ in BOXES)
    position = {name: i for i, name in enumerate(order)}
    for name, _, inputs in BOXES:
        for value in inputs:
            if value != "x":
                assert position[value] < position[name], (value, name, order)
    x = normal(0, (4, 3))
    np.testing.assert_allclose(shuffled.forward(x), reference.forward(x), rtol=1e-15)
    grad = normal(1, (4, 2))
    np.testing.assert_allclose(shuffled.backward(grad), reference.backward(grad), rtol=1e-14)


def test_order_skips_boxes_the_output_does_not_need():
    g = nn.Graph(inputs="x")
    g.add("used", nn.Tanh(), "x").add("unused", nn.ReLU(), "x").set_output("used")
    assert g.order() == ["used"]
    g.set_output("unused")
    assert g.order() == ["unused"]


# -- construction errors -----------------------------------------------------------------


def test_undefined_input_name_raises():
    g = nn.Graph(inputs="x").add("fc", nn.Tanh(), "y").set_output("fc")
    with pytest.raises(ValueError, match=r"box 'fc' reads undefined values \['y'\]"):
        g.forward(normal(0, (2, 3)))


def test_cycle_raises():
    g = nn.Graph(inputs="x")
    g.add("a", nn.Add(), ["x", "c"]).add("b", nn.Tanh(), "a").add("c", nn.Tanh(), "b")
    g.set_output("b")
    with pytest.raises(ValueError, match=r"cycle through boxes \['a', 'b', 'c'\]"):
        g.order()


def test_self_loop_raises():
    g = nn.Graph(inputs="x").add("a", nn.Add(), ["x", "a"]).set_output("a")
    with pytest.raises(ValueError, match="cycle"):
        g.forward(normal(0, (2, 3)))


def test_missing_output_raises():
    g = nn.Graph(inputs="x").add("a", nn.Tanh(), "x")
    with pytest.raises(ValueError, match=r"no output: call set_output\(name\)"):
        g.forward(normal(0, (2, 3)))
    g.set_output("nowhere")
    with pytest.raises(ValueError, match="output 'nowhere' is not a box or an input"):
        g.forward(normal(0, (2, 3)))


def test_a_module_may_be_the_module_of_two_boxes():
    """tanh(tanh(x)) with one Tanh module in two boxes: each box keeps its own cache."""
    shared = nn.Tanh()
    g = nn.Graph(inputs="x").add("a", shared, "x").add("b", shared, "a").set_output("b")
    x = normal(0, (2, 3))
    np.testing.assert_allclose(g.forward(x), np.tanh(np.tanh(x)))
    expected = (1 - np.tanh(np.tanh(x)) ** 2) * (1 - np.tanh(x) ** 2)
    np.testing.assert_allclose(g.backward(np.ones((2, 3))), expected, rtol=1e-14)


def test_duplicate_and_unusable_names_raise():
    g = nn.Graph(inputs="x").add("a", nn.Tanh(), "x")
    with pytest.raises(ValueError, match="already has a value named 'a'"):
        g.add("a", nn.ReLU(), "x")
    with pytest.raises(ValueError, match="already has a value named 'x'"):
        g.add("x", nn.ReLU(), "a")
    for bad in ("forward", "not-an-identifier"):
        with pytest.raises(ValueError, match="not usable"):
            g.add(bad, nn.ReLU(), "a")
    with pytest.raises(TypeError, match="must be a Module"):
        g.add("c", np.tanh, "a")
    with pytest.raises(ValueError, match="distinct names"):
        nn.Graph(inputs=["x", "x"])


def test_adding_a_box_invalidates_the_order():
    g = nn.Graph(inputs="x").add("a", nn.Tanh(), "x").set_output("a")
    assert g.order() == ["a"]
    g.add("b", nn.Sigmoid(), "a").set_output("b")
    assert g.order() == ["a", "b"]
