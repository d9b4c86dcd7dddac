"""A ``Linear`` followed by a ``ReLU`` run as one box (``Linear.forward_relu``): the bias and
the ReLU in one compiled pass over x Wᵀ, and in bprop the ReLU's mask and the bias gradient
in one pass, bit for bit the two boxes run one after the other.

The oracle is the same model with the fusion turned off (``forward_relu`` answering None,
so the ``Sequential`` calls the ReLU itself): y, ∂L/∂x, ∂L/∂W, ∂L/∂b must be the same bits
(signs of zeros included, NaN where NaN), in float32 and float64, with and without a bias,
in 1 and 3 lanes, with ∂L/∂x and without, over two backward passes that add up, for dead
units (a bias gradient of −0s), NaN inputs, a gradient the kernels do not take, a layer
used twice, in eval mode, and for per-example gradients; float64 finite differences check
the fused bprop on its own.
"""

import numpy as np
import pytest

pytest.importorskip("numba", reason="Numba kernels absent: pip install 'ermlab[fast]'")

from kernel_calls import count_calls  # noqa: E402

from ermlab import nn  # noqa: E402
from ermlab.gradcheck import check_module  # noqa: E402
from ermlab.nn import _relu_kernels  # noqa: E402
from ermlab.nn import linear as linear_module  # noqa: E402

FUSED = ("bias_forward", "bias_backward", "forward_in_place")
APART = ("forward", "backward", "backward_in_place")


def _mlp(dtype, bias=True, threads=1, inplace=False, sizes=(7, 9, 5)):
    """Linear, ReLU, Linear (the ReLU after the first layer is the one fused)."""
    rng = np.random.default_rng(0)
    first = nn.Linear(sizes[0], sizes[1], bias=bias, rng=rng, dtype=dtype)
    if bias:  # some units dead for every example, some alive
        first.bias.data[:] = rng.standard_normal(sizes[1]) * 3
    first.threads = threads
    relu = nn.ReLU(inplace=inplace)
    relu.threads = threads
    return nn.Sequential(first, relu, nn.Linear(sizes[1], sizes[2], rng=rng, dtype=dtype))


def _data(dtype, n=11, sizes=(7, 9, 5), seed=1):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, sizes[0])).astype(dtype),
            rng.standard_normal((n, sizes[-1])).astype(dtype))


def _run(model, x, g, input_grad=True, passes=1):
    model.zero_grad()
    for _ in range(passes):
        y = model.forward(x)
        grad = model.backward(g, input_grad=input_grad)
    return [y] + ([grad] if input_grad else []) + [p.grad for p in model.parameters()]


def _both(monkeypatch, build, x, g, **options):
    """(fused results, unfused results) of two models from ``build``."""
    fused = _run(build(), x, g, **options)
    with monkeypatch.context() as patch:
        patch.setattr(nn.Linear, "forward_relu", lambda self, x: None)
        unfused = _run(build(), x, g, **options)
    return fused, unfused


def _same(ours, want):
    """The same values bit for bit, signs of zeros included, NaN at the same places."""
    assert ours.dtype == want.dtype and ours.shape == want.shape
    nan = np.isnan(ours)
    np.testing.assert_array_equal(nan, np.isnan(want))
    assert ours[~nan].tobytes() == want[~nan].tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("input_grad", [True, False])
def test_the_pair_is_the_two_layers_bit_for_bit(monkeypatch, dtype, bias, threads, input_grad):
    monkeypatch.setattr(linear_module, "RELU_LANE_MIN_BYTES", 1)
    calls = count_calls(monkeypatch, _relu_kernels, *FUSED, *APART)
    x, g = _data(dtype)
    fused, unfused = _both(monkeypatch, lambda: _mlp(dtype, bias, threads), x, g,
                           input_grad=input_grad, passes=2)  # the second pass adds
    assert len(fused) == len(unfused) == 2 + input_grad + 2 + bias
    for ours, want in zip(fused, unfused, strict=True):
        _same(ours, want)
    # fused: the bias-and-ReLU kernels in lanes (rows forward, columns backward; without a
    # bias the in-place ReLU over elements); the ReLU box's kernels only in the unfused run
    lanes = min(threads, 9)
    forward = "bias_forward" if bias else "forward_in_place"
    assert calls[forward] == 2 * min(threads, 11 if bias else 99)
    assert calls["bias_backward"] == 2 * lanes
    assert calls["forward"] == calls["backward"] == 2 and calls["backward_in_place"] == 0


