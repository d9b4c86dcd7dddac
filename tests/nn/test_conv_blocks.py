"""Conv2d's blocked columns: made again in bprop from the cached input (never kept whole),
work arrays reused from call to call, against torch with blocks that leave a smaller last
block and with inputs that change between calls."""

import numpy as np
import pytest

from ermlab import nn
from ermlab.backend import default_dtype
from ermlab.nn import conv as conv_module

torch = pytest.importorskip("torch", reason="PyTorch oracle absent (its CPU build: see README.md)")
F = torch.nn.functional

# (C, H, W, O, kernel, stride, padding, dilation, groups): full width with padding,
# strided layout with padding, no padding, groups, stride 2 (col2im input gradient).
CASES = [
    (3, 7, 6, 4, 3, 1, 1, 1, 1),
    (4, 6, 7, 8, 3, 1, 1, 1, 2),
    (2, 7, 7, 3, (3, 2), 1, 0, (1, 2), 1),
    (4, 9, 8, 4, 3, 2, 1, 1, 1),
    (16, 5, 6, 4, 3, 1, 1, 1, 1),   # ≥ 16 channels: ∂L/∂x as a transposed convolution
]


def torch_grads(conv, x, g):
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(conv.weight.data, requires_grad=True)
    tb = torch.tensor(conv.bias.data, requires_grad=True)
    ty = F.conv2d(tx, tw, tb, stride=conv.stride, padding=conv.padding,
                  dilation=conv.dilation, groups=conv.groups)
    ty.backward(torch.tensor(g))
    return ty.detach().numpy(), tx.grad.numpy(), tw.grad.numpy(), tb.grad.numpy()


@pytest.mark.parametrize("full_width", [True, False])
@pytest.mark.parametrize("case", CASES)
def test_blocks_and_reused_work_arrays_match_torch_over_calls(case, full_width, monkeypatch):
    """Blocks of 2 samples over batches of 5, 3 and 5 (a last block of 1), each call on a
    new input: stale values in the reused work arrays must never reach a result."""
    c, h, w, o, k, s, p, d, groups = case
    if not full_width:
        monkeypatch.setattr(conv_module, "FULL_WIDTH_BUDGET", 0)
    with default_dtype(np.float64):
        conv = nn.Conv2d(c, o, k, stride=s, padding=p, dilation=d, groups=groups, rng=0)
    conv.bias.data[...] = np.random.default_rng(1).standard_normal(o)
    _, _, oh, ow, cw = conv._layout((1, c, h, w))
    sample = c * conv.kernel_size[0] * conv.kernel_size[1] * oh * cw * 8
    monkeypatch.setattr(conv_module, "FORWARD_BLOCK_BYTES", 2 * sample)
    monkeypatch.setattr(conv_module, "BLOCK_BYTES", 2 * sample)
    rng = np.random.default_rng(2)
    for n in (5, 3, 5):
        x = rng.standard_normal((n, c, h, w)) * 10
        y = conv.forward(x)
        g = rng.standard_normal(y.shape)
        conv.zero_grad()
        gx = conv.backward(g)
        ty, tgx, tgw, tgb = torch_grads(conv, x, g)
        np.testing.assert_allclose(y, ty, rtol=1e-10, atol=1e-10, err_msg="output")
        np.testing.assert_allclose(gx, tgx, rtol=1e-10, atol=1e-10, err_msg="∂L/∂x")
        np.testing.assert_allclose(conv.weight.grad, tgw, rtol=1e-10, atol=1e-10, err_msg="∂L/∂W")
        np.testing.assert_allclose(conv.bias.grad, tgb, rtol=1e-10, atol=1e-10, err_msg="∂L/∂b")


def _array_bytes(module) -> int:
    """Bytes of the arrays a module holds besides its parameters (cache and work arrays,
    the input it caches counted as held by its caller)."""
    held = 0
    for name, value in module.__dict__.items():
        if name in ("_x", "_parameters"):
            continue
        values = value.values() if isinstance(value, dict) else [value]
        for item in values:
            arrays = item if isinstance(item, tuple) else (item,)
            held += sum(a.nbytes for a in arrays if isinstance(a, np.ndarray))
    return held


@pytest.mark.parametrize("in_channels", [8, 16])   # col2im or transposed-conv ∂L/∂x
def test_training_forward_keeps_no_column_matrix(in_channels, monkeypatch):
    """Between fprop and bprop a layer holds its input (by reference) and work arrays of
    about one block, not the K_h·K_w-times-larger columns of the whole batch: what it
    holds does not grow with the batch."""
    monkeypatch.setattr(conv_module, "FORWARD_BLOCK_BYTES", 2**16)
    monkeypatch.setattr(conv_module, "BLOCK_BYTES", 2**16)
    conv = nn.Conv2d(in_channels, 8, 3, padding=1, rng=0, threads=1)  # one lane's arrays
    rng = np.random.default_rng(0)
    held = []
    for n in (16, 64):
        x = rng.standard_normal((n, in_channels, 16, 16)).astype(np.float32)
        g = rng.standard_normal((n, 8, 16, 16)).astype(np.float32)
        conv.forward(x)
        assert conv._x is x
        held.append(_array_bytes(conv))
        conv.backward(g)
        held.append(_array_bytes(conv))
    columns = 64 * in_channels * 9 * 16 * 18 * 4
    assert max(held) < columns / 8, held
    assert held[3] == held[1] and held[2] <= held[1], f"grew with the batch: {held}"


def test_work_arrays_are_reused_across_steps():
    conv = nn.Conv2d(4, 4, 3, padding=1, rng=0)
    x = np.random.default_rng(0).standard_normal((4, 4, 8, 8)).astype(np.float32)
    conv.backward(np.ones_like(conv.forward(x)))
    before = {name: entry[1] for name, entry in conv._work_arrays.items()}
    conv.backward(np.ones_like(conv.forward(x)))
    assert all(conv._work_arrays[name][1] is array for name, array in before.items())
