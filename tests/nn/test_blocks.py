"""Residual, bottleneck, ResNeXt and inception blocks: float64 gradient checks, wiring, counts."""

import numpy as np
import pytest

from ermlab.backend import default_dtype
from ermlab.gradcheck import check_module
from ermlab.nn.blocks import (
    BasicBlock,
    Bottleneck,
    InceptionModule,
    ResNeXtBlock,
    ZeroPadShortcut,
)
from ermlab.nn.stochastic import StochasticDepth

EPS, TOL = 1e-5, 1e-6


def normal(seed, shape):
    return np.random.default_rng(seed).standard_normal(shape)


def build(cls, *args, seed=0, **kwargs):
    with default_dtype(np.float64):
        block = cls(*args, rng=seed, **kwargs)
    for name, p in block.named_parameters():  # move BN's γ = 1, β = 0 off their special values
        if p.data.ndim == 1:
            p.data[...] = 1.0 + 0.3 * normal(seed + len(name), p.shape) if "weight" in name \
                else 0.2 * normal(seed + len(name), p.shape)
    return block


def assert_gradcheck(block, x, seed=0):
    result = check_module(block, x, eps=EPS, rng=seed)
    assert result.max_rel_error <= TOL, result
    assert "input" in result.errors
    assert len(result.errors) == 1 + len(block.parameters())


# -- gradient checks -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "in_ch,out_ch,stride,shortcut",
    [(3, 3, 1, "B"), (2, 4, 2, "B"), (3, 5, 1, "B"), (2, 4, 2, "A"), (2, 2, 2, "A")],
)
def test_basic_block_gradcheck(in_ch, out_ch, stride, shortcut):
    block = build(BasicBlock, in_ch, out_ch, stride, shortcut=shortcut, seed=in_ch + out_ch)
    assert_gradcheck(block, normal(1, (2, in_ch, 5, 5)))
    has_projection = stride != 1 or in_ch != out_ch
    assert ("shortcut" in block.edges) == has_projection


@pytest.mark.parametrize("in_ch,planes,stride,groups,base_width", [
    (3, 2, 1, 1, 64),   # projection: 3 → 8 channels
    (8, 2, 1, 1, 64),   # identity shortcut
    (4, 2, 2, 2, 64),   # grouped 3×3, stride 2
])
def test_bottleneck_gradcheck(in_ch, planes, stride, groups, base_width):
    block = build(Bottleneck, in_ch, planes, stride, groups=groups, base_width=base_width)
    assert block.out_channels == 4 * planes
    assert_gradcheck(block, normal(2, (2, in_ch, 4, 5)))


def test_resnext_block_gradcheck():
    # cardinality 4, d = 2 at planes 64 → D = ⌊2 · 2/64⌋… use planes 32: D = ⌊32·2/64⌋·4 = 4
    block = build(ResNeXtBlock, 6, 32, 2, cardinality=4, base_width=2)
    assert block.width == 4 and block.groups == 4 and block.out_channels == 128
    conv2 = block.residual[3]
    assert conv2.groups == 4 and conv2.weight.shape == (4, 1, 3, 3)
    assert_gradcheck(block, normal(3, (2, 6, 6, 6)))


@pytest.mark.parametrize("batch_norm", [False, True])
def test_inception_gradcheck(batch_norm):
    block = build(InceptionModule, 3, 2, 2, 3, 1, 2, 2, batch_norm=batch_norm, seed=4)
    assert block.out_channels == 2 + 3 + 2 + 2
    assert_gradcheck(block, normal(4, (2, 3, 5, 5)))


def test_zero_pad_shortcut_gradcheck_and_oracle():
    layer = ZeroPadShortcut(2, 6, stride=2)
    x = normal(5, (2, 2, 5, 5))
    y = layer.forward(x)
    expected = np.zeros((2, 6, 3, 3))
    expected[:, 2:4] = x[:, :, ::2, ::2]  # (6 − 2) // 2 = 2 zero channels before
    np.testing.assert_array_equal(y, expected)
    result = check_module(layer, x, eps=EPS)
    assert result.max_rel_error <= TOL, result


