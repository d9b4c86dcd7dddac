"""Add sums C-contiguous NumPy inputs in lanes of elements: the same values as NumPy's sum,
bit for bit, for any number of lanes; other inputs take NumPy's path."""

import numpy as np
import pytest

from ermlab import nn
from ermlab.nn import activations, merge


@pytest.mark.parametrize("count", [2, 3])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_lanes_sum_bit_for_bit(count, threads, monkeypatch):
    monkeypatch.setattr(activations, "LANE_MIN_BYTES", 64)  # lanes for a small array
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((5, 3, 7, 11)).astype(np.float32) for _ in range(count)]
    add = nn.Add()
    add.threads = threads
    y = add.forward(*inputs)
    expected = inputs[0] + inputs[1]
    for x in inputs[2:]:
        expected += x
    np.testing.assert_array_equal(y, expected)
    assert y.dtype == np.float32 and not any(np.shares_memory(y, x) for x in inputs)


def test_non_contiguous_and_mixed_dtypes_take_numpys_path():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((4, 6))
    b = rng.standard_normal((6, 4)).T  # not C-contiguous
    np.testing.assert_array_equal(nn.Add().forward(a, b), a + b)
    c = rng.standard_normal((4, 6)).astype(np.float32)
    y = nn.Add().forward(a, c)
    assert y.dtype == np.float64
    np.testing.assert_array_equal(y, a + c)


def test_a_graph_sums_the_gradients_of_a_shared_value_in_lanes(monkeypatch):
    """x feeds two boxes: its gradient is the sum of theirs (``merge.sum_of``, in lanes),
    bit for bit NumPy's sum of the two."""
    monkeypatch.setattr(activations, "LANE_MIN_BYTES", 64)
    monkeypatch.setenv("ERMLAB_NUM_THREADS", "3")
    rng = np.random.default_rng(2)
    graph = nn.Graph(inputs=["x"])
    graph.add("a", nn.Linear(8, 8, rng=0, dtype=np.float32), "x")
    graph.add("b", nn.Tanh(), "x")
    graph.add("sum", nn.Add(), ["a", "b"])
    graph.set_output("sum")
    x = rng.standard_normal((40, 8)).astype(np.float32)
    g = rng.standard_normal((40, 8)).astype(np.float32)
    graph.forward(x)
    grad = graph.backward(g)
    a, b = graph._modules["a"], graph._modules["b"]
    a.forward(x)
    b.forward(x)
    np.testing.assert_array_equal(grad, a.backward(g) + b.backward(g))


def test_sum_of_arrays_of_different_shapes_broadcasts_as_numpy():
    a, b = np.ones((3, 4), np.float32), np.arange(4, dtype=np.float32)
    np.testing.assert_array_equal(merge.sum_of((a, b)), a + b)
