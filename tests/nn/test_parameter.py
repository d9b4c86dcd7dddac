"""Parameter: what it takes as values and as a gradient, refused at the boundary with a
clear error rather than failing (or doing nothing) at the first step."""

import numpy as np
import pytest

from ermlab import optim
from ermlab.nn.parameter import Parameter


@pytest.mark.parametrize("value", [np.array(1.5) * 1.0, np.float32(1.5), 1.5, [1.5, 2.5]],
                         ids=["numpy-scalar-from-0d-arithmetic", "float32-scalar", "float",
                              "list"])
def test_scalars_and_lists_become_arrays_that_the_optimizer_updates(value):
    """``np.array(1.5) * 1.0`` is a NumPy scalar, not an array: kept as it was, every
    in-place update landed on a copy and the parameter never moved."""
    p = Parameter(value)
    assert isinstance(p.data, np.ndarray)
    assert p.data.dtype == np.asarray(value).dtype
    start = p.data.copy()
    opt = optim.SGD([p], lr=0.5, momentum=0.5)
    for k in range(3):
        p.grad[...] = 1.0 + k
        opt.step()
    # v = 1, 2.5, 4.25 (momentum 0.5): θ moves by 0.5 (1 + 2.5 + 4.25) = 3.875
    np.testing.assert_allclose(p.data, start - 3.875)


@pytest.mark.parametrize("value", [np.zeros(3, dtype=np.int64), np.zeros(2, dtype=bool),
                                   np.zeros(2, dtype=np.complex128), [1, 2]],
                         ids=["int64", "bool", "complex", "list-of-ints"])
def test_values_that_cannot_be_trained_are_refused(value):
    with pytest.raises(TypeError, match=r"cannot be trained.*astype\(numpy.float32\)"):
        Parameter(value, "weight")


def test_a_non_array_is_refused():
    with pytest.raises(TypeError, match="'w' takes an array of floating-point values; got str"):
        Parameter("1.0", "w")


def test_grad_assignment_keeps_an_array_of_the_parameters_shape_and_dtype():
    p = Parameter(np.zeros((2, 3), dtype=np.float32), "weight")
    g = np.ones((2, 3), dtype=np.float32)
    p.grad = g
    assert p.grad is g
    with pytest.raises(TypeError, match="grad cannot be None.*zero_grad"):
        p.grad = None
    with pytest.raises(ValueError, match=r"shape \(2, 3\) and dtype float32; got ndarray of "
                                         r"shape \(3,\)"):
        p.grad = np.ones(3, dtype=np.float32)
    with pytest.raises(ValueError, match="dtype float32; got ndarray of shape .* float64"):
        p.grad = np.ones((2, 3))
    with pytest.raises(ValueError, match="got float of shape None"):
        p.grad = 0.0
    assert p.grad is g  # the refused values left it as it was
