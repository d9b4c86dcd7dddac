"""Depthwise convolutions (groups = in_channels) summed directly over channels-last planes
(``ermlab.nn._depthwise``): y, ∂L/∂x, ∂L/∂W and ∂L/∂b against float64 window sums (an
oracle sharing no code with Conv2d) and, for dilations and rectangular kernels, against
im2col; channel multipliers 1–3, strides, padding, no bias; lanes of channels bit for bit
one lane; which layers ``auto`` gives them; passes one at a time; finite differences;
per-example gradients.
"""

import numpy as np
import pytest

pytest.importorskip("numba", reason="Numba kernels absent: pip install 'ermlab[fast]'")

from conv_algorithms import window_sums  # noqa: E402
from kernel_calls import count_calls  # noqa: E402

from ermlab import nn  # noqa: E402
from ermlab.gradcheck import check_module  # noqa: E402
from ermlab.nn import _depthwise  # noqa: E402
from ermlab.nn import conv as conv_module  # noqa: E402

# (N, C, multiplier, H, W, kernel, stride, padding, dilation)
CASES = [
    (3, 8, 1, 5, 6, 3, 1, 1, 1),
    (2, 6, 2, 7, 7, 3, 2, 1, 1),
    (2, 4, 3, 9, 8, 5, 1, 2, 1),
    (4, 5, 1, 4, 4, 3, 1, 0, 1),
    (1, 3, 1, 6, 5, 1, 1, 0, 1),
    (2, 4, 1, 9, 9, 3, 1, 2, 2),
    (2, 6, 2, 8, 7, (3, 1), (2, 1), (1, 0), 1),
]


def _layer(case, algorithm="direct", dtype="float64", bias=True, threads=1):
    _, c, m, _, _, k, s, p, d = case
    conv = nn.Conv2d(c, c * m, k, stride=s, padding=p, dilation=d, groups=c, bias=bias,
                     rng=0, dtype=dtype, algorithm=algorithm, threads=threads)
    if bias:
        conv.bias.data[:] = np.random.default_rng(1).standard_normal(c * m)
    return conv


def _data(case, dtype=np.float64, seed=2):
    n, c, _, h, w = case[:5]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    return x, rng


