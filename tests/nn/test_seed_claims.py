"""The claims the seed text makes about initialization, checked on our modules.

(a) With tanh units and all weights zero, every hidden-layer weight gets a zero
    gradient, and so does every hidden unit: training cannot start.
(b) With all weights of a layer equal, the hidden units of that layer compute
    the same function and receive the same gradient, so they stay identical
    after any number of gradient steps: random initialization breaks symmetry.
(c) Glorot & Bengio (2010): W ~ U[−b, b] with b = √6 / √(H_k + H_{k−1}) has
    variance 2 / (H_k + H_{k−1}); for square layers it keeps the variance of
    the activations (forward) and of the gradients (backward) from layer to layer.

The loss is written out by hand: squared error L = (1/2N) Σ_n ‖s_n − y_n‖²,
∂L/∂s = (s − y) / N.
"""

import math

import numpy as np
import pytest

from ermlab import nn
from ermlab.backend import default_dtype
from ermlab.optim import SGD


def squared_error(scores, y):
    diff = scores - y
    return 0.5 * float(np.sum(diff * diff)) / len(y), diff / len(y)


def backward_recording(model, grad):
    """Run bprop through a Sequential box by box; return ∂L/∂(input of box i) for each i."""
    grads = {}
    for index in range(len(model) - 1, -1, -1):
        grad = model[index].backward(grad)
        grads[index] = grad
    return grads


def data(seed, n, d_in, d_out, dtype=np.float64):
    rng = np.random.default_rng(seed)
    x, y = rng.standard_normal((n, d_in)), rng.standard_normal((n, d_out))
    return x.astype(dtype), y.astype(dtype)


# -- (a) zero weights with tanh -------------------------------------------------------------


@pytest.mark.parametrize("sizes", [[5, 4, 3], [6, 8, 7, 2]], ids=str)
def test_zero_weights_tanh_give_zero_hidden_gradients(sizes):
    with default_dtype(np.float64):
        model = nn.mlp(sizes, activation="tanh", weight_init="zeros")
    x, y = data(0, 10, sizes[0], sizes[-1])
    _, grad = squared_error(model.forward(x), y)
    model.zero_grad()
    into = backward_recording(model, grad)
    linears = [i for i, m in enumerate(model) if isinstance(m, nn.Linear)]
    assert np.abs(grad).max() > 0.01  # the loss does send a gradient back
    # gradients flowing into every hidden unit (the input of each box after the first Linear)
    for index in range(1, len(model)):
        assert not into[index].any(), f"∂L/∂(input of box {index}) should be 0"
    for index in linears[:-1]:  # hidden-layer weights and biases
        assert not model[index].weight.grad.any()
        assert not model[index].bias.grad.any()
    # even the output weights: they multiply tanh(0) = 0; only the output bias learns
    output = model[linears[-1]]
    assert not output.weight.grad.any()
    np.testing.assert_allclose(output.bias.grad, grad.sum(axis=0), rtol=1e-15)
    assert np.abs(output.bias.grad).max() > 1e-3


def test_zero_weights_tanh_stay_zero_under_sgd():
    with default_dtype(np.float64):
        model = nn.mlp([5, 4, 4, 3], activation="tanh", weight_init="zeros")
    optimizer = SGD(model.parameters(), lr=0.5)
    x, y = data(1, 16, 5, 3)
    for _ in range(20):
        _, grad = squared_error(model.forward(x), y)
        optimizer.zero_grad()
        model.backward(grad, input_grad=False)
        optimizer.step()
    for name, p in model.named_parameters():
        if name != "4.bias":
            assert not p.data.any(), name
    # the one thing learned: the output bias → the mean target
    np.testing.assert_allclose(model[4].bias.data, y.mean(axis=0), rtol=1e-4)


def test_zero_weights_with_losses_module():
    """The same claim with the package's own cross-entropy, where it exists."""
    losses = pytest.importorskip("ermlab.losses")
    with default_dtype(np.float64):
        model = nn.mlp([5, 6, 3], activation="tanh", weight_init="zeros")
    x, _ = data(2, 12, 5, 3)
    labels = np.arange(12) % 3
    loss = losses.SoftmaxCrossEntropy()
    loss.forward(model.forward(x), labels)
    model.zero_grad()
    model.backward(loss.backward())
    assert not model[0].weight.grad.any() and not model[2].weight.grad.any()


