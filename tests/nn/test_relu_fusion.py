"""A ReLU run by the box before it (``Module.forward_relu``): a batch norm followed by a ReLU
in a ``Sequential`` (``BatchNorm2d.forward_relu``, the ReLU inside the batch norm's passes),
and a sum whose only reader is a ReLU in a ``Graph`` (``Add.forward_relu``, a residual
block's output), bit for bit the two boxes run one after the other.

The oracle is the same model with the fusion turned off (``forward_relu`` answering None,
so the composite calls the ReLU itself): y, ∂L/∂x, ∂L/∂γ, ∂L/∂β and the running
statistics must be the same bits (signs of zeros included, NaN where NaN), in float32 and
float64, with and without γ and β, in 1 and 3 lanes of channels, with ∂L/∂x and without,
in eval mode, with frozen statistics (the NumPy bprop), for a gradient the kernels do not
take, for a module used twice, and through a whole ResNet-20. float64 finite differences
check the fused bprop on its own.
"""

import numpy as np
import pytest

pytest.importorskip("numba", reason="Numba kernels absent: pip install 'ermlab[fast]'")

from kernel_calls import count_calls  # noqa: E402

from ermlab import nn  # noqa: E402
from ermlab.gradcheck import check_module  # noqa: E402
from ermlab.nn import _norm_kernels, _relu_kernels, activations, merge, normalization, zoo  # noqa: E402
from ermlab.nn import conv as conv_module  # noqa: E402


def _unfused(monkeypatch):
    """Turn the fusion off: batch norms, linear layers and sums answer None, as a module
    without it does."""
    monkeypatch.setattr(normalization._BatchNorm, "forward_relu", lambda self, x: None)
    monkeypatch.setattr(nn.Linear, "forward_relu", lambda self, x: None)
    monkeypatch.setattr(merge.Add, "forward_relu", lambda self, *inputs: None)


def _pair(c, dtype, affine=True, seed=0, threads=1):
    bn = nn.BatchNorm2d(c, affine=affine, dtype=dtype)
    if affine:
        rng = np.random.default_rng(seed)
        bn.weight.data[:] = rng.standard_normal(c)
        bn.bias.data[:] = rng.standard_normal(c)
    bn.threads = threads
    relu = nn.ReLU()
    relu.threads = threads
    return nn.Sequential(bn, relu)


def _data(shape, dtype, seed=1):
    rng = np.random.default_rng(seed)
    x = 2 * rng.standard_normal(shape) + rng.standard_normal((1, shape[1], 1, 1))
    return x.astype(dtype), rng.standard_normal(shape).astype(dtype)


def _same(ours, want):
    """The same values bit for bit, signs of zeros included, and NaN at the same places (a
    NaN's sign and payload are the processor's choice, not the formula's)."""
    assert ours.dtype == want.dtype and ours.shape == want.shape
    nan = np.isnan(ours)
    np.testing.assert_array_equal(nan, np.isnan(want))
    assert ours[~nan].tobytes() == want[~nan].tobytes()


def _run(model, x, g, input_grad=True):
    model.zero_grad()
    y = model.forward(x)
    grad = model.backward(g, input_grad=input_grad)
    values = [y] + ([grad] if input_grad else [])
    values += [p.grad for p in model.parameters()]
    values += [b for _, b in model.named_buffers()] if hasattr(model, "named_buffers") else []
    return values


def _both(monkeypatch, build, x, g, input_grad=True):
    """(fused results, unfused results) of two models from ``build``."""
    fused = _run(build(), x, g, input_grad)
    with monkeypatch.context() as patch:
        _unfused(patch)
        unfused = _run(build(), x, g, input_grad)
    return fused, unfused


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("input_grad", [True, False])
def test_the_pair_is_the_two_layers_bit_for_bit(monkeypatch, dtype, affine, threads,
                                                  input_grad):
    monkeypatch.setattr(normalization, "LANE_MIN_BYTES", 1)
    kernels = count_calls(monkeypatch, _norm_kernels, "forward", "backward", "grad_sums")
    relus = count_calls(monkeypatch, _relu_kernels, "forward", "backward")
    x, g = _data((6, 5, 4, 3), dtype)
    fused, unfused = _both(monkeypatch, lambda: _pair(5, dtype, affine, threads=threads), x, g,
                           input_grad)
    assert len(fused) == len(unfused) >= 2
    for ours, want in zip(fused, unfused):
        _same(ours, want)
    assert (fused[0] == 0).any() and (fused[0] > 0).any()  # the ReLU did clip
    # fused: no ReLU kernel ran, each batch norm kernel once per lane; unfused: the ReLU's
    lanes = min(threads, 5)
    assert relus["forward"] == 1 and relus["backward"] == 1
    assert kernels["forward"] == 2 * lanes
    assert kernels["backward" if input_grad else "grad_sums"] == 2 * lanes