def _pass(conv, x, g):
    conv.zero_grad()
    y = conv.forward(x)
    gx = conv.backward(g)
    return y, gx, conv.weight.grad.copy(), None if conv.bias is None else conv.bias.grad.copy()


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_the_kernels_give_the_convolution(case, bias, monkeypatch):
    calls = count_calls(monkeypatch, _depthwise, "forward", "backward")
    x, rng = _data(case)
    conv = _layer(case, bias=bias)
    y0 = conv.forward(x)
    g = rng.standard_normal(y0.shape)
    y, gx, gw, gb = _pass(conv, x, g)
    assert calls == {"forward": 2, "backward": 1}
    _, c, m, _, _, k, s, p, d = case
    if isinstance(k, int) and isinstance(s, int) and isinstance(p, int) and d == 1:
        want_y, want_x, want_w = window_sums(x, conv.weight.data, g, s, p, groups=c)
        if bias:
            want_y = want_y + conv.bias.data[None, :, None, None]
    else:  # dilated or rectangular: im2col in float64
        want_y, want_x, want_w, _ = _pass(_layer(case, "im2col", bias=bias), x, g)
    np.testing.assert_allclose(y, want_y, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gx, want_x, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gw, want_w, rtol=1e-12, atol=1e-12)
    if bias:
        np.testing.assert_allclose(gb, g.sum(axis=(0, 2, 3)), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", CASES[:3], ids=str)
def test_float32_within_rounding_of_im2col(case):
    x, rng = _data(case, np.float32)
    conv, reference = _layer(case, dtype="float32"), _layer(case, "im2col", dtype="float32")
    g = rng.standard_normal(conv.forward(x).shape).astype(np.float32)
    for ours, want in zip(_pass(conv, x, g), _pass(reference, x, g), strict=True):
        assert ours.dtype == np.float32
        np.testing.assert_allclose(ours, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", CASES[:3], ids=str)
def test_lanes_of_channels_give_one_lanes_results_bit_for_bit(case, monkeypatch):
    x, rng = _data(case)
    one = _layer(case, threads=1)
    g = rng.standard_normal(one.forward(x).shape)
    first = _pass(one, x, g)
    monkeypatch.setattr(conv_module, "LANE_MIN_FLOPS", 1)
    three = _layer(case, threads=3)
    assert len(three._channel_lanes(np, x.shape)) == 3
    for ours, want in zip(_pass(three, x, g), first, strict=True):
        np.testing.assert_array_equal(ours, want)
    three.backward(2 * g)  # a second pass adds
    np.testing.assert_allclose(three.weight.grad, 3 * first[2], rtol=1e-13, atol=1e-13)


def test_the_passes_one_at_a_time():
    case = CASES[1]
    x, rng = _data(case)
    conv, reference = _layer(case), _layer(case, "im2col")
    g = rng.standard_normal(conv.forward(x).shape)
    for module in (conv, reference):
        module.forward(x)
        module.zero_grad()
    assert conv.backward(g, input_grad=False) is None
    conv.accumulate_grad(g)
    reference.accumulate_grad(g)
    reference.accumulate_grad(g)
    np.testing.assert_allclose(conv.weight.grad, reference.weight.grad, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(conv.bias.grad, reference.bias.grad, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(conv.grad_input(g), reference.grad_input(g), rtol=1e-12,
                               atol=1e-12)


def test_auto_takes_the_kernels_for_depthwise_layers_on_small_planes(monkeypatch):
    x16 = np.zeros((2, 8, 16, 16), np.float32)
    x17 = np.zeros((2, 8, 17, 17), np.float32)
    depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8)
    assert depthwise._depthwise(x16) is not None  # 256 positions
    assert depthwise._depthwise(x17) is None  # 289: im2col
    assert nn.Conv2d(8, 8, 3, padding=1, groups=8, algorithm="direct")._depthwise(x17)
    assert nn.Conv2d(8, 8, 3, padding=1, groups=8, algorithm="im2col")._depthwise(x16) is None
    assert nn.Conv2d(8, 8, 3, padding=1, groups=4)._depthwise(x16) is None  # grouped
    assert nn.Conv2d(1, 4, 3, padding=1, groups=1)._depthwise(x16[:, :1]) is None
    assert depthwise._depthwise(x16.astype(np.float16)) is None  # no kernel for float16
    monkeypatch.setenv("ERMLAB_FUSED", "0")
    assert depthwise._depthwise(x16) is None
    y = depthwise.forward(np.ones((2, 8, 4, 4), np.float32))  # im2col
    assert y.shape == (2, 8, 4, 4)


def test_gradcheck_float64():
    case = (2, 3, 2, 5, 5, 3, 2, 1, 1)
    x, _ = _data(case)
    result = check_module(_layer(case), x)
    assert result.max_rel_error < 1e-5, result


def test_per_example_gradients_through_a_depthwise_layer():
    from ermlab.losses import SoftmaxCrossEntropy
    from ermlab.privacy.per_example import per_example_gradients

    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 3, 5, 5))
    y = rng.integers(0, 2, 4)

    def build(algorithm):
        return nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1, groups=3, rng=0, dtype="float64", algorithm=algorithm),
            nn.ReLU(), nn.Flatten(), nn.Linear(150, 2, rng=1, dtype="float64"))

    ours = per_example_gradients(build("direct"), SoftmaxCrossEntropy(), x, y)
    want = per_example_gradients(build("im2col"), SoftmaxCrossEntropy(), x, y)
    for name in want:
        np.testing.assert_allclose(ours[name], want[name], rtol=1e-12, atol=1e-12)


def test_an_empty_batch():
    conv = nn.Conv2d(4, 4, 3, padding=1, groups=4, rng=0, algorithm="direct")
    y = conv.forward(np.zeros((0, 4, 5, 5), np.float32))
    assert y.shape == (0, 4, 5, 5)
    conv.zero_grad()
    assert conv.backward(np.zeros_like(y)).shape == (0, 4, 5, 5)
    assert not conv.weight.grad.any()
