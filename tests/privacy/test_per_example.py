"""Per-example gradients and norms equal looping over the examples one at a time (float64)."""

import numpy
import pytest

from ermlab import losses, nn
from ermlab.privacy import check_per_example_support, clip_and_sum, per_example_gradients


def conv_model(rng):
    d = "float64"
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, rng=rng, dtype=d),            # full-width layout
        nn.Tanh(),
        nn.Conv2d(4, 6, 3, stride=2, groups=2, rng=rng, dtype=d),   # strided, grouped
        nn.ReLU(),
        nn.Conv2d(6, 4, 2, dilation=2, padding=1, bias=False, rng=rng, dtype=d),
        nn.Conv2d(4, 5, 1, stride=2, rng=rng, dtype=d),              # pointwise fast path
        nn.Identity(),
        nn.Flatten(),
        nn.Linear(20, 7, rng=rng, dtype=d),
        nn.Softplus(),
        nn.Linear(7, 3, bias=False, rng=rng, dtype=d),
    )


def looped(model, loss, x, y):
    """Gradient of each example's loss, one backward per example."""
    grads = {name: [] for name, _ in model.named_parameters()}
    model.train()
    for n in range(len(x)):
        model.zero_grad()
        loss.forward(model.forward(x[n:n + 1]), y[n:n + 1])
        model.backward(loss.backward())
        for name, p in model.named_parameters():
            grads[name].append(p.grad.copy())
    return {name: numpy.stack(g) for name, g in grads.items()}


@pytest.fixture
def batch():
    rng = numpy.random.default_rng(0)
    x = rng.standard_normal((6, 2, 9, 9))
    y = rng.integers(0, 3, 6)
    return conv_model(rng), losses.SoftmaxCrossEntropy(), x, y


def test_per_example_gradients_equal_the_loop(batch):
    model, loss, x, y = batch
    expected = looped(model, loss, x, y)
    model.zero_grad()
    got = per_example_gradients(model, loss, x, y)
    assert set(got) == set(expected)
    for name in expected:
        numpy.testing.assert_allclose(got[name], expected[name], rtol=1e-10, atol=1e-12,
                                      err_msg=name)
    assert all(not p.grad.any() for p in model.parameters())   # grads left alone


@pytest.mark.parametrize("method", ["product", "ghost"])
def test_conv_norms_both_ways(batch, method):
    model, loss, x, y = batch
    expected = looped(model, loss, x, y)
    recorded = {}

    class Spy:
        def record(self, layer, grad_out):
            recorded[id(layer)] = layer.per_example_sq_norms(grad_out, method=method)
            layer.per_example_recorder = None
            layer.accumulate_grad(grad_out)     # keep bprop going with the real thing
            layer.per_example_recorder = self

    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    for conv in convs:
        conv.per_example_recorder = Spy()
    model.train()
    loss.forward(model.forward(x), y)
    model.backward(loss.backward() * len(x))
    names = {id(p): name for name, p in model.named_parameters()}
    for conv in convs:
        want = sum((expected[names[id(p)]] ** 2).reshape(len(x), -1).sum(1)
                   for p in (conv.weight, conv.bias) if p is not None)
        numpy.testing.assert_allclose(recorded[id(conv)], want, rtol=1e-10)


def test_clip_and_sum_is_the_clipped_sum_of_the_loop(batch):
    model, loss, x, y = batch
    expected = looped(model, loss, x, y)
    flat = numpy.concatenate([g.reshape(len(x), -1) for g in expected.values()], axis=1)
    norms = numpy.linalg.norm(flat, axis=1)
    clip = numpy.median(norms)                 # some clipped, some not
    factors = numpy.minimum(1, clip / (norms + 1e-6))
    model.zero_grad()
    model.train()
    loss.forward(model.forward(x), y)
    got_norms = clip_and_sum(model, loss.backward() * len(x), clip)
    numpy.testing.assert_allclose(got_norms, norms, rtol=1e-10)
    for name, p in model.named_parameters():
        want = numpy.tensordot(factors, expected[name], axes=1)
        numpy.testing.assert_allclose(p.grad, want, rtol=1e-9, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("make, words", [
    (lambda: nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)),
     r"1 \(BatchNorm1d\) is batch normalization"),
    (lambda: nn.Sequential(nn.BatchNorm1d(3, affine=False), nn.Linear(3, 2)),
     "batch normalization"),
    (lambda: nn.Sequential(nn.DropConnect(nn.Linear(3, 2))), "use Dropout instead"),
])
def test_refuses_modules_without_per_example_gradients(make, words):
    with pytest.raises(ValueError, match=words):
        check_per_example_support(make())


def test_weight_sharing_is_refused():
    layer = nn.Linear(3, 3, dtype="float64")
    model = nn.Sequential(layer, nn.Tanh(), layer)
    x, y = numpy.ones((2, 3)), numpy.array([0, 1])
    with pytest.raises(ValueError, match="several places"):
        per_example_gradients(model, losses.SoftmaxCrossEntropy(), x, y)


def test_per_example_gradients_through_a_graph():
    """A residual Graph (Linear boxes, Add): the recorder sits at the leaves."""
    rng = numpy.random.default_rng(1)
    g = nn.Graph(inputs="x")
    g.add("fc1", nn.Linear(5, 5, rng=rng, dtype="float64"), "x").add("act", nn.Tanh(), "fc1")
    g.add("fc2", nn.Linear(5, 5, rng=rng, dtype="float64"), "act")
    g.add("sum", nn.Add(), ["fc2", "x"]).set_output("sum")
    model = nn.Sequential(g, nn.Linear(5, 3, rng=rng, dtype="float64"))
    x, y = rng.standard_normal((4, 5)), numpy.array([0, 2, 1, 2])
    loss = losses.SoftmaxCrossEntropy()
    expected = looped(model, loss, x, y)
    got = per_example_gradients(model, loss, x, y)
    for name in expected:
        numpy.testing.assert_allclose(got[name], expected[name], rtol=1e-10, atol=1e-12,
                                      err_msg=name)
