"""Gradient accumulation: backward ADDS into ``param.grad``, whatever the caller did to it.

After ``zero_grad()``, a module may write its first gradient straight into ``grad``
(no temporary) only while nobody else has touched it; a value written by hand
(``p.grad += c``, ``p.grad[...] = c``, ``p.grad = array``) must survive the next
backward. The oracle is the gradient of a separate, untouched model.
"""

import numpy as np
import pytest

from ermlab import nn, regularizers
from ermlab.backend import default_dtype
from ermlab.nn.parameter import Parameter


def normal(seed, shape):
    return np.random.default_rng(seed).standard_normal(shape)


def true_gradients(make, x, g):
    model = make()
    model.forward(x)
    model.zero_grad()
    model.backward(g)
    return {name: p.grad.copy() for name, p in model.named_parameters()}


def make_mlp():
    with default_dtype(np.float64):
        return nn.Sequential(nn.Linear(4, 3, rng=0), nn.Tanh(), nn.Linear(3, 2, rng=1))


def make_cnn():
    with default_dtype(np.float64):
        return nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, rng=0), nn.BatchNorm2d(3),
                             nn.ReLU(), nn.Conv2d(3, 2, 1, rng=1), nn.Flatten(),
                             nn.Linear(2 * 4 * 4, 2, rng=2))


WRITES = {
    "iadd": lambda p, c: p.grad.__iadd__(c),
    "setitem": lambda p, c: p.grad.__setitem__(Ellipsis, c),
    "assign": lambda p, c: setattr(p, "grad", np.full(p.shape, c, p.dtype)),
    "out=": lambda p, c: np.add(p.grad, c, out=p.grad),
}


@pytest.mark.parametrize("write", WRITES)
@pytest.mark.parametrize("make,shape", [(make_mlp, (5, 4)), (make_cnn, (2, 2, 4, 4))],
                         ids=["mlp", "cnn"])
def test_backward_adds_to_what_the_caller_wrote_after_zero_grad(write, make, shape):
    x = normal(1, shape)
    model = make()
    g = normal(2, model.forward(x).shape)
    expected = true_gradients(make, x, g)
    model.zero_grad()
    for p in model.parameters():
        WRITES[write](p, 100.0)
    model.backward(g)
    for name, p in model.named_parameters():
        np.testing.assert_allclose(p.grad, 100.0 + expected[name], rtol=1e-13, err_msg=name)


def test_the_issue_example_linear_weight_grad_plus_100():
    with default_dtype(np.float64):
        lin = nn.Linear(3, 2, rng=0)
    x, g = normal(1, (4, 3)), normal(2, (4, 2))
    lin.forward(x)
    lin.zero_grad()
    lin.weight.grad += 100
    lin.backward(g)
    np.testing.assert_allclose(lin.weight.grad, 100 + g.T @ x, rtol=1e-13)
    np.testing.assert_allclose(lin.bias.grad, g.sum(0), rtol=1e-13)


def test_a_view_taken_after_zero_grad_and_written_through_is_kept():
    with default_dtype(np.float64):
        lin = nn.Linear(3, 2, rng=0)
    x, g = normal(1, (4, 3)), normal(2, (4, 2))
    lin.forward(x)
    lin.zero_grad()
    row = lin.weight.grad[0]
    row += 7.0
    lin.backward(g)
    expected = g.T @ x
    expected[0] += 7.0
    np.testing.assert_allclose(lin.weight.grad, expected, rtol=1e-13)
    np.testing.assert_allclose(row, expected[0], rtol=1e-13)


@pytest.mark.parametrize("reg", [regularizers.L2(0.1), regularizers.L1(0.1),
                                 regularizers.ElasticNet(0.1, 0.5)], ids=repr)
def test_regularizer_gradient_adds_to_what_the_caller_wrote(reg):
    w = Parameter(normal(0, (3, 2)))
    reg.add_gradient([w])
    alone = w.grad.copy()
    w.zero_grad()
    w.grad[...] = 5.0
    reg.add_gradient([w])
    np.testing.assert_allclose(w.grad, 5.0 + alone, rtol=1e-14)


def test_the_fast_path_still_writes_straight_into_grad_after_zero_grad():
    """Nobody touched grad: accumulate writes into the same array (no reallocation)."""
    with default_dtype(np.float64):
        lin = nn.Linear(3, 2, rng=0)
    x, g = normal(1, (4, 3)), normal(2, (4, 2))
    array = lin.weight.grad
    lin.forward(x)
    lin.zero_grad()
    assert lin.weight.grad_is_zero
    lin.backward(g)
    assert not lin.weight.grad_is_zero
    assert lin.weight.grad is array
    np.testing.assert_allclose(array, g.T @ x, rtol=1e-13)


def test_grad_is_zero_is_read_only():
    p = Parameter(np.zeros(2))
    with pytest.raises(AttributeError):
        p.grad_is_zero = True


def test_zero_grad_clears_lazily_and_a_backward_writes_straight_into_the_array():
    """zero_grad does not touch the array (no pass over it); the next backward overwrites
    it, and a read before that sees zeros."""
    with default_dtype(np.float64):
        lin = nn.Linear(3, 2, rng=0)
    x, g = normal(1, (4, 3)), normal(2, (4, 2))
    lin.forward(x)
    lin.backward(g)
    array = lin.weight._grad
    before = array.copy()
    lin.zero_grad()
    np.testing.assert_array_equal(array, before)  # not cleared yet
    lin.backward(g)
    np.testing.assert_allclose(array, g.T @ x, rtol=1e-13)  # overwritten, not added to
    lin.zero_grad()
    assert not lin.bias.grad.any()  # read: cleared then
    assert lin.weight.grad is array


@pytest.mark.parametrize("first", ["add_grad", "read"])
def test_a_gradient_zeroed_lazily_is_zero_to_add_grad_and_to_the_optimizer(first):
    """A parameter that the backward pass did not reach after zero_grad: add_grad adds to
    zero and an optimizer step sees a zero gradient, not the last step's."""
    from ermlab import optim

    p = Parameter(np.ones(3))
    p.grad[...] = 5.0
    p.zero_grad()
    if first == "add_grad":
        p.add_grad(np.full(3, 2.0))
        np.testing.assert_array_equal(p.grad, 2.0)
        p.zero_grad()
    optim.SGD([p], lr=1.0).step()
    np.testing.assert_array_equal(p.data, 1.0)
    np.testing.assert_array_equal(p.grad, 0.0)