def test_negative_gradients_give_the_relus_signed_zeros(monkeypatch):
    x, g = _data((4, 3, 4, 4), np.float32, seed=2)
    g = -np.abs(g)  # G·0 = −0 where y ≤ 0, as the ReLU's own bprop
    fused, unfused = _both(monkeypatch, lambda: _pair(3, np.float32, affine=False), x, g)
    pair = _pair(3, np.float32, affine=False)
    pair.forward(x)
    masked = pair[0]._rectified(g)
    assert np.signbit(masked[masked == 0]).all() and (masked == 0).any()
    for ours, want in zip(fused, unfused):
        _same(ours, want)


def test_nan_inputs_propagate_as_the_relu_propagates_them(monkeypatch):
    x, g = _data((4, 3, 4, 4), np.float32, seed=3)
    x[1, 2, 0, 0] = np.nan  # channel 2's statistics become NaN: y is NaN there
    fused, unfused = _both(monkeypatch, lambda: _pair(3, np.float32), x, g)
    assert np.isnan(fused[0][:, 2]).all() and not np.isnan(fused[0][:, :2]).any()
    for ours, want in zip(fused, unfused):
        _same(ours, want)


def test_eval_mode_and_frozen_statistics(monkeypatch):
    x, g = _data((5, 4, 3, 4), np.float64, seed=4)

    def trained(frozen=False):
        pair = _pair(4, np.float64, seed=5)
        for step in range(2):
            pair.forward(_data((5, 4, 3, 4), np.float64, seed=10 + step)[0])
        pair[0].frozen = frozen
        return pair

    kernels = count_calls(monkeypatch, _norm_kernels, "forward", "backward")
    relus = count_calls(monkeypatch, _relu_kernels, "forward", "backward")
    y = trained().eval().forward(x)
    with monkeypatch.context() as patch:
        _unfused(patch)
        want = trained().eval().forward(x)
    _same(y, want)
    # frozen statistics: a training-mode forward on the running statistics, whose bprop
    # (∂L/∂x = G a) is the NumPy path's, masked by ``_rectified``
    fused, unfused = _both(monkeypatch, lambda: trained(frozen=True), x, g)
    for ours, theirs in zip(fused, unfused):
        _same(ours, theirs)
    assert kernels["backward"] == 0 and relus["backward"] == 1  # the unfused pair's only


def test_a_gradient_the_kernels_do_not_take_is_masked_by_numpy(monkeypatch):
    kernels = count_calls(monkeypatch, _norm_kernels, "backward", "grad_sums")
    x, g = _data((4, 3, 5, 4), np.float32, seed=6)
    wide = np.repeat(g, 2, axis=0)[::2]  # the same values, not C-contiguous
    pair, want = _pair(3, np.float32), _pair(3, np.float32)
    pair.forward(x)
    grad = pair.backward(wide)
    # the mask by NumPy (a new, contiguous G·1_{y > 0}), whose sums the kernels take; ∂L/∂x
    # by the NumPy path
    assert kernels["backward"] == 0 and kernels["grad_sums"] == 1
    want.forward(x)
    expected = want.backward(g)  # the kernels, fused
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pair[0].weight.grad, want[0].weight.grad, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pair[0].bias.grad, want[0].bias.grad, rtol=1e-5, atol=1e-6)


def test_inputs_the_kernels_do_not_take_run_the_relu_itself(monkeypatch):
    relus = count_calls(monkeypatch, _relu_kernels, "forward", "backward")
    x, g = _data((8, 3, 5, 4), np.float32, seed=7)
    pair = _pair(3, np.float32)
    assert pair[0].forward_relu(x[::2]) is None  # not C-contiguous: no fused pass
    y = pair.forward(x[::2])
    pair.backward(g[::2].copy())
    assert relus["forward"] == relus["backward"] == 1
    want = _pair(3, np.float32)
    np.testing.assert_allclose(y, want.forward(x[::2].copy()), rtol=1e-5, atol=1e-6)


