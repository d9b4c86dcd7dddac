"""Conv2d without torch: finite-difference gradient checks, a hand-computed case, errors."""

import numpy as np
import pytest
from conv_algorithms import window_sums

from ermlab import nn
from ermlab.backend import default_dtype
from ermlab.gradcheck import check_module
from ermlab.nn import conv as conv_module

TOL = 1e-6

# (N, C, H, W, O, kernel, stride, padding, dilation, groups, bias)
GRADCHECK = [
    (2, 2, 5, 4, 3, 3, 1, 1, 1, 1, True),
    (1, 4, 7, 6, 4, 3, 2, 1, 1, 2, True),       # stride 2, groups 2
    (1, 2, 7, 7, 2, 3, 1, 2, 2, 1, False),      # dilation 2, no bias
    (2, 3, 5, 6, 3, 3, 1, 1, 1, 3, True),       # depthwise
    (1, 2, 6, 5, 2, (2, 3), (2, 1), (1, 0), 1, 1, True),  # rectangular, odd sizes
    (2, 3, 4, 5, 2, 1, 1, 0, 1, 1, True),       # 1×1 fast path
    (1, 3, 5, 5, 2, 1, 2, 0, 1, 1, False),      # 1×1 stride 2
    (1, 2, 7, 7, 2, 2, 3, 0, 1, 1, True),       # stride > kernel
]


@pytest.mark.parametrize("full_width,blocks,row_split", [
    (True, False, False), (False, False, False), (True, True, False), (True, True, True)])
@pytest.mark.parametrize("config", GRADCHECK)
def test_conv2d_gradcheck(config, full_width, blocks, row_split, monkeypatch):
    if not full_width:
        monkeypatch.setattr(conv_module, "FULL_WIDTH_BUDGET", 0)
    if blocks:
        monkeypatch.setattr(conv_module, "BLOCK_BYTES", 1)
        monkeypatch.setattr(conv_module, "FORWARD_BLOCK_BYTES", 1)
    if row_split:  # K_w shifted copies, ∂L/∂x as a transposed convolution: any channels
        monkeypatch.setattr(conv_module, "ROW_SPLIT_MIN_CHANNELS", 0)
        monkeypatch.setattr(conv_module, "ROW_SPLIT_MIN_COLUMNS", 0)
        monkeypatch.setattr(conv_module, "TRANSPOSED_MIN_CHANNELS", 0)
    n, c, h, w, o, k, s, p, d, g, bias = config
    with default_dtype(np.float64):
        conv = nn.Conv2d(c, o, k, stride=s, padding=p, dilation=d, groups=g, bias=bias, rng=0)
    if bias:
        conv.bias.data[...] = np.random.default_rng(1).standard_normal(o)
    x = np.random.default_rng(2).standard_normal((n, c, h, w))
    result = check_module(conv, x, eps=1e-5)
    assert result.passed(TOL), result


def test_conv2d_by_hand():
    """A 2×2 kernel over a 3×3 image: each output is the dot product of a window with W."""
    with default_dtype(np.float64):
        conv = nn.Conv2d(1, 1, 2)
    conv.weight.data[...] = [[[[1.0, 2.0], [3.0, 4.0]]]]
    conv.bias.data[...] = 0.5
    x = np.arange(9.0).reshape(1, 1, 3, 3)
    y = conv.forward(x)
    np.testing.assert_array_equal(y, [[[[0 + 2 + 9 + 16.5, 1 + 4 + 12 + 20.5],
                                        [3 + 8 + 18 + 28.5, 4 + 10 + 21 + 32.5]]]])
    conv.zero_grad()
    gx = conv.backward(np.ones_like(y))
    np.testing.assert_array_equal(conv.weight.grad[0, 0], [[8.0, 12.0], [20.0, 24.0]])
    np.testing.assert_array_equal(conv.bias.grad, [4.0])
    np.testing.assert_array_equal(gx[0, 0], [[1, 3, 2], [4, 10, 6], [3, 7, 4]])


def test_output_shape_and_parameter_layout():
    conv = nn.Conv2d(8, 16, (3, 5), stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=4)
    assert conv.weight.shape == (16, 2, 3, 5) and conv.bias.shape == (16,)
    assert conv.weight.regularize and not conv.bias.regularize
    y = conv.forward(np.zeros((3, 8, 9, 10), np.float32))
    assert y.shape == (3, 16, 5, 6)     # ⌊(9+2−3)/2⌋+1, ⌊(10+4−9)/1⌋+1