def test_dead_units_give_the_relus_signed_zeros(monkeypatch):
    x, g = _data(np.float32, seed=2)
    g = -np.abs(g)

    def build():
        model = _mlp(np.float32)
        model[0].bias.data[:3] = -100.0  # units 0–2 dead for every example
        model[2].weight.data[:] = np.abs(model[2].weight.data)  # G of layer 1 is ≤ 0
        return model

    fused, unfused = _both(monkeypatch, build, x, g)
    bias_grad = fused[3]
    assert (bias_grad[:3] == 0).all() and not np.signbit(bias_grad[:3]).any()  # Σ of −0 is +0
    for ours, want in zip(fused, unfused, strict=True):
        _same(ours, want)


def test_nan_inputs_propagate_as_the_relu_propagates_them(monkeypatch):
    x, g = _data(np.float32, seed=3)
    x[4, 2] = np.nan
    fused, unfused = _both(monkeypatch, lambda: _mlp(np.float32), x, g)
    assert np.isnan(fused[0][4]).all() and not np.isnan(fused[0][:4]).any()
    for ours, want in zip(fused, unfused, strict=True):
        _same(ours, want)


def test_an_in_place_relu_is_absorbed_as_well(monkeypatch):
    """``nn.mlp``'s ReLUs are in place: fused the same; unfused they run the one-array
    kernels."""
    calls = count_calls(monkeypatch, _relu_kernels, *FUSED, *APART)
    x, g = _data(np.float64, seed=4)
    fused, unfused = _both(monkeypatch, lambda: _mlp(np.float64, inplace=True), x, g)
    for ours, want in zip(fused, unfused, strict=True):
        _same(ours, want)
    assert calls["bias_forward"] == calls["bias_backward"] == 1
    assert calls["forward_in_place"] == calls["backward_in_place"] == 1  # unfused run
    assert calls["forward"] == calls["backward"] == 0


def test_nn_mlp_runs_no_relu_box(monkeypatch):
    relu_calls = []
    real = nn.ReLU.forward
    monkeypatch.setattr(nn.ReLU, "forward", lambda self, x: relu_calls.append(1) or real(self, x))
    calls = count_calls(monkeypatch, _relu_kernels, *FUSED)
    model = nn.mlp([6, 8, 8, 3], rng=0)
    x, g = _data(np.float32, sizes=(6, 3))
    model.forward(x)
    model.backward(g)
    assert relu_calls == [] and calls["bias_forward"] == calls["bias_backward"] == 2


def test_a_gradient_the_kernels_do_not_take_is_masked_by_numpy(monkeypatch):
    calls = count_calls(monkeypatch, _relu_kernels, "bias_backward")
    x, g = _data(np.float32, seed=5)
    model, want = _mlp(np.float32), _mlp(np.float32)
    model.forward(x)
    want.forward(x)
    grad_y = np.random.default_rng(6).standard_normal((11, 9)).astype(np.float32)
    wide = np.repeat(grad_y, 2, axis=1)[:, ::2]  # the same values, not C-contiguous
    layer, reference = model[0], want[0]
    np.testing.assert_array_equal(layer.backward(wide), reference.backward(grad_y.copy()))
    assert calls["bias_backward"] == 1  # the reference's only
    np.testing.assert_array_equal(layer.weight.grad, reference.weight.grad)
    np.testing.assert_array_equal(layer.bias.grad, reference.bias.grad)
    # float64 G for a float32 layer: as the unfused ReLU, G·1_{y > 0} in float64
    twin = _mlp(np.float32)
    twin.forward(x)
    with monkeypatch.context() as patch:
        patch.setattr(nn.Linear, "forward_relu", lambda self, x: None)
        apart = _mlp(np.float32)
        apart.forward(x)
    g64 = grad_y.astype(np.float64)
    _same(twin[0].backward(g64), apart[0].backward(apart[1].backward(g64)))
    _same(twin[0].weight.grad, apart[0].weight.grad)


