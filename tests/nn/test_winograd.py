"""Conv2d by Winograd's F(2×2, 3×3) (``ermlab.nn._winograd``): against torch's conv2d and
the im2col path, float64 finite differences, lanes, blocks, and when it is chosen."""

import numpy as np
import pytest

pytest.importorskip("numba", reason="Winograd kernels need Numba: pip install numba")

from conv_algorithms import (  # noqa: E402
    build,
    check_against_torch,
    check_passes_against_im2col,
    check_three_lanes_equal_one,
    data,
    fprop_bprop,
)
from kernel_calls import count_calls  # noqa: E402

from ermlab import gradcheck, nn  # noqa: E402
from ermlab.nn import _winograd as winograd  # noqa: E402
from ermlab.nn import conv as conv_module  # noqa: E402

# (N, C, O, H, W, padding): even and odd output sizes, no padding, wide padding, 1×1 maps
# of a 3×3 input, one channel.
CASES = [
    (3, 2, 5, 7, 6, 1),
    (2, 3, 4, 5, 5, 0),
    (4, 4, 3, 8, 8, 1),
    (2, 1, 1, 3, 3, 0),
    (2, 3, 2, 6, 9, 2),
]


@pytest.mark.parametrize("case", CASES)
def test_equals_im2col_in_float64(case):
    x, g = data(case)
    ours = fprop_bprop(build(case, "winograd"), x, g)
    reference = fprop_bprop(build(case, "im2col"), x, g)
    for a, b in zip(ours, reference, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES)
def test_against_torch(case, dtype):
    check_against_torch(case, "winograd", dtype)


@pytest.mark.parametrize("case", CASES[:3])
def test_finite_differences(case):
    x, _ = data(case)
    result = gradcheck.check_module(build(case, "winograd"), x)
    assert result.passed(), result
    assert set(result.errors) == {"input", "param:weight", "param:bias"}


def test_lanes_and_blocks_give_one_blocks_results(monkeypatch):
    """3 lanes, blocks of one sample, against one lane in one block."""
    def one_sample_blocks():
        monkeypatch.setattr(winograd, "BLOCK_BYTES", 1)
        monkeypatch.setattr(winograd, "BACKWARD_BLOCK_BYTES", 1)

    check_three_lanes_equal_one((7, 3, 4, 6, 5, 1), "winograd", monkeypatch, one_sample_blocks)