def test_a_module_used_twice_keeps_each_sites_cache(monkeypatch):
    x, g = _data((4, 3, 4, 5), np.float64, seed=8)

    def build():
        pair = _pair(3, np.float64, seed=9)
        return nn.Sequential(pair[0], pair[1], pair[0], pair[1])

    fused, unfused = _both(monkeypatch, build, x, g)
    for ours, want in zip(fused, unfused):
        _same(ours, want)


def test_gradcheck_float64_through_the_fused_pair(monkeypatch):
    kernels = count_calls(monkeypatch, _norm_kernels, "forward", "backward")
    relus = count_calls(monkeypatch, _relu_kernels, "forward", "backward")
    x, _ = _data((4, 3, 3, 4), np.float64, seed=11)
    result = check_module(_pair(3, np.float64, seed=12), x)
    assert result.max_rel_error < 1e-5, result  # (1.3e-6 measured)
    assert kernels["backward"] > 0 and relus["forward"] == relus["backward"] == 0


def test_resnet20_is_the_same_with_and_without_the_fusion(monkeypatch):
    rng = np.random.default_rng(13)
    x = rng.standard_normal((4, 3, 16, 16)).astype(np.float32)
    g = rng.standard_normal((4, 10)).astype(np.float32)
    relus = count_calls(monkeypatch, _relu_kernels, "forward", "add_forward")
    fused, unfused = _both(monkeypatch, lambda: zoo.resnet20(10, (3, 16, 16), rng=0), x, g)
    # 19 ReLUs, all run by the box before: the stem's and one per block's residual by batch
    # norms, the 9 after the blocks' sums by the sums; unfused, each ReLU's own
    assert relus["forward"] == 19 and relus["add_forward"] == 9
    for ours, want in zip(fused, unfused):
        _same(ours, want)


def test_a_hooked_forward_is_called_as_it_is():
    x, g = _data((4, 3, 4, 4), np.float32, seed=14)
    seen = []
    for hooked in (0, 1):
        pair = _pair(3, np.float32)
        forward = pair[hooked].forward
        pair[hooked].forward = lambda x, f=forward, k=hooked: seen.append(k) or f(x)
        pair.forward(x)
        pair.backward(g)
    assert seen == [0, 1]
    pair = _pair(3, np.float32)
    pair.forward(x)
    assert pair[0]._relu is not False  # (without a hook: fused)


def _block(dtype, threads=1, noise=False):
    """y = relu(x + W₂ relu(W₁ x)), a residual block as a Graph (``Graph``'s example)."""
    rng = np.random.default_rng(15)
    g = nn.Graph(inputs="x")
    g.add("fc1", nn.Linear(6, 6, rng=rng, dtype=dtype), "x").add("act1", nn.ReLU(), "fc1")
    g.add("fc2", nn.Linear(6, 6, rng=rng, dtype=dtype), "act1")
    g.add("sum", nn.Add(), ["fc2", "x"]).add("out", nn.ReLU(), "sum").set_output("out")
    g.act1.threads = g.sum.threads = g.out.threads = threads
    return g


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 3])
def test_a_sum_and_its_relu_are_the_two_boxes_bit_for_bit(monkeypatch, dtype, threads):
    monkeypatch.setattr(activations, "LANE_MIN_BYTES", 1)  # Add's lanes too
    relus = count_calls(monkeypatch, _relu_kernels, "forward", "backward", "add_forward",
                        "bias_forward", "bias_backward")
    rng = np.random.default_rng(16)
    x = rng.standard_normal((20, 6)).astype(dtype)
    g = rng.standard_normal((20, 6)).astype(dtype)
    g[g < 0] *= -1 if dtype == np.float32 else 1
    fused, unfused = _both(monkeypatch, lambda: _block(dtype, threads), x, g)
    assert (fused[0] == 0).any() and (fused[0] > 0).any()
    for ours, want in zip(fused, unfused):
        _same(ours, want)
    lanes = min(threads, 20 * 6)
    assert relus["add_forward"] == lanes  # the fused pass, in lanes
    # forward: act1 and out, unfused (fused: act1 inside fc1's pass); bprop: act1 and out
    # unfused, out fused (its mask inside the sum's bprop, by the same kernel), every pass in
    # ``threads`` lanes; fc1's passes in one lane (20 × 6 values)
    assert relus["forward"] == 2 * lanes and relus["backward"] == 3 * lanes
    assert relus["bias_forward"] == relus["bias_backward"] == 1