# -- (b) equal weights stay equal ----------------------------------------------------------


def train(model, steps, seed, lr=0.1):
    optimizer = SGD(model.parameters(), lr=lr, momentum=0.9)
    d_in, d_out = model[0].in_features, model[len(model) - 1].out_features
    x, y = data(seed, 32, d_in, d_out)
    for _ in range(steps):
        _, grad = squared_error(model.forward(x), y)
        optimizer.zero_grad()
        model.backward(grad)
        optimizer.step()


def spread(array, axis):
    """Largest difference between the slices of ``array`` along ``axis`` and the first one."""
    first = np.take(array, [0], axis=axis)
    return float(np.abs(array - first).max())


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "relu"])
def test_constant_init_hidden_units_stay_identical(activation):
    with default_dtype(np.float64):
        model = nn.mlp([4, 6, 5, 3], activation=activation, weight_init=nn.init.constant(0.2))
    initial = {name: p.data.copy() for name, p in model.named_parameters()}
    train(model, steps=10, seed=0)
    for index in (0, 2):  # the two hidden layers
        layer, following = model[index], model[index + 2]
        assert np.abs(layer.weight.data - initial[f"{index}.weight"]).max() > 1e-3  # it learned
        assert spread(layer.weight.data, axis=0) <= 1e-12  # every unit's incoming row the same
        assert spread(layer.bias.data, axis=0) <= 1e-12
        assert spread(following.weight.data, axis=1) <= 1e-12  # every unit's outgoing column
    x, _ = data(5, 7, 4, 3)
    hidden = model[1].forward(model[0].forward(x))
    assert spread(hidden, axis=1) <= 1e-12  # the units compute one function


def test_random_init_breaks_symmetry():
    with default_dtype(np.float64):
        model = nn.mlp([4, 6, 5, 3], activation="tanh", rng=0)
    train(model, steps=10, seed=0)
    assert spread(model[0].weight.data, axis=0) > 0.1
    assert spread(model[2].weight.data, axis=0) > 0.1


# -- (c) Glorot's sample claims -----------------------------------------------------------------


def test_glorot_uniform_default_of_linear_bound_and_variance():
    """Linear's default init: |W| ≤ √6/√(in+out), Var W = 2/(in+out) within 5 standard errors."""
    fan_in, fan_out = 500, 300
    w = nn.Linear(fan_in, fan_out, rng=0).weight.data.astype(np.float64)
    b = math.sqrt(6) / math.sqrt(fan_in + fan_out)
    assert np.abs(w).max() <= b * (1 + 1e-7) and np.abs(w).max() > b * (1 - 1e-3)
    variance = 2 / (fan_in + fan_out)
    standard_error = math.sqrt(4 * b ** 4 / 45 / w.size)  # of mean(w²), Var(w²) = 4b⁴/45
    assert abs(np.mean(w ** 2) - variance) <= 5 * standard_error


def signal_ratios(weight_init, width=256, depth=8, seed=0):
    """Per-layer ratios Var(out)/Var(in), forward and backward, through linear layers.

    Geometric means over ``depth`` layers of width ``width``, without biases.
    """
    with default_dtype(np.float64):
        layers = [nn.Linear(width, width, bias=False, weight_init=weight_init, rng=seed + i)
                  for i in range(depth)]
    model = nn.Sequential(*layers)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((512, width))
    g = rng.standard_normal((512, width))
    forward = np.var(model.forward(x)) / np.var(x)
    backward = np.var(model.backward(g)) / np.var(g)
    return forward ** (1 / depth), backward ** (1 / depth)


def test_glorot_keeps_signal_variance_through_square_layers():
    forward, backward = signal_ratios("glorot_uniform")
    assert forward == pytest.approx(1.0, abs=0.05)
    assert backward == pytest.approx(1.0, abs=0.05)
    # the older heuristic U[−1/√n, 1/√n] (Var = 1/(3n)) shrinks both by about 3 per layer
    n = 256
    forward, backward = signal_ratios(nn.init.uniform(-1 / math.sqrt(n), 1 / math.sqrt(n)))
    assert forward == pytest.approx(1 / 3, abs=0.03)
    assert backward == pytest.approx(1 / 3, abs=0.03)