def test_bprop_blocks_take_a_quarter_of_the_level_2_cache(tmp_path):
    """The level-2 size is read as Linux describes cpu0's caches; where it cannot be read,
    bprop's blocks keep ``BLOCK_BYTES``."""
    for index, (level, size) in enumerate([("1", "48K"), ("1", "32K"), ("2", "2048K"),
                                           ("3", "504M")]):
        (tmp_path / f"index{index}").mkdir()
        (tmp_path / f"index{index}" / "level").write_text(level + "\n")
        (tmp_path / f"index{index}" / "size").write_text(size + "\n")
    (tmp_path / "uevent").write_text("")  # not a cache
    assert winograd._level2_bytes(str(tmp_path)) == 2 * 2**20
    (tmp_path / "index2" / "size").write_text("1M\n")
    assert winograd._level2_bytes(str(tmp_path)) == 2**20
    (tmp_path / "index2" / "size").write_text("big\n")
    assert winograd._level2_bytes(str(tmp_path)) == 0
    assert winograd._level2_bytes(str(tmp_path / "absent")) == 0
    assert winograd.BACKWARD_BLOCK_BYTES == max(winograd.BLOCK_BYTES,
                                                winograd._level2_bytes() // 4)


def test_weight_only_input_only_and_no_bias():
    check_passes_against_im2col(CASES[0], "winograd")


def test_non_contiguous_input():
    case = CASES[0]
    x, g = data(case)
    x_view = np.ascontiguousarray(x.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)
    assert not x_view.flags.c_contiguous
    ours = fprop_bprop(build(case, "winograd"), x_view, g)
    reference = fprop_bprop(build(case, "im2col"), x, g)
    for a, b in zip(ours, reference, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("channels, size, used", [
    ((32, 32), 4, True), ((32, 64), 4, True), ((32, 32), 17, True),
    # 16 channels: on planes of up to WINOGRAD_NARROW_MAX_POSITIONS (256) outputs only
    ((16, 32), 4, True), ((32, 16), 4, True), ((16, 16), 4, True),
    ((16, 16), 17, False), ((32, 16), 17, False), ((8, 64), 4, False),
    ((16, 32), 17, True)])  # ... or with twice as many outputs
def test_auto_chooses_winograd_from_enough_channels(channels, size, used, monkeypatch):
    calls = count_calls(monkeypatch, winograd, "forward")
    conv = nn.Conv2d(*channels, 3, padding=1, rng=0)
    assert conv.algorithm == "auto"
    conv.forward(np.ones((4, channels[0], size, size), np.float32))  # 64 or 1156 positions
    assert bool(calls) is used
    calls.clear()
    nn.Conv2d(32, 32, 3, stride=2, rng=0).forward(np.ones((1, 32, 5, 5), np.float32))
    nn.Conv2d(32, 32, 5, rng=0).forward(np.ones((1, 32, 5, 5), np.float32))
    assert not calls


def test_auto_leaves_winograd_where_the_batch_has_fewer_positions_than_channels(monkeypatch):
    """U = G w Gᵀ is made for all O·C filters at every call: with fewer output positions in
    the batch (N·OH·OW) than channels, im2col; from as many, Winograd."""
    calls = count_calls(monkeypatch, winograd, "forward")
    conv = nn.Conv2d(64, 64, 3, padding=1, rng=0)
    conv.forward(np.ones((3, 64, 4, 4), np.float32))  # 48 positions < 64
    assert not calls
    conv.forward(np.ones((4, 64, 4, 4), np.float32))  # 64
    assert calls == {"forward": 1}


def test_fused_off_takes_im2col_bit_for_bit(monkeypatch):
    case = CASES[0]
    x, g = data(case, np.float32)
    monkeypatch.setenv("ERMLAB_FUSED", "0")
    calls = count_calls(monkeypatch, winograd, "forward")
    off = fprop_bprop(build(case, "winograd", np.float32), x, g)
    reference = fprop_bprop(build(case, "im2col", np.float32), x, g)
    assert not calls
    for a, b in zip(off, reference, strict=True):
        np.testing.assert_array_equal(a, b)


def test_bad_algorithm_is_refused():
    with pytest.raises(ValueError, match="algorithm must be one of"):
        nn.Conv2d(2, 2, 3, algorithm="fft")
    for kwargs in ({"kernel_size": 5}, {"kernel_size": 3, "stride": 2},
                   {"kernel_size": 3, "dilation": 2}):
        with pytest.raises(ValueError, match="needs a 3×3 kernel, stride 1"):
            nn.Conv2d(2, 2, algorithm="winograd", **kwargs)
    assert "algorithm='winograd'" in repr(nn.Conv2d(2, 2, 3, algorithm="winograd"))
    nn.Conv2d(4, 6, 3, groups=2, algorithm="winograd")  # groups: one product per group


def test_empty_batch():
    conv = nn.Conv2d(32, 32, 3, padding=1, rng=0, algorithm="winograd")
    y = conv.forward(np.zeros((0, 32, 5, 5), np.float32))
    assert y.shape == (0, 32, 5, 5)
    conv.zero_grad()
    assert conv.backward(np.zeros_like(y)).shape == (0, 32, 5, 5)
    assert not conv.weight.grad.any() and not conv.bias.grad.any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_filter_transform_and_its_adjoint_are_g_w_gt_and_gt_m_g(dtype):
    g = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])
    rng = np.random.default_rng(7)
    w = rng.standard_normal((5, 3, 3, 3)).astype(dtype)
    grad_u = rng.standard_normal((16, 5, 3)).astype(dtype)
    u = winograd.filter_transform(w)
    grad_w = winograd.filter_transform_adjoint(grad_u, w.shape)
    want_u = np.einsum("ik,ockl,jl->ijoc", g, w.astype(np.float64), g).reshape(16, 5, 3)
    want_w = np.einsum("ik,ijoc,jl->ockl", g, grad_u.astype(np.float64).reshape(4, 4, 5, 3), g)
    assert u.dtype == grad_w.dtype == dtype and u.flags.c_contiguous
    tol = 4 * np.finfo(dtype).eps
    np.testing.assert_allclose(u, want_u, rtol=tol, atol=tol * 4)
    np.testing.assert_allclose(grad_w, want_w, rtol=tol, atol=tol * 4)
    # the adjoint: <G w Gᵀ, M> = <w, Gᵀ M G>
    np.testing.assert_allclose(np.vdot(u.astype(np.float64), grad_u),
                               np.vdot(w.astype(np.float64), grad_w), rtol=tol * 10)
    # in lanes of output channels (one of them a single channel): the same values
    for lanes in ([(0, 2), (2, 5)], [(0, 4), (4, 5)], [(0, 1), (1, 3), (3, 5)]):
        np.testing.assert_array_equal(winograd.filter_transform(w, lanes), u)
        np.testing.assert_array_equal(
            winograd.filter_transform_adjoint(grad_u, w.shape, lanes), grad_w)