def test_a_sum_read_elsewhere_or_the_output_keeps_its_relu(monkeypatch):
    adds = count_calls(monkeypatch, _relu_kernels, "add_forward")
    rng = np.random.default_rng(17)
    x = rng.standard_normal((5, 6)).astype(np.float32)
    twice = _block(np.float32)
    twice.add("also", nn.Add(), ["sum", "out"]).set_output("also")  # "sum" has two readers
    last = nn.Graph(inputs=["a", "b"])
    last.add("sum", nn.Add(), ["a", "b"]).set_output("sum")  # no ReLU after it
    three = nn.Graph(inputs="x")
    three.add("sum", nn.Add(), ["x", "x", "x"]).add("out", nn.ReLU(), "sum").set_output("out")
    for graph, inputs in ((twice, (x,)), (last, (x, x)), (three, (x,))):
        y = graph.forward(*inputs)
        graph.backward(np.ones_like(y))
    assert adds["add_forward"] == 0
    assert merge.Add().forward_relu(x, x[:, ::-1]) is None  # not C-contiguous
    np.testing.assert_array_equal(three.forward(x), np.maximum(3 * x, 0))


def test_gradcheck_float64_through_the_fused_sum():
    x = np.random.default_rng(18).standard_normal((7, 6))
    block = _block(np.float64)
    block.forward(x)
    assert block.sum._y is not False  # fused
    result = check_module(block, x)
    assert result.max_rel_error < 1e-6, result


def _conv_pair(dtype, algorithm, stride=1, bias=True, threads=1, channels=(4, 6)):
    conv = nn.Conv2d(*channels, 3, stride=stride, padding=1, bias=bias, rng=0, dtype=dtype,
                     algorithm=algorithm)
    if bias:
        conv.bias.data[:] = np.random.default_rng(19).standard_normal(channels[1])
    conv.threads = threads
    return nn.Sequential(conv, nn.ReLU())


def _unfused_conv(monkeypatch):
    _unfused(monkeypatch)
    monkeypatch.setattr(conv_module.Conv2d, "forward_relu", lambda self, x: None)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("algorithm,stride,channels", [
    ("direct", 1, (4, 6)), ("direct", 2, (4, 6)), ("winograd", 1, (4, 6)),
    ("auto", 1, (32, 32))])
@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("input_grad", [True, False])
def test_a_convolution_and_its_relu_are_the_two_layers_bit_for_bit(
        monkeypatch, dtype, algorithm, stride, channels, threads, input_grad):
    monkeypatch.setattr(conv_module, "LANE_MIN_FLOPS", 1)
    relus = count_calls(monkeypatch, _relu_kernels, "forward", "backward")
    rng = np.random.default_rng(20)
    x = rng.standard_normal((5, channels[0], 8, 7)).astype(dtype)
    x[4, 0, 2, 3] = np.nan  # NaN outputs stay NaN through the ReLU, fused or not
    out = 4 if stride == 2 else 8
    g = rng.standard_normal((5, channels[1], out, 7 if stride == 1 else 4)).astype(dtype)

    def run(model):
        model.zero_grad()
        y = model.forward(x)
        grad = model.backward(g, input_grad=input_grad)
        return [y] + ([grad] if input_grad else []) + [p.grad for p in model.parameters()]

    for bias in (True, False):
        fused = run(_conv_pair(dtype, algorithm, stride, bias, threads, channels))
        assert fused[0].shape == g.shape and (fused[0] == 0).any() and (fused[0] > 0).any()
        assert np.isnan(fused[0][4]).any() and not np.isnan(fused[0][:4]).any()
        with monkeypatch.context() as patch:
            _unfused_conv(patch)
            unfused = run(_conv_pair(dtype, algorithm, stride, bias, threads, channels))
        for ours, want in zip(fused, unfused, strict=True):
            _same(ours, want)
    # fused: the convolution's kernels rectify y as they write it (no ReLU kernel); in bprop
    # Winograd's kernels take G·1_{y > 0} as they read G (no ReLU kernel either), and so do
    # direct's ∂L/∂W and ∂L/∂b where ∂L/∂x is not wanted; else direct's lanes mask their
    # samples' G; unfused: the ReLU's own passes, in one lane here (5 samples are under its
    # minimum)
    winograd = algorithm == "winograd" or channels == (32, 32)
    fused_masks = 0 if winograd or not input_grad else min(threads, 5)
    assert relus["forward"] == 2 and relus["backward"] == 2 * (fused_masks + 1)


