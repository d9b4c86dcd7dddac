"""Conv2d by direct summation (``ermlab.nn._direct``): against torch's conv2d and the im2col
path, float64 finite differences, lanes, chunks, NaN, and when it is chosen."""

import numpy as np
import pytest

pytest.importorskip("numba", reason="the direct kernels need Numba: pip install numba")

from conv_algorithms import (  # noqa: E402
    build,
    check_against_torch,
    check_passes_against_im2col,
    check_three_lanes_equal_one,
    data,
    fprop_bprop,
)
from kernel_calls import count_calls  # noqa: E402
from llvmlite import binding as llvm  # noqa: E402

from ermlab import gradcheck, nn  # noqa: E402
from ermlab.backend import default_dtype  # noqa: E402
from ermlab.nn import _direct as direct  # noqa: E402
from ermlab.nn import _winograd as winograd  # noqa: E402
from ermlab.nn import conv as conv_module  # noqa: E402

# (N, C, O, H, W, padding, kernel, dilation, stride): outputs in fours and with a remainder
# (1, 3, 5, 7), no padding, wide padding, a 1×1 output, one channel, 16 channels (∂L/∂x by
# the transposed convolution, itself direct), kernels of 5 (25 taps: nine, nine, three,
# three and one a pass), 7, 1 and 2×4, rectangular padding with dilation; strides 2 and 3
# (phase planes), even and odd sizes, with dilation and a 1×1 kernel with padding; ∂L/∂x
# by phases (stride > 1, no dilation): kernels of 2 and 4 at stride 2, 2 at stride 3 (a
# phase without taps, whose ∂L/∂x is zero), 5 at stride 3 on a rectangular plane, 16
# channels at stride 2.
CASES = [
    (3, 2, 5, 7, 6, 1, 3, 1, 1),
    (2, 3, 4, 5, 5, 0, 3, 1, 1),
    (4, 4, 3, 8, 8, 1, 3, 1, 1),
    (2, 1, 1, 3, 3, 0, 3, 1, 1),
    (2, 3, 7, 6, 9, 2, 3, 1, 1),
    (3, 16, 8, 6, 5, 1, 3, 1, 1),
    (2, 6, 16, 9, 8, 0, 5, 1, 1),
    (2, 1, 6, 8, 7, 2, 5, 1, 1),
    (2, 3, 2, 9, 9, 3, 7, 1, 1),
    (2, 2, 3, 5, 6, 1, 1, 1, 1),
    (2, 3, 5, 7, 8, (1, 2), (2, 4), (2, 1), 1),
    (2, 3, 5, 9, 9, 1, 3, 1, 2),
    (2, 4, 6, 10, 7, 2, 5, 1, 2),
    (2, 3, 4, 10, 11, 1, 3, 2, 3),
    (2, 2, 3, 7, 8, 1, 1, 1, 2),
    (2, 3, 5, 8, 9, 0, 2, 1, 2),
    (3, 2, 6, 9, 8, 1, 4, 1, 2),
    (2, 3, 4, 11, 10, 0, 2, 1, 3),
    (2, 2, 5, 13, 10, 2, 5, 1, 3),
    (2, 16, 9, 10, 9, 1, 3, 1, 2),
]


