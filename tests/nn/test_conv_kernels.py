"""Conv2d's compiled col2im (``nn._conv_kernels``) gives ∂L/∂x bit for bit as the NumPy
path (``ERMLAB_FUSED=0``) on every column layout: strided, full width, dilated, grouped,
stride 2 in both directions, blocks of several samples and lanes."""

import numpy as np
import pytest

pytest.importorskip("numba", reason="compiled kernels need Numba: pip install numba")

from kernel_calls import count_calls  # noqa: E402

from ermlab import nn  # noqa: E402
from ermlab.backend import default_dtype  # noqa: E402
from ermlab.nn import _conv_kernels  # noqa: E402
from ermlab.nn import conv as conv_module  # noqa: E402

# (C, H, W, O, kernel, stride, padding, dilation, groups)
CASES = [
    (3, 7, 6, 4, 3, 1, 1, 1, 1),          # full width, padded
    (4, 6, 7, 8, 3, 1, 1, 1, 2),          # groups
    (2, 7, 7, 3, (3, 2), 1, 0, (1, 2), 1),  # dilation, no padding
    (4, 9, 8, 4, 3, 2, 1, 1, 1),          # stride 2
    (3, 9, 10, 2, (2, 3), (2, 3), (0, 1), 1, 1),  # unequal strides
    (6, 14, 14, 16, 5, 1, 0, 1, 1),       # LeNet-5's C3
]


def gradients(case, dtype, threads):
    c, h, w, o, k, s, p, d, groups = case
    with default_dtype(dtype):
        conv = nn.Conv2d(c, o, k, stride=s, padding=p, dilation=d, groups=groups, rng=0,
                         threads=threads, algorithm="im2col")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, c, h, w)).astype(dtype)
    y = conv.forward(x)
    conv.zero_grad()
    gx = conv.backward(rng.standard_normal(y.shape).astype(dtype))
    return gx, conv.weight.grad.copy()


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES)
def test_compiled_col2im_equals_numpy_bit_for_bit(case, dtype, threads, monkeypatch):
    monkeypatch.setattr(conv_module, "TRANSPOSED_MIN_CHANNELS", 10**9)  # col2im everywhere
    monkeypatch.setattr(conv_module, "BLOCK_BYTES", 1500)  # blocks of a few samples
    monkeypatch.setattr(conv_module, "LANE_MIN_FLOPS", 1)
    calls = count_calls(monkeypatch, _conv_kernels, "col2im")
    fused = gradients(case, dtype, threads)
    assert calls, "the compiled col2im did not run"
    monkeypatch.setenv("ERMLAB_FUSED", "0")
    calls.clear()
    reference = gradients(case, dtype, threads)
    assert not calls
    np.testing.assert_array_equal(fused[0], reference[0])
    np.testing.assert_array_equal(fused[1], reference[1])