def test_im2col_convolutions_and_other_inputs_keep_their_relu(monkeypatch):
    relus = count_calls(monkeypatch, _relu_kernels, "forward")
    x = np.random.default_rng(21).standard_normal((3, 4, 6, 6)).astype(np.float32)
    assert _conv_pair(np.float32, "im2col")[0].forward_relu(x) is None
    pointwise = nn.Conv2d(4, 6, 1, rng=0)
    assert pointwise.forward_relu(x) is None
    with monkeypatch.context() as patch:
        patch.setenv("ERMLAB_FUSED", "0")  # no kernels: no fused pass
        assert _conv_pair(np.float32, "direct")[0].forward_relu(x) is None
    assert relus["forward"] == 0
    fused = _conv_pair(np.float32, "direct")
    y = fused.forward(x[:, :, ::2, ::2])  # not contiguous: made contiguous, then fused
    assert fused[0]._relu_y is y and relus["forward"] == 0 and (y >= 0).all()


def test_grad_input_alone_applies_the_relus_bprop(monkeypatch):
    rng = np.random.default_rng(22)
    x = rng.standard_normal((3, 4, 6, 6))
    for algorithm, stride in (("direct", 1), ("direct", 2), ("winograd", 1)):
        g = rng.standard_normal((3, 6, 6 // stride, 6 // stride))
        pair = _conv_pair(np.float64, algorithm, stride)
        pair.forward(x)
        with monkeypatch.context() as patch:
            _unfused_conv(patch)
            want = _conv_pair(np.float64, algorithm, stride)
            want.forward(x)
        _same(pair[0].grad_input(g), want[0].grad_input(want[1].backward(g)))


def test_gradcheck_float64_through_the_fused_convolutions():
    x = np.random.default_rng(23).standard_normal((3, 4, 6, 5))
    for algorithm in ("direct", "winograd"):
        pair = _conv_pair(np.float64, algorithm)
        pair.forward(x)
        assert pair[0]._relu_y is not False
        result = check_module(pair, x)
        assert result.max_rel_error < 1e-5, (algorithm, result)  # (1.0e-6 measured)


@pytest.mark.parametrize("build,shape", [
    (lambda: zoo.lenet5(10, (1, 28, 28), rng=0), (1, 28, 28)),
    (lambda: zoo.small_vgg(10, (3, 8, 8), rng=0), (3, 8, 8))])
def test_lenet5_and_the_small_vgg_are_the_same_with_and_without_the_fusion(
        monkeypatch, build, shape):
    rng = np.random.default_rng(24)
    x = rng.standard_normal((4, *shape)).astype(np.float32)
    g = rng.standard_normal((4, 10)).astype(np.float32)
    fused = _run(build(), x, g)
    with monkeypatch.context() as patch:
        _unfused_conv(patch)
        unfused = _run(build(), x, g)
    for ours, want in zip(fused, unfused, strict=True):
        _same(ours, want)


def test_per_example_gradients_see_the_relus_bprop(monkeypatch):
    from ermlab.losses import SoftmaxCrossEntropy
    from ermlab.privacy.per_example import per_example_gradients

    rng = np.random.default_rng(25)
    x = rng.standard_normal((5, 1, 6, 6))
    y = rng.integers(0, 3, 5)

    def build():
        return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, rng=0, dtype="float64"), nn.ReLU(),
                             nn.Flatten(), nn.Linear(144, 3, rng=1, dtype="float64"))

    fused = per_example_gradients(build(), SoftmaxCrossEntropy(), x, y)
    with monkeypatch.context() as patch:
        _unfused_conv(patch)
        want = per_example_gradients(build(), SoftmaxCrossEntropy(), x, y)
    assert sorted(fused) == sorted(want)
    for name in fused:
        np.testing.assert_allclose(fused[name], want[name], rtol=1e-12, atol=1e-15)