def test_a_layer_s_filter_transforms_in_lanes_give_the_same_step(monkeypatch):
    """``TRANSFORM_LANE_MIN_BYTES``: a layer's transforms in lanes of output channels (at
    1 byte a lane, two lanes here) leave its outputs and gradients bit for bit."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((3, 32, 6, 6)).astype(np.float32)
    g = rng.standard_normal((3, 40, 6, 6)).astype(np.float32)
    results = []
    for minimum in (2**40, 1):
        monkeypatch.setattr(conv_module, "TRANSFORM_LANE_MIN_BYTES", minimum)
        conv = nn.Conv2d(32, 40, 3, padding=1, rng=0, algorithm="winograd")
        conv.threads = 2
        assert len(conv._transform_lanes()) == (1 if minimum > 1 else 2)
        conv.zero_grad()
        results.append((conv.forward(x), conv.backward(g), conv.weight.grad.copy()))
    for ours, want in zip(results[1], results[0], strict=True):
        np.testing.assert_array_equal(ours, want)


# (N, C, O, H, W, padding, groups): channel counts a group differing in and out
GROUPED = [(3, 4, 6, 6, 5, 1, 2), (2, 8, 8, 5, 5, 0, 4), (2, 6, 9, 4, 7, 2, 3)]


@pytest.mark.parametrize("case", GROUPED, ids=str)
def test_grouped_convolutions_against_window_sums(case, monkeypatch):
    from conv_algorithms import window_sums

    calls = count_calls(monkeypatch, winograd, "_forward_blocks", "_backward_blocks")
    n, c, o, h, w, p, groups = case
    rng = np.random.default_rng(5)
    x = rng.standard_normal((n, c, h, w))
    conv = nn.Conv2d(c, o, 3, padding=p, groups=groups, rng=0, dtype="float64",
                     algorithm="winograd")
    conv.bias.data[:] = rng.standard_normal(o)
    y = conv.forward(x)
    g = rng.standard_normal(y.shape)
    conv.zero_grad()
    gx = conv.backward(g)
    want_y, want_x, want_w = window_sums(x, conv.weight.data, g, 1, p, groups=groups)
    np.testing.assert_allclose(y, want_y + conv.bias.data[None, :, None, None], rtol=1e-12,
                               atol=1e-12)
    np.testing.assert_allclose(gx, want_x, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(conv.weight.grad, want_w, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(conv.bias.grad, g.sum(axis=(0, 2, 3)), rtol=1e-12, atol=1e-12)
    assert calls == {"_forward_blocks": 1, "_backward_blocks": 1}  # Winograd's kernels ran


def _pair_pass(model, x, g):
    """y, ∂L/∂x, ∂L/∂W, ∂L/∂b of a convolution followed by a ReLU."""
    model.zero_grad()
    y = model.forward(x)
    return y, model.backward(g), model[0].weight.grad.copy(), model[0].bias.grad.copy()


def test_grouped_lanes_give_one_lanes_results_and_the_relu_fuses(monkeypatch):
    from ermlab.nn import conv as conv_module

    rng = np.random.default_rng(6)
    x = rng.standard_normal((7, 8, 5, 6))

    def layers(threads):
        conv = nn.Conv2d(8, 12, 3, padding=1, groups=4, rng=0, dtype="float64",
                         algorithm="winograd", threads=threads)
        return nn.Sequential(conv, nn.ReLU())

    one = layers(1)
    g = rng.standard_normal(one.forward(x).shape)
    first = _pair_pass(one, x, g)
    assert one[0]._relu_y is not False  # the ReLU ran inside the convolution
    with monkeypatch.context() as patch:
        patch.setattr(conv_module, "LANE_MIN_FLOPS", 1)
        three = layers(3)
        assert len(three[0]._lanes(np, x.shape)) == 3
        ours = _pair_pass(three, x, g)
    for k in (0, 1, 3):
        np.testing.assert_array_equal(ours[k], first[k])
    np.testing.assert_allclose(ours[2], first[2], rtol=1e-13, atol=1e-13)
    monkeypatch.setattr(conv_module.Conv2d, "forward_relu", lambda self, x: None)
    for a, b in zip(_pair_pass(layers(1), x, g), first, strict=True):  # the two boxes apart
        np.testing.assert_array_equal(a, b)


def test_auto_takes_winograd_for_16_channels_on_small_planes_only():
    def path(c, o, size, stride=1):
        conv = nn.Conv2d(c, o, 3, padding=1, stride=stride)
        x = np.zeros((8, c, size, size), np.float32)
        taken = [conv._winograd(x) is not None, conv._direct(x) is not None]
        assert sum(taken) <= 1  # fprop and bprop ask in different orders: one path only
        return "winograd" if taken[0] else "direct" if taken[1] else "im2col"

    assert path(16, 32, 8) == path(32, 16, 16) == path(16, 16, 4) == "winograd"
    # 17×17: 289 positions; there only with twice as many outputs
    assert path(16, 16, 17) == path(32, 16, 17) == path(24, 47, 17) == "direct"
    assert path(16, 32, 17) == path(24, 48, 32) == "winograd"
    assert path(8, 32, 8) == "direct"  # 8 channels: not enough
    assert path(16, 32, 16, stride=2) == "direct"  # strided: no Winograd; direct as before
    assert path(32, 64, 16, stride=2) == "im2col"
    rng = np.random.default_rng(0)  # and it trains: fprop and bprop as im2col's
    x = rng.standard_normal((4, 16, 8, 8))
    g = rng.standard_normal((4, 32, 8, 8))
    grads = []
    for algorithm in ("auto", "im2col"):
        conv = nn.Conv2d(16, 32, 3, padding=1, rng=1, dtype=np.float64, algorithm=algorithm)
        conv.train()
        y = conv.forward(x)
        grads.append((y, conv.backward(g), conv.weight.grad.copy(), conv.bias.grad.copy()))
    for ours, reference in zip(*grads, strict=True):
        np.testing.assert_allclose(ours, reference, rtol=1e-12, atol=1e-12)


def test_auto_takes_winograd_for_groups_of_enough_channels_on_small_planes():
    grouped = nn.Conv2d(128, 128, 3, padding=1, groups=4)  # 32 channels a group
    assert grouped._winograd(np.zeros((8, 128, 6, 6), np.float32)) is not None  # 36
    assert grouped._winograd(np.zeros((8, 128, 7, 7), np.float32)) is None  # 49: im2col
    eight = nn.Conv2d(128, 128, 3, padding=1, groups=16)  # 8 a group: enough
    assert eight._winograd(np.zeros((8, 128, 4, 4), np.float32)) is not None
    narrow = nn.Conv2d(128, 128, 3, padding=1, groups=32)  # 4 a group: im2col
    assert narrow._winograd(np.zeros((8, 128, 4, 4), np.float32)) is None
    assert nn.Conv2d(64, 64, 3, padding=1)._winograd(np.zeros((8, 64, 16, 16), np.float32))