@pytest.mark.parametrize("config", [GRADCHECK[0], GRADCHECK[5]])
def test_float32_in_float32_out(config):
    n, c, h, w, o, k, s, p, d, g, bias = config
    conv = nn.Conv2d(c, o, k, stride=s, padding=p, dilation=d, groups=g, bias=bias)
    x = np.random.default_rng(0).standard_normal((n, c, h, w)).astype(np.float32)
    y = conv.forward(x)
    conv.zero_grad()
    gx = conv.backward(np.ones_like(y))
    assert y.dtype == gx.dtype == conv.weight.grad.dtype == np.float32


def test_backward_needs_a_training_forward():
    conv = nn.Conv2d(1, 1, 3)
    x = np.zeros((1, 1, 4, 4), np.float32)
    conv.forward(x)
    conv.eval()
    y = conv.forward(x)
    with pytest.raises(RuntimeError, match="training mode"):
        conv.backward(np.ones_like(y))


@pytest.mark.parametrize(
    "shape,pattern",
    [
        ((3, 8, 8), r"Conv2d\(3, 4.*4-D input \(N, 3, H, W\).*\(3, 8, 8\)"),
        ((2, 3, 8, 8, 1), r"Conv2d\(3, 4.*4-D.*\(2, 3, 8, 8, 1\)"),
        ((2, 5, 8, 8), r"Conv2d\(3, 4.*3 input channels.*\(2, 5, 8, 8\) with 5 channels"),
        ((2, 3, 2, 8), r"Conv2d\(3, 4.*kernel covers \(5, 5\).*padded input is only \(4, 10\)"),
    ],
)
def test_bad_inputs_raise_value_errors_naming_layer_and_shapes(shape, pattern):
    conv = nn.Conv2d(3, 4, 5, padding=1)
    with pytest.raises(ValueError, match=pattern):
        conv.forward(np.zeros(shape, np.float32))


def test_eval_forward_does_not_disturb_the_training_cache():
    """train-mode forward(x1), eval-mode forward(x2), back to train: backward is for x1."""
    with default_dtype(np.float64):
        conv = nn.Conv2d(2, 3, 3, padding=1, rng=0)
    rng = np.random.default_rng(0)
    x1, x2 = rng.standard_normal((2, 2, 5, 5)), rng.standard_normal((2, 2, 5, 5))
    g = rng.standard_normal((2, 3, 5, 5))
    conv.forward(x1)
    conv.zero_grad()
    conv.backward(g)
    expected = conv.weight.grad.copy()
    conv.forward(x1)
    conv.eval()
    conv.forward(x2)
    conv.train()
    conv.zero_grad()
    conv.backward(g)
    np.testing.assert_array_equal(conv.weight.grad, expected)


def test_dilated_kernel_larger_than_input_raises():
    conv = nn.Conv2d(1, 1, 3, dilation=3)          # covers 7 pixels
    with pytest.raises(ValueError, match=r"kernel covers \(7, 7\).*\(6, 6\)"):
        conv.forward(np.zeros((1, 1, 6, 6), np.float32))


def test_dtype_mismatch_raises():
    conv = nn.Conv2d(1, 1, 3)
    with pytest.raises(ValueError, match="float32 parameters but got input of dtype float64"):
        conv.forward(np.zeros((1, 1, 4, 4)))


@pytest.mark.parametrize(
    "kwargs,pattern",
    [
        (dict(in_channels=6, out_channels=4, kernel_size=3, groups=4),
         r"in_channels \(6\) and out_channels \(4\).*divisible by groups \(4\)"),
        (dict(in_channels=4, out_channels=6, kernel_size=3, groups=4), "divisible by groups"),
        (dict(in_channels=0, out_channels=6, kernel_size=3), "in_channels must be a positive"),
        (dict(in_channels=1, out_channels=6, kernel_size=0), "kernel_size must be an integer ≥ 1"),
        (dict(in_channels=1, out_channels=6, kernel_size=3, stride=(1, 0)), "stride"),
        (dict(in_channels=1, out_channels=6, kernel_size=3, padding=-1), "padding"),
        (dict(in_channels=1, out_channels=6, kernel_size=(3, 3, 3)), "kernel_size"),
    ],
)
def test_bad_arguments_raise(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        nn.Conv2d(**kwargs)


def test_repr_names_the_configuration():
    text = repr(nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=2, bias=False))
    assert text == ("Conv2d(4, 8, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), "
                    "groups=2, bias=False)")


