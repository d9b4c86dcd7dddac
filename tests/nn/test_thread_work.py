"""Winograd's V, M and ∂L/∂U work arrays are kept per thread (``conv.THREAD_WORK``), not per
layer: a network's layers share one set, and two models trained at once in two threads
get the results each gets alone."""

import threading

import numpy as np
import pytest

pytest.importorskip("numba", reason="Numba kernels absent: pip install 'ermlab[fast]'")

from ermlab import nn  # noqa: E402
from ermlab.nn import conv as conv_module  # noqa: E402


def _model(channels, seed, threads):
    layers = [nn.Conv2d(channels, channels, 3, padding=1, rng=seed + k, dtype="float64",
                        algorithm="winograd", threads=threads) for k in range(3)]
    return nn.Sequential(layers[0], nn.ReLU(), layers[1], nn.ReLU(), layers[2])


def _train(model, x, steps=4):
    """Forward and backward ``steps`` times (the gradients add up); (y, ∂L/∂x, ∂L/∂θ…)."""
    model.zero_grad()
    for step in range(steps):
        y = model.forward(x * (1 + step))
        grad = model.backward(np.cos(y))
    return [y, grad] + [p.grad.copy() for p in model.parameters()]


def test_the_layers_of_a_network_share_this_threads_arrays():
    x = np.random.default_rng(0).standard_normal((3, 8, 6, 6))
    model = _model(8, 0, threads=1)
    _train(model, x, steps=1)
    for layer in (model[0], model[2], model[4]):
        assert not set(layer.__dict__.get("_work_arrays", {})) & conv_module.THREAD_WORK
    assert conv_module.THREAD_WORK <= set(conv_module._thread_work.arrays)


@pytest.mark.parametrize("threads", [1, 2])
def test_two_models_trained_at_once_in_two_threads_get_their_own_results(threads):
    rng = np.random.default_rng(1)
    cases = [(_model(8, 0, threads), rng.standard_normal((5, 8, 14, 14))),
             (_model(12, 7, threads), rng.standard_normal((4, 12, 10, 10)))]
    alone = [_train(model, x, steps=8) for model, x in cases]
    def run(k, start, results):
        start.wait()
        results[k] = _train(*cases[k], steps=8)

    for _ in range(3):  # arrays shared across threads would mix the two in some round
        results, start = [None, None], threading.Barrier(2)
        workers = [threading.Thread(target=run, args=(k, start, results)) for k in range(2)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        for together, apart in zip(results, alone, strict=True):
            for ours, want in zip(together, apart, strict=True):
                np.testing.assert_array_equal(ours, want)