def test_inputs_the_kernels_do_not_take_run_the_relu_itself(monkeypatch):
    monkeypatch.setenv("ERMLAB_FUSED", "0")
    model = _mlp(np.float32)
    x, _ = _data(np.float32)
    assert model[0].forward_relu(x) is None
    y = model.forward(x)
    assert model._sites[1] is not nn.activations.ABSORBED
    np.testing.assert_array_equal(y, model[2].forward(np.maximum(model[0].forward(x), 0)))


def test_a_layer_used_twice_keeps_each_sites_cache(monkeypatch):
    x, g = _data(np.float64, sizes=(6, 6), seed=7)

    def build():
        layer = nn.Linear(6, 6, rng=8, dtype="float64")
        layer.bias.data[:] = np.random.default_rng(9).standard_normal(6)
        return nn.Sequential(layer, nn.ReLU(), layer, nn.ReLU(), nn.Linear(6, 6, rng=10,
                                                                           dtype="float64"))

    fused, unfused = _both(monkeypatch, build, x, g)
    for ours, want in zip(fused, unfused, strict=True):
        _same(ours, want)


def test_eval_mode_keeps_nothing_and_gives_the_same_values(monkeypatch):
    x, _ = _data(np.float32, seed=11)
    model = _mlp(np.float32).eval()
    y = model.forward(x)
    assert "_relu_y" not in vars(model[0]) and "_x" not in vars(model[0])
    with monkeypatch.context() as patch:
        patch.setattr(nn.Linear, "forward_relu", lambda self, x: None)
        _same(y, _mlp(np.float32).eval().forward(x))


def test_a_plain_forward_after_a_fused_one_forgets_the_mask():
    x, _ = _data(np.float64, seed=12)
    g = np.random.default_rng(12).standard_normal((11, 9))  # ∂L/∂a of the first layer
    model = _mlp(np.float64)
    model.forward(x)
    layer = model[0]
    layer.zero_grad()
    a = layer.forward(x)  # alone: no ReLU after it
    np.testing.assert_array_equal(layer.backward(g), g @ layer.weight.data)
    np.testing.assert_array_equal(layer.bias.grad, g.sum(axis=0))
    assert (a < 0).any()


def test_per_example_gradients_see_the_relus_bprop(monkeypatch):
    from ermlab.losses import SoftmaxCrossEntropy
    from ermlab.privacy.per_example import per_example_gradients

    rng = np.random.default_rng(13)
    x = rng.standard_normal((5, 7))
    y = rng.integers(0, 5, 5)
    fused = per_example_gradients(_mlp(np.float64), SoftmaxCrossEntropy(), x, y)
    with monkeypatch.context() as patch:
        patch.setattr(nn.Linear, "forward_relu", lambda self, x: None)
        want = per_example_gradients(_mlp(np.float64), SoftmaxCrossEntropy(), x, y)
    assert sorted(fused) == sorted(want)
    for name in fused:
        _same(fused[name], want[name])


def test_gradcheck_float64_through_the_fused_pair(monkeypatch):
    calls = count_calls(monkeypatch, _relu_kernels, *FUSED, *APART)
    x, _ = _data(np.float64, seed=14)
    model = _mlp(np.float64)
    model[0].bias.data[:] = np.abs(model[0].bias.data) * 0.1  # no kink within the steps
    result = check_module(model, x)
    assert result.max_rel_error < 1e-5, result
    assert calls["bias_backward"] > 0 and calls["forward"] == calls["backward"] == 0
