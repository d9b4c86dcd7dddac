"""Convolutions with few output positions per sample (P < O, small planes with many
channels): im2col's GEMMs once per group over all of a block's samples (``Conv2d._merged``:
forward, ∂L/∂W by ``conv._block_product``, ∂L/∂x), the 1×1 path's ∂L/∂W as one GEMM
(``Conv2d._pointwise_weight_product``), its forward and ∂L/∂x too (``Conv2d._merged_product``)
and Winograd's blocks of at least
``*_TILES_PER_CHANNEL`` tiles per channel, against direct float64 sums, in lanes, and
added onto a gradient that is not zero."""

import numpy as np
import pytest
from conv_algorithms import window_sums

from ermlab import nn
from ermlab.nn import conv as conv_module

# (N, C, O, H, W, kernel, stride, padding, groups): a 3×3 stride 2 on 4×4 (2×2 outputs),
# LeNet-5's C5 as a convolution (1×1 outputs), groups, 1×1 kernels with and without stride
CASES = [
    (7, 3, 8, 4, 4, 3, 2, 1, 1),
    (7, 6, 16, 5, 5, 5, 1, 0, 1),
    (7, 4, 12, 3, 3, 3, 1, 0, 2),
    (7, 5, 9, 4, 4, 1, 2, 0, 1),
    (7, 3, 10, 2, 3, 1, 1, 0, 1),
]


