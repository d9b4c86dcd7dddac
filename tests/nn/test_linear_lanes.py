"""Linear(lanes=True): with more than one thread its GEMMs run in ermlab's lanes, with BLAS
on one thread; the results are those of the GEMMs without lanes."""

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from ermlab import nn
from ermlab.nn import linear, zoo


def run(layer, x, g):
    layer.zero_grad()
    y = layer.forward(x)
    grad_x = layer.backward(g)
    layer.backward(g)  # a second bprop adds to the gradients
    return y, grad_x, layer.weight.grad.copy(), layer.bias.grad.copy()


@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch", [37, 5, 1])
def test_lanes_give_the_gemms_results(threads, dtype, batch, monkeypatch):
    """A batch of 37 shares out its rows; batches of 5 and 1, fewer than the features,
    share out the weight's rows (forward) and columns (∂L/∂x), so each lane reads part of
    W: as many lanes as threads however small the batch."""
    monkeypatch.setattr(linear, "LANE_MIN_MACS", 1)  # as many lanes as threads
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 23)).astype(dtype)
    g = rng.standard_normal((batch, 11)).astype(dtype)
    plain = nn.Linear(23, 11, rng=0, dtype=dtype)
    laned = nn.Linear(23, 11, rng=0, dtype=dtype, lanes=True)
    laned.threads = threads
    calls = []
    pool = linear.run_lanes  # counted, then run on the real pool of threads
    monkeypatch.setattr(linear, "run_lanes", lambda lanes: calls.append(len(lanes)) or pool(
        lanes))
    with threadpool_limits(1):
        expected = run(plain, x, g)
        got = run(laned, x, g)
    assert calls and all(count == threads for count in calls)
    # Lanes sum in another order than one GEMM, and BLAS kernels differ between machines:
    # each value within the rounding bound of its sum, 2·n·u·Σ|terms| (a second bprop
    # doubles the gradients), where a lost or doubled sample would be off by O(1).
    u = np.finfo(dtype).eps / 2
    w = np.abs(plain.weight.data)
    terms = [23 * (np.abs(x) @ w.T + np.abs(plain.bias.data)), 11 * np.abs(g) @ w,
             2 * batch * np.abs(g).T @ np.abs(x), 2 * batch * np.abs(g).sum(axis=0)]
    for a, b, bound in zip(got, expected, terms, strict=True):
        assert a.shape == bound.shape
        assert np.all(np.abs(a - b) <= 2 * u * bound), np.max(np.abs(a - b) / bound)


def test_one_thread_and_no_lanes_run_one_gemm(monkeypatch):
    calls = []
    monkeypatch.setattr(linear, "run_lanes", lambda lanes: calls.append(len(lanes)))
    x = np.ones((4, 3), np.float32)
    single = nn.Linear(3, 2, rng=0, lanes=True)
    single.threads = 1
    default = nn.Linear(3, 2, rng=0)
    default.threads = 4
    for layer in (single, default):
        layer.backward(np.ones_like(layer.forward(x)))
    assert calls == []


def test_the_zoos_convolutional_networks_set_lanes_and_mlp_does_not():
    model = zoo.small_vgg(10, (3, 32, 32), rng=0)
    heads = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert heads and all(m.lanes for m in heads)
    assert not any(m.lanes for m in nn.mlp([4, 3, 2], rng=0).modules()
                   if isinstance(m, nn.Linear))