@pytest.mark.parametrize("case", CASES)
def test_equals_im2col_in_float64(case, monkeypatch):
    calls = count_calls(monkeypatch, direct, "correlate", "weight_gradient",
                        "strided_input_gradient")
    x, g = data(case)
    ours = fprop_bprop(build(case, "direct"), x, g)
    reference = fprop_bprop(build(case, "im2col"), x, g)
    for a, b in zip(ours, reference, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    # forward, and the transposed convolution's forward for ∂L/∂x of a stride-1 layer (any
    # number of channels) where its padding d (K − 1) − p is not negative and it would not
    # waste TRANSPOSED_MAX_WASTE times the multiply-adds needed; ∂L/∂x by phases for a
    # stride > 1 without dilation (else im2col's column gradient)
    conv = build(case, "direct")
    (_, c, h, w), (out_h, out_w) = x.shape, g.shape[2:]
    # the transposed convolution's multiply-adds over those ∂L/∂x needs, outputs in fours
    waste = h * w / (out_h * out_w) * (-(-c // 4) * 4) / c
    transposed = conv.stride == (1, 1) and waste < conv_module.TRANSPOSED_MAX_WASTE and all(
        p <= d * (k - 1) for p, k, d in zip(conv.padding, conv.kernel_size, conv.dilation))
    phased = conv.stride != (1, 1) and conv.dilation == (1, 1)
    assert calls["correlate"] == (2 if transposed else 1)
    assert calls["weight_gradient"] == 1
    assert calls["strided_input_gradient"] == (1 if phased else 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES)
def test_against_torch(case, dtype):
    check_against_torch(case, "direct", dtype)


# (not the 16-channel stride-2 case: its central differences miss im2col's gradient by
# 1.0e-6 as well, so it is checked against im2col only)
@pytest.mark.parametrize("case", CASES[:3] + CASES[7:11] + CASES[12:-1])
def test_finite_differences(case):
    x, _ = data(case)
    result = gradcheck.check_module(build(case, "direct"), x)
    assert result.passed(), result
    assert set(result.errors) == {"input", "param:weight", "param:bias"}


@pytest.mark.parametrize("case", [(7, 16, 6, 6, 5, 1, 3, 1, 1), (7, 3, 6, 9, 8, 1, 3, 1, 2)],
                         ids=["stride 1", "stride 2, dL/dx by phases"])
def test_lanes_and_chunks_give_one_lanes_results(case, monkeypatch):
    """3 lanes, outputs (and the phases of ∂L/∂x) in chunks of one row, against one lane
    with whole planes."""
    check_three_lanes_equal_one(case, "direct", monkeypatch,
                                lambda: monkeypatch.setattr(direct, "ACC_BYTES", 1))


# LeNet-5's C3 (no padding), padding, dilation; 7 samples
@pytest.mark.parametrize("case", [(7, 6, 16, 14, 14, 0, 5, 1, 1), (7, 3, 5, 7, 6, 1, 3, 1, 1),
                                  (7, 2, 5, 9, 10, 2, 3, 2, 1)],
                         ids=["C3", "padding", "dilation 2"])
@pytest.mark.parametrize("group", [2, 3, 7])
def test_weight_gradient_of_samples_side_by_side(case, group, monkeypatch):
    """∂L/∂W with G samples a run (``GROUP_POSITIONS``; groups of 2, 2, 2, 1 or 3, 3, 1 or
    one of 7) equals one sample a run's; then, after a pass with a NaN at the start of the
    sample that sat second in its group, a pass of one sample, whose runs read past it into
    the second sample's first values (in C3, unpadded): its ∂L/∂W is clean."""
    calls = []
    real = direct.weight_gradient
    monkeypatch.setattr(direct, "weight_gradient",
                        lambda *args: calls.append(args[13]) or real(*args))
    x, g = data(case)
    dirty = x.copy()
    dirty[(len(x) // group - 1) * group + 1, 0, 0, 0] = np.nan
    grads = {}
    for size in (1, group):
        hp, wp = (side + 2 * case[5] for side in case[3:5])
        monkeypatch.setattr(direct, "GROUP_POSITIONS", size * hp * wp)
        conv = build(case, "direct")
        grads[size] = fprop_bprop(conv, x, g)[2:]
        fprop_bprop(conv, dirty, g)
        assert np.isnan(conv.weight.grad).any()
        grads[size] += fprop_bprop(conv, x[6:], g[6:])[2:]
        assert calls[-1] == size
    for a, b in zip(grads[1], grads[group], strict=True):
        assert np.isfinite(b).all()
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", [(7, 6, 16, 14, 14, 0, 5, 1, 1), (7, 3, 5, 7, 6, 1, 3, 1, 1),
                                  (7, 2, 5, 9, 10, 2, 3, 2, 1)],
                         ids=["C3", "padding", "dilation 2"])
@pytest.mark.parametrize("group", [2, 3, 7])
def test_forward_of_samples_one_after_the_other(case, group, monkeypatch):
    """The forward pass (and the transposed convolution's, ∂L/∂x, where it runs) with G
    samples a run equals one sample a run's bit for bit, ReLU fused or not; the pass
    before it leaves NaN in every slot, and five samples leave the last group short
    (2, 2, 1 / 3, 2 / 5 of 7): its unused slots reach no output."""
    calls = []
    real = direct.correlate
    monkeypatch.setattr(direct, "correlate", lambda *args: calls.append(args[-1]) or real(*args))
    x, g = data(case)
    results = {}
    hp, wp = (side + 2 * case[5] for side in case[3:5])
    for size in (1, group):
        monkeypatch.setattr(direct, "GROUP_POSITIONS", size * hp * wp)
        conv = build(case, "direct")
        fprop_bprop(conv, np.full_like(x, np.nan), g)
        calls.clear()
        results[size] = fprop_bprop(conv, x[:5], g[:5])[:2]
        results[size] += (conv.forward_relu(x[:5]),)
        assert calls[0] == size
    for a, b in zip(results[1], results[group], strict=True):
        assert np.isfinite(b).all()
        np.testing.assert_array_equal(b, a)


def test_short_planes_sum_samples_side_by_side():
    """LeNet-5's C3 (140 full-width positions a sample) sums several samples in one run of
    its ∂L/∂W, C1 (28 × 32) one; both equal im2col's in float64."""
    groups = []
    real = direct.weight_gradient
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(direct, "weight_gradient",
                      lambda *args: groups.append(args[13]) or real(*args))
        for case in ((9, 6, 16, 14, 14, 0, 5, 1, 1), (9, 1, 6, 28, 28, 2, 5, 1, 1)):
            x, g = data(case)
            ours = fprop_bprop(build(case, "direct"), x, g)
            reference = fprop_bprop(build(case, "im2col"), x, g)
            for a, b in zip(ours, reference, strict=True):
                np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    assert groups == [direct.GROUP_POSITIONS // 196, 1]
    assert groups[0] > 1


@pytest.mark.parametrize("case", [(6, 4, 5, 7, 6, 1, 3, 1, 1), (6, 4, 5, 9, 8, 1, 3, 1, 2),
                                  (6, 6, 16, 14, 14, 0, 5, 1, 1)],
                         ids=["transposed convolution", "phases", "column gradient"])
def test_weights_and_input_gradient_in_one_parallel_region(case, monkeypatch):
    """bprop wanting ∂L/∂W and ∂L/∂x runs both in each lane of samples: one region (both
    lanes' ∂L/∂x the transposed convolution's, the phases' or, for LeNet-5's C3, whose
    transposed convolution would waste ``TRANSPOSED_MAX_WASTE``, im2col's column
    gradient, as with two regions)."""
    regions = []
    real = conv_module.run_lanes
    monkeypatch.setattr(conv_module, "run_lanes", lambda calls, blas=True: regions.append(
                        len(calls)) or real(calls, blas))
    monkeypatch.setattr(conv_module, "LANE_MIN_FLOPS", 1)
    x, g = data(case)
    conv, reference = build(case, "direct", threads=2), build(case, "im2col")
    conv.forward(x)
    regions.clear()
    gx = conv.backward(g)
    assert regions == [2]
    reference.forward(x)
    np.testing.assert_allclose(gx, reference.backward(g), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(conv.weight.grad, reference.weight.grad, rtol=1e-12,
                               atol=1e-12)
    regions.clear()
    conv.grad_input(g)  # ∂L/∂x alone: the transposed convolution's (or phases') own region
    assert regions == [2]


@pytest.mark.parametrize("case", [CASES[5], CASES[-1]], ids=["stride 1", "stride 2"])
def test_weight_only_input_only_and_no_bias(case):
    check_passes_against_im2col(case, "direct")


@pytest.mark.parametrize("case", [CASES[0], CASES[-1]], ids=["stride 1", "stride 2"])
def test_non_contiguous_input_and_gradient(case):
    x, g = data(case)
    x_view = np.ascontiguousarray(x.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)
    g_view = np.ascontiguousarray(g.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)
    assert not x_view.flags.c_contiguous and not g_view.flags.c_contiguous
    ours = fprop_bprop(build(case, "direct"), x_view, g_view)
    reference = fprop_bprop(build(case, "im2col"), x, g)
    for a, b in zip(ours, reference, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.skipif("fma" not in llvm.get_host_cpu_features(),
                    reason="the order of fused multiply-adds needs a processor with FMA")
@pytest.mark.parametrize("case", [(2, 3, 5, 9, 8, 2, 5, 1, 1), (2, 2, 6, 11, 12, 1, (2, 7), 1, 2),
                                  (1, 2, 4, 9, 10, 2, 3, 2, 1)])
def test_forward_is_one_fused_multiply_add_per_tap_in_order(case):
    """Each output is b, then fma(w, x, ·) for every tap in the order (c, i, j), whatever
    the kernel (``_flat_taps``): float32 outputs equal that sequence, each step rounded
    once (a float32 product is exact in float64, so one float64 addition rounded to float32
    is the fused step but for double rounding, which these values never meet)."""
    n, c, o, h, w, padding, kernel, dilation, stride = case
    layer = nn.Conv2d(c, o, kernel, stride=stride, padding=padding, dilation=dilation, rng=3,
                      dtype=np.float32, algorithm="direct")
    x = np.random.default_rng(4).standard_normal((n, c, h, w)).astype(np.float32)
    y = layer.forward(x)
    (kh, kw), (ph, pw) = layer.kernel_size, layer.padding
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))).astype(np.float64)
    weight = layer.weight.data.astype(np.float64)
    reference = np.broadcast_to(layer.bias.data[None, :, None, None], y.shape).copy()
    for k in range(c):
        for i in range(kh):
            for j in range(kw):
                window = xp[conv_module.kernel_offset_slice(i, j, y.shape[2:], layer.stride,
                                                            layer.dilation)][:, k]
                step = reference + weight[None, :, k, i, j, None, None] * window[:, None]
                reference = step.astype(np.float32)
    np.testing.assert_array_equal(y, reference)


def test_nan_reaches_the_outputs_it_touches_only():
    """The full-width rows compute positions past each row's end from the next row's
    values and drop them: a NaN input spoils exactly the outputs whose windows hold it."""
    case = (2, 3, 5, 6, 7, 1, 3, 1, 1)
    x, _ = data(case)
    x[0, 1, 2, 6] = np.nan  # last column: its neighbour in the flat buffer is the next row
    x[1, 2, 5, 0] = np.nan
    y = build(case, "direct").forward(x)
    reference = build(case, "im2col").forward(x)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(reference))
    assert np.isnan(y).sum() == 5 * (3 * 2 + 2 * 2)  # 5 outputs × the windows holding each NaN
    np.testing.assert_allclose(y[~np.isnan(y)], reference[~np.isnan(reference)], rtol=1e-12)


@pytest.mark.parametrize("channels, used", [((16, 16), True), ((3, 16), True), ((8, 64), True),
                                            ((16, 31), True), ((32, 16), True),
                                            ((16, 32), False),  # twice the outputs: Winograd
                                            ((32, 32), False), ((64, 32), False)])
def test_auto_chooses_direct_where_winograd_does_not_pay(channels, used, monkeypatch):
    calls = count_calls(monkeypatch, direct, "forward")
    wino = count_calls(monkeypatch, winograd, "forward")
    conv = nn.Conv2d(*channels, 3, padding=1, rng=0)
    assert conv.algorithm == "auto"
    # 289 outputs a sample: above WINOGRAD_NARROW_MAX_POSITIONS, where 16 channels take
    # Winograd (``test_winograd``); from DIRECT_MIN_POSITIONS (36) direct takes the rest
    conv.forward(np.ones((2, channels[0], 17, 17), np.float32))
    assert bool(calls) is used and bool(wino) is not used
    calls.clear()
    nn.Conv2d(16, 16, 3, stride=2, rng=0).forward(np.ones((1, 16, 13, 13), np.float32))
    assert calls == {"forward": 1}  # strided, with few channels: direct too
    calls.clear()
    # fewer than DIRECT_MIN_POSITIONS outputs a sample (5×5): im2col
    nn.Conv2d(16, 16, 3, padding=1, rng=0).forward(np.ones((1, 16, 5, 5), np.float32))
    nn.Conv2d(16, 120, 5, rng=0).forward(np.ones((1, 16, 5, 5), np.float32))  # LeNet's C5
    # dilated (no Winograd) with 128 channels: im2col
    nn.Conv2d(128, 128, 3, padding=2, dilation=2, rng=0).forward(
        np.ones((1, 128, 8, 8), np.float32))
    nn.Conv2d(16, 16, 3, stride=(2, 1), rng=0).forward(np.ones((1, 16, 5, 5), np.float32))
    nn.Conv2d(32, 64, 3, stride=2, rng=0).forward(np.ones((1, 32, 5, 5), np.float32))
    nn.Conv2d(16, 16, 3, rng=0, groups=2).forward(np.ones((1, 16, 5, 5), np.float32))
    nn.Conv2d(16, 16, 3, rng=0, algorithm="im2col").forward(np.ones((1, 16, 5, 5), np.float32))
    nn.Conv2d(32, 32, 5, rng=0).forward(np.ones((1, 32, 5, 5), np.float32))
    assert not calls


@pytest.mark.parametrize("channels", [(32, 32), (64, 48)])
def test_auto_runs_dilated_convolutions_of_up_to_64_channels_direct(channels, monkeypatch):
    calls = count_calls(monkeypatch, direct, "forward")
    conv = nn.Conv2d(*channels, 3, padding=2, dilation=2, rng=0)
    conv.forward(np.ones((1, channels[0], 8, 8), np.float32))
    assert calls == {"forward": 1}


@pytest.mark.parametrize("channels, transposed", [(6, False), (8, True)])
def test_lenet_layers_and_the_input_gradient_below_16_channels(monkeypatch, channels,
                                                               transposed):
    """LeNet-5's C1 and C3 (5×5) run direct; ∂L/∂x of a C3 of 8 input channels (under
    TRANSPOSED_MIN_CHANNELS, which direct layers do not need) is the transposed
    convolution's forward pass, direct too; of LeNet-5's own 6, whose transposed
    convolution would do 1.96 × 8/6 times the multiply-adds needed
    (TRANSPOSED_MAX_WASTE), im2col's column gradient; either equal to im2col's to
    rounding."""
    calls = count_calls(monkeypatch, direct, "forward", "backward_weights")
    c1 = nn.Conv2d(1, 6, 5, padding=2, rng=0)
    c1.backward(np.ones_like(c1.forward(np.ones((2, 1, 28, 28), np.float32))), input_grad=False)
    assert calls == {"forward": 1, "backward_weights": 1}
    calls.clear()
    x = np.random.default_rng(0).standard_normal((2, channels, 14, 14))
    with default_dtype(np.float64):
        c3 = nn.Conv2d(channels, 16, 5, rng=0)
        reference = nn.Conv2d(channels, 16, 5, rng=0, algorithm="im2col")
    g = np.random.default_rng(1).standard_normal(c3.forward(x).shape)
    reference.forward(x)
    np.testing.assert_allclose(c3.backward(g), reference.backward(g), rtol=1e-12, atol=1e-13)
    assert calls == {"forward": 2 if transposed else 1, "backward_weights": 1}


def test_fused_off_takes_im2col_bit_for_bit(monkeypatch):
    case = CASES[5]
    x, g = data(case, np.float32)
    monkeypatch.setenv("ERMLAB_FUSED", "0")
    calls = count_calls(monkeypatch, direct, "forward", "backward_weights")
    off = fprop_bprop(build(case, "direct", np.float32), x, g)
    reference = fprop_bprop(build(case, "im2col", np.float32), x, g)
    assert not calls
    for a, b in zip(off, reference, strict=True):
        np.testing.assert_array_equal(a, b)


def test_bad_geometry_is_refused():
    for kwargs in ({"stride": (2, 1)}, {"groups": 2}):  # groups 2 of 4 channels: not depthwise
        with pytest.raises(ValueError, match="algorithm='direct' needs the same stride both"):
            nn.Conv2d(4, 4, 3, algorithm="direct", **kwargs)
    nn.Conv2d(4, 8, 3, stride=(2, 1), groups=4, algorithm="direct")  # depthwise: any strides
    assert "algorithm='direct'" in repr(nn.Conv2d(2, 2, 3, algorithm="direct"))


def test_empty_batch():
    conv = nn.Conv2d(16, 16, 3, padding=1, rng=0, algorithm="direct")
    y = conv.forward(np.zeros((0, 16, 5, 5), np.float32))
    assert y.shape == (0, 16, 5, 5)
    conv.zero_grad()
    assert conv.backward(np.zeros_like(y)).shape == (0, 16, 5, 5)
    assert not conv.weight.grad.any() and not conv.bias.grad.any()


@pytest.mark.parametrize("algorithm", ["direct", "winograd"])
def test_bias_gradient_in_lanes_of_channels(monkeypatch, algorithm):
    from ermlab.nn import _conv_kernels
    from ermlab.nn import conv as conv_module

    calls = count_calls(monkeypatch, _conv_kernels, "channel_sums")
    monkeypatch.setattr(conv_module, "BIAS_LANE_MIN_BYTES", 1)
    rng = np.random.default_rng(11)
    x = rng.standard_normal((4, 3, 6, 5)).astype(np.float32)
    g = rng.standard_normal((4, 5, 6, 5)).astype(np.float32)
    grads = []
    for threads in (1, 3):
        layer = nn.Conv2d(3, 5, 3, padding=1, rng=0, algorithm=algorithm)
        layer.threads = threads
        layer.forward(x)
        layer.backward(g)
        grads.append(layer.bias.grad.copy())
    assert calls["channel_sums"] == 1 + 3
    np.testing.assert_array_equal(grads[0], grads[1])  # the same sums, whatever the lanes
    exact = g.astype(np.float64).sum(axis=(0, 2, 3))
    np.testing.assert_array_max_ulp(grads[0], exact.astype(np.float32), maxulp=1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_work_arrays_start_on_cache_lines(dtype):
    """Conv2d's work arrays start on a 64-byte boundary (NumPy's own start on 16)."""
    from ermlab.nn import conv

    for size in (1, 7, 100, 1001):
        work = conv._aligned_zeros(np, size, dtype)
        assert work.ctypes.data % 64 == 0 and work.size == size and not work.any()
    layer = nn.Conv2d(3, 5, 3, padding=1, algorithm="direct", rng=0, dtype=dtype)
    layer.forward(np.ones((2, 3, 9, 9), dtype))
    arrays = [entry[1] for entry in layer._work_dict().values()]
    assert arrays and all(a.ctypes.data % 64 == 0 for a in arrays)
