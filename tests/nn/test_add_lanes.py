"""Add sums C-contiguous NumPy inputs in lanes of elements: the same values as NumPy's sum,
bit for bit, for any number of lanes; other inputs take NumPy's path."""

import numpy as np
import pytest

from ermlab import nn
from ermlab.nn import merge


@pytest.mark.parametrize("count", [2, 3])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_lanes_sum_bit_for_bit(count, threads, monkeypatch):
    monkeypatch.setattr(merge, "LANE_MIN_BYTES", 64)  # lanes for a small array
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
