"""gradients_at_test_time: in training mode (caches kept), every layer computes its test-time
function — dropout (inverted and classic), DropConnect, stochastic depth (batch and row),
training-only Gaussian noise, batch norm on running statistics — so the input gradient is
that of the evaluated model: central finite differences of the eval-mode loss (float64)."""

import numpy as np

from ermlab import nn
from ermlab.gradcheck import numerical_gradient
from ermlab.losses import SoftmaxCrossEntropy
from ermlab.robustness import gradients_at_test_time, input_gradient


def model(seed=0):
    rng = np.random.default_rng(seed)

    def linear(a, b):
        return nn.Linear(a, b, rng=rng, dtype="float64")

    net = nn.Sequential(
        linear(5, 8), nn.BatchNorm1d(8, dtype="float64"), nn.ReLU(), nn.Dropout(0.3, rng=rng),
        nn.DropConnect(linear(8, 8), 0.4, rng=rng), nn.Tanh(),
        nn.residual_block(nn.Sequential(linear(8, 8), nn.Tanh()), 0.7, rng=rng),
        nn.residual_block(nn.Sequential(linear(8, 8), nn.Tanh()), 0.6, rng=rng, mode="row",
                          inverted=True),
        nn.GaussianNoise(0.5, rng=rng), nn.Dropout(0.2, inverted=False, rng=rng), linear(8, 3))
    x = rng.normal(size=(16, 5))
    for _ in range(3):  # non-trivial running statistics
        net.forward(x)
    return net


def test_forward_is_the_eval_function_and_nothing_random_is_drawn():
    net = model()
    x = np.random.default_rng(1).normal(size=(6, 5))
    expected = net.eval()(x)
    norm = net[1]
    stats = norm.running_mean.copy(), norm.running_var.copy(), int(norm.num_batches_tracked)
    state = net[3].generator.bit_generator.state
    with gradients_at_test_time(net):
        assert net.training
        np.testing.assert_allclose(net.forward(x), expected, rtol=1e-12, atol=1e-12)
    assert not net.training
    np.testing.assert_array_equal(norm.running_mean, stats[0])
    np.testing.assert_array_equal(norm.running_var, stats[1])
    assert int(norm.num_batches_tracked) == stats[2]
    assert net[3].generator.bit_generator.state == state


def test_input_gradient_equals_finite_differences_of_the_eval_loss():
    net = model()
    x = np.random.default_rng(2).normal(size=(6, 5))
    y = np.array([0, 1, 2, 2, 1, 0])
    loss = SoftmaxCrossEntropy()

    def objective():
        net.eval()
        return loss.forward(net.forward(x), y)

    numeric = numerical_gradient(objective, x, 1e-6)
    net.train()
    np.testing.assert_allclose(input_gradient(net, x, y), numeric, rtol=1e-6, atol=1e-10)
    assert net.training
