"""Conv2d against torch.nn.functional.conv2d: forward and backward, float64 and float32.

Our weights are copied into torch and a fixed random G = ∂L/∂y is fed back, so torch's
autograd gives ∂(Σ G ⊙ y)/∂x, /∂W and /∂b, which bprop must match to 1e-10 in float64
and 1e-4 in float32.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch oracle absent (its CPU build: see README.md)")
F = torch.nn.functional

from ermlab import nn  # noqa: E402
from ermlab.backend import default_dtype  # noqa: E402
from ermlab.nn import conv as conv_module  # noqa: E402

# (N, C, H, W, O, kernel, stride, padding, dilation, groups)
CONFIGS = [
    (2, 3, 7, 6, 4, 3, 1, 1, 1, 1),            # 'same' 3×3, odd width
    (2, 1, 9, 9, 6, 5, 1, 2, 1, 1),            # LeNet C1-like
    (3, 6, 7, 7, 5, 5, 1, 0, 1, 1),            # LeNet C3-like, odd out channels
    (2, 4, 9, 8, 8, 3, 2, 1, 1, 2),            # stride 2, groups 2
    (2, 4, 10, 11, 4, 3, 1, 2, 2, 1),          # dilation 2
    (1, 8, 7, 7, 8, 3, 1, 1, 1, 4),            # groups 4
    (2, 4, 6, 7, 4, 3, 2, 1, 1, 4),            # depthwise
    (2, 4, 6, 7, 8, 3, 1, 1, 1, 4),            # depthwise multiplier 2
    (2, 3, 11, 10, 2, 2, 5, 0, 1, 1),          # stride > kernel: skipped pixels
    (2, 3, 8, 9, 4, (2, 3), (3, 1), (0, 2), (1, 2), 1),  # rectangular everything
    (2, 6, 5, 5, 4, 1, 1, 0, 1, 1),            # 1×1 fast path
    (2, 6, 7, 6, 4, 1, 2, 0, 1, 1),            # 1×1 stride 2 (projection shortcut)
    (2, 4, 5, 5, 4, 1, 1, 1, 1, 2),            # 1×1 with padding and groups: general path
    (1, 2, 3, 3, 3, 3, 1, 0, 1, 1),            # kernel = input: 1×1 output
    (2, 3, 11, 7, 5, 3, 3, 1, 3, 1),           # dilation 3 with stride 3
]


def build(config, dtype, bias=True, seed=0):
    n, c, h, w, o, k, s, p, d, g = config
    with default_dtype(dtype):
        conv = nn.Conv2d(c, o, k, stride=s, padding=p, dilation=d, groups=g, bias=bias, rng=seed)
    rng = np.random.default_rng(seed + 1)
    if bias:
        conv.bias.data[...] = rng.standard_normal(o).astype(dtype)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    return conv, x, (s, p, d, g)


def torch_conv(conv, x, g, s, p, d, groups):
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(conv.weight.data, requires_grad=True)
    tb = torch.tensor(conv.bias.data, requires_grad=True) if conv.bias is not None else None
    ty = F.conv2d(tx, tw, tb, stride=s, padding=p, dilation=d, groups=groups)
    ty.backward(torch.tensor(g))
    return ty.detach().numpy(), tx.grad.numpy(), tw.grad.numpy(), (
        tb.grad.numpy() if tb is not None else None
    )


def run(conv, x, seed=2):
    conv.train()
    y = conv.forward(x)
    g = np.random.default_rng(seed).standard_normal(y.shape).astype(x.dtype)
    conv.zero_grad()
    return y, g, conv.backward(g)


@pytest.fixture(params=["full-width", "strided", "full-width-blocks", "strided-blocks",
                        "transposed-blocks", "row-split", "row-split-blocks"])
def layout(request, monkeypatch):
    """Stride-1 convolutions use full-width columns unless the budget is 0; bprop runs
    one sample at a time when the block budget is 1 byte; "transposed" takes the input
    gradient as a transposed convolution for every layer it applies to (normally only
    those with ≥ 16 input channels) and runs the forward one sample at a time;
    "row-split" makes the columns of every stride-1 convolution without groups as K_w
    shifted copies (normally only with ≥ 16 input channels), its transposed convolution
    included."""
    if request.param.startswith("row-split"):
        monkeypatch.setattr(conv_module, "ROW_SPLIT_MIN_CHANNELS", 0)
        monkeypatch.setattr(conv_module, "ROW_SPLIT_MIN_COLUMNS", 0)
        monkeypatch.setattr(conv_module, "TRANSPOSED_MIN_CHANNELS", 0)
        if request.param.endswith("blocks"):
            monkeypatch.setattr(conv_module, "FORWARD_BLOCK_BYTES", 1)
    if request.param.startswith("strided"):
        monkeypatch.setattr(conv_module, "FULL_WIDTH_BUDGET", 0)
    if request.param.endswith("blocks"):
        monkeypatch.setattr(conv_module, "BLOCK_BYTES", 1)
    if request.param.startswith("transposed"):
        monkeypatch.setattr(conv_module, "TRANSPOSED_MIN_CHANNELS", 0)
        monkeypatch.setattr(conv_module, "FORWARD_BLOCK_BYTES", 1)
    return request.param


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-10), (np.float32, 1e-4)])
def test_conv2d_matches_torch(config, bias, dtype, tol, layout):
    conv, x, (s, p, d, groups) = build(config, dtype, bias)
    y, g, gx = run(conv, x)
    ty, tgx, tgw, tgb = torch_conv(conv, x, g, s, p, d, groups)
    assert y.dtype == gx.dtype == conv.weight.grad.dtype == dtype
    assert y.shape == ty.shape and gx.shape == x.shape
    np.testing.assert_allclose(y, ty, rtol=tol, atol=tol, err_msg="output")
    np.testing.assert_allclose(gx, tgx, rtol=tol, atol=tol, err_msg="∂L/∂x")
    np.testing.assert_allclose(conv.weight.grad, tgw, rtol=tol, atol=tol, err_msg="∂L/∂W")
    if bias:
        np.testing.assert_allclose(conv.bias.grad, tgb, rtol=tol, atol=tol, err_msg="∂L/∂b")


def test_gradients_accumulate_over_two_backward_passes():
    conv, x, (s, p, d, groups) = build(CONFIGS[3], np.float64)
    y, g, _ = run(conv, x)
    conv.backward(g)
    _, _, tgw, tgb = torch_conv(conv, x, g, s, p, d, groups)
    np.testing.assert_allclose(conv.weight.grad, 2 * tgw, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(conv.bias.grad, 2 * tgb, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("config", [CONFIGS[0], CONFIGS[10]])
def test_input_grad_false_still_gives_parameter_gradients(config):
    conv, x, (s, p, d, groups) = build(config, np.float64)
    conv.train()
    y = conv.forward(x)
    g = np.random.default_rng(5).standard_normal(y.shape)
    conv.zero_grad()
    assert conv.backward(g, input_grad=False) is None
    _, _, tgw, tgb = torch_conv(conv, x, g, s, p, d, groups)
    np.testing.assert_allclose(conv.weight.grad, tgw, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(conv.bias.grad, tgb, rtol=1e-10, atol=1e-12)


def test_separate_accumulate_grad_and_grad_input_match_backward(layout):
    conv, x, (s, p, d, groups) = build(CONFIGS[4], np.float64)
    y, g, gx = run(conv, x)
    grad_w = conv.weight.grad.copy()
    conv.zero_grad()
    conv.accumulate_grad(g)
    np.testing.assert_array_equal(conv.weight.grad, grad_w)
    np.testing.assert_array_equal(conv.grad_input(g), gx)


def test_noncontiguous_input_matches_torch(layout):
    conv, x, (s, p, d, groups) = build(CONFIGS[0], np.float64)
    x_view = np.asfortranarray(x)[:, :, :, ::-1]
    y, g, gx = run(conv, x_view)
    ty, tgx, _, _ = torch_conv(conv, np.ascontiguousarray(x_view), g, s, p, d, groups)
    np.testing.assert_allclose(y, ty, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gx, tgx, rtol=1e-10, atol=1e-12)