def layer(case, threads, dtype=np.float64):
    _, c, o, _, _, kernel, stride, padding, groups = case
    return nn.Conv2d(c, o, kernel, stride=stride, padding=padding, groups=groups, rng=0,
                     dtype=dtype, threads=threads, algorithm="im2col")


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("threads", [1, 3])
def test_weight_gradient_of_few_positions(case, threads, monkeypatch):
    n, c, o, h, w, kernel, stride, padding, groups = case
    monkeypatch.setattr(conv_module, "LANE_MIN_FLOPS", 1)  # threads=3: three lanes
    spies = {"block": 0, "pointwise": 0}
    block_product = conv_module._block_product
    pointwise = conv_module.Conv2d._pointwise_weight_product

    def counted_block(*args):
        spies["block"] += 1
        return block_product(*args)

    def counted_pointwise(self, *args, **kwargs):
        spies["pointwise"] += 1
        return pointwise(self, *args, **kwargs)

    monkeypatch.setattr(conv_module, "_block_product", counted_block)
    monkeypatch.setattr(conv_module.Conv2d, "_pointwise_weight_product", counted_pointwise)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, h, w))
    conv = layer(case, threads)
    y = conv.forward(x)
    g = rng.standard_normal(y.shape)
    assert y.shape[2] * y.shape[3] < o // groups  # fewer positions than outputs
    y_expected, gx_expected, expected = window_sums(x, conv.weight.data, g, stride, padding,
                                                    groups)
    np.testing.assert_allclose(y - conv.bias.data[:, None, None], y_expected, rtol=1e-12,
                               atol=1e-12)
    conv.zero_grad()
    np.testing.assert_allclose(conv.backward(g), gx_expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(conv.weight.grad, expected, rtol=1e-12, atol=1e-12)
    conv.backward(g, input_grad=False)  # adds, with the weight-only blocks
    np.testing.assert_allclose(conv.weight.grad, 2 * expected, rtol=1e-12, atol=1e-12)
    pointwise_path = kernel == 1 and groups == 1
    assert spies["pointwise" if pointwise_path else "block"] > 0


def test_float32_few_positions_against_float64():
    case = CASES[1]
    rng = np.random.default_rng(1)
    x = rng.standard_normal(case[:2] + case[3:5]).astype(np.float32)
    conv = layer(case, threads=2, dtype=np.float32)
    y = conv.forward(x)
    g = rng.standard_normal(y.shape).astype(np.float32)
    conv.zero_grad()
    conv.backward(g)
    assert conv.weight.grad.dtype == np.float32
    expected = window_sums(x, conv.weight.data, g)[2]
    np.testing.assert_allclose(conv.weight.grad, expected, rtol=1e-4, atol=1e-4)


def test_winograd_blocks_hold_enough_tiles_for_many_channels():
    pytest.importorskip("numba", reason="Winograd kernels need Numba: pip install numba")
    from ermlab.nn import _winograd as winograd

    # 512 channels on a 4×4 map, 4 tiles a sample: blocks of BLOCK_BYTES would hold 2
    # samples (8 tiles); bprop's hold 0.5·512 = 256 tiles, fprop's 128, at most the lane's
    assert winograd._block(0, 128, 512, 4, 4, winograd.BACKWARD_TILES_PER_CHANNEL) == 64
    assert winograd._block(0, 128, 512, 4, 4, winograd.FORWARD_TILES_PER_CHANNEL) == 32
    assert winograd._block(0, 40, 512, 4, 4, winograd.BACKWARD_TILES_PER_CHANNEL) == 40
    # few channels: the bytes decide (256 KiB / (16 · 32 channels · 64 tiles · 4 B) = 2)
    assert winograd._block(0, 128, 32, 64, 4, winograd.BACKWARD_TILES_PER_CHANNEL) == 2


@pytest.mark.parametrize("algorithm", ["auto", "im2col", "direct"])
def test_input_gradient_of_a_one_position_plane(algorithm, monkeypatch):
    """LeNet-5's C5 as a convolution (1×1 outputs of 16 channels' 5×5 maps): ∂L/∂x from the
    column gradient, not the transposed convolution over ∂L/∂Y padded by 4, checked by
    finite differences; ``auto`` computes it by im2col (fewer than DIRECT_MIN_POSITIONS
    outputs a sample)."""
    pytest.importorskip("numba", reason="the direct kernels need Numba")
    from ermlab import gradcheck
    from ermlab.nn import _direct

    calls = {"transposed": 0}
    transposed = conv_module.Conv2d._transposed

    def counted(self, *args, **kwargs):
        helper = transposed(self, *args, **kwargs)
        calls["transposed"] += helper is not None
        return helper

    monkeypatch.setattr(conv_module.Conv2d, "_transposed", counted)
    direct_calls = {"forward": 0}
    direct_forward = _direct.forward

    def counted_direct(*args, **kwargs):
        direct_calls["forward"] += 1
        return direct_forward(*args, **kwargs)

    monkeypatch.setattr(_direct, "forward", counted_direct)
    conv = nn.Conv2d(16, 20, 5, rng=0, dtype=np.float64, algorithm=algorithm)
    x = np.random.default_rng(4).standard_normal((2, 16, 5, 5))
    result = gradcheck.check_module(conv, x)
    assert result.passed(), result
    assert calls["transposed"] == 0
    assert (direct_calls["forward"] > 0) is (algorithm == "direct")


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("size,stride,merged", [(4, 2, True), (3, 1, True), (4, 1, False)])
def test_pointwise_forward_and_input_gradient_of_few_positions(size, stride, merged, threads,
                                                               monkeypatch):
    """The 1×1 path's forward and ∂L/∂x as one GEMM over every sample's positions below
    ``POINTWISE_MERGED_BELOW`` positions a sample (2×2 and 3×3 outputs here, with the
    threshold at 16 → 5), one GEMM per sample from it: both against direct float64 sums,
    in three lanes of rows as in one."""
    monkeypatch.setattr(conv_module, "LANE_MIN_FLOPS", 1)
    monkeypatch.setattr(conv_module, "POINTWISE_MERGED_BELOW", 10)
    calls = []
    product = conv_module.Conv2d._merged_product
    monkeypatch.setattr(conv_module.Conv2d, "_merged_product", lambda self, *args, **kw: (
        calls.append(args[2].shape) or product(self, *args, **kw)))
    rng = np.random.default_rng(5)
    x = rng.standard_normal((7, 5, size, size))
    conv = nn.Conv2d(5, 9, 1, stride=stride, rng=0, threads=threads, algorithm="im2col",
                     dtype=np.float64)
    conv.bias.data[...] = rng.standard_normal(9)
    y = conv.forward(x)
    g = rng.standard_normal(y.shape)
    conv.zero_grad()
    grad_x = conv.backward(g)
    y_expected, gx_expected, expected = window_sums(x, conv.weight.data, g, stride, 0, 1)
    np.testing.assert_allclose(y - conv.bias.data[:, None, None], y_expected, rtol=1e-12,
                               atol=1e-12)
    np.testing.assert_allclose(grad_x, gx_expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(conv.weight.grad, expected, rtol=1e-12, atol=1e-12)
    positions = y.shape[2] * y.shape[3]
    assert calls == ([(7, 5, positions), (7, 9, positions)] if merged else [])