@pytest.mark.parametrize("stride", [1, 2])
def test_zero_pad_shortcut_in_lanes_of_samples(monkeypatch, stride):
    from ermlab.nn import blocks

    monkeypatch.setattr(blocks, "LANE_MIN_BYTES", 1)
    x = normal(7, (5, 3, 6, 7)).astype(np.float32)
    g = normal(8, (5, 7, 6 // stride, -(-7 // stride))).astype(np.float32)
    results = []
    for threads in (1, 3):
        layer = ZeroPadShortcut(3, 7, stride=stride)
        layer.threads = threads
        assert len(layer._lanes(x)) == threads
        results.append((layer.forward(x), layer.backward(g)))
    (y, grad), (y3, grad3) = results
    want = np.zeros_like(y)
    want[:, 2:5] = x[:, :, ::stride, ::stride]
    want_grad = np.zeros_like(x)
    want_grad[:, :, ::stride, ::stride] = g[:, 2:5]
    for ours, expected in ((y, want), (y3, want), (grad, want_grad), (grad3, want_grad)):
        np.testing.assert_array_equal(ours, expected)


@pytest.mark.parametrize("keep", [True, False])
def test_stochastic_depth_block_gradcheck(keep):
    block = build(BasicBlock, 2, 4, 2, survival_prob=0.7, seed=6)
    drop = block.residual
    assert isinstance(drop, StochasticDepth) and drop.survival_prob == 0.7
    drop.freeze_mask(np.array(keep))
    x = normal(6, (2, 2, 5, 5))
    assert_gradcheck(block, x)
    if not keep:  # the block is relu(shortcut(x)): the branch gets no gradient
        block.zero_grad()
        block.forward(x)
        block.backward(normal(7, (2, 4, 3, 3)))
        assert all(not p.grad.any() for p in drop.parameters())
        assert any(p.grad.any() for p in block.shortcut.parameters())
    drop.unfreeze_mask()


# -- wiring against hand-written oracles -----------------------------------------------------


def relu(a):
    return np.maximum(a, 0)


def test_basic_block_forward_is_relu_of_branch_plus_shortcut():
    block = build(BasicBlock, 2, 4, 2, seed=8)
    x = normal(8, (3, 2, 6, 6))
    block.train()
    residual, shortcut = block.residual.forward(x), block.shortcut.forward(x)
    np.testing.assert_allclose(block.forward(x), relu(residual + shortcut), rtol=1e-13)


def test_stochastic_depth_eval_scales_the_branch():
    """Test time (Huang et al. 2016, eq. 3): H = relu(p · F(x) + x)."""
    block = build(BasicBlock, 3, 3, 1, survival_prob=0.6, seed=9)
    x = normal(9, (2, 3, 4, 4))
    block.eval()
    branch = block.residual.branch.forward(x)
    np.testing.assert_allclose(block.forward(x), relu(0.6 * branch + x), rtol=1e-12)


def test_inception_concatenates_the_four_branches_in_order():
    block = build(InceptionModule, 3, 2, 2, 3, 1, 2, 2, seed=10)
    x = normal(10, (2, 3, 6, 6))
    block.eval()
    parts = [getattr(block, f"branch{i}").forward(x) for i in range(1, 5)]
    assert [p.shape[1] for p in parts] == [2, 3, 2, 2]
    np.testing.assert_array_equal(block.forward(x), np.concatenate(parts, axis=1))
    assert block.forward(x).shape == (2, 9, 6, 6)  # every branch keeps the spatial size


# -- parameter counts by formula -----------------------------------------------------------


def test_parameter_counts():
    bn = 2  # γ and β per channel
    # 3×3 C→O, 3×3 O→O, BN×2, projection 1×1 C→O + BN
    assert BasicBlock(16, 32, 2).num_parameters() == 9 * 16 * 32 + 9 * 32 * 32 + 2 * bn * 32 \
        + 16 * 32 + bn * 32
    assert BasicBlock(16, 32, 2, shortcut="A").num_parameters() == \
        9 * 16 * 32 + 9 * 32 * 32 + 2 * bn * 32
    assert BasicBlock(16, 16).num_parameters() == 2 * 9 * 16 * 16 + 2 * bn * 16
    # ResNet-50's conv2_x first block: 64 → 64 → 64 → 256, projection 64 → 256
    assert Bottleneck(64, 64).num_parameters() == 64 * 64 + 9 * 64 * 64 + 64 * 256 \
        + bn * (64 + 64 + 256) + 64 * 256 + bn * 256
    # ResNeXt-50 conv2_x first block: 64 → 128 → (3×3, 32 groups) 128 → 256
    assert ResNeXtBlock(64, 64).num_parameters() == 64 * 128 + 9 * 128 * 4 + 128 * 256 \
        + bn * (128 + 128 + 256) + 64 * 256 + bn * 256
    # GoogLeNet inception (3a), with biases: 192 → 64 + 128 + 32 + 32 = 256 channels
    assert InceptionModule(192, 64, 96, 128, 16, 32, 32).num_parameters() == \
        (192 * 64 + 64) + (192 * 96 + 96) + (9 * 96 * 128 + 128) + (192 * 16 + 16) \
        + (25 * 16 * 32 + 32) + (192 * 32 + 32)


# -- errors ----------------------------------------------------------------------------------


def test_errors():
    with pytest.raises(ValueError, match="shortcut must be one of"):
        BasicBlock(2, 4, 2, shortcut="C")
    with pytest.raises(ValueError, match="survival_prob"):
        BasicBlock(2, 2, survival_prob=0.0)
    message = r"ZeroPadShortcut\(2 → 4, stride=2\) expects input of shape \(N, 2"
    with pytest.raises(ValueError, match=message):
        ZeroPadShortcut(2, 4, 2).forward(np.zeros((1, 3, 4, 4)))
    with pytest.raises(ValueError, match="out_channels ≥ in_channels"):
        ZeroPadShortcut(4, 2)