def test_grouped_convolutions_take_full_width_by_outputs_per_group():
    """Full-width columns are judged by O/G·(W_p − OW): 32 groups of 5 outputs on 4×4 maps
    (160·2 = 320 over the budget, 5·2 = 10 within) run full width, and give the sums of the
    windows (float64)."""
    grouped = nn.Conv2d(160, 160, 3, padding=1, groups=32, rng=0, dtype=np.float64,
                        algorithm="im2col")
    plain = nn.Conv2d(160, 160, 3, padding=1, rng=0, dtype=np.float64, algorithm="im2col")
    shape = (2, 160, 4, 4)
    assert 160 * 2 > conv_module.FULL_WIDTH_BUDGET
    assert grouped._layout(shape)[4] == 6 and plain._layout(shape)[4] == 4
    rng = np.random.default_rng(5)
    x = rng.standard_normal(shape)
    y = grouped.forward(x)
    g = rng.standard_normal(y.shape)
    expected_y, expected_x, expected_w = window_sums(x, grouped.weight.data, g, padding=1,
                                                     groups=32)
    np.testing.assert_allclose(y - grouped.bias.data[:, None, None], expected_y, rtol=1e-12,
                               atol=1e-12)
    grouped.zero_grad()
    gx = grouped.backward(g)
    np.testing.assert_allclose(grouped.weight.grad, expected_w, rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(gx, expected_x, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("algorithm", ["winograd", "direct", "im2col"])
def test_a_subclass_overriding_grad_input_also_overrides_backward(algorithm):
    """Conv2d's fused backward does not call grad_input (see its docstring); with
    ``backward = Module.backward``, as the docstring says, the override takes effect."""
    class Scaled(nn.Conv2d):
        def grad_input(self, grad_out):
            return super().grad_input(grad_out) * 1.001

    class ScaledTwoSteps(Scaled):
        backward = nn.Module.backward

    x = np.random.default_rng(1).standard_normal((2, 2, 5, 5))
    results = []
    for cls in (Scaled, ScaledTwoSteps):
        with default_dtype(np.float64):
            conv = cls(2, 3, 3, padding=1, algorithm=algorithm, rng=1)
        results.append(check_module(conv, x))
    assert results[0].passed(TOL)  # grad_input never ran
    assert results[1].max_rel_error == pytest.approx(1e-3, rel=1e-2)
    assert results[1].where.startswith("input[")


# -- ∂L/∂y of the wrong shape ------------------------------------------------------------------

GRAD_SHAPE_LAYERS = {
    "im2col": dict(kernel_size=3, padding=1, algorithm="im2col"),
    "im2col-stride2": dict(kernel_size=3, padding=1, stride=2, algorithm="im2col"),
    "winograd": dict(kernel_size=3, padding=1, algorithm="winograd"),
    "direct": dict(kernel_size=3, padding=1, algorithm="direct"),
    "depthwise": dict(kernel_size=3, padding=1, groups=6, algorithm="direct"),
    "pointwise": dict(kernel_size=1),
}


@pytest.mark.parametrize("relu", [False, True], ids=["plain", "forward_relu"])
@pytest.mark.parametrize("method", ["backward", "accumulate_grad", "grad_input"])
@pytest.mark.parametrize("layer", list(GRAD_SHAPE_LAYERS))
def test_grad_out_of_the_wrong_shape_raises_naming_both_shapes(layer, method, relu):
    """The direct, Winograd and depthwise kernels index ∂L/∂y by the forward's shape,
    unchecked: a wrong batch or size read out of bounds (garbage, NaN) or passed silently;
    im2col failed deep inside with a lane's slice in the message."""
    x = np.random.default_rng(0).standard_normal((7, 6, 11, 11)).astype(np.float32)
    conv = nn.Conv2d(6, 12, rng=3, **GRAD_SHAPE_LAYERS[layer])
    y = conv.forward_relu(x) if relu else None
    if y is None:
        y = conv.forward(x)
    n, c, h, w = y.shape
    for shape in [(n - 1, c, h, w), (n + 1, c, h, w), (n, c - 1, h, w), (n, c, h - 1, w),
                  (n, c, h, w + 1), (c, h, w)]:
        bad = np.ones(shape, np.float32)
        with pytest.raises(ValueError, match=rf"grad_out has shape \({shape[0]}, .*expected "
                                             rf"\({n}, {c}, {h}, {w}\)"):
            getattr(conv, method)(bad)
    conv.zero_grad()
    assert np.isfinite(conv.backward(np.ones_like(y))).all()  # nothing left half done


@pytest.mark.parametrize("algorithm", ["im2col", "direct", "winograd"])
def test_grad_out_of_another_dtype_is_named(algorithm):
    conv = nn.Conv2d(3, 4, 3, padding=1, algorithm=algorithm, rng=0)
    y = conv.forward(np.ones((2, 3, 6, 6), np.float32))
    with pytest.raises(ValueError, match=r"grad_out has dtype float64; the layer's is float32"):
        conv.backward(np.ones(y.shape))
